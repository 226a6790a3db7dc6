//! Training batches augmented on the GPU (`kernels/augment.cu`), from the
//! data set uploaded once as u8 NHWC.
//!
//! The randomness stays on the host: [`sample_records`] draws each image's
//! [`Augmentation`] from the very stream the CPU loader uses, so a GPU batch
//! equals the CPU loader's batch. Only the records (24 bytes an image)
//! travel per step; the kernels do the flip, the bilinear resize of the crop
//! and the normalisation, and gather the labels from the set's, uploaded
//! with its images.
//!
//! The trainer's batches ([`TrainBatches`]) land in fixed device buffers:
//! every batch of a size at the same addresses, so a CUDA graph captured
//! over one step can replay the next, and no step allocates. Their records
//! go up from pinned host memory, asynchronously, so no step waits for the
//! GPU either.

use super::launch::Launch;
use super::{launch_1d, DeviceBuffer, DeviceFloat, Gpu, GpuTensor};
use crate::data::{training_augmentation, Augmentation, ImageSet, CHANNELS, IMAGE_BYTES, IMAGE_SIZE, MEAN, STD};
use crate::failure::OrFail;
use crate::float::Float;
use cudarc::driver::{CudaEvent, DeviceRepr, PinnedHostSlice, ValidAsZeroBits};
use std::sync::Arc;

/// One batch image: the index of its image in the uploaded set, and its
/// augmentation. `AugmentRecord` in augment.cu.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct AugmentRecord {
    pub image: u32,
    /// 1 to mirror the image, 0 not to.
    pub flip: u32,
    pub top: u32,
    pub left: u32,
    pub height: u32,
    pub width: u32,
}
// SAFETY: #[repr(C)] of six u32, laid out as its C++ twin.
unsafe impl DeviceRepr for AugmentRecord {}
// SAFETY: six u32, for which all bits zero is a value (pinned host buffers
// of records are only read through slices that need it).
unsafe impl ValidAsZeroBits for AugmentRecord {}

impl AugmentRecord {
    /// Image `image` augmented by `aug`; panics on a crop outside the image,
    /// as `Augmentation::apply` does.
    pub fn new(image: usize, aug: &Augmentation) -> Self {
        assert!(
            aug.height > 0 && aug.width > 0 && aug.top + aug.height <= IMAGE_SIZE && aug.left + aug.width <= IMAGE_SIZE,
            "crop {aug:?} outside the image"
        );
        let image = u32::try_from(image).expect("image index beyond u32");
        AugmentRecord {
            image,
            flip: u32::from(aug.flip),
            top: aug.top as u32,
            left: aug.left as u32,
            height: aug.height as u32,
            width: aug.width as u32,
        }
    }

    /// The augmentation the record carries, for `Augmentation::apply`.
    pub fn augmentation(&self) -> Augmentation {
        Augmentation {
            flip: self.flip != 0,
            top: self.top as usize,
            left: self.left as usize,
            height: self.height as usize,
            width: self.width as usize,
        }
    }
}

/// The records of a training batch of the images `indices` in `epoch`: each
/// drawn from its image's stream, as the CPU loader draws it.
pub fn sample_records(indices: &[usize], seed: u64, epoch: usize) -> Vec<AugmentRecord> {
    indices
        .iter()
        .map(|&i| AugmentRecord::new(i, &training_augmentation(seed, epoch, i)))
        .collect()
}

/// Records that only normalise the images `indices` (evaluation batches).
pub fn identity_records(indices: &[usize]) -> Vec<AugmentRecord> {
    indices
        .iter()
        .map(|&i| AugmentRecord::new(i, &Augmentation::IDENTITY))
        .collect()
}

/// The images of `set` on the device: u8 NHWC, 3,072 bytes an image.
pub fn upload_images(gpu: &Gpu, set: &ImageSet) -> DeviceBuffer<u8> {
    gpu.upload_buffer(set.images())
}

crate::kernel_params! {
    /// `AugmentParams<T>` in augment.cu.
    pub struct AugmentParams {
        images: u64,
        records: u64,
        out: u64,
        n: u64,
        num_images: u64,
        mean: [f64; CHANNELS],
        std: [f64; CHANNELS],
    }
}

/// The batch of `n` records into `out` (`n * 32 * 32 * 3` elements of T):
/// `images` holds `num_images * 3,072` bytes (from [`upload_images`]),
/// `records` `n` [`AugmentRecord`]s. The kernel checks each record's image
/// against `num_images`.
pub fn augment_batch_plan<T: Float>(images: u64, num_images: usize, records: u64, n: usize, out: u64) -> Vec<Launch> {
    let params = AugmentParams {
        images,
        records,
        out,
        n: n as u64,
        num_images: num_images as u64,
        mean: MEAN,
        std: STD,
    };
    let cfg = launch_1d(n * IMAGE_BYTES);
    vec![Launch::new::<T, _>("augment", "augment", cfg, params)]
}

/// The batch `[n, 32, 32, 3]` of the `n` records: each record's image of
/// `images` (from [`upload_images`]) augmented and normalised, as
/// `Augmentation::apply`. A record whose image is not in `images` gives NaNs.
pub fn augment_batch<T: DeviceFloat>(
    gpu: &Gpu,
    images: &DeviceBuffer<u8>,
    records: &DeviceBuffer<AugmentRecord>,
) -> GpuTensor<T> {
    assert_eq!(images.len() % IMAGE_BYTES, 0, "images must be whole 32x32x3 images");
    let (num_images, n) = (images.len() / IMAGE_BYTES, records.len());
    let out = gpu.alloc::<T>(&[n, IMAGE_SIZE, IMAGE_SIZE, CHANNELS]);
    let plan = augment_batch_plan::<T>(
        gpu.buffer_ptr(images),
        num_images,
        gpu.buffer_ptr(records),
        n,
        gpu.ptr(&out),
    );
    // SAFETY: out holds n images; the kernel reads only records[0..n] and
    // images below num_images (it checks every record).
    unsafe { gpu.run(&plan) };
    out
}

crate::kernel_params! {
    /// `GatherLabelsParams` in augment.cu.
    pub struct GatherLabelsParams {
        labels: u64,
        records: u64,
        out: u64,
        n: u64,
        num_images: u64,
    }
}

/// The labels of the `n` records into `out` (`n` u32): `labels` holds the
/// `num_images` labels (u8) of the set the records' images index. A record
/// past the set gets the label 0xffffffff, which no class has.
pub fn gather_labels_plan(labels: u64, num_images: usize, records: u64, n: usize, out: u64) -> Vec<Launch> {
    let params = GatherLabelsParams {
        labels,
        records,
        out,
        n: n as u64,
        num_images: num_images as u64,
    };
    // Type-free: one instantiation, without a type suffix.
    vec![Launch::named("augment", "gather_labels".into(), launch_1d(n), params)]
}

/// Pinned record buffers per batch size: the batch being written, and the
/// one whose copy may still be running.
const SLOTS: usize = 2;

/// A training set on the device, and the fixed buffers its batches are
/// augmented into: what the trainer's GPU steps read.
///
/// The set's u8 images and labels go up once. A batch then costs one copy
/// of its records and two launches (augment, gather_labels), all enqueued.
/// Each batch size has its own buffers (an epoch's whole batches, and a
/// last partial one where there is one), made the first time the size
/// comes, so every later batch of that size lands at the same addresses.
pub struct TrainBatches {
    images: DeviceBuffer<u8>,
    labels: DeviceBuffer<u8>,
    buffers: Vec<BatchBuffers>,
}

impl TrainBatches {
    /// Uploads `set` and makes the buffers of batches of `batch_size`, so
    /// that no batch of that size allocates.
    pub fn new(gpu: &Gpu, set: &ImageSet, batch_size: usize) -> Self {
        let mut batches = TrainBatches {
            images: upload_images(gpu, set),
            labels: gpu.upload_buffer(set.labels()),
            buffers: Vec::new(),
        };
        batches.buffers_for(gpu, batch_size);
        batches
    }

    /// The batch of `records` (each image of the set augmented as its record
    /// says, as `Augmentation::apply`): images `[n, 32, 32, 3]` and labels,
    /// in the fixed buffers of batches of `n`. Enqueued; the host goes on at
    /// once. The next batch of `n` overwrites both, in stream order: work
    /// enqueued before it still reads this batch, as does a download.
    pub fn batch(&mut self, gpu: &Gpu, records: &[AugmentRecord]) -> (GpuTensor<f32>, Arc<DeviceBuffer<u32>>) {
        let num_images = self.labels.len();
        let (images, labels) = (gpu.buffer_ptr(&self.images), gpu.buffer_ptr(&self.labels));
        let n = records.len();
        let out = self.buffers_for(gpu, n);
        out.write_records(gpu, records);
        let records = gpu.buffer_ptr(&out.records);
        // The tensor's own address, not `ptr_mut`'s: the buffer is shared
        // with the batches handed out, and must be written where they are.
        let mut plan = augment_batch_plan::<f32>(images, num_images, records, n, gpu.ptr(&out.images));
        plan.extend(gather_labels_plan(
            labels,
            num_images,
            records,
            n,
            gpu.buffer_ptr(&out.labels),
        ));
        // SAFETY: the out buffers hold n images and n labels, the records
        // buffer n records; the kernels read only images and labels below
        // num_images (they check every record).
        unsafe { gpu.run(&plan) };
        (out.images.clone(), Arc::clone(&out.labels))
    }

    /// The buffers of batches of `n`, made if this is the first.
    fn buffers_for(&mut self, gpu: &Gpu, n: usize) -> &mut BatchBuffers {
        assert!(n > 0, "an empty batch");
        let i = match self.buffers.iter().position(|b| b.records.len() == n) {
            Some(i) => i,
            None => {
                self.buffers.push(BatchBuffers::new(gpu, n));
                self.buffers.len() - 1
            }
        };
        &mut self.buffers[i]
    }
}

/// The device buffers of the batches of one size, and the pinned host
/// buffers their records go up from.
struct BatchBuffers {
    images: GpuTensor<f32>,
    labels: Arc<DeviceBuffer<u32>>,
    records: DeviceBuffer<AugmentRecord>,
    staging: [RecordSlot; SLOTS],
    /// The slot the next batch's records are written to.
    next: usize,
}

/// Page-locked records, and an event recorded on the stream after their
/// copy was enqueued. The pinned slice's own event does not serve: cudarc
/// records it only when it tracks events, which our GPU switches off.
struct RecordSlot {
    host: PinnedHostSlice<AugmentRecord>,
    copied: CudaEvent,
}

impl BatchBuffers {
    fn new(gpu: &Gpu, n: usize) -> Self {
        let slot = || RecordSlot {
            host: gpu.alloc_pinned(n),
            copied: gpu.event(),
        };
        BatchBuffers {
            images: gpu.alloc(&[n, IMAGE_SIZE, IMAGE_SIZE, CHANNELS]),
            labels: Arc::new(gpu.alloc_buffer(n)),
            records: gpu.alloc_buffer(n),
            staging: [slot(), slot()],
            next: 0,
        }
    }

    /// Enqueues the copy of `records` into the records buffer. Before the
    /// host writes a slot again it waits for that slot's previous copy,
    /// enqueued SLOTS batches ago: that bounds how far the host runs ahead
    /// without draining the GPU's queue (the copy of the batch before, and
    /// its step, may still run).
    fn write_records(&mut self, gpu: &Gpu, records: &[AugmentRecord]) {
        let slot = &mut self.staging[self.next];
        self.next = (self.next + 1) % SLOTS;
        let waited = || "waiting for an earlier batch's records".to_string();
        slot.copied.synchronize().or_fail(waited);
        let host = slot.host.as_mut_slice().or_fail(waited);
        host.copy_from_slice(records);
        // From page-locked memory the driver copies asynchronously.
        gpu.write_buffer(&mut self.records, host);
        gpu.record(&slot.copied);
    }
}

impl Drop for RecordSlot {
    /// Freeing the pinned memory while its copy runs would corrupt the copy.
    fn drop(&mut self) {
        // A GPU that failed has nothing left to copy.
        let _ = self.copied.synchronize();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::data::image_rng;

    #[test]
    fn parameter_structs_match_the_kernels() {
        for suffix in ["f32", "f64"] {
            let bytes = crate::cuda::ptx_param_bytes("augment", &format!("augment_{suffix}"));
            if let Some(bytes) = bytes {
                assert_eq!(bytes, std::mem::size_of::<AugmentParams>());
            }
        }
        crate::cuda::launch::assert_plan_matches_ptx(&augment_batch_plan::<f32>(1, 10, 2, 128, 3));
        crate::cuda::launch::assert_plan_matches_ptx(&gather_labels_plan(1, 10, 2, 128, 3));
    }

    #[test]
    fn records_carry_the_augmentation() {
        let aug = Augmentation {
            flip: true,
            top: 1,
            left: 2,
            height: 30,
            width: 29,
        };
        let r = AugmentRecord::new(7, &aug);
        assert_eq!(
            (r.image, r.flip, r.top, r.left, r.height, r.width),
            (7, 1, 1, 2, 30, 29)
        );
        assert_eq!(std::mem::size_of::<AugmentRecord>(), 24);
        assert_eq!(r.augmentation(), aug);
        assert_eq!(
            identity_records(&[3])[0],
            AugmentRecord::new(3, &Augmentation::IDENTITY)
        );
    }

    #[test]
    fn sampled_records_are_the_loaders_draws() {
        let records = sample_records(&[5, 9], 42, 3);
        let want = Augmentation::sample(&mut image_rng(42, 3, 9));
        assert_eq!(records[1], AugmentRecord::new(9, &want));
        assert_eq!(records, sample_records(&[5, 9], 42, 3));
    }

    #[test]
    #[should_panic(expected = "outside the image")]
    fn crops_outside_the_image_are_refused() {
        let aug = Augmentation {
            top: 4,
            height: 29,
            ..Augmentation::IDENTITY
        };
        AugmentRecord::new(0, &aug);
    }
}
