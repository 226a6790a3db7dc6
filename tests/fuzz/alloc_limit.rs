//! The fuzz binary's allocator: the system one, refusing any single
//! allocation above [`LIMIT`].
//!
//! A parser that trusts a length field (a header's claimed size, a msgpack
//! string length, an image's width) allocates what the field says, not what
//! the file holds. The seed files are a few kilobytes and their mutants at
//! most a few megabytes, so no honest parse of them needs more than a few
//! megabytes at once; the largest allocation a parser is allowed on
//! purpose is the image decoder's, capped at 256 MiB by `read_image`'s
//! limits. Anything above 256 MiB is therefore sized by an unchecked
//! length. The request is refused (null), which Rust code answers with an
//! abort; so the culprit is printed first, from a stack buffer (printing
//! through `std` could allocate), and recorded for the harness in case the
//! code handled the failure itself.

use std::alloc::{GlobalAlloc, Layout, System};
use std::cell::Cell;
use std::fmt::Write;

/// The largest single allocation allowed: 256 MiB (see the module comment).
pub const LIMIT: usize = 256 << 20;

thread_local! {
    /// The execution running on this thread: target, seed, iteration.
    static EXECUTION: Cell<Option<(&'static str, u64, u64)>> = const { Cell::new(None) };
    /// The size of the first oversized request during that execution.
    static OVERSIZED: Cell<Option<usize>> = const { Cell::new(None) };
}

/// Marks the start of an execution on this thread.
pub fn enter(target: &'static str, seed: u64, iteration: u64) {
    EXECUTION.set(Some((target, seed, iteration)));
    OVERSIZED.set(None);
}

/// Marks its end; returns the size of an oversized request it made, if any.
pub fn leave() -> Option<usize> {
    EXECUTION.set(None);
    OVERSIZED.take()
}

pub struct LimitedAlloc;

impl LimitedAlloc {
    /// Whether a request of `size` bytes may go on to the system allocator.
    fn allowed(size: usize) -> bool {
        if size <= LIMIT {
            return true;
        }
        // `try_with`: the thread-locals may be gone while a thread exits.
        let _ = OVERSIZED.try_with(|o| o.set(o.get().or(Some(size))));
        let execution = EXECUTION.try_with(Cell::get).ok().flatten();
        let mut message = StackText::default();
        let _ = match execution {
            Some((target, seed, iteration)) => writeln!(
                message,
                "fuzz_{target}: seed {seed}, iteration {iteration} asked for {size} bytes in one allocation \
                 (limit {LIMIT})"
            ),
            None => writeln!(
                message,
                "outside a fuzz execution: {size} bytes asked for in one allocation (limit {LIMIT})"
            ),
        };
        // SAFETY: writes initialised bytes from a live buffer to stderr.
        unsafe { libc::write(2, message.bytes.as_ptr().cast(), message.len) };
        false
    }
}

// SAFETY: every call is passed on to `System` unchanged, or refused with null
// as the `GlobalAlloc` contract allows.
unsafe impl GlobalAlloc for LimitedAlloc {
    unsafe fn alloc(&self, layout: Layout) -> *mut u8 {
        if Self::allowed(layout.size()) {
            System.alloc(layout)
        } else {
            std::ptr::null_mut()
        }
    }
    unsafe fn alloc_zeroed(&self, layout: Layout) -> *mut u8 {
        if Self::allowed(layout.size()) {
            System.alloc_zeroed(layout)
        } else {
            std::ptr::null_mut()
        }
    }
    unsafe fn realloc(&self, ptr: *mut u8, layout: Layout, new_size: usize) -> *mut u8 {
        if Self::allowed(new_size) {
            System.realloc(ptr, layout, new_size)
        } else {
            std::ptr::null_mut()
        }
    }
    unsafe fn dealloc(&self, ptr: *mut u8, layout: Layout) {
        System.dealloc(ptr, layout)
    }
}

/// A message built without allocating; what does not fit is cut off.
struct StackText {
    bytes: [u8; 256],
    len: usize,
}

impl Default for StackText {
    fn default() -> Self {
        StackText {
            bytes: [0; 256],
            len: 0,
        }
    }
}

impl Write for StackText {
    fn write_str(&mut self, s: &str) -> std::fmt::Result {
        let n = s.len().min(self.bytes.len() - self.len);
        self.bytes[self.len..self.len + n].copy_from_slice(&s.as_bytes()[..n]);
        self.len += n;
        Ok(())
    }
}
