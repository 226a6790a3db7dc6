//! Checkpoint reading and writing: our safetensors round trip and damaged
//! files (the tutorial's Flax checkpoints against the fixtures' copies of
//! them are in `tests/fixtures/checkpoint.rs`).

mod named_tensors;

use cifar_kern::checkpoint::{self, CheckpointError, Problem};
use cifar_kern::Tensor;
use named_tensors::assert_bit_identical;
use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

#[test]
fn save_load_round_trip() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ckpt.safetensors");
    let tensors = BTreeMap::from([
        (
            "params/Conv_0/kernel".to_string(),
            Tensor::new(&[1, 1, 2, 3], vec![1.5, -0.0, f32::MIN_POSITIVE, 3.0, -7.25, 1e-30]),
        ),
        ("opt/step".to_string(), Tensor::scalar(42.0)),
        ("batch_stats/BatchNorm_0/var".to_string(), Tensor::new(&[0], vec![])),
    ]);
    let metadata = BTreeMap::from([
        ("model".to_string(), "ResNet".to_string()),
        ("epoch".to_string(), "7".to_string()),
    ]);
    checkpoint::save(&path, &tensors, &metadata).unwrap();
    // Saving over an existing checkpoint replaces it and leaves no temp file behind.
    checkpoint::save(&path, &tensors, &metadata).unwrap();
    assert_eq!(fs::read_dir(dir.path()).unwrap().count(), 1);

    let (loaded, loaded_metadata) = checkpoint::load(&path).unwrap();
    assert_bit_identical(&loaded, &tensors, "round trip");
    assert_eq!(loaded_metadata, metadata);
    let (any, any_metadata) = checkpoint::load_any(&path).unwrap();
    assert_bit_identical(&any, &tensors, "load_any");
    assert_eq!(any_metadata, metadata);
}

#[test]
fn save_into_missing_folder_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("no/such/folder/ckpt.safetensors");
    let err = checkpoint::save(&path, &BTreeMap::new(), &BTreeMap::new()).unwrap_err();
    assert!(matches!(err.problem, Problem::Io(_)));
    assert!(err.to_string().contains("ckpt.safetensors"), "{err}");
}

/// Writes `bytes` to a file and reads it back with `read`.
fn read_damaged<T>(bytes: &[u8], read: impl Fn(&Path) -> Result<T, CheckpointError>) -> CheckpointError {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("damaged");
    fs::write(&path, bytes).unwrap();
    let err = read(&path).err().expect("a damaged file must not load");
    assert_eq!(err.path, path);
    assert!(err.to_string().contains("damaged"), "{err}");
    err
}

#[test]
fn damaged_safetensors_files_are_errors() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("ok.safetensors");
    let tensors = BTreeMap::from([("w".to_string(), Tensor::new(&[4], vec![1.0f32, 2.0, 3.0, 4.0]))]);
    checkpoint::save(&path, &tensors, &BTreeMap::new()).unwrap();
    let good = fs::read(&path).unwrap();
    for cut in [0, 5, 8, 20, good.len() - 1] {
        let err = read_damaged(&good[..cut], checkpoint::load);
        assert!(matches!(err.problem, Problem::NotSafetensors(_)), "cut at {cut}: {err}");
    }
    let mut garbage = good.clone();
    garbage[8..16].copy_from_slice(b"not json");
    read_damaged(&garbage, checkpoint::load);
    for neither in [&b""[..], b"hello\n", b"\x89PNG\r\n\x1a\n\0\0\0\rIHDR"] {
        let err = read_damaged(neither, checkpoint::load_any);
        assert!(matches!(err.problem, Problem::UnknownFormat), "{err}");
        let err = read_damaged(neither, checkpoint::read_flax_msgpack);
        assert!(matches!(err.problem, Problem::UnknownFormat), "{err}");
    }
    let err = read_damaged(&good, checkpoint::read_flax_msgpack);
    assert!(err.to_string().contains("it is a safetensors checkpoint"), "{err}");
}

/// A Flax array leaf: ext type 1 holding the msgpack triple (shape, dtype, bytes).
fn flax_leaf(shape: &[u64], dtype: &str, data: Vec<u8>) -> rmpv::Value {
    let triple = rmpv::Value::Array(vec![
        rmpv::Value::Array(shape.iter().map(|&d| d.into()).collect()),
        dtype.into(),
        rmpv::Value::Binary(data),
    ]);
    let mut payload = Vec::new();
    rmpv::encode::write_value(&mut payload, &triple).unwrap();
    rmpv::Value::Ext(1, payload)
}

fn flax_file(leaf: rmpv::Value) -> Vec<u8> {
    let dict = rmpv::Value::Map(vec![(
        "params".into(),
        rmpv::Value::Map(vec![("Dense_0".into(), rmpv::Value::Map(vec![("bias".into(), leaf)]))]),
    )]);
    let mut bytes = Vec::new();
    rmpv::encode::write_value(&mut bytes, &dict).unwrap();
    bytes
}

#[test]
fn flax_float64_arrays_are_converted() {
    let values = [0.1f64, -2.5, 1e300];
    let data = values.iter().flat_map(|v| v.to_le_bytes()).collect();
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("f64.ckpt");
    fs::write(&path, flax_file(flax_leaf(&[3], "float64", data))).unwrap();
    let tensors = checkpoint::read_flax_msgpack(&path).unwrap();
    let bias = &tensors["params/Dense_0/bias"];
    assert_eq!(bias.shape(), &[3]);
    assert_eq!(bias.data(), &[0.1f32, -2.5, f32::INFINITY]);
}

#[test]
fn damaged_flax_files_are_errors() {
    let four_floats = vec![0u8; 16];
    let good = flax_file(flax_leaf(&[4], "float32", four_floats.clone()));
    let dir = tempfile::tempdir().unwrap();
    let good_path = dir.path().join("good.ckpt");
    fs::write(&good_path, &good).unwrap();
    let tensors = checkpoint::read_flax_msgpack(&good_path).unwrap();
    assert_eq!(tensors["params/Dense_0/bias"].shape(), &[4]);

    for cut in [1, good.len() / 2, good.len() - 1] {
        let err = read_damaged(&good[..cut], checkpoint::read_flax_msgpack);
        assert!(matches!(err.problem, Problem::NotMsgpack(_)), "cut at {cut}: {err}");
    }
    let err = read_damaged(
        &flax_file(flax_leaf(&[4], "int32", four_floats.clone())),
        checkpoint::read_flax_msgpack,
    );
    assert!(
        matches!(&err.problem, Problem::Dtype { found, .. } if found == "int32"),
        "{err}"
    );
    let err = read_damaged(
        &flax_file(flax_leaf(&[5], "float32", four_floats.clone())),
        checkpoint::read_flax_msgpack,
    );
    assert!(
        matches!(
            err.problem,
            Problem::ByteCount {
                expected: 20,
                found: 16,
                ..
            }
        ),
        "{err}"
    );
    let err = read_damaged(&flax_file(rmpv::Value::F32(1.0)), checkpoint::read_flax_msgpack);
    assert!(matches!(err.problem, Problem::Malformed(_)), "{err}");
    let err = read_damaged(
        &flax_file(flax_leaf(&[u64::MAX, 4], "float32", four_floats)),
        checkpoint::read_flax_msgpack,
    );
    assert!(matches!(err.problem, Problem::Malformed(_)), "{err}");
    let mut trailing = good.clone();
    trailing.push(0);
    let err = read_damaged(&trailing, checkpoint::read_flax_msgpack);
    assert!(matches!(err.problem, Problem::Malformed(_)), "{err}");
}
