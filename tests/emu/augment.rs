//! `emu_augment`: the training augmentation (flip, bilinear resize of a
//! crop, normalisation) bit for bit against `Augmentation::apply`: the
//! kernel does the CPU's f64 arithmetic in the CPU's order, correctly
//! rounded, and rounds to T once.
//!
//! Three random u8 images and eight records: the identity, a full-size
//! flip (weights exactly 0 and 1), a flipped non-trivial crop (17x30 at
//! (2, 1)) and an unflipped one (27x26 at (3, 5)), a one-row and a
//! one-pixel crop at the edges, and two records drawn by `sample_records`
//! (the loader's own draws): 8 images of 3,072 values, 96 blocks of 256.
//! A second case gives
//! records the kernel must refuse (an image past the set, crops past the
//! edge, an empty crop): their images come out all NaN, and the emulator
//! checks that nothing is read out of bounds. `launch_1d` caps the grid only
//! at 65,535 blocks, so no small batch takes the grid-stride loop around
//! twice.
//!
//! `emu_augment_gather_labels`: the labels gathered by the records' images,
//! exactly, and a record past the set given the label no class has.

use crate::common::{same_bits, trial, under_seeds, Emu, SEEDS};
use cifar_kern::cuda::augment::{augment_batch_plan, gather_labels_plan, sample_records, AugmentRecord};
use cifar_kern::data::{Augmentation, IMAGE_BYTES, IMAGE_SIZE};
use cifar_kern::{Float, Tensor};
use libtest_mimic::Trial;
use rand::Rng;

const IMAGES: usize = 3;

pub fn trials() -> Vec<Trial> {
    vec![
        trial("emu_augment_records_f32".into(), records_match::<f32>),
        trial("emu_augment_records_f64".into(), records_match::<f64>),
        trial("emu_augment_bad_records_f32".into(), bad_records::<f32>),
        trial("emu_augment_bad_records_f64".into(), bad_records::<f64>),
        trial("emu_augment_gather_labels".into(), gather_labels),
    ]
}

fn images() -> Vec<u8> {
    let mut rng = crate::common::rng(5);
    (0..IMAGES * IMAGE_BYTES).map(|_| rng.random()).collect()
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

/// The batch of `records` from the emulated kernel.
fn emulated<T: Float>(images: &[u8], records: &[AugmentRecord]) -> Result<Tensor<T>, String> {
    let n = records.len();
    let shape = [n, IMAGE_SIZE, IMAGE_SIZE, 3];
    let out = under_seeds("augment", |seed| {
        let mut emu = Emu::default();
        let pimages = emu.mem.upload(images, "images");
        let precords = emu.mem.upload(records, "records");
        let pout = emu.alloc::<T>(n * IMAGE_BYTES, "out");
        emu.run(&augment_batch_plan::<T>(pimages, IMAGES, precords, n, pout), seed)?;
        Ok(vec![emu.download(pout, &shape)])
    })?;
    Ok(out.into_iter().next().unwrap())
}

fn records_match<T: Float>() -> Result<(), String> {
    let images = images();
    let mut cases = vec![
        (2, Augmentation::IDENTITY),
        (0, crop(true, 0, 0, IMAGE_SIZE, IMAGE_SIZE)),
        (1, crop(true, 2, 1, 17, 30)),
        (0, crop(false, 3, 5, 27, 26)),
        (2, crop(true, 31, 0, 1, IMAGE_SIZE)),
        (1, crop(false, 7, 31, 1, 1)),
    ];
    for r in sample_records(&[1, 2], 42, 3) {
        cases.push((r.image as usize, r.augmentation()));
    }
    let records: Vec<AugmentRecord> = cases.iter().map(|(i, aug)| AugmentRecord::new(*i, aug)).collect();
    let got = emulated::<T>(&images, &records)?;
    let mut want = vec![T::zero(); cases.len() * IMAGE_BYTES];
    for ((i, aug), out) in cases.iter().zip(want.chunks_exact_mut(IMAGE_BYTES)) {
        aug.apply(&images[i * IMAGE_BYTES..][..IMAGE_BYTES], out);
    }
    for (k, (i, aug)) in cases.iter().enumerate() {
        let image = |t: &Tensor<T>| Tensor::new(&[IMAGE_BYTES], t.data()[k * IMAGE_BYTES..][..IMAGE_BYTES].to_vec());
        let want = Tensor::new(&[IMAGE_BYTES], want[k * IMAGE_BYTES..][..IMAGE_BYTES].to_vec());
        same_bits(&image(&got), &want, &format!("record {k}: image {i}, {aug:?}"))?;
    }
    Ok(())
}

fn bad_records<T: Float>() -> Result<(), String> {
    let images = images();
    let good = AugmentRecord::new(1, &crop(true, 2, 1, 17, 30));
    let bad = [
        AugmentRecord {
            image: IMAGES as u32,
            ..good
        },
        AugmentRecord { top: 16, ..good },
        AugmentRecord { left: 3, ..good },
        AugmentRecord { height: 0, ..good },
        AugmentRecord { width: 0, ..good },
    ];
    // A valid record between them keeps its image.
    let records: Vec<AugmentRecord> = bad.iter().copied().chain([good]).collect();
    let got = emulated::<T>(&images, &records)?;
    for (k, values) in got.data().chunks_exact(IMAGE_BYTES).enumerate().take(bad.len()) {
        if let Some(j) = values.iter().position(|v| !v.f64().is_nan()) {
            return Err(format!(
                "bad record {k} ({:?}): value {j} is {}, expected NaN",
                records[k],
                values[j].f64()
            ));
        }
    }
    let mut want = vec![T::zero(); IMAGE_BYTES];
    crop(true, 2, 1, 17, 30).apply(&images[IMAGE_BYTES..][..IMAGE_BYTES], &mut want);
    let last = Tensor::new(&[IMAGE_BYTES], got.data()[bad.len() * IMAGE_BYTES..].to_vec());
    same_bits(
        &last,
        &Tensor::new(&[IMAGE_BYTES], want),
        "the valid record after the bad ones",
    )
}

fn gather_labels() -> Result<(), String> {
    let labels: [u8; IMAGES] = [7, 3, 9];
    let good = AugmentRecord::new(0, &Augmentation::IDENTITY);
    // Every image, one twice, in another order; and one past the set.
    let records: Vec<AugmentRecord> = [2, 0, 2, 1, IMAGES as u32]
        .into_iter()
        .map(|image| AugmentRecord { image, ..good })
        .collect();
    let want = [9, 7, 9, 3, u32::MAX];
    for seed in SEEDS {
        let mut emu = Emu::default();
        let plabels = emu.mem.upload(&labels[..], "labels");
        let precords = emu.mem.upload(&records, "records");
        // Zeros, which no wanted label is: poison would pass for the last.
        let pout = emu.mem.upload(&vec![0u32; records.len()], "out");
        let plan = gather_labels_plan(plabels, IMAGES, precords, records.len(), pout);
        emu.run(&plan, seed)
            .map_err(|e| format!("gather_labels (seed {seed}): {e}"))?;
        let got: Vec<u32> = emu.mem.read(pout, records.len());
        if got != want {
            return Err(format!("gather_labels (seed {seed}): {got:?}, expected {want:?}"));
        }
    }
    Ok(())
}
