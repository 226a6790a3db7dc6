//! A dense, row-major tensor on the host.
//!
//! Activations are NHWC, conv kernels HWIO, dense kernels (in, out): the
//! layouts of Flax, so the tutorial's checkpoints load without transposes.

use crate::float::Float;
use cudarc::driver::CudaSlice;
use rand::Rng;
use rand_distr::{Distribution, StandardNormal};
use std::borrow::Cow;
use std::fmt;

/// A tensor: its shape and its elements, on the host or on the GPU.
///
/// The ops in `crate::ops` accept either and dispatch on where their inputs
/// live; element access ([`Tensor::data`]) is for host tensors only. This
/// module imports neither: uploads and kernels live in `crate::cuda`, and
/// `add_assign` in `crate::ops::elementwise`.
pub struct Tensor<T> {
    shape: Vec<usize>,
    storage: Storage<T>,
}

/// Where a tensor's elements live.
pub enum Storage<T> {
    Host(Vec<T>),
    /// Device memory of [`crate::cuda::gpu`], on its one stream.
    Gpu(CudaSlice<T>),
}

impl<T: Float> Clone for Tensor<T> {
    fn clone(&self) -> Self {
        let storage = match &self.storage {
            Storage::Host(v) => Storage::Host(v.clone()),
            Storage::Gpu(s) => Storage::Gpu(s.clone()),
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

/// Shape and placement: available for any element type.
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
            Storage::Gpu(s) => Some(s),
            Storage::Host(_) => None,
        }
    }

    pub fn gpu_data_mut(&mut self) -> Option<&mut CudaSlice<T>> {
        match &mut self.storage {
            Storage::Gpu(s) => Some(s),
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
            storage: Storage::Host(data),
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
            storage: Storage::Gpu(data),
        }
    }

    /// A host copy (a clone for a host tensor).
    pub fn to_host(&self) -> Tensor<T> {
        Tensor::new(&self.shape, self.host_data().into_owned())
    }

    /// The elements on the host: borrowed, or downloaded from the GPU.
    fn host_data(&self) -> Cow<'_, [T]> {
        match &self.storage {
            Storage::Host(v) => Cow::Borrowed(v),
            // The slice's own stream: the GPU's one stream (`cuda::Gpu`).
            Storage::Gpu(s) => Cow::Owned(s.stream().clone_dtoh(s).expect("device-to-host copy failed")),
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
    pub fn data_mut(&mut self) -> &mut [T] {
        match &mut self.storage {
            Storage::Host(v) => v,
            Storage::Gpu(_) => panic!("{}", ON_GPU),
        }
    }
    pub fn into_data(self) -> Vec<T> {
        match self.storage {
            Storage::Host(v) => v,
            Storage::Gpu(_) => panic!("{}", ON_GPU),
        }
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

    /// Element-wise conversion to another float type.
    pub fn cast<U: Float>(&self) -> Tensor<U> {
        Tensor::new(&self.shape, self.host_data().iter().map(|&v| U::of(v.f64())).collect())
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
