//! Checkpoints: our safetensors files and the tutorial's Flax msgpack ones.
//!
//! The safetensors mutator edits the JSON header (dtypes, shapes, offsets,
//! metadata) and writes it back with a consistent length, so that mutants
//! get past the length check into the interesting parts. The msgpack
//! mutator edits the decoded tree, including the `(shape, dtype, bytes)`
//! triples inside the array extensions, or nests values deeply at the byte
//! level.

use crate::mutate::{self, interesting, random_bytes};
use crate::{refused, Target};
use cifar_kern::checkpoint::{self, SafetensorsFile};
use cifar_kern::fixtures::fixtures_dir;
use cifar_kern::Tensor;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use rmpv::Value;
use serde_json::{json, Map, Value as Json};
use std::collections::BTreeMap;
use std::fs;
use std::path::Path;

/// Names the seeds use, asked for one by one as well as all at once.
const NAMES: [&str; 4] = ["params/Conv_0/kernel", "params/Conv_0/bias", "labels", "nope"];

const DTYPES: [&str; 12] = [
    "F32", "F64", "I64", "F16", "BF16", "U8", "I8", "BOOL", "F8_E4M3", "F4", "C64", "X",
];

const FLAX_DTYPES: [&str; 8] = [
    "float32", "float64", "int64", "float16", "bfloat16", "uint8", "", "object",
];

pub fn safetensors() -> Target<impl Fn(&mut ChaCha8Rng, &mut Vec<u8>), impl Fn(&[u8], &Path) -> bool> {
    Target {
        name: "safetensors",
        execs: 40_000,
        seeds: safetensors_seeds(),
        tokens: &[
            b"{",
            b"}",
            b"\"dtype\"",
            b"\"shape\"",
            b"\"data_offsets\"",
            b"\"__metadata__\"",
            b"[",
            b"]",
        ],
        mutate: mutate_safetensors,
        run: |input: &[u8], dir: &Path| {
            let path = dir.join("model.safetensors");
            fs::write(&path, input).unwrap();
            read_checkpoint(&path)
        },
    }
}

pub fn flax() -> Target<impl Fn(&mut ChaCha8Rng, &mut Vec<u8>), impl Fn(&[u8], &Path) -> bool> {
    let mut seeds = vec![flax_seed()];
    // The tutorial's own checkpoints, where this checkout has them: real
    // layouts, but a megabyte each, so mutating them is slower.
    if let Ok(dir) = fixtures_dir() {
        seeds.extend(["DenseNet", "ResNet"].map(|m| fs::read(dir.join(format!("flax/{m}.ckpt"))).unwrap()));
    }
    Target {
        name: "flax",
        execs: 3000,
        seeds,
        // Map, array, string, binary and ext markers with their length fields.
        tokens: &[
            &[0x81],
            &[0x91],
            &[0xde, 0xff, 0xff],
            &[0xdd, 0xff, 0xff, 0xff, 0xff],
            &[0xa6],
            &[0xd9, 0xff],
            &[0xc6, 0xff, 0xff, 0xff, 0xff],
            &[0xc7, 0x10, 0x01],
            &[0xd4, 0x01],
            &[0xc9, 0xff, 0xff, 0xff, 0xff, 0x01],
        ],
        mutate: mutate_msgpack,
        run: |input: &[u8], dir: &Path| {
            let path = dir.join("model.ckpt");
            fs::write(&path, input).unwrap();
            let flax = refused(checkpoint::read_flax_msgpack(&path), &path).is_some();
            let any = refused(checkpoint::load_any(&path), &path).is_some();
            flax || any
        },
    }
}

/// Every reader of a safetensors file, as `eval`, `predict` and the tests
/// call them; whether the whole file was accepted.
fn read_checkpoint(path: &Path) -> bool {
    refused(checkpoint::load_any(path), path);
    refused(checkpoint::load(path), path);
    let Some(file) = refused(SafetensorsFile::open(path), path) else {
        return false;
    };
    file.metadata();
    refused(file.tensors::<f64>("params/"), path);
    for name in NAMES {
        refused(file.tensor::<f32>(name), path);
        refused(file.i64_tensor(name), path);
    }
    refused(file.tensors::<f32>(""), path).is_some()
}

fn safetensors_seeds() -> Vec<Vec<u8>> {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("seed.safetensors");
    let tensors = BTreeMap::from([
        (
            "params/Conv_0/kernel".to_string(),
            Tensor::new(&[3, 3, 1, 2], (0..18).map(|i| i as f32).collect()),
        ),
        ("params/Conv_0/bias".to_string(), Tensor::new(&[2], vec![0.5, -0.5])),
        ("opt/count".to_string(), Tensor::new(&[], vec![3.0])),
    ]);
    let metadata = BTreeMap::from([
        ("model".to_string(), "resnet".to_string()),
        ("epoch".to_string(), "3".to_string()),
    ]);
    checkpoint::save(&path, &tensors, &metadata).unwrap();
    // The fixtures' layout: F64 values and I64 labels, which `save` never writes.
    let header = json!({
        "params/Conv_0/bias": {"dtype": "F64", "shape": [2], "data_offsets": [0, 16]},
        "labels": {"dtype": "I64", "shape": [2, 1], "data_offsets": [16, 32]},
        "__metadata__": {"model": "densenet"},
    });
    let data = [
        1.5f64.to_le_bytes(),
        (-2.0f64).to_le_bytes(),
        7i64.to_le_bytes(),
        9i64.to_le_bytes(),
    ]
    .concat();
    vec![fs::read(&path).unwrap(), safetensors_bytes(&header, &data)]
}

/// A safetensors file: the header's length, the header, the data.
fn safetensors_bytes(header: &Json, data: &[u8]) -> Vec<u8> {
    let header = serde_json::to_vec(header).unwrap();
    [&(header.len() as u64).to_le_bytes()[..], &header, data].concat()
}

/// Edits one header entry (or the data after the header) and writes the
/// header back with its true length; leaves inputs without a JSON header.
fn mutate_safetensors(rng: &mut ChaCha8Rng, input: &mut Vec<u8>) {
    let Some(len) = input
        .get(..8)
        .map(|b| u64::from_le_bytes(b.try_into().unwrap()) as usize)
    else {
        return;
    };
    let Some(Ok(Json::Object(mut header))) = input.get(8..8usize.saturating_add(len)).map(serde_json::from_slice)
    else {
        return;
    };
    let mut data = input[8 + len..].to_vec();
    let names: Vec<String> = header.keys().cloned().collect();
    let Some(name) = names.get(rng.random_range(0..names.len().max(1))) else {
        return;
    };
    let offset = |rng: &mut ChaCha8Rng| {
        if rng.random() {
            interesting(rng)
        } else {
            rng.random_range(0..64)
        }
    };
    let field = |header: &mut Map<String, Json>, key: &str, value: Json| {
        // An entry that an earlier mutation made something else becomes an object again.
        if !header[name].is_object() {
            header[name] = json!({});
        }
        header[name][key] = value;
    };
    match rng.random_range(0..7) {
        0 => field(&mut header, "dtype", json!(DTYPES[rng.random_range(0..DTYPES.len())])),
        1 => field(&mut header, "shape", json!(random_shape(rng))),
        2 => field(&mut header, "data_offsets", json!([offset(rng), offset(rng)])),
        3 => {
            header.remove(name);
        }
        4 => {
            let entry = header[name].clone();
            header.insert(format!("{name}{}", rng.random_range(0..3)), entry);
        }
        5 => {
            let value = match rng.random_range(0..4) {
                0 => json!(interesting(rng)),
                1 => json!(["a", 1]),
                2 => json!({"epoch": {"nested": true}}),
                _ => json!({"k": "v".repeat(rng.random_range(0..1000))}),
            };
            header.insert("__metadata__".into(), value);
        }
        _ => mutate::bytes(rng, &mut data, &[]),
    }
    *input = safetensors_bytes(&Json::Object(header), &data);
}

fn random_shape(rng: &mut ChaCha8Rng) -> Vec<u64> {
    (0..rng.random_range(0..6))
        .map(|_| {
            if rng.random_bool(0.3) {
                interesting(rng)
            } else {
                rng.random_range(0..5)
            }
        })
        .collect()
}

/// A small state dict in the tutorial's layout: nested maps of arrays, in
/// float32 and float64.
fn flax_seed() -> Vec<u8> {
    let map = |entries: Vec<(&str, Value)>| Value::Map(entries.into_iter().map(|(k, v)| (k.into(), v)).collect());
    let f32s = |n: usize| (0..n).flat_map(|i| (i as f32).to_le_bytes()).collect::<Vec<u8>>();
    let root = map(vec![
        (
            "params",
            map(vec![(
                "Conv_0",
                map(vec![
                    ("kernel", flax_array(&[3, 3, 1, 2], "float32", f32s(18))),
                    (
                        "bias",
                        flax_array(
                            &[2],
                            "float64",
                            [0.5f64, 1.0].iter().flat_map(|v| v.to_le_bytes()).collect(),
                        ),
                    ),
                ]),
            )]),
        ),
        (
            "batch_stats",
            map(vec![(
                "BatchNorm_0",
                map(vec![("mean", flax_array(&[2], "float32", f32s(2)))]),
            )]),
        ),
    ]);
    encode(&root)
}

/// One array as `flax.serialization` writes it: ext type 1 holding the
/// msgpack triple (shape, dtype name, little-endian bytes).
fn flax_array(shape: &[u64], dtype: &str, data: Vec<u8>) -> Value {
    let shape = Value::Array(shape.iter().map(|&d| d.into()).collect());
    Value::Ext(1, encode(&Value::Array(vec![shape, dtype.into(), Value::Binary(data)])))
}

fn encode(value: &Value) -> Vec<u8> {
    let mut bytes = Vec::new();
    rmpv::encode::write_value(&mut bytes, value).unwrap();
    bytes
}

/// Deep nesting at the byte level (no tree is built, so no recursion here),
/// or one edit of the decoded tree; inputs that do not decode are left.
fn mutate_msgpack(rng: &mut ChaCha8Rng, input: &mut Vec<u8>) {
    if rng.random_bool(0.1) {
        let levels = [2, 40, 200, 5000][rng.random_range(0..4)];
        // A one-element array, or a one-entry map with the key "a", per level.
        let wrapper: &[u8] = if rng.random() { &[0x91] } else { &[0x81, 0xa1, b'a'] };
        let at = rng.random_range(0..=input.len());
        input.splice(at..at, wrapper.repeat(levels));
        return;
    }
    // A bounded depth keeps the harness's own recursion shallow.
    let Ok(mut root) = rmpv::decode::read_value_with_max_depth(&mut &input[..], 100) else {
        return;
    };
    mutate_value(rng, &mut root);
    *input = encode(&root);
}

/// Walks down to a random node and changes it.
fn mutate_value(rng: &mut ChaCha8Rng, value: &mut Value) {
    match value {
        Value::Map(entries) if !entries.is_empty() && rng.random_bool(0.8) => {
            let i = rng.random_range(0..entries.len());
            match rng.random_range(0..10) {
                0 => {
                    entries.remove(i);
                }
                1 => {
                    let entry = entries[i].clone();
                    entries.push(entry);
                }
                2 => entries[i].0 = random_scalar(rng),
                _ => mutate_value(rng, &mut entries[i].1),
            }
        }
        Value::Array(items) if !items.is_empty() && rng.random_bool(0.8) => {
            let i = rng.random_range(0..items.len());
            mutate_value(rng, &mut items[i]);
        }
        Value::Ext(code, payload) if rng.random_bool(0.8) => match rng.random_range(0..4) {
            0 => *code = rng.random(),
            1 => mutate::bytes(rng, payload, &[]),
            _ => mutate_flax_triple(rng, payload),
        },
        _ => *value = random_scalar(rng),
    }
}

/// Edits the shape, dtype or bytes of an array's `(shape, dtype, bytes)` triple.
fn mutate_flax_triple(rng: &mut ChaCha8Rng, payload: &mut Vec<u8>) {
    let Ok(Value::Array(mut fields)) = rmpv::decode::read_value_with_max_depth(&mut &payload[..], 100) else {
        return;
    };
    if fields.len() != 3 {
        return;
    }
    match rng.random_range(0..4) {
        0 => fields[0] = Value::Array(random_shape(rng).into_iter().map(Value::from).collect()),
        1 => fields[1] = FLAX_DTYPES[rng.random_range(0..FLAX_DTYPES.len())].into(),
        2 => {
            if let Value::Binary(data) = &mut fields[2] {
                mutate::bytes(rng, data, &[]);
            }
        }
        _ => {
            let i = rng.random_range(0..3);
            fields[i] = random_scalar(rng);
        }
    }
    *payload = encode(&Value::Array(fields));
}

fn random_scalar(rng: &mut ChaCha8Rng) -> Value {
    match rng.random_range(0..7) {
        0 => Value::Nil,
        1 => Value::Boolean(rng.random()),
        2 => Value::from(interesting(rng)),
        3 => Value::from(-(rng.random_range(1..1000) as i64)),
        4 => Value::F64(rng.random()),
        5 => Value::from(String::from_utf8_lossy(&random_bytes(rng, 12)).into_owned()),
        _ => Value::Binary(random_bytes(rng, 40)),
    }
}
