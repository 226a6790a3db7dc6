//! cifar-kern: a small deep-learning engine that trains the CIFAR-10
//! classifiers of the UvA "Inception, ResNet and DenseNet" tutorial.
//!
//! - [`tensor`]: the tensor (NHWC activations, HWIO kernels), its elements
//!   shared between clones and copied on write.
//! - [`failure`]: GPU failures (out of memory, a failed launch, a device
//!   fault) carried to the caller as errors.
//! - [`counters`]: process-wide counts of copies, GPU allocations,
//!   synchronisations and launches, for tests that bound them.
//! - [`arena`]: the training step's buffers, planned on the first step and
//!   reused by every later one (the GPU lends every allocation from it).
//! - [`layers`]: what a layer is whichever backend computes it (window
//!   geometry, shape checks, batch-norm constants), below `ops` and `cuda`.
//! - [`ops`]: forward and backward of every layer on the CPU: the reference
//!   backend, generic over `f32`/`f64`.
//! - [`backend`]: the one switch that runs each op on the CPU reference or
//!   the GPU, by where its inputs live.
//! - [`autograd`]: the tape that records ops in train mode and runs their
//!   backwards.
//! - [`optim`]: the optax optimiser chains (clip, SGD/Adam/AdamW, LR schedule).
//! - [`checkpoint`]: safetensors checkpoints and the tutorial's Flax msgpack ones.
//! - [`fixtures`]: where tests find the shared reference fixtures.
//! - [`data`]: CIFAR-10 files, the tutorial's split, augmentation and batches.
//! - [`cuda`]: the GPU runtime (discovery, the embedded PTX, launches) and
//!   the kernels' launchers.
//! - [`interrupt`]: Ctrl-C during training, reported in one line.
//! - [`runs`]: a run's records read back (`table`); [`pictures`]: the
//!   augmentation grid and the training curves as PNG.
//! - [`bench`] and [`tune`]: the GPU's speed per network and conv shape
//!   (`cifar-kern bench`), and the tensor-core conv variants timed on it
//!   (`cifar-kern tune`, writing the tile table).

pub mod arena;
pub mod autograd;
pub mod backend;
pub mod bench;
pub mod checkpoint;
pub mod counters;
pub mod cuda;
pub mod data;
pub mod device;
pub mod evaluate;
pub mod failure;
pub mod fixtures;
pub mod float;
pub mod interrupt;
pub mod kill_point;
pub mod layers;
pub mod models;
pub mod ops;
pub mod optim;
pub mod pictures;
pub mod runs;
pub mod tensor;
pub mod tensorboard;
pub mod train;
pub mod tune;

pub use autograd::{Grads, Tape, Var};
pub use float::Float;
pub use layers::Window;
pub use tensor::Tensor;
