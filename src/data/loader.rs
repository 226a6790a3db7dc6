//! Batches for training (shuffled, augmented by worker threads) and for
//! evaluation (in order, normalised only).
//!
//! A training epoch is cut into whole batches of a shuffled order of the
//! training images (the last partial batch is dropped). Worker `w` of `n`
//! builds batches `w, w + n, w + 2n, ...` and hands them over through its own
//! bounded channel; the consumer takes batch `b` from worker `b % n`. So the
//! batches arrive in order with no reordering buffer, at most `n * prefetch`
//! of them wait in memory, and since every image draws its augmentation from
//! its own random stream (see `rng`), the batches do not depend on `n`. A
//! trainer that augments on the GPU takes only the cut
//! ([`TrainLoader::epoch_indices`]) and draws from the same streams.

use std::num::NonZeroUsize;
use std::panic;
use std::sync::mpsc::{sync_channel, Receiver};
use std::sync::Arc;
use std::thread::{self, JoinHandle};

use rand::seq::SliceRandom;

use super::rng::{image_rng, shuffle_rng};
use super::{normalize_batch, Augmentation, ImageSet, CHANNELS, IMAGE_BYTES, IMAGE_SIZE};
use crate::{Float, Tensor};

/// Images `[n, 32, 32, 3]` (normalised) and their labels.
#[derive(Clone, Debug, PartialEq)]
pub struct Batch<T: Float = f32> {
    pub images: Tensor<T>,
    pub labels: Vec<u32>,
}

#[derive(Clone, Debug)]
pub struct TrainOptions {
    pub batch_size: usize,
    /// Decides the shuffles and the augmentations, with the epoch.
    pub seed: u64,
    /// Augmentation threads (at least one is used).
    pub workers: usize,
    /// Finished batches each worker may hold ahead of the consumer.
    pub prefetch: usize,
    /// Train on the first `n` images of the given order only.
    pub limit_train: Option<usize>,
}

impl Default for TrainOptions {
    /// The tutorial's batches of 128, seed 42, one worker per core.
    fn default() -> Self {
        TrainOptions {
            batch_size: 128,
            seed: 42,
            workers: thread::available_parallelism().map_or(1, NonZeroUsize::get),
            prefetch: 2,
            limit_train: None,
        }
    }
}

/// The training batches of every epoch, over a fixed set of images.
pub struct TrainLoader {
    data: Arc<ImageSet>,
    indices: Vec<usize>,
    options: TrainOptions,
}

impl TrainLoader {
    /// Batches of the images `indices` of `data` (e.g. `Split::train`).
    pub fn new(data: Arc<ImageSet>, indices: &[usize], options: TrainOptions) -> Self {
        assert!(options.batch_size > 0, "batch size 0");
        let n = options
            .limit_train
            .map_or(indices.len(), |limit| limit.min(indices.len()));
        TrainLoader {
            data,
            indices: indices[..n].to_vec(),
            options,
        }
    }

    /// Images used per epoch (after `limit_train`).
    pub fn num_images(&self) -> usize {
        self.indices.len()
    }

    /// Whole batches per epoch: 351 for 45,000 images of 128.
    pub fn batches_per_epoch(&self) -> usize {
        self.indices.len() / self.options.batch_size
    }

    /// The images the batches are drawn from.
    pub fn data(&self) -> &ImageSet {
        &self.data
    }

    pub fn options(&self) -> &TrainOptions {
        &self.options
    }

    /// The order the images are visited in `epoch`.
    pub fn epoch_order(&self, epoch: usize) -> Vec<usize> {
        let mut order = self.indices.clone();
        order.shuffle(&mut shuffle_rng(self.options.seed, epoch));
        order
    }

    /// The images of each of `epoch`'s batches, as [`TrainLoader::epoch`]
    /// cuts them, without augmenting any: for a trainer that augments on
    /// the GPU, drawing each image's augmentation from the same stream
    /// ([`training_augmentation`]).
    pub fn epoch_indices(&self, epoch: usize) -> impl ExactSizeIterator<Item = Vec<usize>> {
        let (order, batch_size) = (self.epoch_order(epoch), self.options.batch_size);
        (0..self.batches_per_epoch()).map(move |b| batch_of(&order, batch_size, b).to_vec())
    }

    /// Starts the workers for `epoch` (0-based) and returns its batches.
    pub fn epoch(&self, epoch: usize) -> EpochBatches {
        let batch_size = self.options.batch_size;
        let num_batches = self.batches_per_epoch();
        let workers = self.options.workers.clamp(1, num_batches.max(1));
        let order: Arc<[usize]> = self.epoch_order(epoch).into();
        let (receivers, handles) = (0..workers)
            .map(|w| {
                let (tx, rx) = sync_channel(self.options.prefetch);
                let (data, order, seed) = (Arc::clone(&self.data), Arc::clone(&order), self.options.seed);
                let handle = thread::spawn(move || {
                    for b in (w..num_batches).step_by(workers) {
                        let chunk = batch_of(&order, batch_size, b);
                        if tx.send(augmented_batch(&data, chunk, seed, epoch)).is_err() {
                            return; // the consumer stopped early
                        }
                    }
                });
                (rx, Some(handle))
            })
            .unzip();
        EpochBatches {
            receivers,
            handles,
            next: 0,
            len: num_batches,
        }
    }
}

/// Batch `b` of an epoch's `order`: whole batches only.
fn batch_of(order: &[usize], batch_size: usize, b: usize) -> &[usize] {
    &order[b * batch_size..(b + 1) * batch_size]
}

/// The augmentation that image `index` (of the training images) gets in
/// `epoch` (0-based) of a run with `seed`: drawn from the image's own stream.
/// The CPU loader, the GPU augmentation and `augment-preview` all draw it here.
pub fn training_augmentation(seed: u64, epoch: usize, index: usize) -> Augmentation {
    Augmentation::sample(&mut image_rng(seed, epoch, index))
}

/// The images `indices` of `data`, each augmented with its own random stream.
fn augmented_batch(data: &ImageSet, indices: &[usize], seed: u64, epoch: usize) -> Batch {
    let mut images = vec![0f32; indices.len() * IMAGE_BYTES];
    for (&i, out) in indices.iter().zip(images.chunks_exact_mut(IMAGE_BYTES)) {
        training_augmentation(seed, epoch, i).apply(data.image(i), out);
    }
    Batch {
        images: Tensor::new(&[indices.len(), IMAGE_SIZE, IMAGE_SIZE, CHANNELS], images),
        labels: labels(data, indices),
    }
}

fn labels(data: &ImageSet, indices: &[usize]) -> Vec<u32> {
    indices.iter().map(|&i| u32::from(data.label(i))).collect()
}

/// One epoch's training batches, in order; dropping it early stops the workers.
pub struct EpochBatches {
    receivers: Vec<Receiver<Batch>>,
    handles: Vec<Option<JoinHandle<()>>>,
    next: usize,
    len: usize,
}

impl Iterator for EpochBatches {
    type Item = Batch;

    fn next(&mut self) -> Option<Batch> {
        if self.next == self.len {
            return None;
        }
        let w = self.next % self.receivers.len();
        self.next += 1;
        match self.receivers[w].recv() {
            Ok(batch) => Some(batch),
            // A worker only hangs up early by panicking: pass its panic on.
            Err(_) => match self.handles[w].take().map(JoinHandle::join) {
                Some(Err(payload)) => panic::resume_unwind(payload),
                _ => panic!("augmentation worker {w} stopped early"),
            },
        }
    }

    fn size_hint(&self) -> (usize, Option<usize>) {
        let left = self.len - self.next;
        (left, Some(left))
    }
}

impl ExactSizeIterator for EpochBatches {}

impl Drop for EpochBatches {
    fn drop(&mut self) {
        // Hanging up first unblocks workers waiting on a full channel.
        self.receivers.clear();
        for handle in self.handles.iter_mut().filter_map(Option::take) {
            // A worker's panic was already passed on by `next`, or is moot now.
            let _ = handle.join();
        }
    }
}

/// The images `indices` of `data` in order, normalised, in batches of
/// `batch_size` (the last one smaller if need be).
pub fn eval_batches<'a, T: Float>(
    data: &'a ImageSet,
    indices: &'a [usize],
    batch_size: usize,
) -> impl ExactSizeIterator<Item = Batch<T>> + 'a {
    assert!(batch_size > 0, "batch size 0");
    indices.chunks(batch_size).map(|chunk| Batch {
        images: normalize_batch(data, chunk),
        labels: labels(data, chunk),
    })
}
