//! cifar-kern: a small deep-learning engine that trains the CIFAR-10
//! classifiers of the UvA "Inception, ResNet and DenseNet" tutorial.
//!
//! - [`tensor`]: the host tensor (NHWC activations, HWIO kernels).
//! - [`ops`]: the op interface, forward and backward of every layer; the CPU
//!   reference backend, generic over `f32`/`f64`.
//! - [`autograd`]: the tape that records ops in train mode and runs their
//!   backwards.
//! - [`cuda`]: GPU discovery and the PTX modules `build.rs` embedded.

pub mod autograd;
pub mod cuda;
pub mod float;
pub mod models;
pub mod ops;
pub mod tensor;
pub mod tensorboard;

pub use autograd::{Grads, Tape, Var};
pub use float::Float;
pub use ops::Window;
pub use tensor::Tensor;
