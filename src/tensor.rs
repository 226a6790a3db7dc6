//! A dense, row-major tensor on the host or the GPU.
//!
//! Activations are NHWC, conv kernels HWIO, dense kernels (in, out): the
//! layouts of Flax, so the tutorial's checkpoints load without transposes.
//!
//! The elements are shared, as candle's `Storage` is: a tensor is a shared
//! buffer, an offset into it and a shape. Cloning a tensor clones an `Arc`,
//! so the tape, the optimiser and the model state can all hold the same
//! parameter without copying it, and [`Tensor::view`] names part of a
//! buffer (a parameter's slot in the flat parameter buffer, as llm.c lays
//! parameters out). Mutation is copy-on-write:
//! [`Tensor::data_mut`] and [`Tensor::gpu_data_mut`] copy the elements only
//! when another tensor still shares them, and count each such copy in
//! [`crate::counters`], so a test can check that a training step makes none.

use crate::counters::{self, Event};
use crate::failure::OrFail;
use crate::float::Float;
use cudarc::driver::{CudaSlice, CudaView, CudaViewMut};
use rand::Rng;
use rand_distr::{Distribution, StandardNormal};
use std::any::Any;
use std::borrow::Cow;
use std::fmt;
use std::ops::Range;
use std::sync::{Arc, Weak};

/// A tensor: its shape and its elements, on the host or on the GPU.
///
/// `crate::backend` runs an op where its inputs live; element access
/// ([`Tensor::data`]) is for host tensors only, and a tensor changes device
/// only when asked ([`Tensor::to_host`], `Backend::place`). This module
/// imports neither backend: uploads and kernels live in `crate::cuda`.
pub struct Tensor<T> {
    shape: Vec<usize>,
    /// Where the elements start in the storage, in elements.
    offset: usize,
    storage: Storage<T>,
}

/// Where a tensor's elements live, shared between the tensors cloned from
/// one another.
pub enum Storage<T> {
    Host(Arc<Vec<T>>),
    /// Device memory of [`crate::cuda::gpu`], on its one stream.
    Gpu(Arc<CudaSlice<T>>),
}

/// A tensor's storage, watched without holding it ([`Tensor::storage_watch`]).
#[derive(Clone)]
pub struct StorageWatch {
    weak: Weak<dyn Any + Send + Sync>,
    len: usize,
}

impl StorageWatch {
    /// Whether some tensor still holds the storage.
    pub fn alive(&self) -> bool {
        self.weak.strong_count() > 0
    }

    /// The storage's identity (its address), while it is alive.
    pub fn id(&self) -> usize {
        self.weak.as_ptr() as *const () as usize
    }

    /// Elements in the storage.
    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }
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
            offset: self.offset,
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
            Storage::Host(_) => write!(f, "Tensor{:?}{:?}", self.shape, self.data()),
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

    /// The device memory of a GPU tensor (its part of the shared buffer).
    pub fn gpu_data(&self) -> Option<CudaView<'_, T>> {
        match &self.storage {
            Storage::Gpu(s) => Some(s.slice(self.range())),
            Storage::Host(_) => None,
        }
    }

    /// The elements' range in the storage.
    fn range(&self) -> Range<usize> {
        self.offset..self.offset + self.numel()
    }

    /// `shape`'s worth of this tensor's elements from element `offset` on,
    /// sharing them: a view, no copy.
    pub fn view(&self, offset: usize, shape: &[usize]) -> Self {
        let numel: usize = shape.iter().product();
        assert!(
            offset + numel <= self.numel(),
            "a view of {numel} elements at {offset} does not fit in {:?}",
            self.shape
        );
        Tensor {
            shape: shape.to_vec(),
            offset: self.offset + offset,
            storage: match &self.storage {
                Storage::Host(v) => Storage::Host(Arc::clone(v)),
                Storage::Gpu(s) => Storage::Gpu(Arc::clone(s)),
            },
        }
    }

    /// Whether `other` is a view of (some of) this tensor's elements: the
    /// same buffer, within this tensor's range.
    pub fn contains(&self, other: &Tensor<T>) -> bool {
        let same = match (&self.storage, &other.storage) {
            (Storage::Host(a), Storage::Host(b)) => Arc::ptr_eq(a, b),
            (Storage::Gpu(a), Storage::Gpu(b)) => Arc::ptr_eq(a, b),
            _ => false,
        };
        let (outer, inner) = (self.range(), other.range());
        same && outer.start <= inner.start && inner.end <= outer.end
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
            offset: 0,
            storage: Storage::Host(Arc::new(data)),
        }
    }

    /// A weak handle on this tensor's storage (all of it, not just a view's
    /// part), which tells whether any tensor still holds it: for planning
    /// buffer reuse from the outside (`crate::arena`).
    pub fn storage_watch(&self) -> StorageWatch
    where
        T: Send + Sync + 'static,
    {
        let (weak, len): (Weak<dyn Any + Send + Sync>, usize) = match &self.storage {
            Storage::Host(v) => (Arc::downgrade(v) as Weak<dyn Any + Send + Sync>, v.len()),
            Storage::Gpu(s) => (Arc::downgrade(s) as Weak<dyn Any + Send + Sync>, s.len()),
        };
        StorageWatch { weak, len }
    }

    /// A tensor in GPU memory holding `shape`'s elements.
    pub fn from_gpu(shape: &[usize], data: CudaSlice<T>) -> Self {
        Self::from_shared_gpu(shape, Arc::new(data))
    }

    /// A tensor of device memory that others may share (the step arena
    /// keeps a handle to the buffers it lends).
    pub fn from_shared_gpu(shape: &[usize], data: Arc<CudaSlice<T>>) -> Self {
        assert_eq!(
            shape.iter().product::<usize>(),
            data.len(),
            "shape {shape:?} vs GPU buffer"
        );
        Tensor {
            shape: shape.to_vec(),
            offset: 0,
            storage: Storage::Gpu(data),
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
            Storage::Host(v) => Cow::Borrowed(&v[self.range()]),
            // The slice's own stream: the GPU's one stream (`cuda::Gpu`).
            Storage::Gpu(s) => {
                counters::add(Event::HostSync, 1);
                let bytes = self.numel() * std::mem::size_of::<T>();
                let view = s.slice(self.range());
                let data = s.stream().clone_dtoh(&view);
                Cow::Owned(data.or_fail(|| format!("copying {bytes} bytes to the host")))
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
            Storage::Host(v) => &v[self.range()],
            Storage::Gpu(_) => panic!("{}", ON_GPU),
        }
    }

    /// The elements of a host tensor, to change in place: copied first
    /// (and counted) if another tensor shares the buffer.
    pub fn data_mut(&mut self) -> &mut [T] {
        let mut range = self.range();
        let Storage::Host(v) = &mut self.storage else {
            panic!("{}", ON_GPU)
        };
        if Arc::get_mut(v).is_none() {
            counters::add(Event::HostCopy, 1);
            *v = Arc::new(v[range.clone()].to_vec());
            (self.offset, range) = (0, 0..range.len());
        }
        &mut Arc::get_mut(v).expect("unshared just above")[range]
    }

    /// The device memory of a GPU tensor, to write in place: copied first
    /// on the device (and counted) if another tensor shares the buffer.
    pub fn gpu_data_mut(&mut self) -> Option<CudaViewMut<'_, T>> {
        let mut range = self.range();
        let Storage::Gpu(s) = &mut self.storage else {
            return None;
        };
        if Arc::get_mut(s).is_none() {
            counters::add(Event::DeviceCopy, 1);
            let bytes = range.len() * std::mem::size_of::<T>();
            let copy = s.stream().clone_dtod(&s.slice(range.clone()));
            *s = Arc::new(copy.or_fail(|| format!("copying a shared {bytes}-byte buffer on the GPU")));
            (self.offset, range) = (0, 0..range.len());
        }
        Some(Arc::get_mut(s).expect("unshared just above").slice_mut(range))
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
            offset: self.offset,
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_view_shares_its_part_and_copies_only_it_on_write() {
        let flat = Tensor::<f64>::new(&[6], vec![0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
        let mut view = flat.view(2, &[2, 2]);
        assert_eq!(view.data(), [2.0, 3.0, 4.0, 5.0]);
        assert!(flat.contains(&view) && !view.contains(&flat));
        assert_eq!(view.view(1, &[2]).data(), [3.0, 4.0]);
        assert!(!flat.contains(&Tensor::new(&[2], vec![2.0, 3.0])), "another buffer");
        // Shared: the write goes to a copy of the view's four elements.
        view.data_mut()[0] = 9.0;
        assert_eq!(view.data(), [9.0, 3.0, 4.0, 5.0]);
        assert_eq!(flat.data(), [0.0, 1.0, 2.0, 3.0, 4.0, 5.0]);
        assert!(!flat.contains(&view));
        let reshaped = flat.view(3, &[3]).reshape(&[3, 1]);
        assert_eq!(reshaped.data(), [3.0, 4.0, 5.0]);
        assert_eq!(reshaped.cast::<f32>().data(), [3.0, 4.0, 5.0]);
    }

    #[test]
    #[should_panic(expected = "does not fit")]
    fn a_view_stays_inside() {
        Tensor::<f32>::zeros(&[4]).view(2, &[3]);
    }
}
