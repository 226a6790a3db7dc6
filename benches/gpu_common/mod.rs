//! What the GPU criterion benches (`gpu_conv`, `gpu_ops`) share: the GPU,
//! or one line saying why there is none (the bench then exits 0, so
//! `cargo bench` passes on a machine without one), and criterion's short
//! settings: a GPU launch takes microseconds, so 10 samples of 60 ms each
//! are plenty, and hundreds of ids stay within a GPU session.

use cifar_kern::cuda::Gpu;
use criterion::Criterion;
use std::time::Duration;

/// The GPU and a criterion configured for it, or None (said on stdout).
pub fn gpu_and_criterion(bench: &str) -> Option<(&'static Gpu, Criterion)> {
    let gpu = match Gpu::global() {
        Ok(gpu) => gpu,
        Err(why) => {
            println!("{bench}: skipped, no usable GPU ({why})");
            return None;
        }
    };
    let criterion = Criterion::default()
        .sample_size(10)
        .warm_up_time(Duration::from_millis(20))
        .measurement_time(Duration::from_millis(60))
        .nresamples(1000)
        .without_plots()
        .configure_from_args();
    Some((gpu, criterion))
}
