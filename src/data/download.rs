//! Fetching and unpacking the official archive, never leaving a half-written copy.
//!
//! The download streams into a temporary file inside the data directory, is
//! checked against the published MD5, and is unpacked into a temporary folder
//! there too; only then is the finished `cifar-10-batches-bin/` renamed into
//! place (replacing an older one). The temporary file and folder delete
//! themselves on every early return, and a data directory made for the
//! download is removed again, so a failed download leaves the disk as it was
//! (a killed process may leave a hidden temporary file behind, never a
//! partial `cifar-10-batches-bin/`).

use std::fs::{self, File};
use std::io::{BufReader, Read, Write};
use std::path::{Component, Path, PathBuf};
use std::time::Duration;

use flate2::read::GzDecoder;
use md5::{Digest, Md5};
use tar::EntryType;

use super::error::{DataError, RefusedEntry};
use super::format::BATCHES_DIR;
pub use super::format::{ARCHIVE_NAME, CIFAR10_MD5, CIFAR10_URL};

/// Downloads the official archive and unpacks it into `data_dir`
/// (created if needed); returns the path of `data_dir/cifar-10-batches-bin`.
pub fn download(data_dir: &Path) -> Result<PathBuf, DataError> {
    download_from(CIFAR10_URL, CIFAR10_MD5, data_dir)
}

/// [`download`] from another address (a mirror), checked against `expected_md5`.
pub fn download_from(url: &str, expected_md5: &str, data_dir: &Path) -> Result<PathBuf, DataError> {
    let created = create_missing_dirs(data_dir)?;
    let result = fetch_and_unpack(url, expected_md5, data_dir);
    if result.is_err() {
        // The temporary files have deleted themselves, so the folders made
        // for this download are empty again: remove them too, innermost
        // first, so that a failed download leaves no trace. `remove_dir`
        // never removes a folder something else has written into meanwhile.
        for dir in created.iter().rev() {
            let _ = fs::remove_dir(dir);
        }
    }
    result
}

/// Creates `dir` and its missing parents; returns the folders it created,
/// outermost first.
fn create_missing_dirs(dir: &Path) -> Result<Vec<PathBuf>, DataError> {
    let mut missing: Vec<PathBuf> = dir
        .ancestors()
        .take_while(|d| !d.as_os_str().is_empty() && !d.exists())
        .map(Path::to_path_buf)
        .collect();
    missing.reverse();
    fs::create_dir_all(dir).map_err(DataError::io(dir))?;
    Ok(missing)
}

fn fetch_and_unpack(url: &str, expected_md5: &str, data_dir: &Path) -> Result<PathBuf, DataError> {
    let mut part = tempfile::Builder::new()
        .prefix(&format!(".{ARCHIVE_NAME}."))
        .suffix(".part")
        .tempfile_in(data_dir)
        .map_err(DataError::io(data_dir))?;
    let failed = |reason: String| DataError::Download {
        url: url.to_string(),
        data_dir: data_dir.to_path_buf(),
        reason,
    };
    let agent: ureq::Agent = ureq::Agent::config_builder()
        .timeout_connect(Some(Duration::from_secs(30)))
        .timeout_per_read(Some(Duration::from_secs(60)))
        .build()
        .into();
    let response = agent.get(url).call().map_err(|e| failed(e.to_string()))?;
    let mut body = response.into_body().into_reader();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = body.read(&mut buf).map_err(|e| failed(e.to_string()))?;
        if n == 0 {
            break;
        }
        part.write_all(&buf[..n]).map_err(DataError::io(part.path()))?;
    }
    part.as_file().sync_all().map_err(DataError::io(part.path()))?;
    check_md5(part.path(), expected_md5)?;
    unpack_archive(part.path(), data_dir)
}

/// The MD5 digest of a file's contents, lowercase hex.
pub fn md5_hex(path: &Path) -> Result<String, DataError> {
    let mut file = File::open(path).map_err(DataError::io(path))?;
    let mut hasher = Md5::new();
    let mut buf = vec![0u8; 1 << 16];
    loop {
        let n = file.read(&mut buf).map_err(DataError::io(path))?;
        if n == 0 {
            break;
        }
        hasher.update(&buf[..n]);
    }
    Ok(hasher.finalize().iter().map(|b| format!("{b:02x}")).collect())
}

/// Fails unless the file's MD5 is `expected` (hex, either case).
pub fn check_md5(path: &Path, expected: &str) -> Result<(), DataError> {
    let actual = md5_hex(path)?;
    if actual.eq_ignore_ascii_case(expected) {
        Ok(())
    } else {
        Err(DataError::Checksum {
            path: path.to_path_buf(),
            expected: expected.to_ascii_lowercase(),
            actual,
        })
    }
}

/// Unpacks a `cifar-10-binary.tar.gz` into `data_dir` through a temporary
/// folder; returns the path of `data_dir/cifar-10-batches-bin`.
///
/// The archive may be one a user put there, unchecked, so every entry is
/// vetted before it is written: only plain files and folders, at relative
/// paths without `..`. Folders are made with default permissions, whatever
/// the archive says, so the temporary folder can always be deleted again.
pub fn unpack_archive(archive: &Path, data_dir: &Path) -> Result<PathBuf, DataError> {
    let staging = tempfile::Builder::new()
        .prefix(".cifar-unpack-")
        .tempdir_in(data_dir)
        .map_err(DataError::io(data_dir))?;
    let bad_archive = |e: std::io::Error| DataError::Archive {
        path: archive.to_path_buf(),
        reason: e.to_string(),
    };
    let file = File::open(archive).map_err(DataError::io(archive))?;
    let mut tar = tar::Archive::new(GzDecoder::new(BufReader::new(file)));
    for entry in tar.entries().map_err(bad_archive)? {
        let mut entry = entry.map_err(bad_archive)?;
        let name = entry.path().map_err(bad_archive)?.into_owned();
        let refuse = |why| DataError::RefusedEntry {
            path: archive.to_path_buf(),
            entry: name.display().to_string(),
            why,
        };
        let inside = name
            .components()
            .all(|c| matches!(c, Component::Normal(_) | Component::CurDir));
        if !inside {
            return Err(refuse(RefusedEntry::LeavesFolder));
        }
        match entry.header().entry_type() {
            EntryType::Regular => {
                // `unpack_in` makes the missing parent folders; it returns
                // false only for paths that leave the folder, refused above.
                entry.unpack_in(staging.path()).map_err(bad_archive)?;
            }
            EntryType::Directory => fs::create_dir_all(staging.path().join(&name)).map_err(bad_archive)?,
            EntryType::Symlink | EntryType::Link => return Err(refuse(RefusedEntry::Link)),
            _ => return Err(refuse(RefusedEntry::NotFileOrFolder)),
        }
    }
    let unpacked = staging.path().join(BATCHES_DIR);
    if !unpacked.is_dir() {
        return Err(DataError::Archive {
            path: archive.to_path_buf(),
            reason: format!("it holds no {BATCHES_DIR}/ folder"),
        });
    }
    let target = data_dir.join(BATCHES_DIR);
    if target.exists() {
        // Moved into the staging folder, the old copy is deleted with it.
        fs::rename(&target, staging.path().join("replaced")).map_err(DataError::io(&target))?;
    }
    fs::rename(&unpacked, &target).map_err(DataError::io(&target))?;
    Ok(target)
}
