//! A minimal TensorBoard event-file writer: scalars only.
//!
//! An event file is a TFRecord stream: each record is `u64 length`,
//! `u32 masked crc32c(length)`, the bytes, `u32 masked crc32c(bytes)`. Each
//! record holds one `tensorflow.Event` protobuf; the first carries
//! `file_version = "brain.Event:2"`, the others a `Summary` with one
//! `simple_value`. The protobuf is small enough to encode by hand:
//!
//! ```text
//! Event   { double wall_time = 1; int64 step = 2; string file_version = 3; Summary summary = 5; }
//! Summary { repeated Value value = 1; }
//! Value   { string tag = 1; float simple_value = 2; }
//! ```

use std::fs::{File, OpenOptions};
use std::io::{self, Write};
use std::path::{Path, PathBuf};
use std::time::{SystemTime, UNIX_EPOCH};

pub struct EventWriter {
    file: File,
    path: PathBuf,
}

fn masked_crc(bytes: &[u8]) -> u32 {
    let crc = crc32c::crc32c(bytes);
    crc.rotate_right(15).wrapping_add(0xa282_ead8)
}

fn varint(mut v: u64, out: &mut Vec<u8>) {
    while v >= 0x80 {
        out.push((v as u8) | 0x80);
        v >>= 7;
    }
    out.push(v as u8);
}

/// A length-delimited field (wire type 2).
fn bytes_field(field: u64, bytes: &[u8], out: &mut Vec<u8>) {
    varint(field << 3 | 2, out);
    varint(bytes.len() as u64, out);
    out.extend_from_slice(bytes);
}

fn now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_secs_f64())
        .unwrap_or(0.0)
}

/// The protobuf of an Event with the given step and payload field.
fn event(step: i64, payload: impl FnOnce(&mut Vec<u8>)) -> Vec<u8> {
    let mut e = vec![0x09]; // wall_time: field 1, 64-bit
    e.extend_from_slice(&now().to_le_bytes());
    varint(2 << 3, &mut e); // step: field 2, varint
    varint(step as u64, &mut e);
    payload(&mut e);
    e
}

impl EventWriter {
    /// Creates `dir/events.out.tfevents.<time>.cifar-kern` and writes the
    /// file-version record.
    pub fn create(dir: &Path) -> io::Result<Self> {
        std::fs::create_dir_all(dir)?;
        let path = dir.join(format!("events.out.tfevents.{}.cifar-kern", now() as u64));
        let file = OpenOptions::new().create(true).append(true).open(&path)?;
        let mut writer = EventWriter { file, path };
        writer.record(&event(0, |e| bytes_field(3, b"brain.Event:2", e)))?;
        Ok(writer)
    }

    pub fn path(&self) -> &Path {
        &self.path
    }

    /// Appends scalar `tag = value` at `step`, and flushes it to disk.
    pub fn scalar(&mut self, tag: &str, value: f64, step: u64) -> io::Result<()> {
        let mut v = Vec::new();
        bytes_field(1, tag.as_bytes(), &mut v);
        v.push(2 << 3 | 5); // simple_value: field 2, 32-bit
        v.extend_from_slice(&(value as f32).to_le_bytes());
        let mut summary = Vec::new();
        bytes_field(1, &v, &mut summary);
        self.record(&event(step as i64, |e| bytes_field(5, &summary, e)))
    }

    fn record(&mut self, data: &[u8]) -> io::Result<()> {
        let len = (data.len() as u64).to_le_bytes();
        let mut rec = Vec::with_capacity(data.len() + 16);
        rec.extend_from_slice(&len);
        rec.extend_from_slice(&masked_crc(&len).to_le_bytes());
        rec.extend_from_slice(data);
        rec.extend_from_slice(&masked_crc(data).to_le_bytes());
        self.file.write_all(&rec)?;
        self.file.flush()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Splits a TFRecord stream into records, checking both CRCs.
    fn records(bytes: &[u8]) -> Vec<&[u8]> {
        let mut out = Vec::new();
        let mut at = 0;
        while at < bytes.len() {
            let len_bytes = &bytes[at..at + 8];
            let len = u64::from_le_bytes(len_bytes.try_into().unwrap()) as usize;
            assert_eq!(
                u32::from_le_bytes(bytes[at + 8..at + 12].try_into().unwrap()),
                masked_crc(len_bytes)
            );
            let data = &bytes[at + 12..at + 12 + len];
            assert_eq!(
                u32::from_le_bytes(bytes[at + 12 + len..at + 16 + len].try_into().unwrap()),
                masked_crc(data)
            );
            out.push(data);
            at += 16 + len;
        }
        out
    }

    #[test]
    fn masked_crc_matches_tensorflow() {
        // TensorFlow's crc32c("") is 0; masked: rotate_right(0, 15) + 0xa282ead8.
        assert_eq!(masked_crc(b""), 0xa282_ead8);
        // crc32c("123456789") = 0xe3069283 (the standard check value).
        assert_eq!(crc32c::crc32c(b"123456789"), 0xe306_9283);
    }

    #[test]
    fn writes_valid_records() {
        let dir = std::env::temp_dir().join(format!("cifar-kern-tb-{}", std::process::id()));
        let mut w = EventWriter::create(&dir).unwrap();
        w.scalar("train/loss", 1.5, 3).unwrap();
        let bytes = std::fs::read(w.path()).unwrap();
        let recs = records(&bytes);
        assert_eq!(recs.len(), 2);
        assert!(recs[0].windows(13).any(|s| s == b"brain.Event:2"));
        assert!(recs[1].windows(10).any(|s| s == b"train/loss"));
        assert!(recs[1].windows(4).any(|s| s == 1.5f32.to_le_bytes()));
        std::fs::remove_dir_all(dir).unwrap();
    }
}
