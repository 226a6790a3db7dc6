//! A dense, row-major tensor on the host or the GPU.
//!
//! Activations are NHWC, conv kernels HWIO, dense kernels (in, out): the
//! layouts of Flax, so the tutorial's checkpoints load without transposes.
//!
//! The elements are shared, as candle's `Storage` is: cloning a tensor
//! clones an `Arc`, so the tape, the optimiser and the model state can all
//! hold the same parameter without copying it. Mutation is copy-on-write:
//! [`Tensor::data_mut`] and [`Tensor::gpu_data_mut`] copy the elements only
//! when another tensor still shares them, and count each such copy in
//! [`crate::counters`], so a test can check that a training step makes none.

use crate::counters::{self, Event};
use crate::failure::OrFail;
use crate::float::Float;
use cudarc::driver::CudaSlice;
use rand::Rng;
use rand_distr::{Distribution, StandardNormal};
use std::borrow::Cow;
use std::fmt;
use std::sync::Arc;

/// A tensor: its shape and its elements, on the host or on the GPU.
///
/// `crate::backend` runs an op where its inputs live; element access
/// ([`Tensor::data`]) is for host tensors only, and a tensor changes device
/// only when asked ([`Tensor::to_host`], `Backend::place`). This module
/// imports neither backend: uploads and kernels live in `crate::cuda`.
pub struct Tensor<T> {
    shape: Vec<usize>,
    storage: Storage<T>,
}

/// Where a tensor's elements live, shared between the tensors cloned from
/// one another.
pub enum Storage<T> {
    Host(Arc<Vec<T>>),
    /// Device memory of [`crate::cuda::gpu`], on its one stream.
    Gpu(Arc<CudaSlice<T>>),
}

/// A clone shares the elements: no copy, on the host or the GPU.
impl<T> Clone for Tensor<T> {
    fn clone(&self) -> Self {
        let storage = match &self.storage {
            Storage::Host(v) => Storage::Host(Arc::clone(v)),
            Storage::Gpu(s) => Storage::Gpu(Arc::clone(s)),
        };
        Tensor {
            shape: self.shape.clone(),
            storage,
        }
    }
}

impl<T: Float> PartialEq for Tensor<T> {
    /// Same shape and bit-for-bit equal elements (a GPU tensor is downloaded).
    fn eq(&self, other: &Self) -> bool {
        self.shape == other.shape && self.host_data() == other.host_data()
    }
}

impl<T: Float> fmt::Debug for Tensor<T> {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        match &self.storage {
            Storage::Host(v) => write!(f, "Tensor{:?}{:?}", self.shape, v),
            Storage::Gpu(_) => write!(f, "Tensor{:?}(on the GPU)", self.shape),
        }
    }
}

/// Shape and device: available for any element type.
impl<T> Tensor<T> {
    pub fn shape(&self) -> &[usize] {
        &self.shape
    }

    pub fn numel(&self) -> usize {
        self.shape.iter().product()
    }

    pub fn is_gpu(&self) -> bool {
        matches!(self.storage, Storage::Gpu(_))
    }

    /// The device buffer of a GPU tensor.
    pub fn gpu_data(&self) -> Option<&CudaSlice<T>> {
        match &self.storage {
            Storage::Gpu(s) => Some(s.as_ref()),
            Storage::Host(_) => None,
        }
    }
}

impl<T: Float> Tensor<T> {
    pub fn new(shape: &[usize], data: Vec<T>) -> Self {
        let numel: usize = shape.iter().product();
        assert_eq!(
            numel,
            data.len(),
            "shape {shape:?} needs {numel} elements, got {}",
            data.len()
        );
        Tensor {
            shape: shape.to_vec(),
            storage: Storage::Host(Arc::new(data)),
        }
    }

    /// A tensor in GPU memory holding `shape`'s elements.
    pub fn from_gpu(shape: &[usize], data: CudaSlice<T>) -> Self {
        assert_eq!(
            shape.iter().product::<usize>(),
            data.len(),
            "shape {shape:?} vs GPU buffer"
        );
        Tensor {
            shape: shape.to_vec(),
            storage: Storage::Gpu(Arc::new(data)),
        }
    }

    /// The tensor on the host: downloaded from the GPU, or for a host
    /// tensor a clone (sharing its elements).
    pub fn to_host(&self) -> Tensor<T> {
        match &self.storage {
            Storage::Host(_) => self.clone(),
            Storage::Gpu(_) => Tensor::new(&self.shape, self.host_data().into_owned()),
        }
    }

    /// The elements on the host: borrowed, or downloaded from the GPU.
    fn host_data(&self) -> Cow<'_, [T]> {
        match &self.storage {
            Storage::Host(v) => Cow::Borrowed(v),
            // The slice's own stream: the GPU's one stream (`cuda::Gpu`).
            Storage::Gpu(s) => {
                counters::add(Event::HostSync, 1);
                let bytes = self.numel() * std::mem::size_of::<T>();
                Cow::Owned(
                    s.stream()
                        .clone_dtoh(s.as_ref())
                        .or_fail(|| format!("copying {bytes} bytes to the host")),
                )
            }
        }
    }

    pub fn zeros(shape: &[usize]) -> Self {
        Self::full(shape, T::zero())
    }

    pub fn full(shape: &[usize], value: T) -> Self {
        Self::new(shape, vec![value; shape.iter().product()])
    }

    pub fn scalar(value: T) -> Self {
        Self::new(&[], vec![value])
    }

    /// Uniform entries in `[lo, hi)`.
    pub fn uniform(shape: &[usize], lo: f64, hi: f64, rng: &mut impl Rng) -> Self {
        let n = shape.iter().product();
        let data = (0..n).map(|_| T::of(rng.random_range(lo..hi))).collect();
        Self::new(shape, data)
    }

    /// Standard-normal entries scaled by `std`.
    pub fn randn(shape: &[usize], std: f64, rng: &mut impl Rng) -> Self {
        let n = shape.iter().product();
        let data = (0..n)
            .map(|_| {
                let z: f64 = StandardNormal.sample(rng);
                T::of(z * std)
            })
            .collect();
        Self::new(shape, data)
    }
    /// The elements of a host tensor.
    pub fn data(&self) -> &[T] {
        match &self.storage {
            Storage::Host(v) => v,
            Storage::Gpu(_) => panic!("{}", ON_GPU),
        }
    }

    /// The elements of a host tensor, to change in place: copied first
    /// (and counted) if another tensor shares them.
    pub fn data_mut(&mut self) -> &mut [T] {
        match &mut self.storage {
            Storage::Host(v) => {
                if Arc::get_mut(v).is_none() {
                    counters::add(Event::HostCopy, 1);
                }
                Arc::make_mut(v).as_mut_slice()
            }
            Storage::Gpu(_) => panic!("{}", ON_GPU),
        }
    }

    /// The device buffer of a GPU tensor, to write in place: copied first
    /// on the device (and counted) if another tensor shares it.
    pub fn gpu_data_mut(&mut self) -> Option<&mut CudaSlice<T>> {
        let Storage::Gpu(s) = &mut self.storage else {
            return None;
        };
        if Arc::get_mut(s).is_none() {
            counters::add(Event::DeviceCopy, 1);
            let bytes = s.len() * std::mem::size_of::<T>();
            *s = Arc::new(
                s.try_clone()
                    .or_fail(|| format!("copying a shared {bytes}-byte buffer on the GPU")),
            );
        }
        Arc::get_mut(s)
    }

    /// The only element of a one-element tensor.
    pub fn item(&self) -> T {
        assert_eq!(self.numel(), 1, "item() of a tensor of shape {:?}", self.shape);
        self.host_data()[0]
    }

    /// The same elements under another shape with as many elements.
    pub fn reshape(self, shape: &[usize]) -> Self {
        assert_eq!(
            shape.iter().product::<usize>(),
            self.numel(),
            "reshape {:?} to {shape:?}",
            self.shape
        );
        Tensor {
            shape: shape.to_vec(),
            storage: self.storage,
        }
    }

    /// Element-wise conversion of a host tensor to another float type.
    pub fn cast<U: Float>(&self) -> Tensor<U> {
        Tensor::new(&self.shape, self.data().iter().map(|&v| U::of(v.f64())).collect())
    }

    /// Euclidean norm, accumulated in f64.
    pub fn norm(&self) -> f64 {
        self.host_data().iter().map(|v| v.f64() * v.f64()).sum::<f64>().sqrt()
    }

    /// `||self - reference|| / max(||reference||, floor)`: the norm-wise
    /// relative error the parity and fixture tests use.
    pub fn rel_error(&self, reference: &Tensor<T>, floor: f64) -> f64 {
        assert_eq!(self.shape, reference.shape, "rel_error of mismatched shapes");
        let diff: f64 = self
            .host_data()
            .iter()
            .zip(reference.host_data().iter())
            .map(|(a, b)| (a.f64() - b.f64()).powi(2))
            .sum::<f64>()
            .sqrt();
        diff / reference.norm().max(floor)
    }
}

const ON_GPU: &str = "this tensor lives on the GPU: copy it with to_host() before reading its elements";
