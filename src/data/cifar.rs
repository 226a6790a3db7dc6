//! Reading the CIFAR-10 binary batches.
//!
//! A batch file is a sequence of 3,073-byte records: one label byte, then the
//! 32x32 R plane, G plane and B plane, each row-major. We read each file whole,
//! check its size and labels, and transpose the planes to NHWC once, so that
//! the augmentation and the batches read each pixel's three channels
//! together. A data directory holds the files directly or in
//! `cifar-10-batches-bin/`; a `cifar-10-binary.tar.gz` left there instead is
//! unpacked on first use.

use std::fs;
use std::path::{Path, PathBuf};

use super::download::unpack_archive;
use super::error::DataError;
pub use super::format::BATCHES_DIR;
use super::format::{ARCHIVE_NAME, CHANNELS, IMAGE_BYTES, IMAGE_SIZE, NUM_CLASSES};

/// The training batches, concatenated in this order to index the 50,000 training images.
pub const TRAIN_FILES: [&str; 5] = [
    "data_batch_1.bin",
    "data_batch_2.bin",
    "data_batch_3.bin",
    "data_batch_4.bin",
    "data_batch_5.bin",
];
pub const TEST_FILE: &str = "test_batch.bin";
pub const META_FILE: &str = "batches.meta.txt";
/// Records in each official batch file.
pub const RECORDS_PER_FILE: usize = 10_000;
/// One label byte and the pixels.
pub const RECORD_BYTES: usize = 1 + IMAGE_BYTES;
/// The class names, used when `batches.meta.txt` is absent.
pub const CLASS_NAMES: [&str; NUM_CLASSES] = [
    "airplane",
    "automobile",
    "bird",
    "cat",
    "deer",
    "dog",
    "frog",
    "horse",
    "ship",
    "truck",
];

/// Labelled images, u8 NHWC (`len() * 32 * 32 * 3` bytes), as on disk but for the layout.
#[derive(Clone, Debug, Default, PartialEq, Eq)]
pub struct ImageSet {
    images: Vec<u8>,
    labels: Vec<u8>,
}

impl ImageSet {
    /// Panics unless `images` holds one 32x32x3 image per label.
    pub fn new(images: Vec<u8>, labels: Vec<u8>) -> Self {
        assert_eq!(
            images.len(),
            labels.len() * IMAGE_BYTES,
            "{} labels need {} image bytes",
            labels.len(),
            labels.len() * IMAGE_BYTES
        );
        ImageSet { images, labels }
    }

    pub fn len(&self) -> usize {
        self.labels.len()
    }
    pub fn is_empty(&self) -> bool {
        self.labels.is_empty()
    }
    /// Image `i`, 32x32x3 row-major (HWC).
    pub fn image(&self, i: usize) -> &[u8] {
        &self.images[i * IMAGE_BYTES..(i + 1) * IMAGE_BYTES]
    }
    pub fn label(&self, i: usize) -> u8 {
        self.labels[i]
    }
    pub fn images(&self) -> &[u8] {
        &self.images
    }
    pub fn labels(&self) -> &[u8] {
        &self.labels
    }

    fn append(&mut self, other: ImageSet) {
        self.images.extend(other.images);
        self.labels.extend(other.labels);
    }
}

/// The whole data set as read from a data directory.
#[derive(Clone, Debug)]
pub struct Cifar10 {
    /// The 50,000 training images: data_batch_1..5 concatenated in order.
    pub train: ImageSet,
    /// The 10,000 test images.
    pub test: ImageSet,
    /// Ten names, indexed by label.
    pub class_names: Vec<String>,
}

impl Cifar10 {
    /// Reads the official data from `data_dir` (see the module comment for the layouts).
    pub fn load(data_dir: &Path) -> Result<Self, DataError> {
        Self::load_with_records(data_dir, RECORDS_PER_FILE)
    }

    /// As [`Cifar10::load`], with files of `records_per_file` records: for small
    /// synthetic copies in tests.
    pub fn load_with_records(data_dir: &Path, records_per_file: usize) -> Result<Self, DataError> {
        let dir = find_batches_dir(data_dir)?;
        let read = |name: &str| read_batch_file(&dir.join(name), records_per_file, data_dir);
        let mut train = ImageSet::default();
        for name in TRAIN_FILES {
            train.append(read(name)?);
        }
        Ok(Cifar10 {
            train,
            test: read(TEST_FILE)?,
            class_names: read_class_names(&dir.join(META_FILE))?,
        })
    }
}

/// The folder holding the batch files: `data_dir/cifar-10-batches-bin` if any
/// batch file is there, else `data_dir` if any is there, else the former after
/// unpacking `data_dir/cifar-10-binary.tar.gz`.
///
/// The subfolder comes first because that is where a download puts a fresh copy.
pub fn find_batches_dir(data_dir: &Path) -> Result<PathBuf, DataError> {
    let has_batches = |dir: &Path| {
        TRAIN_FILES
            .iter()
            .chain([&TEST_FILE])
            .any(|name| dir.join(name).exists())
    };
    let sub = data_dir.join(BATCHES_DIR);
    if has_batches(&sub) {
        Ok(sub)
    } else if has_batches(data_dir) {
        Ok(data_dir.to_path_buf())
    } else if data_dir.join(ARCHIVE_NAME).is_file() {
        unpack_archive(&data_dir.join(ARCHIVE_NAME), data_dir)
    } else {
        Err(DataError::NotFound {
            data_dir: data_dir.to_path_buf(),
        })
    }
}

/// Reads one batch file of exactly `records` records; `data_dir` is only
/// named in the errors' advice.
pub fn read_batch_file(path: &Path, records: usize, data_dir: &Path) -> Result<ImageSet, DataError> {
    let expected = records * RECORD_BYTES;
    let bad_size = |bytes: u64| DataError::BadSize {
        path: path.to_path_buf(),
        bytes,
        expected: expected as u64,
        data_dir: data_dir.to_path_buf(),
    };
    // The size is checked before reading, so that a large file of the wrong
    // kind is refused without being read into memory; and again after, in
    // case the file changed in between.
    let size = fs::metadata(path).map_err(|source| match source.kind() {
        std::io::ErrorKind::NotFound => DataError::MissingFile {
            path: path.to_path_buf(),
            data_dir: data_dir.to_path_buf(),
        },
        _ => DataError::Io {
            path: path.to_path_buf(),
            source,
        },
    })?;
    if size.len() != expected as u64 {
        return Err(bad_size(size.len()));
    }
    let bytes = fs::read(path).map_err(DataError::io(path))?;
    if bytes.len() != expected {
        return Err(bad_size(bytes.len() as u64));
    }
    let plane = IMAGE_SIZE * IMAGE_SIZE;
    let mut images = vec![0u8; records * IMAGE_BYTES];
    let mut labels = Vec::with_capacity(records);
    for (record, (raw, image)) in bytes
        .chunks_exact(RECORD_BYTES)
        .zip(images.chunks_exact_mut(IMAGE_BYTES))
        .enumerate()
    {
        let label = raw[0];
        if usize::from(label) >= NUM_CLASSES {
            return Err(DataError::BadLabel {
                path: path.to_path_buf(),
                record,
                label,
                data_dir: data_dir.to_path_buf(),
            });
        }
        labels.push(label);
        let planes = &raw[1..];
        for (p, pixel) in image.chunks_exact_mut(CHANNELS).enumerate() {
            for (c, value) in pixel.iter_mut().enumerate() {
                *value = planes[c * plane + p];
            }
        }
    }
    Ok(ImageSet { images, labels })
}

/// The non-empty lines of `batches.meta.txt`, or [`CLASS_NAMES`] without that file.
fn read_class_names(path: &Path) -> Result<Vec<String>, DataError> {
    let text = match fs::read_to_string(path) {
        Ok(text) => text,
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => {
            return Ok(CLASS_NAMES.iter().map(|s| s.to_string()).collect())
        }
        Err(e) => return Err(DataError::io(path)(e)),
    };
    let names: Vec<String> = text
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty())
        .map(String::from)
        .collect();
    if names.len() != NUM_CLASSES {
        return Err(DataError::BadClassNames {
            path: path.to_path_buf(),
            found: names.len(),
        });
    }
    Ok(names)
}
