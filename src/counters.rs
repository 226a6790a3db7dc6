//! Process-wide counts of the runtime's costly events: tensor copies that
//! copy-on-write had to make, and on the GPU allocations, host
//! synchronisations and kernel launches (issue 10).
//!
//! Tests take a [`snapshot`] before and after some work and assert on the
//! difference ([`Counts::since`]), e.g. that a training step copies neither
//! the parameters nor the state. The counts are process-wide (relaxed
//! atomics, cheap enough to stay on in release builds), so such a test must
//! run alone in its test binary: parallel tests would add their own events.
//!
//! This module imports nothing of the crate, so every layer can count.

use std::sync::atomic::{AtomicU64, Ordering};

/// What is counted.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub enum Event {
    /// A host tensor's elements copied because a shared buffer was mutated.
    HostCopy,
    /// A device-to-device copy: copy-on-write's for a GPU tensor, or an
    /// explicit one (`cuda::Gpu::copy`).
    DeviceCopy,
    /// A buffer allocated by `cuda::Gpu` (allocations and uploads).
    DeviceAllocation,
    /// A wait for the GPU: a download or an explicit synchronisation.
    HostSync,
    /// A kernel launched by `cuda::Gpu::run`.
    KernelLaunch,
}

const EVENTS: usize = 5;

static COUNTS: [AtomicU64; EVENTS] = [const { AtomicU64::new(0) }; EVENTS];

/// Records `n` occurrences of `event`.
pub fn add(event: Event, n: u64) {
    COUNTS[event as usize].fetch_add(n, Ordering::Relaxed);
}

/// The counts at one moment (or, from [`Counts::since`], between two).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts([u64; EVENTS]);

impl Counts {
    pub fn get(&self, event: Event) -> u64 {
        self.0[event as usize]
    }

    /// The events between `earlier` and this snapshot.
    pub fn since(&self, earlier: &Counts) -> Counts {
        Counts(std::array::from_fn(|i| self.0[i] - earlier.0[i]))
    }
}

/// The counts so far.
pub fn snapshot() -> Counts {
    Counts(std::array::from_fn(|i| COUNTS[i].load(Ordering::Relaxed)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn since_counts_the_events_in_between() {
        let before = snapshot();
        add(Event::KernelLaunch, 3);
        let diff = snapshot().since(&before);
        // Other unit tests run in parallel and may count their own events.
        assert!(diff.get(Event::KernelLaunch) >= 3);
    }
}
