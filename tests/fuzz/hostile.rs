//! Hostile inputs, refused with an error that names the file: archive
//! entries that leave the data folder or are links, an image that claims
//! 100,000 x 100,000 pixels, a safetensors header that claims 2^40 bytes,
//! msgpack nested 100,000 deep; and the inputs the fuzzer found, each test
//! saying where. The allocator of [`crate::alloc_limit`] guards these tests
//! too: a parser that believed the claimed sizes would abort the binary.

use crate::data::gzip;
use crate::image_files::crc32;
use cifar_kern::checkpoint::{self, SafetensorsFile};
use cifar_kern::data::cifar::Cifar10;
use cifar_kern::data::image_file::MAX_IMAGE_SIDE;
use cifar_kern::data::{read_image, DataError, ImageProblem, RefusedEntry, BATCHES_DIR};
use std::fs;
use std::io::Write;
use std::path::Path;
use tar::EntryType;

/// A `cifar-10-binary.tar.gz` of raw entries (name, type, link target,
/// data), named byte for byte: the tar crate's own path setters refuse `..`,
/// as they should.
fn raw_archive(entries: &[(&str, EntryType, &str, &[u8])]) -> Vec<u8> {
    let mut tar = tar::Builder::new(Vec::new());
    for &(name, kind, link, data) in entries {
        let mut header = tar::Header::new_gnu();
        let raw = header.as_old_mut();
        raw.name[..name.len()].copy_from_slice(name.as_bytes());
        raw.linkname[..link.len()].copy_from_slice(link.as_bytes());
        header.set_entry_type(kind);
        header.set_mode(0o644);
        header.set_size(data.len() as u64);
        header.set_cksum();
        tar.append(&header, data).unwrap();
    }
    gzip(&tar.into_inner().unwrap())
}

/// An archive of one entry, with a few bytes of data if it is a file.
fn archive_of(name: &str, kind: EntryType, link: &str) -> Vec<u8> {
    let data: &[u8] = if kind == EntryType::Regular { b"pwned" } else { b"" };
    raw_archive(&[(name, kind, link, data)])
}

/// Loads a data folder holding only `archive`; returns the error, after
/// checking that nothing was left in or beside the data folder.
fn refused_archive(archive: &[u8]) -> DataError {
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    fs::create_dir(&data_dir).unwrap();
    let path = data_dir.join("cifar-10-binary.tar.gz");
    fs::write(&path, archive).unwrap();
    let err = Cifar10::load(&data_dir).unwrap_err();
    assert!(err.to_string().contains(&path.display().to_string()), "{err}");
    assert_eq!(fs::read_dir(&data_dir).unwrap().count(), 1, "only the archive stays");
    assert_eq!(
        fs::read_dir(dir.path()).unwrap().count(),
        1,
        "nothing beside the data folder"
    );
    err
}

fn assert_refused_entry(archive: &[u8], expected: RefusedEntry) {
    match refused_archive(archive) {
        DataError::RefusedEntry { why, .. } => assert_eq!(why, expected),
        other => panic!("expected {expected:?}, got: {other}"),
    }
}

#[test]
fn archive_entries_that_leave_the_data_folder_are_refused() {
    for name in [
        "../escaped.bin",
        "cifar-10-batches-bin/../../escaped.bin",
        "/tmp/cifar-kern-absolute.bin",
    ] {
        assert_refused_entry(&archive_of(name, EntryType::Regular, ""), RefusedEntry::LeavesFolder);
    }
    assert!(!Path::new("/tmp/cifar-kern-absolute.bin").exists());
}

#[test]
fn paths_from_gnu_long_names_and_pax_records_are_checked_too() {
    let long_name = raw_archive(&[
        ("././@LongLink", EntryType::GNULongName, "", b"../escaped.bin\0"),
        ("harmless.bin", EntryType::Regular, "", b"pwned"),
    ]);
    let pax = raw_archive(&[
        ("PaxHeaders/x", EntryType::XHeader, "", b"23 path=../escaped.bin\n"),
        ("harmless.bin", EntryType::Regular, "", b"pwned"),
    ]);
    for archive in [long_name, pax] {
        assert_refused_entry(&archive, RefusedEntry::LeavesFolder);
    }
}

#[test]
fn archive_links_are_refused() {
    let name = format!("{BATCHES_DIR}/data_batch_1.bin");
    for (kind, target) in [
        (EntryType::Symlink, "/etc/passwd"),
        (EntryType::Symlink, "../.."),
        (EntryType::Link, "../../x"),
    ] {
        assert_refused_entry(&archive_of(&name, kind, target), RefusedEntry::Link);
    }
}

#[test]
fn archive_entries_other_than_files_and_folders_are_refused() {
    let name = format!("{BATCHES_DIR}/data_batch_1.bin");
    for kind in [
        EntryType::Char,
        EntryType::Block,
        EntryType::Fifo,
        EntryType::XGlobalHeader,
    ] {
        assert_refused_entry(&archive_of(&name, kind, ""), RefusedEntry::NotFileOrFolder);
    }
}

/// A PNG whose header claims `width` x `height` 8-bit pixels of `colour`
/// type (0 grey, 2 RGB), with a few bytes of pixels.
fn png_claiming(width: u32, height: u32, colour: u8) -> Vec<u8> {
    let chunk = |kind: &[u8], data: &[u8]| {
        let body = [kind, data].concat();
        [
            &(data.len() as u32).to_be_bytes()[..],
            &body,
            &crc32(&body).to_be_bytes(),
        ]
        .concat()
    };
    let mut ihdr = [width.to_be_bytes(), height.to_be_bytes()].concat();
    ihdr.extend([8, colour, 0, 0, 0]); // no interlacing
    let mut pixels = flate2::write::ZlibEncoder::new(Vec::new(), flate2::Compression::fast());
    pixels.write_all(&[0; 64]).unwrap();
    let idat = pixels.finish().unwrap();
    [
        &b"\x89PNG\r\n\x1a\n"[..],
        &chunk(b"IHDR", &ihdr),
        &chunk(b"IDAT", &idat),
        &chunk(b"IEND", &[]),
    ]
    .concat()
}

#[test]
fn an_image_claiming_100000_by_100000_pixels_is_refused_before_decoding() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("huge.png");
    fs::write(&path, png_claiming(100_000, 100_000, 2)).unwrap();
    let err = read_image(&path).unwrap_err();
    assert!(
        matches!(
            err,
            DataError::Image {
                problem: ImageProblem::TooLarge {
                    width: 100_000,
                    height: 100_000
                },
                ..
            }
        ),
        "{err}"
    );
    let message = err.to_string();
    assert!(
        message.starts_with(&format!("cannot read image {}: ", path.display())),
        "{message}"
    );
    assert!(message.contains("100000 x 100000 pixels"), "{message}");
}

/// Found by fuzz_png (seed 1, iteration 75357) in the first version of the
/// memory check: a grey PNG of 4294967295 x 2147483647 pixels overflowed the
/// byte count.
#[test]
fn an_image_whose_byte_count_overflows_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("widest.png");
    fs::write(&path, png_claiming(u32::MAX, 0x7fff_ffff, 0)).unwrap();
    let err = read_image(&path).unwrap_err();
    assert!(err.to_string().contains("4294967295 x 2147483647 pixels"), "{err}");
}

#[test]
fn an_image_within_the_side_limit_but_over_the_memory_limit_is_refused() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("large.png");
    // 805 MB of RGB pixels, claimed by a file of a hundred bytes.
    fs::write(&path, png_claiming(MAX_IMAGE_SIDE, MAX_IMAGE_SIDE, 2)).unwrap();
    let err = read_image(&path).unwrap_err();
    assert!(
        matches!(
            err,
            DataError::Image {
                problem: ImageProblem::TooLarge { .. },
                ..
            }
        ),
        "{err}"
    );
}

/// Found by fuzz_jpeg (seed 0, iteration 100): a grey JPEG of 16384 x 13360
/// pixels passed the decoder's 256 MiB limit (219 MB decoded), and its RGB
/// copy then asked for 657 MB; the image crate panics when that fails.
#[test]
fn a_grey_jpeg_whose_rgb_copy_exceeds_the_memory_limit_is_refused() {
    let mut jpeg = Vec::new();
    image::GrayImage::new(8, 8)
        .write_to(&mut std::io::Cursor::new(&mut jpeg), image::ImageFormat::Jpeg)
        .unwrap();
    // The frame header: marker, length, precision, then height and width.
    let frame = jpeg.windows(2).position(|w| w == [0xff, 0xc0]).unwrap();
    jpeg[frame + 5..frame + 9].copy_from_slice(&[0x40, 0x00, 0x34, 0x30]);
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("grey.jpg");
    fs::write(&path, jpeg).unwrap();
    let err = read_image(&path).unwrap_err();
    assert!(err.to_string().contains("13360 x 16384 pixels"), "{err}");
}

#[test]
fn images_of_other_sane_sizes_are_still_resized_to_32x32() {
    let dir = tempfile::tempdir().unwrap();
    for (w, h) in [(1, 1), (64, 48), (300, 7)] {
        let path = dir.path().join(format!("{w}x{h}.png"));
        image::RgbImage::from_pixel(w, h, image::Rgb([10, 20, 30]))
            .save(&path)
            .unwrap();
        let pixels = read_image(&path).unwrap();
        assert_eq!(pixels.len(), 32 * 32 * 3);
        assert_eq!(&pixels[..3], &[10, 20, 30]);
    }
}

fn checkpoint_error(name: &str, bytes: &[u8]) -> String {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join(name);
    fs::write(&path, bytes).unwrap();
    let err = checkpoint::load_any(&path).unwrap_err().to_string();
    assert!(err.starts_with(&format!("checkpoint {}: ", path.display())), "{err}");
    err
}

#[test]
fn a_safetensors_header_claiming_2_pow_40_bytes_is_refused() {
    let mut bytes = (1u64 << 40).to_le_bytes().to_vec();
    bytes.extend(b"{}");
    let err = checkpoint_error("model.safetensors", &bytes);
    assert!(err.contains("not a valid safetensors file"), "{err}");
}

#[test]
fn a_safetensors_tensor_claiming_2_pow_40_bytes_is_refused() {
    let header = format!(
        r#"{{"w":{{"dtype":"F32","shape":[{}],"data_offsets":[0,{}]}}}}"#,
        1u64 << 38,
        1u64 << 40
    );
    let mut bytes = (header.len() as u64).to_le_bytes().to_vec();
    bytes.extend(header.as_bytes());
    bytes.extend([0; 16]);
    let err = checkpoint_error("model.safetensors", &bytes);
    assert!(err.contains("not a valid safetensors file"), "{err}");
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("model.safetensors");
    fs::write(&path, &bytes).unwrap();
    assert!(SafetensorsFile::open(&path).is_err());
}

#[test]
fn msgpack_nested_100000_deep_is_refused_without_overflowing_the_stack() {
    // A map with the key "a" whose value is wrapped in 100,000 one-element
    // arrays, or 100,000 one-entry maps.
    for level in [&[0x91][..], &[0x81, 0xa1, b'a']] {
        let mut bytes = vec![0x81, 0xa1, b'a'];
        bytes.extend(level.repeat(100_000));
        bytes.push(0xc0); // nil
        let err = checkpoint_error("model.ckpt", &bytes);
        assert!(err.contains("nests deeper than a Flax state dict"), "{err}");
    }
}
