//! CIFAR-10 for the tutorial's training: reading the binary batches (and
//! downloading them), the tutorial's train/validation split, normalisation,
//! augmentation and the batch iterators.
//!
//! - [`format`]: image geometry, file names, size limits.
//! - [`cifar`]: the files, validated, into u8 NHWC [`ImageSet`]s.
//! - [`download`]: the official archive, MD5-checked and unpacked atomically.
//! - [`image_file`]: the PNG and JPEG images `predict` classifies.
//! - [`split`]: the tutorial's 45,000 / 5,000 split.
//! - [`transform`]: normalisation, and flip + random resized crop for training.
//! - [`loader`]: shuffled, augmented training batches built by worker
//!   threads; evaluation batches.
//!
//! Everything random is drawn from streams named by (seed, epoch, image), so a
//! run is reproducible from its seed whatever the number of threads.

pub mod cifar;
pub mod download;
mod error;
pub mod format;
pub mod image_file;
pub mod loader;
mod rng;
pub mod split;
pub mod transform;

pub use cifar::{Cifar10, ImageSet, BATCHES_DIR, CLASS_NAMES};
pub use download::{check_md5, download, download_from, unpack_archive};
pub use error::{DataError, ImageProblem, RefusedEntry};
pub use format::{CHANNELS, IMAGE_BYTES, IMAGE_SIZE, NUM_CLASSES};
pub use image_file::read_image;
pub use loader::{eval_batches, training_augmentation, Batch, EpochBatches, TrainLoader, TrainOptions};
pub use rng::image_rng;
pub use split::Split;
pub use transform::{normalize_batch, normalize_into, Augmentation, MEAN, STD};
