//! The data module on small synthetic CIFAR-10 copies written to temporary
//! folders (the real files: `tests/fixtures/data.rs`).

use std::fs;
use std::io::{Read, Write};
use std::net::TcpListener;
use std::path::Path;
use std::sync::Arc;
use std::thread;

use cifar_kern::cuda::augment::sample_records;
use cifar_kern::data::cifar::{RECORD_BYTES, TEST_FILE, TRAIN_FILES};
use cifar_kern::data::download::ARCHIVE_NAME;
use cifar_kern::data::split::{NUM_TRAIN_IMAGES, NUM_VAL_IMAGES};
use cifar_kern::data::*;
use rand::{Rng, SeedableRng};
use rand_chacha::ChaCha8Rng;

const RECORDS: usize = 3;

/// Pixel `p` (y * 32 + x) of channel `c` of record `r` in file `f`, as written.
fn pixel_value(f: usize, r: usize, c: usize, p: usize) -> u8 {
    ((f * 53 + r * 31 + c * 101 + p * 7) % 256) as u8
}

fn label_of(f: usize, r: usize) -> u8 {
    ((f * RECORDS + r) % 10) as u8
}

/// A batch file in the official format: label byte, then R, G, B planes.
fn batch_file_bytes(f: usize) -> Vec<u8> {
    let mut bytes = Vec::new();
    for r in 0..RECORDS {
        bytes.push(label_of(f, r));
        for c in 0..CHANNELS {
            bytes.extend((0..IMAGE_SIZE * IMAGE_SIZE).map(|p| pixel_value(f, r, c, p)));
        }
    }
    bytes
}

/// Writes data_batch_1..5.bin (files 0..4) and test_batch.bin (file 5) into `dir`.
fn write_batches(dir: &Path) {
    fs::create_dir_all(dir).unwrap();
    for (f, name) in TRAIN_FILES.iter().chain([&TEST_FILE]).enumerate() {
        fs::write(dir.join(name), batch_file_bytes(f)).unwrap();
    }
}

/// The images files `files` should load as.
fn expected_set(files: std::ops::Range<usize>) -> ImageSet {
    let (mut images, mut labels) = (Vec::new(), Vec::new());
    for f in files {
        for r in 0..RECORDS {
            labels.push(label_of(f, r));
            for p in 0..IMAGE_SIZE * IMAGE_SIZE {
                images.extend((0..CHANNELS).map(|c| pixel_value(f, r, c, p)));
            }
        }
    }
    ImageSet::new(images, labels)
}

fn check_loaded(data: &Cifar10) {
    assert_eq!(data.train, expected_set(0..5));
    assert_eq!(data.test, expected_set(5..6));
}

fn load(dir: &Path) -> Result<Cifar10, DataError> {
    Cifar10::load_with_records(dir, RECORDS)
}

fn load_error(dir: &Path) -> String {
    load(dir).expect_err("loading should fail").to_string()
}

/// A tar.gz of `cifar-10-batches-bin/` holding our synthetic batches.
fn synthetic_archive(path: &Path) {
    let src = tempfile::tempdir().unwrap();
    write_batches(&src.path().join(BATCHES_DIR));
    let gz = flate2::write::GzEncoder::new(fs::File::create(path).unwrap(), flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    tar.append_dir_all(BATCHES_DIR, src.path().join(BATCHES_DIR)).unwrap();
    tar.into_inner().unwrap().finish().unwrap();
}

/// Names in `dir`, sorted.
fn entries(dir: &Path) -> Vec<String> {
    let mut names: Vec<String> = fs::read_dir(dir)
        .unwrap()
        .map(|e| e.unwrap().file_name().to_string_lossy().into_owned())
        .collect();
    names.sort();
    names
}

#[test]
fn reads_bins_in_the_data_dir_as_nhwc() {
    let dir = tempfile::tempdir().unwrap();
    write_batches(dir.path());
    let data = load(dir.path()).unwrap();
    check_loaded(&data);
    // Pixel (y, x) = (1, 2) of channel G of the 2nd training image.
    assert_eq!(data.train.image(1)[(32 + 2) * 3 + 1], pixel_value(0, 1, 1, 32 + 2));
    assert_eq!(data.class_names, CLASS_NAMES);
}

#[test]
fn reads_bins_in_the_batches_subdir_with_class_names() {
    let dir = tempfile::tempdir().unwrap();
    let sub = dir.path().join(BATCHES_DIR);
    write_batches(&sub);
    let names: Vec<String> = (0..10).map(|i| format!("class{i}")).collect();
    fs::write(sub.join("batches.meta.txt"), names.join("\n") + "\n\n").unwrap();
    let data = load(dir.path()).unwrap();
    check_loaded(&data);
    assert_eq!(data.class_names, names);
}

#[test]
fn bad_class_names_file_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    write_batches(dir.path());
    fs::write(dir.path().join("batches.meta.txt"), "cat\ndog\n").unwrap();
    let msg = load_error(dir.path());
    assert!(msg.contains("batches.meta.txt lists 2 class names"), "{msg}");
}

#[test]
fn unpacks_an_archive_placed_in_the_data_dir() {
    let dir = tempfile::tempdir().unwrap();
    synthetic_archive(&dir.path().join(ARCHIVE_NAME));
    check_loaded(&load(dir.path()).unwrap());
    // No staging folder is left behind; the next load reads the unpacked files.
    assert_eq!(entries(dir.path()), [BATCHES_DIR, ARCHIVE_NAME]);
    check_loaded(&load(dir.path()).unwrap());
}

#[test]
fn truncated_file_error_names_the_file_and_the_fix() {
    let dir = tempfile::tempdir().unwrap();
    write_batches(dir.path());
    let path = dir.path().join("data_batch_3.bin");
    fs::write(&path, &batch_file_bytes(2)[..RECORDS * RECORD_BYTES - 100]).unwrap();
    let msg = load_error(dir.path());
    let expected = format!(
        "{} is truncated ({} bytes, expected {})",
        path.display(),
        RECORDS * RECORD_BYTES - 100,
        RECORDS * RECORD_BYTES
    );
    assert!(msg.contains(&expected), "{msg}");
    assert!(
        msg.contains("delete it and run `cifar-kern download --data-dir"),
        "{msg}"
    );
}

#[test]
fn a_file_with_more_records_is_an_error() {
    let dir = tempfile::tempdir().unwrap();
    write_batches(dir.path());
    // Four records where three are expected: a whole number of records, still wrong.
    let mut bytes = batch_file_bytes(5);
    bytes.extend(batch_file_bytes(5)[..RECORD_BYTES].to_vec());
    fs::write(dir.path().join(TEST_FILE), bytes).unwrap();
    let msg = load_error(dir.path());
    assert!(msg.contains("test_batch.bin is too large"), "{msg}");
}

#[test]
fn bad_label_error_names_the_file_and_record() {
    let dir = tempfile::tempdir().unwrap();
    write_batches(dir.path());
    let path = dir.path().join("data_batch_2.bin");
    let mut bytes = batch_file_bytes(1);
    bytes[2 * RECORD_BYTES] = 10;
    fs::write(&path, bytes).unwrap();
    let msg = load_error(dir.path());
    assert!(
        msg.contains(&format!("{} is corrupt: record 2 has label 10", path.display())),
        "{msg}"
    );
}

#[test]
fn missing_file_error_names_the_file() {
    let dir = tempfile::tempdir().unwrap();
    write_batches(&dir.path().join(BATCHES_DIR));
    let path = dir.path().join(BATCHES_DIR).join("data_batch_5.bin");
    fs::remove_file(&path).unwrap();
    let msg = load_error(dir.path());
    assert!(msg.contains(&format!("{} is missing", path.display())), "{msg}");
    assert!(msg.contains("cifar-kern download"), "{msg}");
}

#[test]
fn empty_data_dir_error_says_how_to_get_the_data() {
    let dir = tempfile::tempdir().unwrap();
    let msg = load_error(dir.path());
    assert!(
        msg.starts_with(&format!("no CIFAR-10 data in {}", dir.path().display())),
        "{msg}"
    );
    assert!(
        msg.contains(ARCHIVE_NAME) && msg.contains("cifar-kern download"),
        "{msg}"
    );
}

#[test]
fn md5_check_takes_the_expected_digest() {
    let dir = tempfile::tempdir().unwrap();
    let path = dir.path().join("abc.txt");
    fs::write(&path, "abc").unwrap();
    // RFC 1321's test vector.
    check_md5(&path, "900150983cd24fb0d6963f7d28e17f72").unwrap();
    check_md5(&path, "900150983CD24FB0D6963F7D28E17F72").unwrap();
    let msg = check_md5(&path, "c32a1d4ab5d03f1284b67883e8d87530")
        .unwrap_err()
        .to_string();
    assert!(
        msg.contains("has MD5 900150983cd24fb0d6963f7d28e17f72, expected c32a1d4ab5d03f1284b67883e8d87530"),
        "{msg}"
    );
}

#[test]
fn unpacking_replaces_an_older_copy_and_leaves_no_staging_folder() {
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join(ARCHIVE_NAME);
    synthetic_archive(&archive);
    fs::create_dir(dir.path().join(BATCHES_DIR)).unwrap();
    fs::write(dir.path().join(BATCHES_DIR).join("data_batch_1.bin"), "stale").unwrap();
    let unpacked = unpack_archive(&archive, dir.path()).unwrap();
    assert_eq!(unpacked, dir.path().join(BATCHES_DIR));
    assert_eq!(entries(dir.path()), [BATCHES_DIR, ARCHIVE_NAME]);
    check_loaded(&load(dir.path()).unwrap());
}

#[test]
fn archive_without_the_batches_folder_is_rejected_and_writes_nothing() {
    let dir = tempfile::tempdir().unwrap();
    let archive = dir.path().join(ARCHIVE_NAME);
    let gz = flate2::write::GzEncoder::new(fs::File::create(&archive).unwrap(), flate2::Compression::fast());
    let mut tar = tar::Builder::new(gz);
    let mut header = tar::Header::new_gnu();
    header.set_size(3);
    header.set_mode(0o644);
    header.set_cksum();
    tar.append_data(&mut header, "cifar-10-batches-py/readme", &b"abc"[..])
        .unwrap();
    tar.into_inner().unwrap().finish().unwrap();
    let msg = unpack_archive(&archive, dir.path()).unwrap_err().to_string();
    assert!(msg.contains("holds no cifar-10-batches-bin/ folder"), "{msg}");
    assert_eq!(entries(dir.path()), [ARCHIVE_NAME]);
    // A file that is not gzip at all.
    fs::write(&archive, "not an archive").unwrap();
    let msg = unpack_archive(&archive, dir.path()).unwrap_err().to_string();
    assert!(
        msg.starts_with(&format!("cannot unpack {}", archive.display())),
        "{msg}"
    );
    assert_eq!(entries(dir.path()), [ARCHIVE_NAME]);
}

/// Serves `body` to one HTTP request on a loopback port; returns the URL and the server thread.
fn serve_once(body: Vec<u8>) -> (String, thread::JoinHandle<()>) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/{ARCHIVE_NAME}", listener.local_addr().unwrap());
    let server = thread::spawn(move || {
        let (mut stream, _) = listener.accept().unwrap();
        stream
            .set_read_timeout(Some(std::time::Duration::from_secs(10)))
            .unwrap();
        let mut request = Vec::new();
        let mut byte = [0u8];
        while !request.ends_with(b"\r\n\r\n") && stream.read(&mut byte).unwrap() == 1 {
            request.push(byte[0]);
        }
        let head = format!(
            "HTTP/1.1 200 OK\r\nContent-Length: {}\r\nConnection: close\r\n\r\n",
            body.len()
        );
        stream.write_all(head.as_bytes()).unwrap();
        stream.write_all(&body).unwrap();
    });
    (url, server)
}

#[test]
fn download_streams_checks_and_unpacks() {
    let src = tempfile::tempdir().unwrap();
    let archive = src.path().join(ARCHIVE_NAME);
    synthetic_archive(&archive);
    let md5 = cifar_kern::data::download::md5_hex(&archive).unwrap();
    let (url, server) = serve_once(fs::read(&archive).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let data_dir = dir.path().join("data");
    let unpacked = download_from(&url, &md5, &data_dir).unwrap();
    server.join().unwrap();
    assert_eq!(unpacked, data_dir.join(BATCHES_DIR));
    assert_eq!(entries(&data_dir), [BATCHES_DIR]);
    check_loaded(&load(&data_dir).unwrap());
}

#[test]
fn download_with_a_wrong_md5_writes_nothing() {
    let src = tempfile::tempdir().unwrap();
    let archive = src.path().join(ARCHIVE_NAME);
    synthetic_archive(&archive);
    let (url, server) = serve_once(fs::read(&archive).unwrap());
    let dir = tempfile::tempdir().unwrap();
    let msg = download_from(&url, "c32a1d4ab5d03f1284b67883e8d87530", dir.path())
        .unwrap_err()
        .to_string();
    server.join().unwrap();
    assert!(msg.contains("expected c32a1d4ab5d03f1284b67883e8d87530"), "{msg}");
    assert!(entries(dir.path()).is_empty(), "{:?}", entries(dir.path()));
}

#[test]
fn offline_download_says_where_to_put_the_files() {
    // A loopback port nobody listens on: the connection is refused, as offline.
    let port = TcpListener::bind("127.0.0.1:0").unwrap().local_addr().unwrap().port();
    let url = format!("http://127.0.0.1:{port}/{ARCHIVE_NAME}");
    let dir = tempfile::tempdir().unwrap();
    let err = download_from(&url, "c32a1d4ab5d03f1284b67883e8d87530", dir.path()).unwrap_err();
    let msg = err.to_string();
    assert!(matches!(err, DataError::Download { .. }), "{msg}");
    assert!(msg.starts_with(&format!("could not download {url}")), "{msg}");
    let place = format!("put it in {} as {ARCHIVE_NAME}", dir.path().display());
    assert!(msg.contains(&place), "{msg}");
    assert!(
        msg.contains(&dir.path().join(BATCHES_DIR).display().to_string()),
        "{msg}"
    );
    assert!(entries(dir.path()).is_empty(), "{:?}", entries(dir.path()));
}

#[test]
fn tutorial_split_is_the_files_validation_set_and_the_rest() {
    let split = Split::tutorial();
    let file: Vec<usize> = include_str!("../src/data/tutorial_val_indices.txt")
        .split_whitespace()
        .map(|s| s.parse().unwrap())
        .collect();
    assert_eq!(split.val, file);
    assert_eq!((split.train.len(), split.val.len()), (45_000, NUM_VAL_IMAGES));
    assert!(split.train.windows(2).all(|w| w[0] < w[1]));
    let mut all: Vec<usize> = split.train.iter().chain(&split.val).copied().collect();
    all.sort();
    assert_eq!(all, (0..NUM_TRAIN_IMAGES).collect::<Vec<_>>());
}

#[test]
fn normalisation_uses_the_channel_statistics() {
    let mut image = vec![0u8; IMAGE_BYTES];
    image[3..6].copy_from_slice(&[255, 128, 7]); // pixel (0, 1)
    let set = ImageSet::new(image.repeat(2), vec![3, 4]);
    let batch: cifar_kern::Tensor<f64> = normalize_batch(&set, &[1]);
    assert_eq!(batch.shape(), [1, 32, 32, 3]);
    let expected = [
        (1.0 - 0.49139968) / 0.24703223,
        (128.0 / 255.0 - 0.48215841) / 0.24348513,
        (7.0 / 255.0 - 0.44653091) / 0.26158784,
    ];
    for c in 0..3 {
        assert!((batch.data()[3 + c] - expected[c]).abs() < 1e-12);
        assert!((batch.data()[c] - (-MEAN[c] / STD[c])).abs() < 1e-12);
    }
    let batch32: cifar_kern::Tensor<f32> = normalize_batch(&set, &[0]);
    assert_eq!(batch32.data()[3], expected[0] as f32);
}

fn random_image(rng: &mut impl Rng) -> Vec<u8> {
    (0..IMAGE_BYTES).map(|_| rng.random()).collect()
}

fn augment(image: &[u8], aug: Augmentation) -> Vec<f64> {
    let mut out = vec![0.0; IMAGE_BYTES];
    aug.apply(image, &mut out);
    out
}

fn mirrored(image: &[f64]) -> Vec<f64> {
    let mut out = image.to_vec();
    for y in 0..32 {
        for x in 0..32 {
            for c in 0..3 {
                out[(y * 32 + x) * 3 + c] = image[(y * 32 + 31 - x) * 3 + c];
            }
        }
    }
    out
}

fn crop(flip: bool, top: usize, left: usize, height: usize, width: usize) -> Augmentation {
    Augmentation {
        flip,
        top,
        left,
        height,
        width,
    }
}

#[test]
fn full_image_crop_is_plain_normalisation_and_flip_mirrors() {
    let image = random_image(&mut ChaCha8Rng::seed_from_u64(3));
    let mut plain = vec![0.0f64; IMAGE_BYTES];
    normalize_into(&image, &mut plain);
    assert_eq!(augment(&image, Augmentation::IDENTITY), plain);
    assert_eq!(augment(&image, crop(true, 0, 0, 32, 32)), mirrored(&plain));
    let mut plain32 = vec![0.0f32; IMAGE_BYTES];
    let mut identity32 = vec![0.0f32; IMAGE_BYTES];
    normalize_into(&image, &mut plain32);
    Augmentation::IDENTITY.apply(&image, &mut identity32);
    assert_eq!(identity32, plain32);
}

#[test]
fn flipping_then_cropping_mirrors_the_mirrored_crop() {
    let image = random_image(&mut ChaCha8Rng::seed_from_u64(4));
    // The crop at column 3 of the mirrored image is the mirror of the crop at 32 - 3 - 28 = 1.
    let flipped = augment(&image, crop(true, 2, 3, 29, 28));
    let direct = augment(&image, crop(false, 2, 1, 29, 28));
    for (a, b) in flipped.iter().zip(mirrored(&direct)) {
        assert!((a - b).abs() < 1e-12, "{a} {b}");
    }
}

/// Un-normalises channel `c`.
fn pixel(out: &[f64], y: usize, x: usize, c: usize) -> f64 {
    (out[(y * 32 + x) * 3 + c] * STD[c] + MEAN[c]) * 255.0
}

#[test]
fn bilinear_upsampling_of_a_2x2_crop() {
    // Channel 0 of the crop: 0 16 / 32 48, i.e. 16 x + 32 y.
    let mut image = vec![0u8; IMAGE_BYTES];
    for (y, x, v) in [(5, 7, 0), (5, 8, 16), (6, 7, 32), (6, 8, 48)] {
        image[(y * 32 + x) * 3] = v;
    }
    let out = augment(&image, crop(false, 5, 7, 2, 2));
    // Output 15 samples (15 + 0.5) * 2 / 32 - 0.5 = 0.46875 on both axes:
    // 16 * 0.46875 + 32 * 0.46875 = 22.5.
    assert!((pixel(&out, 15, 15, 0) - 22.5).abs() < 1e-9);
    // Outputs 0..=7 sample below 0 and 24..=31 beyond 1: clamped to the corners.
    assert!(pixel(&out, 7, 7, 0).abs() < 1e-9);
    assert!((pixel(&out, 24, 31, 0) - 48.0).abs() < 1e-9);
    assert!((pixel(&out, 0, 31, 0) - 16.0).abs() < 1e-9);
}

/// The crop coordinate output `o` samples when stretching `len` pixels over 32,
/// clamped to the edge pixels.
fn src_at(o: usize, len: usize) -> f64 {
    ((o as f64 + 0.5) * len as f64 / 32.0 - 0.5).clamp(0.0, len as f64 - 1.0)
}

#[test]
fn bilinear_upsampling_keeps_a_linear_ramp_linear() {
    // Channels 3x, 5y and x + 2y: bilinear interpolation reproduces them exactly.
    let mut image = vec![0u8; IMAGE_BYTES];
    for y in 0..32 {
        for x in 0..32 {
            image[(y * 32 + x) * 3..][..3].copy_from_slice(&[(3 * x) as u8, (5 * y) as u8, (x + 2 * y) as u8]);
        }
    }
    let (top, left, height, width) = (4, 2, 27, 29);
    for flip in [false, true] {
        let out = augment(&image, crop(flip, top, left, height, width));
        for oy in 0..32 {
            for ox in 0..32 {
                let y = top as f64 + src_at(oy, height);
                let x_in_flipped = left as f64 + src_at(ox, width);
                let x = if flip { 31.0 - x_in_flipped } else { x_in_flipped };
                for (c, expected) in [3.0 * x, 5.0 * y, x + 2.0 * y].into_iter().enumerate() {
                    let got = pixel(&out, oy, ox, c);
                    assert!(
                        (got - expected).abs() < 1e-9,
                        "flip {flip} ({oy}, {ox}, {c}): {got} {expected}"
                    );
                }
            }
        }
    }
}

/// A synthetic image set: `n` random images, label i % 10.
fn random_set(n: usize, seed: u64) -> Arc<ImageSet> {
    let mut rng = ChaCha8Rng::seed_from_u64(seed);
    let images = (0..n).flat_map(|_| random_image(&mut rng)).collect();
    Arc::new(ImageSet::new(images, (0..n).map(|i| (i % 10) as u8).collect()))
}

fn options(workers: usize, seed: u64) -> TrainOptions {
    TrainOptions {
        batch_size: 16,
        seed,
        workers,
        prefetch: 2,
        limit_train: None,
    }
}

#[test]
fn training_batches_depend_on_seed_and_epoch_only() {
    let data = random_set(120, 5);
    let indices: Vec<usize> = (10..110).collect();
    let batches = |workers: usize, seed: u64, epoch: usize| -> Vec<Batch> {
        TrainLoader::new(Arc::clone(&data), &indices, options(workers, seed))
            .epoch(epoch)
            .collect()
    };
    let reference = batches(1, 7, 0);
    assert_eq!(reference.len(), 6); // 100 images, batches of 16: the last 4 are dropped
    assert_eq!(reference[0].images.shape(), [16, 32, 32, 3]);
    assert_eq!(batches(1, 7, 0), reference);
    assert_eq!(batches(2, 7, 0), reference);
    assert_eq!(batches(3, 7, 0), reference);
    assert_eq!(batches(8, 7, 0), reference);
    assert_ne!(batches(2, 7, 1), reference);
    assert_ne!(batches(2, 8, 0), reference);
}

#[test]
fn training_batches_follow_the_epoch_order_with_augmented_images() {
    let data = random_set(120, 6);
    let indices: Vec<usize> = (0..120).collect();
    let loader = TrainLoader::new(Arc::clone(&data), &indices, options(2, 9));
    let order = loader.epoch_order(3);
    let mut sorted = order.clone();
    sorted.sort();
    assert_eq!(sorted, indices);
    assert_ne!(order, indices);
    assert_ne!(loader.epoch_order(4), order);
    for (b, batch) in loader.epoch(3).enumerate() {
        let chunk = &order[b * 16..(b + 1) * 16];
        let labels: Vec<u32> = chunk.iter().map(|&i| u32::from(data.label(i))).collect();
        assert_eq!(batch.labels, labels);
        // Each image is its own stream's augmentation of the right source image.
        let k = 5;
        let mut expected = vec![0f32; IMAGE_BYTES];
        Augmentation::sample(&mut image_rng(9, 3, chunk[k])).apply(data.image(chunk[k]), &mut expected);
        assert_eq!(
            &batch.images.data()[k * IMAGE_BYTES..(k + 1) * IMAGE_BYTES],
            &expected[..]
        );
    }
}

/// The index-only epoch a GPU trainer takes is the loader's cut, and the
/// records drawn for it (`sample_records`), applied by the CPU reference of
/// the GPU kernel (`Augmentation::apply`), are the loader's images, bit for bit.
#[test]
fn index_only_epochs_are_the_loaders_batches() {
    let data = random_set(120, 10);
    let indices: Vec<usize> = (3..110).collect(); // 6 batches of 16, 11 images dropped
    let loader = TrainLoader::new(Arc::clone(&data), &indices, options(3, 12));
    for epoch in [0, 5] {
        let cut = loader.epoch_indices(epoch);
        assert_eq!(cut.len(), 6);
        let mut batches = 0;
        for (chunk, batch) in cut.zip(loader.epoch(epoch)) {
            let labels: Vec<u32> = chunk.iter().map(|&i| u32::from(data.label(i))).collect();
            assert_eq!(batch.labels, labels);
            let mut images = vec![0f32; chunk.len() * IMAGE_BYTES];
            for (r, out) in sample_records(&chunk, 12, epoch)
                .iter()
                .zip(images.chunks_exact_mut(IMAGE_BYTES))
            {
                r.augmentation().apply(data.image(r.image as usize), out);
            }
            let bits = |values: &[f32]| values.iter().map(|v| v.to_bits()).collect::<Vec<_>>();
            assert_eq!(batch.images.shape(), [16, 32, 32, 3]);
            assert!(
                bits(batch.images.data()) == bits(&images),
                "epoch {epoch}: other images"
            );
            batches += 1;
        }
        assert_eq!(batches, 6);
    }
}

#[test]
fn augmentation_draws_flips_and_crops() {
    let mut flips = 0;
    let mut full = 0;
    for i in 0..1000 {
        let aug = Augmentation::sample(&mut image_rng(1, 0, i));
        flips += usize::from(aug.flip);
        full += usize::from(aug.height == 32 && aug.width == 32);
        assert!(aug.top + aug.height <= 32 && aug.left + aug.width <= 32);
    }
    assert!((420..580).contains(&flips), "{flips} flips");
    assert!(full < 300, "{full} full crops");
}

#[test]
fn tutorial_split_gives_351_batches_and_limit_train_takes_the_first_images() {
    let split = Split::tutorial();
    let data = Arc::new(ImageSet::new(
        vec![0; NUM_TRAIN_IMAGES * IMAGE_BYTES],
        vec![0; NUM_TRAIN_IMAGES],
    ));
    let loader = TrainLoader::new(Arc::clone(&data), &split.train, TrainOptions::default());
    assert_eq!((loader.num_images(), loader.batches_per_epoch()), (45_000, 351));
    let limited = TrainLoader::new(
        data,
        &split.train,
        TrainOptions {
            limit_train: Some(1000),
            ..TrainOptions::default()
        },
    );
    assert_eq!((limited.num_images(), limited.batches_per_epoch()), (1000, 7));
    let mut order = limited.epoch_order(0);
    order.sort();
    assert_eq!(order, split.train[..1000]);
}

#[test]
fn dropping_an_epoch_early_stops_its_workers() {
    let data = random_set(200, 7);
    let indices: Vec<usize> = (0..200).collect();
    let loader = TrainLoader::new(data, &indices, options(3, 1));
    let mut epoch = loader.epoch(0);
    assert_eq!(epoch.len(), 12);
    epoch.next().unwrap();
    drop(epoch); // joins the workers: returns only if they stopped
}

#[test]
fn eval_batches_keep_every_image_in_order() {
    let data = random_set(40, 8);
    let indices: Vec<usize> = (0..40).rev().collect();
    let batches: Vec<Batch<f64>> = eval_batches(&data, &indices, 16).collect();
    assert_eq!(batches.iter().map(|b| b.labels.len()).collect::<Vec<_>>(), [16, 16, 8]);
    assert_eq!(batches[2].images.shape(), [8, 32, 32, 3]);
    let labels: Vec<u32> = batches.iter().flat_map(|b| b.labels.clone()).collect();
    assert_eq!(labels, indices.iter().map(|&i| (i % 10) as u32).collect::<Vec<_>>());
    let mut first = vec![0.0f64; IMAGE_BYTES];
    normalize_into(data.image(39), &mut first);
    assert_eq!(&batches[0].images.data()[..IMAGE_BYTES], &first[..]);
}

/// `cargo test --release --test data -- --ignored --nocapture augmentation_throughput`
#[test]
#[ignore = "a measurement; run in release"]
fn augmentation_throughput() {
    let data = random_set(4096, 9);
    let indices: Vec<usize> = (0..4096).collect();
    for workers in [1, 2] {
        let loader = TrainLoader::new(
            Arc::clone(&data),
            &indices,
            TrainOptions {
                workers,
                ..TrainOptions::default()
            },
        );
        let start = std::time::Instant::now();
        let images: usize = (0..5).flat_map(|e| loader.epoch(e)).map(|b| b.labels.len()).sum();
        let secs = start.elapsed().as_secs_f64();
        println!("{workers} worker(s): {:.0} augmented images/s", images as f64 / secs);
    }
}
