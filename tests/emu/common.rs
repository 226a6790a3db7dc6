//! What every family's cases share: emulator memory holding tensors, running
//! a plan, the seeds, and the comparisons.

pub use crate::memory::Emu;
use cifar_kern::{Float, Tensor};
use libtest_mimic::{Failed, Trial};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

/// Scheduling seeds each case runs under: each draws another order of
/// threads and blocks, and every one must give the same bits.
pub const SEEDS: [u64; 3] = [1, 2, 3];

/// The f64 bound: a float32 accumulation anywhere in an f64 path gives
/// errors near 1e-7, so it fails.
pub const F64_BOUND: f64 = 1e-10;
/// The f32 bound against the CPU op in f32: both round differently
/// (different summation orders, the CPU's blocked GEMM), never by more.
pub const F32_BOUND: f64 = 1e-5;

/// A case's name is `emu_<family>_<what>`; `run` returns an error message.
pub fn trial(name: String, run: impl FnOnce() -> Result<(), String> + Send + 'static) -> Trial {
    Trial::test(name, move || run().map_err(Failed::from))
}

pub fn rng(seed: u64) -> ChaCha8Rng {
    ChaCha8Rng::seed_from_u64(seed)
}

pub fn randn<T: Float>(shape: &[usize], seed: u64) -> Tensor<T> {
    Tensor::<f64>::randn(shape, 1.0, &mut rng(seed)).cast()
}

/// Runs `case` under every seed (each on fresh memory) and checks that all
/// seeds give the same bits; returns the first seed's outputs.
pub fn under_seeds<T: Float>(
    what: &str,
    case: impl Fn(u64) -> Result<Vec<Tensor<T>>, String>,
) -> Result<Vec<Tensor<T>>, String> {
    let first = case(SEEDS[0]).map_err(|e| format!("{what} (seed {}): {e}", SEEDS[0]))?;
    for &seed in &SEEDS[1..] {
        let again = case(seed).map_err(|e| format!("{what} (seed {seed}): {e}"))?;
        for (i, (a, b)) in first.iter().zip(&again).enumerate() {
            if bits(a) != bits(b) {
                return Err(format!(
                    "{what}: output {i} differs in its bits between seeds {} and {seed}: the result depends on the thread order",
                    SEEDS[0]
                ));
            }
        }
    }
    Ok(first)
}

fn bits<T: Float>(t: &Tensor<T>) -> Vec<u64> {
    t.data().iter().map(|v| v.f64().to_bits()).collect()
}

/// The bound for T: [`F64_BOUND`] or [`F32_BOUND`].
pub fn bound<T: Float>() -> f64 {
    if T::NAME == "f64" {
        F64_BOUND
    } else {
        F32_BOUND
    }
}

/// Norm-wise relative error at most `bound`, and no NaN the reference lacks.
pub fn close<T: Float>(emu: &Tensor<T>, cpu: &Tensor<T>, bound: f64, what: &str) -> Result<(), String> {
    if emu.shape() != cpu.shape() {
        return Err(format!("{what}: shape {:?}, expected {:?}", emu.shape(), cpu.shape()));
    }
    let nan = emu
        .data()
        .iter()
        .zip(cpu.data())
        .position(|(e, c)| e.f64().is_nan() != c.f64().is_nan());
    if let Some(i) = nan {
        return Err(format!(
            "{what}: element {i} is {} where the CPU op has {} (unwritten output is NaN)",
            emu.data()[i].f64(),
            cpu.data()[i].f64()
        ));
    }
    let err = emu.rel_error(cpu, 1e-300);
    if err <= bound {
        Ok(())
    } else {
        Err(format!(
            "{what}: relative error {err:e} against the CPU op, bound {bound:e}"
        ))
    }
}

/// The same bits as the CPU op, element for element.
pub fn same_bits<T: Float>(emu: &Tensor<T>, cpu: &Tensor<T>, what: &str) -> Result<(), String> {
    if emu.shape() != cpu.shape() {
        return Err(format!("{what}: shape {:?}, expected {:?}", emu.shape(), cpu.shape()));
    }
    match bits(emu).iter().zip(bits(cpu)).position(|(a, b)| *a != b) {
        None => Ok(()),
        Some(i) => Err(format!(
            "{what}: element {i} is {:e}, the CPU op gives {:e} (bit-exact expected)",
            emu.data()[i].f64(),
            cpu.data()[i].f64()
        )),
    }
}
