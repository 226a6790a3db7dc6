//! CIFAR-10 data: one batch file, a data folder, and a
//! `cifar-10-binary.tar.gz` left in the data folder (unpacked unchecked).
//!
//! The files hold one record each, so that an execution stays cheap. A data
//! folder is encoded as one input: a layout byte, then the contents of the
//! one file it changes. The archive mutator unzips the archive, edits a tar
//! header (entry type, name, link, size, mode) with its checksum fixed, and
//! zips it again; byte-level mutation hits the gzip layer.

use crate::mutate::{self, interesting};
use crate::{refused, Target};
use cifar_kern::data::cifar::{read_batch_file, Cifar10, META_FILE, RECORD_BYTES, TEST_FILE, TRAIN_FILES};
use cifar_kern::data::BATCHES_DIR;
use flate2::read::GzDecoder;
use flate2::write::GzEncoder;
use flate2::Compression;
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use std::fs;
use std::io::{Read, Write};
use std::path::Path;

const RECORDS: usize = 1;
const ARCHIVE: &str = "cifar-10-binary.tar.gz";

pub fn batch_file() -> Target<impl Fn(&mut ChaCha8Rng, &mut Vec<u8>), impl Fn(&[u8], &Path) -> bool> {
    Target {
        name: "batch_file",
        execs: 20_000,
        seeds: (0..3).map(batch).collect(),
        tokens: &[],
        // The format has no structure beyond its size and label bytes, which
        // byte-level mutation reaches; this sets a label.
        mutate: |rng: &mut ChaCha8Rng, input: &mut Vec<u8>| {
            if let Some(label) = input.first_mut() {
                *label = rng.random_range(0..12);
            }
        },
        run: |input: &[u8], dir: &Path| {
            let path = dir.join(TRAIN_FILES[0]);
            fs::write(&path, input).unwrap();
            refused(read_batch_file(&path, RECORDS, dir), &path).is_some()
        },
    }
}

/// Input layout byte: bits 0-2 pick the file the rest of the input replaces
/// (0-4 a training batch, 5 the test batch, 6 `batches.meta.txt`, 7 none);
/// bit 3 puts the files in `cifar-10-batches-bin/`; bit 4 leaves the picked
/// file out instead.
pub fn data_folder() -> Target<impl Fn(&mut ChaCha8Rng, &mut Vec<u8>), impl Fn(&[u8], &Path) -> bool> {
    let mut seeds: Vec<Vec<u8>> = (0..6u8).map(|i| [&[i][..], &batch(i)].concat()).collect();
    seeds.push([&[6u8][..], &meta()].concat());
    seeds.push(vec![8 | 7]);
    Target {
        name: "data_folder",
        execs: 12_000,
        seeds,
        tokens: &[b"\n", b"\r\n", b" ", b"cat\n"],
        mutate: |rng: &mut ChaCha8Rng, input: &mut Vec<u8>| {
            if let Some(layout) = input.first_mut() {
                *layout ^= 1 << rng.random_range(0..5);
            }
        },
        run: |input: &[u8], dir: &Path| {
            let (layout, changed) = input.split_first().unwrap_or((&0, &[]));
            let folder = if layout & 8 != 0 {
                dir.join(BATCHES_DIR)
            } else {
                dir.to_path_buf()
            };
            fs::create_dir_all(&folder).unwrap();
            let names = TRAIN_FILES.iter().chain([&TEST_FILE, &META_FILE]);
            for (i, name) in names.enumerate() {
                let contents = match i == usize::from(layout & 7) {
                    true if layout & 16 != 0 => continue,
                    true => changed.to_vec(),
                    false if i == 6 => meta(),
                    false => batch(i as u8),
                };
                fs::write(folder.join(name), contents).unwrap();
            }
            refused(Cifar10::load_with_records(dir, RECORDS), dir).is_some()
        },
    }
}

pub fn archive() -> Target<impl Fn(&mut ChaCha8Rng, &mut Vec<u8>), impl Fn(&[u8], &Path) -> bool> {
    Target {
        name: "archive",
        execs: 8000,
        seeds: vec![archive_seed()],
        tokens: &[],
        mutate: mutate_archive,
        run: |input: &[u8], dir: &Path| {
            // The data folder sits inside `dir`, so that anything written
            // beside it (out of the data folder) shows.
            let data_dir = dir.join("data");
            fs::create_dir(&data_dir).unwrap();
            fs::write(data_dir.join(ARCHIVE), input).unwrap();
            let loaded = refused(Cifar10::load_with_records(&data_dir, RECORDS), &data_dir).is_some();
            // Refused or not, the unpacking leaves only the archive and, if
            // it got that far, the unpacked folder: no temporary folder, and
            // nothing outside the data folder.
            let mut left: Vec<String> = fs::read_dir(&data_dir)
                .unwrap()
                .map(|e| e.unwrap().file_name().to_string_lossy().into())
                .collect();
            left.sort();
            left.retain(|name| name != ARCHIVE && name != BATCHES_DIR);
            assert!(left.is_empty(), "left in the data folder: {left:?}");
            assert_eq!(
                fs::read_dir(dir).unwrap().count(),
                1,
                "something was written beside the data folder"
            );
            loaded
        },
    }
}

/// A batch file of [`RECORDS`] records with label `label % 10`.
fn batch(label: u8) -> Vec<u8> {
    let mut bytes = vec![label % 10; RECORDS * RECORD_BYTES];
    for (i, b) in bytes.iter_mut().enumerate().skip(1) {
        *b = (i % 251) as u8;
    }
    bytes
}

fn meta() -> Vec<u8> {
    cifar_kern::data::CLASS_NAMES.join("\n").into_bytes()
}

/// The official archive's layout, with one-record batch files.
fn archive_seed() -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    let mut append = |path: &str, data: &[u8], kind: tar::EntryType| {
        let mut header = tar::Header::new_gnu();
        header.set_entry_type(kind);
        header.set_size(data.len() as u64);
        header.set_mode(if kind.is_dir() { 0o755 } else { 0o644 });
        tar.append_data(&mut header, path, data).unwrap();
    };
    append(&format!("{BATCHES_DIR}/"), &[], tar::EntryType::Directory);
    for (i, name) in TRAIN_FILES.iter().chain([&TEST_FILE]).enumerate() {
        append(
            &format!("{BATCHES_DIR}/{name}"),
            &batch(i as u8),
            tar::EntryType::Regular,
        );
    }
    append(&format!("{BATCHES_DIR}/{META_FILE}"), &meta(), tar::EntryType::Regular);
    gzip(&tar.into_inner().unwrap())
}

pub fn gzip(bytes: &[u8]) -> Vec<u8> {
    let mut gz = GzEncoder::new(Vec::new(), Compression::fast());
    gz.write_all(bytes).unwrap();
    gz.finish().unwrap()
}

const BLOCK: usize = 512;

/// Edits one tar header of the unzipped archive, or drops or repeats an
/// entry; leaves inputs that do not unzip.
fn mutate_archive(rng: &mut ChaCha8Rng, input: &mut Vec<u8>) {
    let mut tar = Vec::new();
    if GzDecoder::new(&input[..]).read_to_end(&mut tar).is_err() {
        return;
    }
    let headers = header_offsets(&tar);
    if headers.is_empty() {
        return;
    }
    let at = headers[rng.random_range(0..headers.len())];
    let field = |start: usize, len: usize| at + start..at + start + len;
    let text = |s: &str, len: usize| {
        let mut bytes = s.as_bytes().to_vec();
        bytes.resize(len, 0);
        bytes
    };
    const NAMES: [&str; 6] = [
        "../escaped",
        "/tmp/absolute",
        "cifar-10-batches-bin/../../up",
        "",
        ".",
        "cifar-10-batches-bin",
    ];
    match rng.random_range(0..9) {
        8 => {
            // A GNU long name or a pax path record, which renames the entry after it.
            let name = NAMES[rng.random_range(0..NAMES.len())];
            let entry = if rng.random() {
                extension_entry(tar::EntryType::GNULongName, format!("{name}\0").as_bytes())
            } else {
                extension_entry(tar::EntryType::XHeader, &pax_record("path", name))
            };
            tar.splice(at..at, entry);
            *input = gzip(&tar);
            return;
        }
        0 => tar[at + 156] = b"0123456gxLKSV\0"[rng.random_range(0..14)],
        1 => {
            let name = NAMES[rng.random_range(0..NAMES.len())];
            tar.splice(field(0, 100), text(name, 100));
        }
        2 => {
            let target = ["../../outside", "/etc/passwd", BATCHES_DIR][rng.random_range(0..3)];
            tar.splice(field(157, 100), text(target, 100));
        }
        3 => {
            let size = format!("{:011o}", interesting(rng) & 0o777_7777_7777);
            tar.splice(field(124, 12), text(&size, 12));
        }
        4 => tar[at + 124] = 0x80, // base-256 size: the rest of the field is binary
        5 => {
            let mode = ["0000000", "0000111", "7777777"][rng.random_range(0..3)];
            tar.splice(field(100, 8), text(mode, 8));
        }
        6 => {
            let end = headers.iter().copied().find(|&h| h > at).unwrap_or(tar.len());
            let entry: Vec<u8> = tar[at..end].to_vec();
            if rng.random() {
                tar.drain(at..end);
            } else {
                tar.splice(at..at, entry);
            }
        }
        _ => {
            let (start, end) = (at + rng.random_range(0..BLOCK), at + BLOCK);
            let mut block = tar[start..end].to_vec();
            mutate::bytes(rng, &mut block, &[]);
            block.resize(end - start, 0);
            tar.splice(start..end, block);
        }
    }
    if at + BLOCK <= tar.len() && rng.random_bool(0.9) {
        fix_checksum(&mut tar[at..at + BLOCK]);
    }
    *input = gzip(&tar);
}

/// A header of `kind` and its data, padded to whole blocks.
fn extension_entry(kind: tar::EntryType, data: &[u8]) -> Vec<u8> {
    let mut header = tar::Header::new_gnu();
    header.as_old_mut().name[..13].copy_from_slice(b"././@LongLink");
    header.set_entry_type(kind);
    header.set_size(data.len() as u64);
    header.set_cksum();
    let mut entry = [header.as_bytes(), data].concat();
    entry.resize(BLOCK + data.len().div_ceil(BLOCK) * BLOCK, 0);
    entry
}

/// One pax record, "<length> <key>=<value>\n", its length counting itself.
fn pax_record(key: &str, value: &str) -> Vec<u8> {
    let rest = key.len() + value.len() + 3; // the space, '=' and '\n'
    let mut len = rest + 1;
    while len.to_string().len() + rest != len {
        len += 1;
    }
    format!("{len} {key}={value}\n").into_bytes()
}

/// Where the headers are: each entry is a header block and its data, padded
/// to whole blocks; stops at the first block whose size field is not octal.
fn header_offsets(tar: &[u8]) -> Vec<usize> {
    let mut offsets = Vec::new();
    let mut at = 0;
    while at + BLOCK <= tar.len() && tar[at] != 0 {
        let size = std::str::from_utf8(&tar[at + 124..at + 136])
            .ok()
            .and_then(|s| u64::from_str_radix(s.trim_matches(|c: char| c == '\0' || c == ' '), 8).ok());
        let Some(size) = size else { break };
        offsets.push(at);
        at += BLOCK + (size as usize).div_ceil(BLOCK) * BLOCK;
    }
    offsets
}

/// The header checksum: the byte sum with the checksum field taken as spaces.
fn fix_checksum(header: &mut [u8]) {
    header[148..156].fill(b' ');
    let sum: u32 = header.iter().map(|&b| u32::from(b)).sum();
    header[148..156].copy_from_slice(format!("{sum:06o}\0 ").as_bytes());
}
