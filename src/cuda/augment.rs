//! Training batches augmented on the GPU (`kernels/augment.cu`), from the
//! data set uploaded once as u8 NHWC.
//!
//! The randomness stays on the host: [`sample_records`] draws each image's
//! [`Augmentation`] from the very stream the CPU loader uses, so a GPU batch
//! equals the CPU loader's batch. Only the records (24 bytes an image) and
//! the labels travel per step; the kernel does the flip, the bilinear resize
//! of the crop and the normalisation.

use super::launch::Launch;
use super::{launch_1d, DeviceBuffer, DeviceFloat, Gpu, GpuTensor};
use crate::data::{training_augmentation, Augmentation, ImageSet, CHANNELS, IMAGE_BYTES, IMAGE_SIZE, MEAN, STD};
use crate::float::Float;
use cudarc::driver::DeviceRepr;

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
