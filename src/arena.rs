//! The training step's buffer arena: every buffer a step asks for is
//! planned on the first step and reused by every later one, so a step after
//! the first allocates nothing, and each step's buffers sit at the same
//! addresses as the last one's (which a captured CUDA graph needs).
//!
//! The plan is the first step itself. A request names a [`Key`] (element
//! type and length); the arena hands out the first buffer of that key that
//! nothing holds any more, and makes a new one only when every buffer of
//! the key is in use. A step asks for the same keys in the same order as
//! the step before it and releases everything by its end, so from the
//! second step on every request finds a free buffer: a step's buffers are
//! made once, during the first step, and reused wherever lifetimes allow
//! (an activation's buffer serves a gradient of the same size once the
//! activation is dropped). Choosing the first free buffer in the order they
//! were made keeps the choice, and so the addresses, the same every step.
//!
//! Whether a buffer is in use is the buffer's to say ([`Buffer::in_use`]):
//! on the GPU a buffer is shared storage, free when only the arena holds
//! it (`cuda::Gpu::alloc`). The arena knows nothing else of the GPU, so the
//! planning is tested without one (`tests/arena.rs`, over each network's
//! training step on the CPU).
//!
//! Sealed ([`Arena::seal`]), a request that would need a new buffer is an
//! error: the capture-safety mode, in which any allocation after the first
//! step fails loudly instead of silently allocating.

use std::collections::HashMap;

/// What a buffer is for the arena: its element type and length.
#[derive(Clone, Copy, Debug, PartialEq, Eq, Hash)]
pub struct Key {
    /// The element type's name (`f32`, `u32`, ...).
    pub element: &'static str,
    pub len: usize,
    /// Bytes per element.
    pub element_bytes: usize,
}

impl Key {
    pub fn of<E>(element: &'static str, len: usize) -> Self {
        Key {
            element,
            len,
            element_bytes: std::mem::size_of::<E>(),
        }
    }

    pub fn bytes(&self) -> usize {
        self.len * self.element_bytes
    }
}

/// A buffer the arena can lend: it tells whether someone still holds it.
pub trait Buffer {
    fn in_use(&self) -> bool;
}

/// Requests and new buffers over a stretch of steps ([`Arena::take_counts`]).
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct Counts {
    pub requests: u64,
    pub new_buffers: u64,
}

/// A sealed arena was asked for a buffer it has no free one of.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Unplanned(pub Key);

impl std::fmt::Display for Unplanned {
    fn fmt(&self, f: &mut std::fmt::Formatter) -> std::fmt::Result {
        write!(
            f,
            "a step after the first asked for a new buffer ({} x {}) that the first step did not plan",
            self.0.len, self.0.element
        )
    }
}

/// The buffers, by key, in the order they were made.
pub struct Arena<B> {
    buffers: HashMap<Key, Vec<B>>,
    counts: Counts,
    sealed: bool,
}

impl<B> Default for Arena<B> {
    fn default() -> Self {
        Arena {
            buffers: HashMap::new(),
            counts: Counts::default(),
            sealed: false,
        }
    }
}

impl<B: Buffer> Arena<B> {
    /// The first free buffer of `key`, else a new one from `make` (an error
    /// when sealed).
    pub fn lend(&mut self, key: Key, make: impl FnOnce() -> B) -> Result<&mut B, Unplanned> {
        self.counts.requests += 1;
        let buffers = self.buffers.entry(key).or_default();
        match buffers.iter().position(|b| !b.in_use()) {
            Some(i) => Ok(&mut buffers[i]),
            None if self.sealed => Err(Unplanned(key)),
            None => {
                self.counts.new_buffers += 1;
                buffers.push(make());
                Ok(buffers.last_mut().expect("just pushed"))
            }
        }
    }

    /// The counts since the last call.
    pub fn take_counts(&mut self) -> Counts {
        std::mem::take(&mut self.counts)
    }

    /// While sealed, a request that needs a new buffer fails.
    pub fn seal(&mut self, sealed: bool) {
        self.sealed = sealed;
    }

    /// Bytes of every buffer made.
    pub fn bytes(&self) -> usize {
        self.buffers.iter().map(|(k, v)| k.bytes() * v.len()).sum()
    }

    /// Buffers made.
    pub fn len(&self) -> usize {
        self.buffers.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::rc::Rc;

    /// A buffer held by whoever holds a clone of its `Rc`.
    #[derive(Clone, Default)]
    struct Held(Rc<()>);

    impl Buffer for Held {
        fn in_use(&self) -> bool {
            Rc::strong_count(&self.0) > 1
        }
    }

    fn f32s(len: usize) -> Key {
        Key::of::<f32>("f32", len)
    }

    /// A step: `a` lives through it, `b` is dropped before `c` asks for
    /// the same size, `d` is another size.
    fn step(arena: &mut Arena<Held>) -> Vec<*const ()> {
        let mut lend = |len| arena.lend(f32s(len), Held::default).unwrap().clone();
        let a = lend(8);
        let b = lend(4);
        let b_addr = Rc::as_ptr(&b.0);
        drop(b);
        let c = lend(4);
        let d = lend(2);
        vec![Rc::as_ptr(&a.0), b_addr, Rc::as_ptr(&c.0), Rc::as_ptr(&d.0)]
    }

    #[test]
    fn the_second_step_reuses_the_first_steps_buffers() {
        let mut arena = Arena::default();
        let first = step(&mut arena);
        assert_eq!(
            arena.take_counts(),
            Counts {
                requests: 4,
                new_buffers: 3
            }
        );
        // `c` took the buffer `b` had released.
        assert_eq!(first[1], first[2]);
        assert_eq!(arena.len(), 3);
        assert_eq!(arena.bytes(), (8 + 4 + 2) * 4);
        arena.seal(true);
        let second = step(&mut arena);
        assert_eq!(
            arena.take_counts(),
            Counts {
                requests: 4,
                new_buffers: 0
            }
        );
        assert_eq!(first, second, "the same buffers, in the same roles");
    }

    #[test]
    fn a_sealed_arena_refuses_a_new_buffer() {
        let mut arena = Arena::default();
        let held = arena.lend(f32s(4), Held::default).unwrap().clone();
        arena.seal(true);
        let err = arena.lend(f32s(4), Held::default).err();
        assert_eq!(err, Some(Unplanned(f32s(4))));
        assert!(err.unwrap().to_string().contains("4 x f32"));
        drop(held);
        assert!(arena.lend(f32s(4), Held::default).is_ok());
    }
}
