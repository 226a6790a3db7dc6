//! CUDA graphs: a stretch of the stream's work (kernel launches, memsets,
//! device copies) captured once and replayed as one launch, which costs the
//! host one driver call instead of one per kernel (a ResNet step is ~200
//! launches at ~4 us each eagerly).
//!
//! A replay repeats the captured work on the captured addresses, so what is
//! captured must find its inputs and leave its outputs at the same places
//! every time: the training step's inputs sit in fixed buffers, its values
//! that change from step to step (learning rate, Adam's count, the epoch's
//! halt word) in device memory, and every buffer it allocates comes from the
//! step arena (`crate::arena`), which lends the same buffers in the same
//! roles every step. The arena is sealed while capturing: a buffer it did
//! not plan would be memory the graph cannot rely on. Waiting for the GPU
//! during a capture is refused by the driver, which makes a capture the
//! strictest check that a step never waits.

use super::Gpu;
use crate::counters::{self, Event};
use crate::failure::{panic_message, OrFail};
use cudarc::driver::{sys, CudaGraph};
use std::panic::{self, AssertUnwindSafe};

/// Captured work, replayed by [`Gpu::replay`].
pub struct Graph(CudaGraph);

/// Ends a capture that did not finish (its work unwound), so the stream
/// runs eagerly again, and unseals the arena.
struct Capturing<'a> {
    gpu: &'a Gpu,
    open: bool,
}

impl Capturing<'_> {
    fn end(&mut self) -> Result<Option<CudaGraph>, String> {
        self.open = false;
        self.gpu.seal_arena(false);
        let flags = sys::CUgraphInstantiate_flags(0);
        self.gpu.stream.end_capture(flags).map_err(|e| format!("{e:?}"))
    }
}

impl Drop for Capturing<'_> {
    fn drop(&mut self) {
        if self.open {
            // The capture already failed: its graph, if any, is dropped.
            let _ = self.end();
        }
    }
}

impl Gpu {
    /// Captures the stream work `f` enqueues into a graph instead of running
    /// it. On an error (`f` unwound, needed an unplanned buffer, waited for
    /// the GPU, or the driver refused the graph) none of `f`'s GPU work ran,
    /// and the caller may run `f` again eagerly; the error says why.
    pub fn capture<R>(&self, f: impl FnOnce() -> R) -> Result<(R, Graph), String> {
        let mode = sys::CUstreamCaptureMode::CU_STREAM_CAPTURE_MODE_THREAD_LOCAL;
        self.stream
            .begin_capture(mode)
            .map_err(|e| format!("the driver refused to capture: {e:?}"))?;
        self.seal_arena(true);
        let mut capturing = Capturing { gpu: self, open: true };
        let result = panic::catch_unwind(AssertUnwindSafe(f))
            .map_err(|payload| panic_message(&*payload).unwrap_or_else(|| "the captured step failed".into()));
        let graph = capturing.end();
        let result = result?;
        match graph {
            Ok(Some(graph)) => Ok((result, Graph(graph))),
            Ok(None) => Err("the capture recorded nothing".into()),
            Err(e) => Err(format!("the driver could not make the graph: {e}")),
        }
    }

    /// Runs a captured graph once, after the work already on the stream.
    pub fn replay(&self, graph: &Graph) {
        counters::add(Event::KernelLaunch, 1);
        graph
            .0
            .launch()
            .or_fail(|| "replaying the training step's CUDA graph".into());
    }
}
