//! Launchers for `kernels/loss.cu`: softmax cross-entropy (mean over the
//! batch), its backward, and a training step's addition to the epoch's
//! totals (loss and correct predictions, [`DeviceTotals`]), mirroring
//! `ops::loss` and `layers::loss::EpochTotals` with the labels on the device
//! as u32 and every result on the device, so a training step never waits on
//! the host. The mean loss and the count are reduced by a single block of
//! [`REDUCE_THREADS`] threads in a fixed order: batches are small.

use super::launch::{element_ptr, Launch};
use super::{launch_1d, DeviceBuffer, DeviceFloat, Gpu, GpuTensor};
use crate::failure::OrFail;
use crate::float::Float;
use crate::layers::loss::{EpochTotals, FIRST_BAD_STEP_WORD, WORDS};
use cudarc::driver::LaunchConfig;
use cudarc::driver::{CudaEvent, PinnedHostSlice};

/// The block size of the single-block reductions (`REDUCE_THREADS` in loss.cu).
const REDUCE_THREADS: u32 = 256;

crate::kernel_params! {
    /// `LossParams<T>` in loss.cu.
    pub struct LossParams {
        logits: u64,
        labels: u64,
        out: u64,
        n: u64,
        k: u64,
    }
}
crate::kernel_params! {
    /// `LossBackwardParams<T>` in loss.cu.
    pub struct LossBackwardParams {
        logits: u64,
        labels: u64,
        dloss: u64,
        dlogits: u64,
        n: u64,
        k: u64,
    }
}
crate::kernel_params! {
    /// `AccumulateParams<T>` in loss.cu.
    pub struct AccumulateParams {
        logits: u64,
        labels: u64,
        loss: u64,
        totals: u64,
        n: u64,
        k: u64,
    }
}

/// One block: the reductions' partition of rows over threads is fixed.
fn single_block() -> LaunchConfig {
    LaunchConfig {
        grid_dim: (1, 1, 1),
        block_dim: (REDUCE_THREADS, 1, 1),
        shared_mem_bytes: 0,
    }
}

/// The mean cross-entropy of `n` rows of `k` classes into the scalar `loss`
/// (one T): `logits` holds `n * k` elements of T, `labels` `n` u32.
pub fn cross_entropy_plan<T: Float>(logits: u64, labels: u64, loss: u64, n: usize, k: usize) -> Vec<Launch> {
    let params = LossParams {
        logits,
        labels,
        out: loss,
        n: n as u64,
        k: k as u64,
    };
    vec![Launch::new::<T, _>("loss", "cross_entropy", single_block(), params)]
}

/// d loss / d logits into `dlogits` (`n * k` elements of T), for the
/// `logits` and `labels` of [`cross_entropy_plan`] and the scalar `dloss` (one T).
pub fn cross_entropy_backward_plan<T: Float>(
    logits: u64,
    labels: u64,
    dloss: u64,
    dlogits: u64,
    n: usize,
    k: usize,
) -> Vec<Launch> {
    let params = LossBackwardParams {
        logits,
        labels,
        dloss,
        dlogits,
        n: n as u64,
        k: k as u64,
    };
    vec![Launch::new::<T, _>(
        "loss",
        "cross_entropy_backward",
        launch_1d(n),
        params,
    )]
}

/// Adds a training step to the epoch's `totals` (one `EpochTotals`): the
/// count of rows whose largest logit is the label and the scalar `loss`
/// (one T), for the `logits` and `labels` of [`cross_entropy_plan`].
pub fn accumulate_step_plan<T: Float>(
    logits: u64,
    labels: u64,
    loss: u64,
    totals: u64,
    n: usize,
    k: usize,
) -> Vec<Launch> {
    let params = AccumulateParams {
        logits,
        labels,
        loss,
        totals,
        n: n as u64,
        k: k as u64,
    };
    vec![Launch::new::<T, _>("loss", "accumulate_step", single_block(), params)]
}

/// `(n, k)` of `logits`, checked against the labels.
fn dims<T: DeviceFloat>(logits: &GpuTensor<T>, labels: &DeviceBuffer<u32>) -> (usize, usize) {
    let &[n, k] = logits.shape() else {
        panic!("logits must be [n, classes], got {:?}", logits.shape())
    };
    assert_eq!(labels.len(), n, "{n} logits rows but {} labels", labels.len());
    (n, k)
}

/// Mean over the batch of `-log softmax(logits)[label]`, as a scalar; a label
/// out of range makes it NaN.
pub fn cross_entropy<T: DeviceFloat>(gpu: &Gpu, logits: &GpuTensor<T>, labels: &DeviceBuffer<u32>) -> GpuTensor<T> {
    let (n, k) = dims(logits, labels);
    let loss = gpu.alloc::<T>(&[]);
    let plan = cross_entropy_plan::<T>(gpu.ptr(logits), gpu.buffer_ptr(labels), gpu.ptr(&loss), n, k);
    // SAFETY: logits hold n * k elements, labels n, loss one.
    unsafe { gpu.run(&plan) };
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
    let plan = cross_entropy_backward_plan::<T>(
        gpu.ptr(logits),
        gpu.buffer_ptr(labels),
        gpu.ptr(dloss),
        gpu.ptr(&dlogits),
        n,
        k,
    );
    // SAFETY: logits and dlogits hold n * k elements, labels n, dloss one.
    unsafe { gpu.run(&plan) };
    dlogits
}

/// An epoch's [`EpochTotals`] in device memory, where every step adds to
/// them without the host waiting; read once per epoch, and glanced at by
/// the progress display through an asynchronous copy that is only looked
/// at once it has arrived.
pub struct DeviceTotals {
    words: DeviceBuffer<u64>,
    /// Where a glance's copy lands, page-locked so the copy is asynchronous.
    glimpse: PinnedHostSlice<u64>,
    /// Recorded after the glance's copy; None when no copy is on its way.
    glimpse_sent: Option<CudaEvent>,
}

impl DeviceTotals {
    /// Zero totals.
    pub fn new(gpu: &Gpu) -> Self {
        let mut totals = DeviceTotals {
            words: gpu.alloc_buffer(WORDS),
            glimpse: gpu.alloc_pinned(WORDS),
            glimpse_sent: None,
        };
        totals.reset(gpu);
        totals
    }

    /// Back to zero, for the next epoch (enqueued; no wait).
    pub fn reset(&mut self, gpu: &Gpu) {
        gpu.zero_buffer(&mut self.words);
        // A glance still on its way shows the old epoch: forget it.
        self.glimpse_sent = None;
    }

    /// The totals as of a recent step, without waiting: those of the copy
    /// the previous glance sent, if it has arrived; each glance that finds
    /// no copy on its way sends one.
    pub fn glance(&mut self, gpu: &Gpu) -> Option<EpochTotals> {
        match &self.glimpse_sent {
            Some(sent) if sent.is_complete() => {
                self.glimpse_sent = None;
                // Complete: as_slice's own wait on the copy returns at once.
                let words = self.glimpse.as_slice().or_fail(|| "reading the epoch totals".into());
                Some(EpochTotals::from_words(
                    words.try_into().expect("EpochTotals has WORDS words"),
                ))
            }
            Some(_) => None,
            None => {
                self.glimpse_sent = Some(gpu.download_async(&self.words, &mut self.glimpse));
                None
            }
        }
    }

    /// The totals so far. Waits for the GPU.
    pub fn read(&self, gpu: &Gpu) -> EpochTotals {
        let words = gpu.download_buffer(&self.words);
        EpochTotals::from_words(words.try_into().expect("EpochTotals has WORDS words"))
    }

    /// The address of the word that is set once a loss of the epoch was not
    /// finite: the optimiser and the running-statistics update read it.
    pub fn halted(&self, gpu: &Gpu) -> u64 {
        element_ptr::<u64>(gpu.buffer_ptr(&self.words), FIRST_BAD_STEP_WORD)
    }
}

/// Adds a training step's correct predictions and its scalar `loss` to
/// `totals`; see `accumulate_step` in loss.cu.
pub fn accumulate_step<T: DeviceFloat>(
    gpu: &Gpu,
    logits: &GpuTensor<T>,
    labels: &DeviceBuffer<u32>,
    loss: &GpuTensor<T>,
    totals: &mut DeviceTotals,
) {
    let (n, k) = dims(logits, labels);
    assert_eq!(
        loss.numel(),
        1,
        "the loss must be a scalar, got shape {:?}",
        loss.shape()
    );
    let plan = accumulate_step_plan::<T>(
        gpu.ptr(logits),
        gpu.buffer_ptr(labels),
        gpu.ptr(loss),
        gpu.buffer_ptr(&totals.words),
        n,
        k,
    );
    // SAFETY: logits hold n * k elements, labels n, loss one, totals WORDS.
    unsafe { gpu.run(&plan) };
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parameter_structs_match_the_kernels() {
        for suffix in ["f32", "f64"] {
            let bytes = |name: &str| crate::cuda::ptx_param_bytes("loss", &format!("{name}_{suffix}"));
            if let Some(loss) = bytes("cross_entropy") {
                assert_eq!(loss, std::mem::size_of::<LossParams>());
                let accumulate = bytes("accumulate_step");
                assert_eq!(accumulate, Some(std::mem::size_of::<AccumulateParams>()));
                let backward = bytes("cross_entropy_backward");
                assert_eq!(backward, Some(std::mem::size_of::<LossBackwardParams>()));
            }
        }
    }

    #[test]
    fn plans_match_the_kernels() {
        let mut plan = cross_entropy_plan::<f32>(1, 2, 3, 128, 10);
        plan.extend(cross_entropy_backward_plan::<f32>(1, 2, 3, 4, 128, 10));
        plan.extend(accumulate_step_plan::<f64>(1, 2, 3, 4, 128, 10));
        let kernels: Vec<_> = plan.iter().map(|l| l.kernel.as_str()).collect();
        assert_eq!(
            kernels,
            ["cross_entropy_f32", "cross_entropy_backward_f32", "accumulate_step_f64"]
        );
        assert_eq!(plan[2].cfg.block_dim, (REDUCE_THREADS, 1, 1));
        crate::cuda::launch::assert_plan_matches_ptx(&plan);
    }
}
