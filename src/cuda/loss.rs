//! Launchers for `kernels/loss.cu`: softmax cross-entropy (mean over the
//! batch), its backward and the count of correct predictions, mirroring
//! `ops::loss` with the labels on the device as u32 and the results on the
//! device (the loss a scalar tensor, the count a one-element buffer), so a
//! training step never waits on the host. The mean loss and the count are reduced by a single block of
//! [`REDUCE_THREADS`] threads in a fixed order: batches are small.

use super::{launch_1d, DeviceBuffer, DeviceFloat, Gpu, GpuTensor};
use cudarc::driver::{DeviceRepr, LaunchConfig};

/// The block size of the single-block reductions (`REDUCE_THREADS` in loss.cu).
const REDUCE_THREADS: u32 = 256;

/// `LossParams<T>` and `CorrectParams<T>` in loss.cu: logits, labels, the scalar output.
#[repr(C)]
struct ReduceParams {
    logits: u64,
    labels: u64,
    out: u64,
    n: u64,
    k: u64,
}
/// `LossBackwardParams<T>` in loss.cu.
#[repr(C)]
struct LossBackwardParams {
    logits: u64,
    labels: u64,
    dloss: u64,
    dlogits: u64,
    n: u64,
    k: u64,
}
// SAFETY: plain #[repr(C)] structs of u64, laid out as their C++ twins.
unsafe impl DeviceRepr for ReduceParams {}
unsafe impl DeviceRepr for LossBackwardParams {}

/// One block: the reductions' partition of rows over threads is fixed.
fn single_block() -> LaunchConfig {
    LaunchConfig {
        grid_dim: (1, 1, 1),
        block_dim: (REDUCE_THREADS, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// `(n, k)` of `logits`, checked against the labels.
fn dims<T: DeviceFloat>(logits: &GpuTensor<T>, labels: &DeviceBuffer<u32>) -> (usize, usize) {
    let &[n, k] = logits.shape() else {
        panic!("logits must be [n, classes], got {:?}", logits.shape())
    };
    assert_eq!(labels.len(), n, "{n} logits rows but {} labels", labels.len());
    (n, k)
}

/// Launches the single-block reduction `name` of loss.cu into the
/// one-element output at address `out`.
fn reduce<T: DeviceFloat>(gpu: &Gpu, name: &str, logits: &GpuTensor<T>, labels: &DeviceBuffer<u32>, out: u64) {
    let (n, k) = dims(logits, labels);
    let params = ReduceParams {
        logits: gpu.ptr(logits),
        labels: gpu.buffer_ptr(labels),
        out,
        n: n as u64,
        k: k as u64,
    };
    // SAFETY: logits hold n * k elements, labels n, out one; the kernel
    // expects exactly one block of REDUCE_THREADS threads.
    unsafe { gpu.launch(&gpu.function::<T>("loss", name), single_block(), params) };
}

/// Mean over the batch of `-log softmax(logits)[label]`, as a scalar; a label
/// out of range makes it NaN.
pub fn cross_entropy<T: DeviceFloat>(gpu: &Gpu, logits: &GpuTensor<T>, labels: &DeviceBuffer<u32>) -> GpuTensor<T> {
    let loss = gpu.alloc::<T>(&[]);
    reduce(gpu, "cross_entropy", logits, labels, gpu.ptr(&loss));
    loss
}

/// d loss / d logits, scaled by the scalar `dloss`: `(softmax - onehot) * dloss / n`.
pub fn cross_entropy_backward<T: DeviceFloat>(
    gpu: &Gpu,
    logits: &GpuTensor<T>,
    labels: &DeviceBuffer<u32>,
    dloss: &GpuTensor<T>,
) -> GpuTensor<T> {
    let (n, k) = dims(logits, labels);
    assert_eq!(
        dloss.numel(),
        1,
        "dloss must be a scalar, got shape {:?}",
        dloss.shape()
    );
    let dlogits = gpu.alloc::<T>(logits.shape());
    let params = LossBackwardParams {
        logits: gpu.ptr(logits),
        labels: gpu.buffer_ptr(labels),
        dloss: gpu.ptr(dloss),
        dlogits: gpu.ptr(&dlogits),
        n: n as u64,
        k: k as u64,
    };
    // SAFETY: logits and dlogits hold n * k elements, labels n, dloss one.
    unsafe {
        gpu.launch(
            &gpu.function::<T>("loss", "cross_entropy_backward"),
            launch_1d(n),
            params,
        )
    };
    dlogits
}

/// How many rows' largest logit (the first one on ties) is the label, in a
/// one-element buffer.
pub fn correct<T: DeviceFloat>(gpu: &Gpu, logits: &GpuTensor<T>, labels: &DeviceBuffer<u32>) -> DeviceBuffer<u32> {
    let count = gpu.upload_buffer(&[0u32]);
    reduce(gpu, "correct", logits, labels, gpu.buffer_ptr(&count));
    count
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameter_structs_match_the_kernels() {
        for suffix in ["f32", "f64"] {
            let bytes = |name: &str| crate::cuda::ptx_param_bytes("loss", &format!("{name}_{suffix}"));
            if let Some(loss) = bytes("cross_entropy") {
                assert_eq!(loss, std::mem::size_of::<ReduceParams>());
                assert_eq!(bytes("correct"), Some(std::mem::size_of::<ReduceParams>()));
                let backward = bytes("cross_entropy_backward");
                assert_eq!(backward, Some(std::mem::size_of::<LossBackwardParams>()));
            }
        }
    }
}
