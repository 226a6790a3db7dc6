//! The GPU augmentation against `Augmentation::apply` and the CPU loader:
//! many random augmentations (flips, full-size and extreme crops) of random
//! images, in f32 (the training type, within 1e-5) and f64 (within 1e-10);
//! bit-identical reruns. The trainer's GPU batches (`BatchPlacer` over
//! `TrainBatches`) against the CPU loader's, in their fixed buffers.

use crate::harness::needing;
use crate::util::{assert_bit_identical, rng};
use cifar_kern::backend::{Backend, BatchPlacer, Labels, PlacedBatch};
use cifar_kern::counters::{self, Event};
use cifar_kern::cuda::augment::{
    augment_batch, identity_records, sample_records, upload_images, AugmentRecord, TrainBatches,
};
use cifar_kern::cuda::{DeviceBuffer, DeviceFloat, Gpu};
use cifar_kern::data::{
    normalize_batch, Augmentation, ImageSet, TrainLoader, TrainOptions, IMAGE_BYTES, IMAGE_SIZE, NUM_CLASSES,
};
use cifar_kern::Tensor;
use libtest_mimic::Trial;
use rand::Rng;
use std::sync::Arc;

const IMAGES: usize = 64;

/// Largest difference allowed between a GPU value and the CPU's, on values
/// of magnitude at most 2.12 ((1 - 0.4465) / 0.2616): in f32, 1e-5. In f64
/// the kernel does the CPU's double operations in the CPU's order through
/// `_rn` intrinsics (never contracted into FMAs, `kernels/augment.cu`), so
/// it should match to the bit, as it does in the emulator (`emu_augment_*`);
/// 1e-10 is the other f64 bounds' value, which one float32 rounding
/// (about 1e-7 on these values) fails.
fn tolerance<T: cifar_kern::Float>() -> f64 {
    if T::NAME == "f64" {
        1e-10
    } else {
        1e-5
    }
}

fn random_images(seed: u64) -> ImageSet {
    let mut rng = rng(seed);
    let images = (0..IMAGES * IMAGE_BYTES).map(|_| rng.random()).collect();
    let labels = (0..IMAGES).map(|_| rng.random_range(0..NUM_CLASSES as u8)).collect();
    ImageSet::new(images, labels)
}

/// Random augmentations of random images, and the edge cases: the
/// identity, full-size flips, the smallest crops at every corner, and
/// one-pixel-thin crops.
fn records() -> Vec<(usize, Augmentation)> {
    let mut rng = rng(1);
    let mut cases: Vec<(usize, Augmentation)> = (0..4)
        .flat_map(|epoch| sample_records(&(0..IMAGES).collect::<Vec<_>>(), 42, epoch))
        .map(|r| (r.image as usize, r.augmentation()))
        .collect();
    let crop = |flip, top, left, height, width| Augmentation {
        flip,
        top,
        left,
        height,
        width,
    };
    for flip in [false, true] {
        cases.push((0, crop(flip, 0, 0, IMAGE_SIZE, IMAGE_SIZE)));
        for (top, left) in [(0, 0), (0, 5), (5, 0), (5, 5)] {
            cases.push((1, crop(flip, top, left, 27, 27)));
        }
        cases.push((2, crop(flip, 0, 3, IMAGE_SIZE, 1)));
        cases.push((3, crop(flip, 31, 0, 1, IMAGE_SIZE)));
        cases.push((4, crop(flip, 7, 9, 1, 1)));
        cases.push((5, crop(flip, 2, 1, 17, 30)));
    }
    // Some arbitrary crops too.
    for _ in 0..64 {
        let (height, width) = (rng.random_range(1..=IMAGE_SIZE), rng.random_range(1..=IMAGE_SIZE));
        let aug = crop(
            rng.random(),
            rng.random_range(0..=IMAGE_SIZE - height),
            rng.random_range(0..=IMAGE_SIZE - width),
            height,
            width,
        );
        cases.push((rng.random_range(0..IMAGES), aug));
    }
    cases
}

fn cpu_batch<T: cifar_kern::Float>(set: &ImageSet, cases: &[(usize, Augmentation)]) -> Tensor<T> {
    let mut out = vec![T::zero(); cases.len() * IMAGE_BYTES];
    for ((i, aug), out) in cases.iter().zip(out.chunks_exact_mut(IMAGE_BYTES)) {
        aug.apply(set.image(*i), out);
    }
    Tensor::new(&[cases.len(), IMAGE_SIZE, IMAGE_SIZE, 3], out)
}

fn gpu_batch<T: DeviceFloat>(gpu: &Gpu, set: &ImageSet, records: &[AugmentRecord]) -> Tensor<T> {
    let images = upload_images(gpu, set);
    let records = gpu.upload_buffer(records);
    gpu.download(&augment_batch::<T>(gpu, &images, &records))
}

/// The largest difference between two batches, with the first image it occurs in.
fn max_difference<T: cifar_kern::Float>(a: &Tensor<T>, b: &Tensor<T>) -> (f64, usize) {
    assert_eq!(a.shape(), b.shape());
    a.data()
        .iter()
        .zip(b.data())
        .enumerate()
        .map(|(i, (x, y))| ((x.f64() - y.f64()).abs(), i / IMAGE_BYTES))
        .fold((0.0, 0), |best, d| if d.0 > best.0 || d.0.is_nan() { d } else { best })
}

fn assert_batches_match<T: cifar_kern::Float>(gpu: &Tensor<T>, cpu: &Tensor<T>, what: impl Fn(usize) -> String) {
    let (diff, image) = max_difference(gpu, cpu);
    let bound = tolerance::<T>();
    assert!(diff <= bound, "{}: differs by {diff:e}, bound {bound:e}", what(image));
}

fn gpu_augment_matches_cpu() {
    let gpu = crate::gpu();
    let set = random_images(0);
    let cases = records();
    let records: Vec<_> = cases.iter().map(|(i, aug)| AugmentRecord::new(*i, aug)).collect();
    let what = |image: usize| format!("{:?}", cases[image]);
    assert_batches_match(&gpu_batch::<f32>(gpu, &set, &records), &cpu_batch(&set, &cases), what);
    assert_batches_match(&gpu_batch::<f64>(gpu, &set, &records), &cpu_batch(&set, &cases), what);
}

/// Identity records are the evaluation batches' plain normalisation.
fn gpu_identity_records_normalise() {
    let gpu = crate::gpu();
    let set = random_images(2);
    let indices: Vec<usize> = (0..IMAGES).rev().collect();
    let got = gpu_batch::<f32>(gpu, &set, &identity_records(&indices));
    assert_batches_match(&got, &normalize_batch(&set, &indices), |i| {
        format!("image {}", indices[i])
    });
}

/// A GPU batch built from `sample_records` of the loader's order is the
/// CPU loader's batch.
fn gpu_augment_reproduces_the_loader() {
    let gpu = crate::gpu();
    let set = Arc::new(random_images(3));
    let batch_size = 16;
    let options = TrainOptions {
        batch_size,
        seed: 7,
        workers: 2,
        prefetch: 1,
        limit_train: None,
    };
    let indices: Vec<usize> = (0..IMAGES).collect();
    let loader = TrainLoader::new(Arc::clone(&set), &indices, options.clone());
    for epoch in 0..2 {
        let order = loader.epoch_order(epoch);
        for (b, batch) in loader.epoch(epoch).enumerate() {
            let chunk = &order[b * batch_size..(b + 1) * batch_size];
            let got = gpu_batch::<f32>(gpu, &set, &sample_records(chunk, options.seed, epoch));
            assert_batches_match(&got, &batch.images, |i| format!("epoch {epoch} batch {b} image {i}"));
        }
    }
}

/// A placed GPU batch's images and labels, on the host, with their device
/// addresses.
fn download(gpu: &Gpu, batch: &PlacedBatch) -> (Tensor<f32>, Vec<u32>, [u64; 2]) {
    let Labels::Gpu(labels) = &batch.labels else {
        panic!("a GPU batch with host labels")
    };
    let at = [gpu.ptr(&batch.images), gpu.buffer_ptr::<u32>(labels)];
    (gpu.download(&batch.images), gpu.download_buffer(labels), at)
}

/// The trainer's GPU batches are the CPU loader's (images within the
/// bound, labels exactly), every batch in the same device buffers; after
/// the first, a batch allocates nothing and never waits for the GPU. The
/// counters are process-wide: this holds with the family run alone, one
/// test at a time (`scripts/gpu/run.sh`).
fn gpu_trainer_batches_are_the_loaders() {
    let gpu = crate::gpu();
    let set = Arc::new(random_images(5));
    let options = TrainOptions {
        batch_size: 16,
        seed: 11,
        workers: 2,
        prefetch: 1,
        limit_train: None,
    };
    // 60 of the 64 images: 3 whole batches, the rest dropped.
    let indices: Vec<usize> = (2..62).collect();
    let loader = TrainLoader::new(Arc::clone(&set), &indices, options);
    let mut placer = BatchPlacer::new(Backend::Gpu(gpu), &loader);
    let mut addresses = None;
    for epoch in 0..2 {
        let mut cpu = loader.epoch(epoch);
        let mut batches = placer.epoch(&loader, epoch);
        assert_eq!(batches.len(), 3);
        for b in 0..3 {
            let before = counters::snapshot();
            let placed = batches.next().expect("a batch");
            let counts = counters::snapshot().since(&before);
            let events = [Event::DeviceAllocation, Event::HostSync, Event::KernelLaunch].map(|e| counts.get(e));
            assert_eq!(
                events,
                [0, 0, 2],
                "epoch {epoch} batch {b}: allocations, waits, launches"
            );
            let (images, labels, at) = download(gpu, &placed);
            assert_eq!(*addresses.get_or_insert(at), at, "epoch {epoch} batch {b} moved");
            let want = cpu.next().expect("the loader's batch");
            assert_eq!(labels, want.labels, "epoch {epoch} batch {b}");
            assert_batches_match(&images, &want.images, |i| format!("epoch {epoch} batch {b} image {i}"));
        }
        assert!(batches.next().is_none() && cpu.next().is_none());
    }
}

/// A batch of another size (an epoch's last partial one) gets buffers of
/// its own; the whole batches keep theirs.
fn gpu_train_batches_of_two_sizes() {
    let gpu = crate::gpu();
    let set = random_images(6);
    let mut batches = TrainBatches::new(gpu, &set, 16);
    type Placed = (Tensor<f32>, Arc<DeviceBuffer<u32>>);
    let at = |batch: &Placed| [gpu.ptr(&batch.0), gpu.buffer_ptr(&batch.1)];
    let check = |batch: &Placed, records: &[AugmentRecord]| {
        let cases: Vec<(usize, Augmentation)> = records.iter().map(|r| (r.image as usize, r.augmentation())).collect();
        assert_batches_match(&gpu.download(&batch.0), &cpu_batch(&set, &cases), |i| {
            format!("{:?}", cases[i])
        });
        let labels: Vec<u32> = cases.iter().map(|&(i, _)| u32::from(set.label(i))).collect();
        assert_eq!(gpu.download_buffer(&batch.1), labels);
    };
    let (whole, partial): (Vec<usize>, Vec<usize>) = ((0..16).rev().collect(), (40..45).collect());
    let records = sample_records(&whole, 3, 1);
    let first = batches.batch(gpu, &records);
    check(&first, &records);
    let records = sample_records(&partial, 3, 1);
    let small = batches.batch(gpu, &records);
    assert_eq!(small.0.shape(), [5, IMAGE_SIZE, IMAGE_SIZE, 3]);
    check(&small, &records);
    let records = sample_records(&whole, 3, 2);
    let again = batches.batch(gpu, &records);
    assert_eq!(at(&again), at(&first));
    check(&again, &records);
}

fn gpu_augment_is_deterministic() {
    let gpu = crate::gpu();
    let set = random_images(4);
    let records = sample_records(&(0..IMAGES).collect::<Vec<_>>(), 42, 0);
    assert_bit_identical(
        &gpu_batch::<f32>(gpu, &set, &records),
        &gpu_batch::<f32>(gpu, &set, &records),
        "augment",
    );
}

/// The `gpu_` tests of this family, ignored without a usable GPU.
pub fn trials() -> Vec<Trial> {
    needing(
        "augment",
        &[&crate::GPU],
        tests![
            gpu_augment_matches_cpu,
            gpu_identity_records_normalise,
            gpu_augment_reproduces_the_loader,
            gpu_trainer_batches_are_the_loaders,
            gpu_train_batches_of_two_sizes,
            gpu_augment_is_deterministic
        ],
    )
}
