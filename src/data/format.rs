//! What CIFAR-10 is on disk and what the data module accepts: the image
//! geometry, the names of the official archive and of the folder it unpacks
//! to, and the size limits of the images `predict` reads. The other data
//! modules (errors included) build on these, so this one imports nothing.

/// Images are `IMAGE_SIZE` x `IMAGE_SIZE` x `CHANNELS` (RGB).
pub const IMAGE_SIZE: usize = 32;
pub const CHANNELS: usize = 3;
/// Bytes (u8 values) of one image.
pub const IMAGE_BYTES: usize = IMAGE_SIZE * IMAGE_SIZE * CHANNELS;
pub const NUM_CLASSES: usize = 10;

/// The folder the official archive unpacks to.
pub const BATCHES_DIR: &str = "cifar-10-batches-bin";
pub const CIFAR10_URL: &str = "https://www.cs.toronto.edu/~kriz/cifar-10-binary.tar.gz";
/// MD5 of the official `cifar-10-binary.tar.gz`, lowercase hex.
pub const CIFAR10_MD5: &str = "c32a1d4ab5d03f1284b67883e8d87530";
/// The archive's file name; placed in a data directory, it is unpacked on first use.
pub const ARCHIVE_NAME: &str = "cifar-10-binary.tar.gz";

/// The widest and tallest image accepted: twice the long side of a
/// 48-megapixel camera picture (8,000 x 6,000).
pub const MAX_IMAGE_SIDE: u32 = 16_384;
/// The most memory one image may take, decoded (a 16-bit RGBA image of 33
/// megapixels) or as the 8-bit RGB copy the model reads (89 megapixels).
pub const MAX_DECODED_BYTES: u64 = 256 << 20;
