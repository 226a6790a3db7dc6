//! The step arena's plan for each network, without a GPU: every tensor a
//! training step computes (each op's output, each gradient; the tape shows
//! them as they are computed) is lent a buffer by `cifar_kern::arena` as the
//! GPU lends them, free once no tensor holds it. The first step makes the
//! buffers; the second must ask for exactly as many and get every one from
//! the first step's, reusing memory within the step as lifetimes allow.
//!
//! What the GPU adds to these requests (its launchers' workspaces, the
//! batch statistics) follows the same rule; that it, too, allocates nothing
//! after the first step is checked on the GPU (`gpu_arena_*`, `bench`).

use cifar_kern::arena::{Arena, Buffer, Counts, Key};
use cifar_kern::backend::Backend;
use cifar_kern::models::{Ctx, ModelKind, ModelState};
use cifar_kern::tensor::StorageWatch;
use cifar_kern::{Tape, Tensor, Var};
use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;
use std::cell::RefCell;
use std::collections::HashMap;
use std::rc::Rc;

/// One planned buffer: the tensor storage now using it, if any.
#[derive(Default)]
struct Occupant(Option<StorageWatch>);

impl Buffer for Occupant {
    fn in_use(&self) -> bool {
        self.0.as_ref().is_some_and(StorageWatch::alive)
    }
}

/// The arena, fed the tensors a step computes.
#[derive(Default)]
struct Planner {
    arena: Arena<Occupant>,
    /// Storages that already have a buffer (a view or clone of a computed
    /// tensor, as add's backward returns, asks for none).
    placed: HashMap<usize, StorageWatch>,
    requested_bytes: usize,
}

impl Planner {
    fn observe(&mut self, t: &Tensor<f32>) {
        let watch = t.storage_watch();
        if self.placed.get(&watch.id()).is_some_and(StorageWatch::alive) {
            return;
        }
        let key = Key::of::<f32>("f32", watch.len());
        self.requested_bytes += key.bytes();
        let buffer = self
            .arena
            .lend(key, Occupant::default)
            .expect("the arena is not sealed");
        buffer.0 = Some(watch.clone());
        self.placed.insert(watch.id(), watch);
    }
}

/// One training step's forward, loss and backward on 2 random images.
fn step(kind: ModelKind, state: &mut ModelState<f32>, planner: &Rc<RefCell<Planner>>) {
    let seen = Rc::clone(planner);
    let tape = Tape::new().with_buffer_observer(Rc::new(move |t: &Tensor<f32>| seen.borrow_mut().observe(t)));
    let images = Tensor::<f32>::randn(&[2, 32, 32, 3], 1.0, &mut ChaCha8Rng::seed_from_u64(1));
    let labels = Backend::Cpu.labels(&[3, 7]);
    let mut ctx = Ctx::new(&tape, state, true);
    let logits = kind.forward(&mut ctx, &Var::constant(images));
    let running = ctx.into_running_update();
    let loss = tape.cross_entropy(&logits, &labels);
    let grads = tape.backward(&loss);
    drop((grads, running, loss, logits, tape));
}

#[test]
fn each_networks_second_step_requests_no_new_buffer() {
    for kind in ModelKind::ALL {
        let mut state = ModelState::<f32>::init(kind, 0);
        let planner = Rc::new(RefCell::new(Planner::default()));
        step(kind, &mut state, &planner);
        let (first, first_bytes) = {
            let mut p = planner.borrow_mut();
            (p.arena.take_counts(), std::mem::take(&mut p.requested_bytes))
        };
        assert!(
            first.new_buffers > 0 && first.new_buffers < first.requests,
            "{kind}: the first step should make buffers and reuse some: {first:?}"
        );
        planner.borrow_mut().arena.seal(true);
        step(kind, &mut state, &planner);
        let p = planner.borrow_mut().arena.take_counts();
        assert_eq!(
            p,
            Counts {
                requests: first.requests,
                new_buffers: 0
            },
            "{kind}: the second step"
        );
        let planned = planner.borrow().arena.bytes();
        assert!(
            planned < first_bytes,
            "{kind}: the plan holds {planned} bytes for {first_bytes} requested: no buffer was reused"
        );
        println!(
            "{kind}: {} requests, {} buffers, {:.1} of {:.1} MiB per image pair",
            first.requests,
            first.new_buffers,
            planned as f64 / (1 << 20) as f64,
            first_bytes as f64 / (1 << 20) as f64
        );
    }
}
