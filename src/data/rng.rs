//! Random streams that depend only on what they are for, never on threads.
//!
//! Every random draw of the data pipeline comes from its own ChaCha8 stream:
//! the key is derived from the run's seed, the 64-bit stream number from the
//! epoch, the purpose and the item (an image's index in its data set). A
//! worker can therefore augment any image of any epoch without coordinating
//! with the others, and a run is reproduced exactly from its seed whatever
//! the number of workers.

use rand::SeedableRng;
use rand_chacha::ChaCha8Rng;

#[derive(Clone, Copy)]
enum Purpose {
    Shuffle = 0,
    Augment = 1,
}

/// Stream number: epoch in bits 63..33, purpose in bit 32, item in bits 31..0.
fn stream(seed: u64, epoch: usize, purpose: Purpose, item: usize) -> ChaCha8Rng {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    rng.set_stream(((epoch as u64) << 33) | ((purpose as u64) << 32) | (item as u64 & 0xffff_ffff));
    rng
}

/// The stream that shuffles the training images in `epoch`.
pub fn shuffle_rng(seed: u64, epoch: usize) -> ChaCha8Rng {
    stream(seed, epoch, Purpose::Shuffle, 0)
}

/// The stream that augments image `index` (of its data set) in `epoch`.
pub fn image_rng(seed: u64, epoch: usize, index: usize) -> ChaCha8Rng {
    stream(seed, epoch, Purpose::Augment, index)
}
