//! A dense, row-major tensor on the host.
//!
//! Activations are NHWC, conv kernels HWIO, dense kernels (in, out): the
//! layouts of Flax, so the tutorial's checkpoints load without transposes.

use crate::float::Float;
use rand::Rng;
use rand_distr::{Distribution, StandardNormal};

#[derive(Clone, Debug, PartialEq)]
pub struct Tensor<T> {
    shape: Vec<usize>,
    data: Vec<T>,
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
            data,
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

    /// Uniform entries in `[lo, hi)`.
    pub fn uniform(shape: &[usize], lo: f64, hi: f64, rng: &mut impl Rng) -> Self {
        let n = shape.iter().product();
        let data = (0..n).map(|_| T::of(rng.random_range(lo..hi))).collect();
        Self::new(shape, data)
    }

    pub fn shape(&self) -> &[usize] {
        &self.shape
    }
    pub fn numel(&self) -> usize {
        self.data.len()
    }
    pub fn data(&self) -> &[T] {
        &self.data
    }
    pub fn data_mut(&mut self) -> &mut [T] {
        &mut self.data
    }
    pub fn into_data(self) -> Vec<T> {
        self.data
    }

    /// The only element of a one-element tensor.
    pub fn item(&self) -> T {
        assert_eq!(self.numel(), 1, "item() of a tensor of shape {:?}", self.shape);
        self.data[0]
    }

    /// The same elements under another shape with as many elements.
    pub fn reshape(self, shape: &[usize]) -> Self {
        Self::new(shape, self.data)
    }

    /// Element-wise conversion to another float type.
    pub fn cast<U: Float>(&self) -> Tensor<U> {
        Tensor::new(&self.shape, self.data.iter().map(|&v| U::of(v.f64())).collect())
    }

    /// `self += other`, element-wise.
    pub fn add_assign(&mut self, other: &Tensor<T>) {
        assert_eq!(self.shape, other.shape, "add_assign of mismatched shapes");
        for (a, &b) in self.data.iter_mut().zip(&other.data) {
            *a += b;
        }
    }

    /// Euclidean norm, accumulated in f64.
    pub fn norm(&self) -> f64 {
        self.data.iter().map(|v| v.f64() * v.f64()).sum::<f64>().sqrt()
    }

    /// `||self - reference|| / max(||reference||, floor)`: the norm-wise
    /// relative error the parity and fixture tests use.
    pub fn rel_error(&self, reference: &Tensor<T>, floor: f64) -> f64 {
        assert_eq!(self.shape, reference.shape, "rel_error of mismatched shapes");
        let diff: f64 = self
            .data
            .iter()
            .zip(&reference.data)
            .map(|(a, b)| (a.f64() - b.f64()).powi(2))
            .sum::<f64>()
            .sqrt();
        diff / reference.norm().max(floor)
    }
}
