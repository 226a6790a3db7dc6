//! Failures of the GPU itself (out of memory, a launch the driver refuses,
//! a kernel's fault surfacing at a later call) as errors, not panics.
//!
//! The ops keep infallible signatures, as the CPU reference has them: a
//! failed driver call deep inside an op ends that op with [`fail`], which
//! unwinds with a [`GpuError`] as its payload through `resume_unwind`, so
//! no panic message is printed, to the nearest [`catch`]: the training
//! step (which names the batch size when memory ran out), and `main` for
//! everything else. Nothing is saved on the way out, so the checkpoints of
//! the last finished epoch stay as they were. Panics that are not GPU
//! failures (bugs) pass through `catch` untouched.
//!
//! This module sits below `tensor` and `cuda`, which both report through it.

use cudarc::driver::{sys::cudaError_enum, DriverError};
use std::fmt;
use std::panic::{self, AssertUnwindSafe};

/// A GPU failure: what we were doing, and what the driver said.
#[derive(Clone, Debug)]
pub struct GpuError {
    pub doing: String,
    pub cause: DriverError,
}

impl GpuError {
    pub fn is_out_of_memory(&self) -> bool {
        self.cause.0 == cudaError_enum::CUDA_ERROR_OUT_OF_MEMORY
    }
}

impl fmt::Display for GpuError {
    fn fmt(&self, f: &mut fmt::Formatter) -> fmt::Result {
        if self.is_out_of_memory() {
            write!(f, "out of GPU memory while {}", self.doing)
        } else {
            // The driver's code by name: asking the driver for its text
            // could fail as well.
            write!(f, "the GPU failed while {}: {:?}", self.doing, self.cause.0)
        }
    }
}

impl std::error::Error for GpuError {}

/// Ends the current GPU operation: unwinds to the nearest [`catch`] with
/// the error (`doing` says what failed, as in "allocating 4 MiB").
pub fn fail(doing: impl Into<String>, cause: DriverError) -> ! {
    let error = GpuError {
        doing: doing.into(),
        cause,
    };
    panic::resume_unwind(Box::new(error))
}

/// `result`'s value, or [`fail`] with `doing`.
pub trait OrFail<T> {
    fn or_fail(self, doing: impl FnOnce() -> String) -> T;
}

impl<T> OrFail<T> for Result<T, DriverError> {
    fn or_fail(self, doing: impl FnOnce() -> String) -> T {
        self.unwrap_or_else(|cause| fail(doing(), cause))
    }
}

/// Runs `f`; a GPU failure inside it becomes the error. Any other panic
/// continues as it was.
pub fn catch<R>(f: impl FnOnce() -> R) -> Result<R, GpuError> {
    // The state `f` may leave half-updated is only ever dropped or reported
    // after a failure, never saved.
    panic::catch_unwind(AssertUnwindSafe(f)).map_err(|payload| match payload.downcast::<GpuError>() {
        Ok(error) => *error,
        Err(other) => panic::resume_unwind(other),
    })
}

/// What an unwinding panic says: a GPU failure's error, or a panic's
/// message; None for any other payload.
pub fn panic_message(payload: &(dyn std::any::Any + Send)) -> Option<String> {
    payload
        .downcast_ref::<GpuError>()
        .map(ToString::to_string)
        .or_else(|| payload.downcast_ref::<String>().cloned())
        .or_else(|| payload.downcast_ref::<&str>().map(|s| s.to_string()))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn oom() -> DriverError {
        DriverError(cudaError_enum::CUDA_ERROR_OUT_OF_MEMORY)
    }

    #[test]
    fn a_failure_becomes_the_error_of_the_nearest_catch() {
        let err = catch(|| -> u32 { Err(oom()).or_fail(|| "allocating 4 MiB".into()) }).unwrap_err();
        assert!(err.is_out_of_memory());
        assert_eq!(err.to_string(), "out of GPU memory while allocating 4 MiB");
        let launch = DriverError(cudaError_enum::CUDA_ERROR_ILLEGAL_ADDRESS);
        let err = catch(|| fail("launching conv_forward_f32", launch)).unwrap_err();
        assert!(!err.is_out_of_memory());
        assert_eq!(
            err.to_string(),
            "the GPU failed while launching conv_forward_f32: CUDA_ERROR_ILLEGAL_ADDRESS"
        );
        assert_eq!(catch(|| 7).unwrap(), 7);
    }

    #[test]
    #[should_panic(expected = "a bug")]
    fn other_panics_pass_through() {
        let _ = catch(|| panic!("a bug"));
    }
}
