//! Checkpoint files: the project's own safetensors files and the tutorial's
//! Flax msgpack checkpoints.
//!
//! Tensors are named by their Flax path joined with `/`: `params/Conv_0/kernel`,
//! `batch_stats/BatchNorm_0/mean`, and optimiser state under `opt/`. Both
//! formats flatten to that one namespace, so a model loads from either.
//!
//! - Our format is safetensors: every tensor stored F32, plus a string-to-string
//!   metadata map (epoch, model name, ...). [`save`] writes atomically (temp
//!   file in the same folder, fsync, rename), so a crash mid-save leaves the
//!   previous checkpoint intact.
//! - [`SafetensorsFile`] reads any safetensors file, converting F32/F64 to the
//!   float type asked for and handing out I64 tensors separately: the fixture
//!   files keep inputs and reference values in F64 and labels in I64.
//! - [`read_flax_msgpack`] reads a `flax.serialization.to_bytes` state dict: a
//!   nested msgpack map whose leaves are msgpack ext type 1, each holding the
//!   msgpack triple `(shape, dtype name, raw little-endian bytes)`.
//! - [`load_any`] tells the two apart by content, so a user may pass either.
//!
//! Every failure is a [`CheckpointError`] naming the file; malformed input
//! never panics.

use crate::float::Float;
use crate::kill_point::{self, Phase};
use crate::tensor::Tensor;
use rmpv::Value;
use safetensors::tensor::{Metadata as Header, TensorInfo};
use safetensors::{Dtype, SafeTensorError, SafeTensors, View};
use std::borrow::Cow;
use std::collections::{BTreeMap, HashMap};
use std::error::Error;
use std::fmt;
use std::fs::{self, File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::sync::atomic::{AtomicUsize, Ordering};

/// Tensors by their `/`-joined Flax path.
pub type NamedTensors = BTreeMap<String, Tensor<f32>>;
/// The string-to-string metadata a safetensors checkpoint carries.
pub type CheckpointMetadata = BTreeMap<String, String>;

/// What went wrong with which checkpoint file.
#[derive(Debug)]
pub struct CheckpointError {
    pub path: PathBuf,
    pub problem: Problem,
}

/// What is wrong with a checkpoint file.
#[derive(Debug)]
pub enum Problem {
    Io(io::Error),
    NotMsgpack(rmpv::decode::Error),
    NotSafetensors(SafeTensorError),
    /// The tensors could not be encoded (e.g. a header over the format's limit).
    Encode(SafeTensorError),
    /// Valid msgpack, but not a Flax state dict of arrays.
    Malformed(String),
    /// A tensor whose element type this reader does not handle.
    Dtype {
        tensor: String,
        found: String,
        expected: &'static str,
    },
    /// A Flax array whose byte string does not match its shape and dtype.
    ByteCount {
        tensor: String,
        expected: usize,
        found: usize,
    },
    MissingTensor(String),
    /// Msgpack nested deeper than [`FLAX_MAX_DEPTH`]: no Flax state dict is,
    /// and decoding it further would risk the stack.
    TooDeep,
    /// Content that starts like neither format (a text file, an image, ...).
    UnknownFormat,
}

impl CheckpointError {
    fn new(path: &Path, problem: Problem) -> Self {
        CheckpointError {
            path: path.to_path_buf(),
            problem,
        }
    }
}

impl fmt::Display for CheckpointError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "checkpoint {}: ", self.path.display())?;
        match &self.problem {
            Problem::Io(e) => {
                write!(f, "I/O error: {e}")?;
                let full = matches!(
                    e.kind(),
                    io::ErrorKind::StorageFull | io::ErrorKind::FileTooLarge | io::ErrorKind::QuotaExceeded
                );
                if full {
                    write!(f, " (the disk is full, or a quota or file-size limit was reached)")?;
                }
                Ok(())
            }
            Problem::NotMsgpack(e) => write!(f, "not a valid msgpack file: {e}"),
            Problem::NotSafetensors(e) => write!(f, "not a valid safetensors file: {e}"),
            Problem::Encode(e) => write!(f, "cannot encode as safetensors: {e}"),
            Problem::Malformed(what) => write!(f, "not a Flax checkpoint: {what}"),
            Problem::Dtype {
                tensor,
                found,
                expected,
            } => write!(f, "tensor `{tensor}` has dtype {found}, expected {expected}"),
            Problem::ByteCount {
                tensor,
                expected,
                found,
            } => write!(
                f,
                "tensor `{tensor}` holds {found} bytes but its shape and dtype need {expected}"
            ),
            Problem::MissingTensor(name) => write!(f, "no tensor `{name}`"),
            Problem::TooDeep => write!(
                f,
                "not a Flax checkpoint: its msgpack nests deeper than a Flax state dict ever does \
                 (decoding stops at depth {FLAX_MAX_DEPTH})"
            ),
            Problem::UnknownFormat => write!(
                f,
                "neither a safetensors checkpoint nor a Flax checkpoint (.ckpt): its first bytes match neither format"
            ),
        }
    }
}

// No `source()`: the message already ends with the underlying error, and
// `anyhow`'s `{:#}` would print it a second time.
impl Error for CheckpointError {}

/// The float encodings both formats may hold, decoded little-endian.
#[derive(Clone, Copy)]
enum FloatEncoding {
    F32,
    F64,
}

impl FloatEncoding {
    const EXPECTED: &'static str = "float32 or float64";

    fn width(self) -> usize {
        match self {
            FloatEncoding::F32 => 4,
            FloatEncoding::F64 => 8,
        }
    }

    /// `bytes` must hold a whole number of elements (the callers check).
    fn decode<T: Float>(self, bytes: &[u8]) -> Vec<T> {
        let chunks = bytes.chunks_exact(self.width());
        match self {
            FloatEncoding::F32 => chunks
                .map(|c| T::of(f32::from_le_bytes(c.try_into().unwrap()) as f64))
                .collect(),
            FloatEncoding::F64 => chunks
                .map(|c| T::of(f64::from_le_bytes(c.try_into().unwrap())))
                .collect(),
        }
    }
}

fn read_bytes(path: &Path) -> Result<Vec<u8>, CheckpointError> {
    fs::read(path).map_err(|e| CheckpointError::new(path, Problem::Io(e)))
}

// ---------------------------------------------------------------- Flax msgpack

/// The ext type code `flax.serialization` gives a numpy array.
const FLAX_NDARRAY_EXT: i8 = 1;

/// How deep the msgpack decoder may recurse, in rmpv's units (two per map or
/// array, three for an array extension). The tutorial's state dicts nest five
/// maps deep (the root, then `params/DenseBlock_0/DenseLayer_0/Conv_0/kernel`
/// in DenseNet's), 13 units; 64 leaves room for some 30 levels, while a file
/// of 100,000 nested arrays stops early, with an error that says so.
const FLAX_MAX_DEPTH: usize = 64;

/// Reads a Flax msgpack checkpoint into flat `a/b/c` names. float64 arrays are
/// rounded to f32.
pub fn read_flax_msgpack(path: &Path) -> Result<NamedTensors, CheckpointError> {
    let bytes = read_bytes(path)?;
    let problem = match Format::of(&bytes) {
        Some(Format::Flax) => return flax_tensors(&bytes).map_err(|p| CheckpointError::new(path, p)),
        Some(Format::Safetensors) => Problem::Malformed(
            "it is a safetensors checkpoint (this project's format), which eval and predict read as it is".into(),
        ),
        None => Problem::UnknownFormat,
    };
    Err(CheckpointError::new(path, problem))
}

fn flax_tensors(bytes: &[u8]) -> Result<NamedTensors, Problem> {
    let root = read_whole_msgpack(bytes).map_err(|e| match e {
        rmpv::decode::Error::DepthLimitExceeded => Problem::TooDeep,
        e => Problem::NotMsgpack(e),
    })?;
    let root = root.ok_or_else(|| Problem::Malformed("trailing bytes after the state dict".into()))?;
    if !root.is_map() {
        return Err(Problem::Malformed("the top level is not a map".into()));
    }
    let mut tensors = BTreeMap::new();
    flatten_flax(&root, "", &mut tensors)?;
    Ok(tensors)
}

/// One msgpack value spanning all of `bytes`, nested at most
/// [`FLAX_MAX_DEPTH`] deep; `Ok(None)` when bytes are left over.
fn read_whole_msgpack(mut bytes: &[u8]) -> Result<Option<Value>, rmpv::decode::Error> {
    let value = rmpv::decode::read_value_with_max_depth(&mut bytes, FLAX_MAX_DEPTH)?;
    Ok(bytes.is_empty().then_some(value))
}

fn flatten_flax(value: &Value, prefix: &str, out: &mut NamedTensors) -> Result<(), Problem> {
    match value {
        Value::Map(entries) => {
            for (key, child) in entries {
                let key = key
                    .as_str()
                    .ok_or_else(|| Problem::Malformed(format!("a key under `{prefix}` is not a string")))?;
                let name = if prefix.is_empty() {
                    key.to_string()
                } else {
                    format!("{prefix}/{key}")
                };
                flatten_flax(child, &name, out)?;
            }
            Ok(())
        }
        Value::Ext(FLAX_NDARRAY_EXT, payload) => {
            let tensor = decode_flax_array(prefix, payload)?;
            match out.insert(prefix.to_string(), tensor) {
                None => Ok(()),
                Some(_) => Err(Problem::Malformed(format!("`{prefix}` appears twice"))),
            }
        }
        _ => Err(Problem::Malformed(format!(
            "`{prefix}` is neither a map nor an array (msgpack ext type {FLAX_NDARRAY_EXT})"
        ))),
    }
}

/// Decodes the `(shape, dtype name, bytes)` triple of one Flax array.
fn decode_flax_array(name: &str, payload: &[u8]) -> Result<Tensor<f32>, Problem> {
    let malformed = || Problem::Malformed(format!("array `{name}` is not a (shape, dtype, bytes) triple"));
    let fields = match read_whole_msgpack(payload) {
        Ok(Some(Value::Array(fields))) if fields.len() == 3 => fields,
        _ => return Err(malformed()),
    };
    let shape = fields[0]
        .as_array()
        .ok_or_else(malformed)?
        .iter()
        .map(|d| d.as_u64().and_then(|d| usize::try_from(d).ok()))
        .collect::<Option<Vec<usize>>>()
        .ok_or_else(malformed)?;
    let dtype = fields[1].as_str().ok_or_else(malformed)?;
    let Value::Binary(data) = &fields[2] else {
        return Err(malformed());
    };
    let encoding = match dtype {
        "float32" => FloatEncoding::F32,
        "float64" => FloatEncoding::F64,
        _ => {
            return Err(Problem::Dtype {
                tensor: name.to_string(),
                found: dtype.to_string(),
                expected: FloatEncoding::EXPECTED,
            })
        }
    };
    let expected = shape
        .iter()
        .try_fold(encoding.width(), |n, &d| n.checked_mul(d))
        .ok_or_else(|| Problem::Malformed(format!("array `{name}` has an impossibly large shape {shape:?}")))?;
    if data.len() != expected {
        return Err(Problem::ByteCount {
            tensor: name.to_string(),
            expected,
            found: data.len(),
        });
    }
    Ok(Tensor::new(&shape, encoding.decode(data)))
}

// ----------------------------------------------------------------- safetensors

/// A safetensors file read into memory, its tensors decoded on request.
pub struct SafetensorsFile {
    path: PathBuf,
    bytes: Vec<u8>,
    /// Where the tensor data starts in `bytes` (after the length and header).
    data_start: usize,
    header: Header,
}

impl SafetensorsFile {
    pub fn open(path: &Path) -> Result<Self, CheckpointError> {
        Self::from_bytes(path, read_bytes(path)?)
    }

    fn from_bytes(path: &Path, bytes: Vec<u8>) -> Result<Self, CheckpointError> {
        // `read_metadata` checks every tensor's offsets against its shape and
        // dtype and against the file length, so slicing below cannot fail.
        let (header_len, header) =
            SafeTensors::read_metadata(&bytes).map_err(|e| CheckpointError::new(path, Problem::NotSafetensors(e)))?;
        Ok(SafetensorsFile {
            path: path.to_path_buf(),
            bytes,
            data_start: SAFETENSORS_LEN_BYTES + header_len,
            header,
        })
    }

    /// The string-to-string metadata saved with the tensors.
    pub fn metadata(&self) -> CheckpointMetadata {
        let stored = self.header.metadata().as_ref();
        stored.map(|m| m.clone().into_iter().collect()).unwrap_or_default()
    }

    /// The header entry and the data bytes of the tensor `name`.
    fn raw(&self, name: &str) -> Result<(&TensorInfo, &[u8]), CheckpointError> {
        let info = self
            .header
            .info(name)
            .ok_or_else(|| self.error(Problem::MissingTensor(name.to_string())))?;
        let (start, end) = info.data_offsets;
        Ok((info, &self.bytes[self.data_start + start..self.data_start + end]))
    }

    /// The F32 or F64 tensor `name`, converted to `T`.
    pub fn tensor<T: Float>(&self, name: &str) -> Result<Tensor<T>, CheckpointError> {
        let (info, data) = self.raw(name)?;
        let encoding = match info.dtype {
            Dtype::F32 => FloatEncoding::F32,
            Dtype::F64 => FloatEncoding::F64,
            other => return Err(self.dtype_error(name, other, FloatEncoding::EXPECTED)),
        };
        Ok(Tensor::new(&info.shape, encoding.decode(data)))
    }

    /// Every tensor whose name starts with `prefix` (all for `""`), converted
    /// to `T`; they must all be F32 or F64.
    pub fn tensors<T: Float>(&self, prefix: &str) -> Result<BTreeMap<String, Tensor<T>>, CheckpointError> {
        let mut names = self.header.offset_keys();
        names.retain(|n| n.starts_with(prefix));
        names
            .into_iter()
            .map(|name| {
                let tensor = self.tensor(&name)?;
                Ok((name, tensor))
            })
            .collect()
    }

    /// The I64 tensor `name` as (shape, values): the fixtures' labels and step lists.
    pub fn i64_tensor(&self, name: &str) -> Result<(Vec<usize>, Vec<i64>), CheckpointError> {
        let (info, data) = self.raw(name)?;
        if info.dtype != Dtype::I64 {
            return Err(self.dtype_error(name, info.dtype, "I64"));
        }
        let values = data
            .chunks_exact(8)
            .map(|c| i64::from_le_bytes(c.try_into().unwrap()))
            .collect();
        Ok((info.shape.clone(), values))
    }

    fn error(&self, problem: Problem) -> CheckpointError {
        CheckpointError::new(&self.path, problem)
    }

    fn dtype_error(&self, name: &str, found: Dtype, expected: &'static str) -> CheckpointError {
        self.error(Problem::Dtype {
            tensor: name.to_string(),
            found: found.to_string(),
            expected,
        })
    }
}

/// Size of the little-endian header length that opens a safetensors file.
const SAFETENSORS_LEN_BYTES: usize = 8;

/// Writes `tensors` (as F32) and `metadata` to `path` in safetensors format.
/// The file is written under a temporary name in the same folder, synced and
/// renamed over `path`, so readers see either the old file or the whole new one.
pub fn save(path: &Path, tensors: &NamedTensors, metadata: &CheckpointMetadata) -> Result<(), CheckpointError> {
    let encoded = tensors.iter().map(|(name, t)| (name, F32Bytes::of(t)));
    let metadata: HashMap<String, String> = metadata.clone().into_iter().collect();
    let bytes =
        safetensors::serialize(encoded, Some(metadata)).map_err(|e| CheckpointError::new(path, Problem::Encode(e)))?;
    write_atomically(path, &sorted_header(bytes)).map_err(|e| CheckpointError::new(path, Problem::Io(e)))
}

/// `bytes` (a safetensors file) with its JSON header's keys in sorted order.
/// `safetensors::serialize` takes the metadata as a `HashMap` and writes it in
/// hash order, which differs from process to process; sorted, two runs with
/// one seed write the same bytes. The tensor data does not move: the header
/// keeps its length rounded up to 8 bytes with trailing spaces, as the format
/// pads it. (For zero tensors safetensors 0.8 writes a header that is not
/// JSON, `{},"__metadata__":{}}`; such bytes pass through unchanged.)
fn sorted_header(bytes: Vec<u8>) -> Vec<u8> {
    let header_len = u64::from_le_bytes(bytes[..SAFETENSORS_LEN_BYTES].try_into().expect("8 bytes")) as usize;
    let data = &bytes[SAFETENSORS_LEN_BYTES + header_len..];
    type Entries = BTreeMap<String, BTreeMap<String, serde_json::Value>>;
    let Ok(header) =
        serde_json::from_slice::<Entries>(&bytes[SAFETENSORS_LEN_BYTES..SAFETENSORS_LEN_BYTES + header_len])
    else {
        return bytes;
    };
    let mut json = serde_json::to_vec(&header).expect("a map of strings serialises");
    json.resize(json.len().next_multiple_of(8), b' ');
    let mut out = Vec::with_capacity(SAFETENSORS_LEN_BYTES + json.len() + data.len());
    out.extend((json.len() as u64).to_le_bytes());
    out.extend(json);
    out.extend(data);
    out
}

/// A tensor encoded as little-endian F32, as `safetensors::serialize` takes it.
struct F32Bytes<'a> {
    shape: &'a [usize],
    bytes: Vec<u8>,
}

impl<'a> F32Bytes<'a> {
    fn of(tensor: &'a Tensor<f32>) -> Self {
        let bytes = tensor.data().iter().flat_map(|v| v.to_le_bytes()).collect();
        F32Bytes {
            shape: tensor.shape(),
            bytes,
        }
    }
}

impl View for F32Bytes<'_> {
    fn dtype(&self) -> Dtype {
        Dtype::F32
    }
    fn shape(&self) -> &[usize] {
        self.shape
    }
    fn data(&self) -> Cow<'_, [u8]> {
        Cow::Borrowed(&self.bytes)
    }
    fn data_len(&self) -> usize {
        self.bytes.len()
    }
}

/// Writes `bytes` to `path` through a temp file in the same folder, fsynced and
/// renamed over `path`: readers see the old file or the whole new one.
pub fn write_atomically(path: &Path, bytes: &[u8]) -> io::Result<()> {
    // Unique per process and per call, so concurrent saves never share a temp file.
    static SAVES: AtomicUsize = AtomicUsize::new(0);
    let file_name = path
        .file_name()
        .ok_or_else(|| io::Error::new(io::ErrorKind::InvalidInput, "the path names no file"))?;
    let dir = match path.parent() {
        Some(d) if !d.as_os_str().is_empty() => d,
        _ => Path::new("."),
    };
    let temp = dir.join(format!(
        ".{}.{}-{}.tmp",
        file_name.to_string_lossy(),
        std::process::id(),
        SAVES.fetch_add(1, Ordering::Relaxed)
    ));
    let written = (|| {
        let mut file = OpenOptions::new().write(true).create_new(true).open(&temp)?;
        let (first, second) = bytes.split_at(bytes.len() / 2);
        file.write_all(first)?;
        kill_point::reached(Phase::Save);
        file.write_all(second)?;
        file.sync_all()?;
        fs::rename(&temp, path)?;
        // Sync the folder too, so the rename itself survives a power cut.
        File::open(dir)?.sync_all()
    })();
    if written.is_err() {
        // Best effort: the temp file may not exist or may already be renamed.
        let _ = fs::remove_file(&temp);
    }
    written
}

/// Removes the temporary files that [`write_atomically`] leaves in `dir` when
/// its process is killed mid-write (`.<name>.<pid>-<n>.tmp`). Only for a folder
/// no other process is writing to (a run folder whose lock is held).
pub fn remove_stale_temp_files(dir: &Path) -> io::Result<()> {
    for entry in fs::read_dir(dir)? {
        let path = entry?.path();
        let name = path.file_name().unwrap_or_default().to_string_lossy();
        if name.starts_with('.') && name.ends_with(".tmp") && path.is_file() {
            fs::remove_file(&path)?;
        }
    }
    Ok(())
}

/// Reads a checkpoint written by [`save`] (F64 tensors are rounded to f32).
pub fn load(path: &Path) -> Result<(NamedTensors, CheckpointMetadata), CheckpointError> {
    let file = SafetensorsFile::open(path)?;
    Ok((file.tensors("")?, file.metadata()))
}

/// Reads either a safetensors checkpoint or a Flax msgpack one, told apart by
/// content. A Flax file has no metadata.
pub fn load_any(path: &Path) -> Result<(NamedTensors, CheckpointMetadata), CheckpointError> {
    let bytes = read_bytes(path)?;
    match Format::of(&bytes) {
        Some(Format::Safetensors) => {
            let file = SafetensorsFile::from_bytes(path, bytes)?;
            Ok((file.tensors("")?, file.metadata()))
        }
        Some(Format::Flax) => {
            let tensors = flax_tensors(&bytes).map_err(|p| CheckpointError::new(path, p))?;
            Ok((tensors, BTreeMap::new()))
        }
        None => Err(CheckpointError::new(path, Problem::UnknownFormat)),
    }
}

/// The two checkpoint formats, as their first bytes tell them apart.
enum Format {
    Safetensors,
    Flax,
}

impl Format {
    /// A safetensors header is JSON right after its 8-byte length, so byte 8
    /// is `{`. A Flax state dict is a non-empty msgpack map with string keys:
    /// a map marker (fixmap 0x81-0x8f, map16 0xde, map32 0xdf) and then, after
    /// the map's length, a string marker (fixstr 0xa0-0xbf, str8/16/32
    /// 0xd9-0xdb); a file cut short before that key still counts as Flax (and
    /// fails as truncated msgpack). A Flax file's byte 8 falls inside the first
    /// key or is a value marker, never `{`. The second test keeps out files
    /// whose first byte happens to be a map marker, such as PNG's 0x89.
    fn of(bytes: &[u8]) -> Option<Format> {
        if bytes.get(SAFETENSORS_LEN_BYTES) == Some(&b'{') {
            return Some(Format::Safetensors);
        }
        let key_at = match bytes.first()? {
            0x81..=0x8f => 1,
            0xde => 3,
            0xdf => 5,
            _ => return None,
        };
        match bytes.get(key_at) {
            None | Some(0xa0..=0xbf | 0xd9..=0xdb) => Some(Format::Flax),
            Some(_) => None,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_same_checkpoint_is_saved_as_the_same_bytes() {
        let dir = tempfile::tempdir().unwrap();
        let tensors = NamedTensors::from([
            ("b".to_string(), Tensor::new(&[2], vec![1.0, 2.0])),
            ("a".to_string(), Tensor::new(&[1, 3], vec![3.0, 4.0, 5.0])),
        ]);
        // Enough keys that two hash orders agree by chance with odds of 1 in 20!.
        let metadata: CheckpointMetadata = (0..20).map(|i| (format!("key{i}"), i.to_string())).collect();
        let files: Vec<Vec<u8>> = (0..2)
            .map(|i| {
                let path = dir.path().join(format!("{i}.safetensors"));
                save(&path, &tensors, &metadata).unwrap();
                fs::read(&path).unwrap()
            })
            .collect();
        assert_eq!(files[0], files[1]);
        let (read_tensors, read_metadata) = load(&dir.path().join("0.safetensors")).unwrap();
        assert_eq!((read_tensors, read_metadata), (tensors, metadata));
        let header = String::from_utf8_lossy(&files[0][8..]);
        assert!(
            header.find("\"key0\"") < header.find("\"key1\"") && header.find("\"key1\"") < header.find("\"key10\"")
        );
    }
}
