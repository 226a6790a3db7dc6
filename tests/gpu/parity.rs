//! Helpers shared by the `gpu_*` parity tests of the batch-norm, pool,
//! concat and reduce families: random inputs, the parity bound against the
//! CPU reference, and bit-for-bit comparisons for the rerun checks.
// Each test crate includes this module and uses only some of it.
#![allow(dead_code)]

use cifar_kern::{Float, Tensor};
use rand::seq::SliceRandom;
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// The batch size the networks train with.
pub const BATCH: usize = 128;

pub fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

pub fn randn(shape: &[usize], seed: u64) -> Tensor<f64> {
    Tensor::randn(shape, 1.0, &mut rng(seed))
}

/// Pairwise distinct values in [-1, 1), in random order: no max-pool ties.
pub fn distinct(shape: &[usize], seed: u64) -> Tensor<f64> {
    let n: usize = shape.iter().product();
    let mut ranks: Vec<usize> = (0..n).collect();
    ranks.shuffle(&mut rng(seed));
    let data = ranks.into_iter().map(|r| 2.0 * r as f64 / n as f64 - 1.0).collect();
    Tensor::new(shape, data)
}

/// Within `crate::util::parity::<T>()`: 1e-10 in f64 (its comment says
/// why; batch norm's statistics and dscale/dbias, at up to 131,072 rows, are
/// the longest sums here), 1e-5 in f32.
pub fn assert_close<T: Float>(gpu: &Tensor<T>, cpu: &Tensor<T>, what: &str) {
    let err = gpu.rel_error(cpu, 1e-30);
    let bound = crate::util::parity::<T>();
    assert!(err <= bound, "{what}: relative error {err:e}, bound {bound:e}");
}

/// Same shape and the same bits in every element (NaNs included).
pub fn assert_same_bits(a: &Tensor<f64>, b: &Tensor<f64>, what: &str) {
    assert_eq!(a.shape(), b.shape(), "{what}: shapes");
    let differing = a
        .data()
        .iter()
        .zip(b.data())
        .filter(|(x, y)| x.to_bits() != y.to_bits())
        .count();
    assert_eq!(
        differing,
        0,
        "{what}: {differing} of {} elements differ in their bits",
        a.numel()
    );
}
