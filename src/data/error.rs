//! The one error type of the data module.
//!
//! Every variant names the file (or URL) at fault and its message ends with
//! what the user can do about it, because these errors surface at the command
//! line, usually at the start of a long run.

use std::fmt;
use std::io;
use std::path::{Path, PathBuf};

use image::ImageError;

use super::format::{ARCHIVE_NAME, BATCHES_DIR, CIFAR10_URL, IMAGE_SIZE, MAX_DECODED_BYTES, MAX_IMAGE_SIDE};

#[derive(Debug)]
pub enum DataError {
    /// Neither the `.bin` files nor the archive are in the data directory.
    NotFound { data_dir: PathBuf },
    /// One of the six batch files is absent.
    MissingFile { path: PathBuf, data_dir: PathBuf },
    /// A batch file that does not hold exactly the expected number of records.
    BadSize {
        path: PathBuf,
        bytes: u64,
        expected: u64,
        data_dir: PathBuf,
    },
    /// A record whose label byte is not a class index (0..=9).
    BadLabel {
        path: PathBuf,
        record: usize,
        label: u8,
        data_dir: PathBuf,
    },
    /// `batches.meta.txt` does not list ten class names.
    BadClassNames { path: PathBuf, found: usize },
    /// Reading or writing `path` failed.
    Io { path: PathBuf, source: io::Error },
    /// The archive could not be unpacked, or does not hold the batches folder.
    Archive { path: PathBuf, reason: String },
    /// An archive entry that unpacking refuses, named as the archive names it.
    RefusedEntry {
        path: PathBuf,
        entry: String,
        why: RefusedEntry,
    },
    /// An image given to `predict` that cannot be classified.
    Image { path: PathBuf, problem: ImageProblem },
    /// A file's MD5 digest is not the expected one.
    Checksum {
        path: PathBuf,
        expected: String,
        actual: String,
    },
    /// The download failed before a complete archive was received.
    Download {
        url: String,
        data_dir: PathBuf,
        reason: String,
    },
}

/// Why an archive entry is refused. The official archive holds only plain
/// files and folders under `cifar-10-batches-bin/`; anything else could write
/// outside the data directory or point there later.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum RefusedEntry {
    /// A symbolic or hard link.
    Link,
    /// A device, FIFO, sparse file or other entry that is neither a file nor a folder.
    NotFileOrFolder,
    /// An absolute path, or one with a `..` component.
    LeavesFolder,
}

impl DataError {
    /// Wraps an I/O error with the path it concerns.
    pub(crate) fn io(path: &Path) -> impl FnOnce(io::Error) -> DataError + '_ {
        move |source| DataError::Io {
            path: path.to_path_buf(),
            source,
        }
    }
}

/// The command that fetches a fresh copy into `data_dir`.
fn download_cmd(data_dir: &Path) -> String {
    format!("`cifar-kern download --data-dir {}`", data_dir.display())
}

impl fmt::Display for DataError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            DataError::NotFound { data_dir } => write!(
                f,
                "no CIFAR-10 data in {dir}: expected data_batch_1..5.bin and test_batch.bin in {dir} or in \
                 {batches}, or {ARCHIVE_NAME} in {dir}; run {cmd}, or, offline, fetch {CIFAR10_URL} elsewhere \
                 and put it in {dir}",
                dir = data_dir.display(),
                batches = data_dir.join(BATCHES_DIR).display(),
                cmd = download_cmd(data_dir),
            ),
            DataError::MissingFile { path, data_dir } => write!(
                f,
                "{} is missing: run {} (or copy it there from an unpacked {ARCHIVE_NAME})",
                path.display(),
                download_cmd(data_dir)
            ),
            DataError::BadSize {
                path,
                bytes,
                expected,
                data_dir,
            } => {
                let what = if bytes < expected {
                    "is truncated"
                } else {
                    "is too large"
                };
                write!(
                    f,
                    "{} {what} ({bytes} bytes, expected {expected}): delete it and run {}",
                    path.display(),
                    download_cmd(data_dir)
                )
            }
            DataError::BadLabel {
                path,
                record,
                label,
                data_dir,
            } => write!(
                f,
                "{} is corrupt: record {record} has label {label}, but labels are 0..=9: delete it and run {}",
                path.display(),
                download_cmd(data_dir)
            ),
            DataError::BadClassNames { path, found } => write!(
                f,
                "{} lists {found} class names instead of 10: fix it, or delete it to use the standard names",
                path.display()
            ),
            DataError::Io { path, source } => write!(f, "{}: {source}", path.display()),
            DataError::Archive { path, reason } => write!(
                f,
                "cannot unpack {}: {reason}: delete it and download the archive again",
                path.display()
            ),
            DataError::RefusedEntry { path, entry, why } => {
                let what = match why {
                    RefusedEntry::Link => "is a link",
                    RefusedEntry::NotFileOrFolder => "is neither a file nor a folder",
                    RefusedEntry::LeavesFolder => "would be written outside the data directory",
                };
                write!(
                    f,
                    "refusing to unpack {}: its entry {entry:?} {what}, and the CIFAR-10 archive holds only \
                     plain files and folders: delete it and download the archive again",
                    path.display()
                )
            }
            DataError::Image { path, problem } => write!(f, "cannot read image {}: {problem}", path.display()),
            DataError::Checksum { path, expected, actual } => write!(
                f,
                "{} has MD5 {actual}, expected {expected}: the file is corrupt or incomplete; download it again",
                path.display()
            ),
            DataError::Download { url, data_dir, reason } => write!(
                f,
                "could not download {url}: {reason}. Nothing was written. Without network access, fetch that \
                 file elsewhere and put it in {dir} as {ARCHIVE_NAME} (it is unpacked on first use), or put \
                 its .bin files in {batches}",
                dir = data_dir.display(),
                batches = data_dir.join(BATCHES_DIR).display(),
            ),
        }
    }
}

// No `source()`: an `Io` message already ends with the I/O error, and
// `anyhow`'s `{:#}` would print it a second time.
impl std::error::Error for DataError {}

/// What is wrong with an image file.
#[derive(Debug)]
pub enum ImageProblem {
    Read(io::Error),
    NotPngOrJpeg,
    /// Larger than [`MAX_IMAGE_SIDE`] on a side, or than [`MAX_DECODED_BYTES`]
    /// decoded or as RGB.
    TooLarge {
        width: u32,
        height: u32,
    },
    /// The decoder's own complaint: a truncated or corrupt file.
    Decode(ImageError),
}

impl fmt::Display for ImageProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageProblem::Read(e) => write!(f, "{e}"),
            ImageProblem::NotPngOrJpeg => write!(f, "it is neither a PNG nor a JPEG file"),
            ImageProblem::TooLarge { width, height } => write!(
                f,
                "its header says {width} x {height} pixels, more than predict decodes (at most \
                 {MAX_IMAGE_SIDE} pixels a side and {} MiB): shrink it first, the model sees it at \
                 {IMAGE_SIZE} x {IMAGE_SIZE} anyway",
                MAX_DECODED_BYTES >> 20
            ),
            ImageProblem::Decode(e) => write!(f, "{e}"),
        }
    }
}
