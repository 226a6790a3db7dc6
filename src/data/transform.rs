//! From u8 NHWC images to normalised float images: evaluation (normalisation
//! only) and training augmentation (flip, random resized crop, normalisation).
//!
//! The augmentation follows the tutorial's torchvision pipeline,
//! `RandomHorizontalFlip()` then `RandomResizedCrop(32, scale=(0.8, 1.0),
//! ratio=(0.9, 1.1))`, then the normalisation, but does all three in one pass
//! over the u8 pixels: each output pixel is a bilinear blend of four source
//! pixels, the flip only mirrors the source columns, and the blend is
//! normalised as it is written. The crop is at most the whole 32x32 image, so
//! the resize only ever upsamples, where torchvision's bilinear (PIL's and
//! tensors' alike) is plain interpolation with half-pixel centres
//! (align_corners=False) and edge clamping. One difference: torchvision on PIL
//! images rounds the resized crop to u8 before normalising; we keep the
//! interpolated value exact.

use rand::Rng;

use super::{ImageSet, CHANNELS, IMAGE_BYTES, IMAGE_SIZE};
use crate::{Float, Tensor};

/// Per-channel (R, G, B) mean of the 50,000 training images, on pixel/255.
pub const MEAN: [f64; CHANNELS] = [0.49139968, 0.48215841, 0.44653091];
/// Per-channel standard deviation of the 50,000 training images, on pixel/255.
pub const STD: [f64; CHANNELS] = [0.24703223, 0.24348513, 0.26158784];
/// Range of the crop's area, as a fraction of the image's.
pub const CROP_SCALE: (f64, f64) = (0.8, 1.0);
/// Range of the crop's aspect ratio (width / height), sampled log-uniformly.
pub const CROP_RATIO: (f64, f64) = (0.9, 1.1);

fn normalize(value: f64, channel: usize) -> f64 {
    (value / 255.0 - MEAN[channel]) / STD[channel]
}

/// Normalises one 32x32x3 u8 image into `out` (3,072 values, HWC).
pub fn normalize_into<T: Float>(image: &[u8], out: &mut [T]) {
    assert_eq!(image.len(), IMAGE_BYTES, "image size");
    assert_eq!(out.len(), IMAGE_BYTES, "output size");
    for (pixel, out) in image.chunks_exact(CHANNELS).zip(out.chunks_exact_mut(CHANNELS)) {
        for (c, (&v, o)) in pixel.iter().zip(out).enumerate() {
            *o = T::of(normalize(f64::from(v), c));
        }
    }
}

/// The images `indices` of `set`, normalised, as a `[n, 32, 32, 3]` tensor.
pub fn normalize_batch<T: Float>(set: &ImageSet, indices: &[usize]) -> Tensor<T> {
    let mut data = vec![T::zero(); indices.len() * IMAGE_BYTES];
    for (&i, out) in indices.iter().zip(data.chunks_exact_mut(IMAGE_BYTES)) {
        normalize_into(set.image(i), out);
    }
    Tensor::new(&[indices.len(), IMAGE_SIZE, IMAGE_SIZE, CHANNELS], data)
}

/// One image's augmentation: mirror it if `flip`, then take the crop of rows
/// `top..top + height` and columns `left..left + width` of the mirrored image
/// and resize it to 32x32.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Augmentation {
    pub flip: bool,
    pub top: usize,
    pub left: usize,
    pub height: usize,
    pub width: usize,
}

impl Augmentation {
    /// No flip, the whole image: plain normalisation.
    pub const IDENTITY: Augmentation = Augmentation {
        flip: false,
        top: 0,
        left: 0,
        height: IMAGE_SIZE,
        width: IMAGE_SIZE,
    };

    /// Draws the flip (p = 0.5), then the crop as torchvision's
    /// `RandomResizedCrop.get_params` with [`CROP_SCALE`] and [`CROP_RATIO`].
    pub fn sample(rng: &mut impl Rng) -> Self {
        let flip = rng.random_bool(0.5);
        let (top, left, height, width) = resized_crop_params(rng, IMAGE_SIZE, IMAGE_SIZE, CROP_SCALE, CROP_RATIO);
        Augmentation {
            flip,
            top,
            left,
            height,
            width,
        }
    }

    /// Writes the augmented, normalised `image` (32x32x3 u8) into `out` (3,072 values, HWC).
    pub fn apply<T: Float>(&self, image: &[u8], out: &mut [T]) {
        assert_eq!(image.len(), IMAGE_BYTES, "image size");
        assert_eq!(out.len(), IMAGE_BYTES, "output size");
        assert!(
            self.height > 0
                && self.width > 0
                && self.top + self.height <= IMAGE_SIZE
                && self.left + self.width <= IMAGE_SIZE,
            "crop {self:?} outside the image"
        );
        let rows = taps(self.top, self.height, |y| y);
        let cols = taps(
            self.left,
            self.width,
            |x| if self.flip { IMAGE_SIZE - 1 - x } else { x },
        );
        let pixel = |y: usize, x: usize| &image[(y * IMAGE_SIZE + x) * CHANNELS..][..CHANNELS];
        for (row, out_row) in rows.iter().zip(out.chunks_exact_mut(IMAGE_SIZE * CHANNELS)) {
            for (col, out) in cols.iter().zip(out_row.chunks_exact_mut(CHANNELS)) {
                let (p00, p01) = (pixel(row.i0, col.i0), pixel(row.i0, col.i1));
                let (p10, p11) = (pixel(row.i1, col.i0), pixel(row.i1, col.i1));
                for (c, o) in out.iter_mut().enumerate() {
                    let upper = col.w0 * f64::from(p00[c]) + col.w1 * f64::from(p01[c]);
                    let lower = col.w0 * f64::from(p10[c]) + col.w1 * f64::from(p11[c]);
                    *o = T::of(normalize(row.w0 * upper + row.w1 * lower, c));
                }
            }
        }
    }
}

/// The two source pixels an output coordinate blends, and their weights.
struct Tap {
    i0: usize,
    i1: usize,
    w0: f64,
    w1: f64,
}

/// Bilinear taps for stretching source pixels `start..start + len` over the
/// 32 output pixels (align_corners=False: output `o` samples source
/// coordinate `(o + 0.5) * len / 32 - 0.5`, clamped at 0; the last pixel
/// repeats past the end). `to_source` maps crop coordinates to image ones.
/// When `len` is 32 every weight is exactly 0 or 1, so the crop is copied
/// unchanged.
fn taps(start: usize, len: usize, to_source: impl Fn(usize) -> usize) -> [Tap; IMAGE_SIZE] {
    let scale = len as f64 / IMAGE_SIZE as f64;
    std::array::from_fn(|o| {
        let src = ((o as f64 + 0.5) * scale - 0.5).max(0.0);
        let i0 = src as usize;
        let w1 = src - i0 as f64;
        Tap {
            i0: to_source(start + i0),
            i1: to_source(start + (i0 + 1).min(len - 1)),
            w0: 1.0 - w1,
            w1,
        }
    })
}

/// Uniform in `[lo, hi)` as torch's `uniform_`: `lo + (hi - lo) * U[0, 1)`, so `lo == hi` is allowed.
fn uniform(rng: &mut impl Rng, lo: f64, hi: f64) -> f64 {
    lo + (hi - lo) * rng.random::<f64>()
}

/// torchvision's `RandomResizedCrop.get_params` for a `height` x `width`
/// image: `(top, left, crop height, crop width)`. Up to ten tries of an area
/// fraction uniform in `scale` and an aspect ratio log-uniform in `ratio`,
/// sides rounded half to even as Python's `round`, accepted if the crop fits;
/// else the largest central crop whose ratio is clamped into `ratio`.
fn resized_crop_params(
    rng: &mut impl Rng,
    height: usize,
    width: usize,
    scale: (f64, f64),
    ratio: (f64, f64),
) -> (usize, usize, usize, usize) {
    let area = (height * width) as f64;
    for _ in 0..10 {
        let target_area = area * uniform(rng, scale.0, scale.1);
        let aspect = uniform(rng, ratio.0.ln(), ratio.1.ln()).exp();
        let w = (target_area * aspect).sqrt().round_ties_even() as usize;
        let h = (target_area / aspect).sqrt().round_ties_even() as usize;
        if 0 < w && w <= width && 0 < h && h <= height {
            let top = rng.random_range(0..=height - h);
            let left = rng.random_range(0..=width - w);
            return (top, left, h, w);
        }
    }
    let in_ratio = width as f64 / height as f64;
    let (h, w) = if in_ratio < ratio.0 {
        ((width as f64 / ratio.0).round_ties_even() as usize, width)
    } else if in_ratio > ratio.1 {
        (height, (height as f64 * ratio.1).round_ties_even() as usize)
    } else {
        (height, width)
    };
    ((height - h) / 2, (width - w) / 2, h, w)
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;
    use rand_chacha::ChaCha8Rng;

    #[test]
    fn crop_params_stay_in_range_and_cover_the_scale() {
        let mut rng = ChaCha8Rng::seed_from_u64(1);
        let (mut min_area, mut max_area) = (usize::MAX, 0);
        for _ in 0..10_000 {
            let (top, left, h, w) = resized_crop_params(&mut rng, 32, 32, CROP_SCALE, CROP_RATIO);
            assert!(top + h <= 32 && left + w <= 32, "{top} {left} {h} {w}");
            // Rounding each side can move the area and ratio a little past their ranges.
            assert!((27..=32).contains(&h) && (27..=32).contains(&w), "{h} {w}");
            min_area = min_area.min(h * w);
            max_area = max_area.max(h * w);
        }
        assert!(min_area <= 29 * 29 && max_area == 1024, "{min_area} {max_area}");
    }

    #[test]
    fn crop_params_fall_back_to_a_central_crop() {
        let mut rng = ChaCha8Rng::seed_from_u64(2);
        // An area above the image's never fits: the fallback with the ratio
        // clamped into range (square image, ratio >= 1.5: full width, h = round(32 / 1.5) = 21).
        assert_eq!(
            resized_crop_params(&mut rng, 32, 32, (2.0, 3.0), (1.5, 2.0)),
            (5, 0, 21, 32)
        );
        // Too wide an image for ratio <= 1: full height, w = round(30 * 1.0) = 30.
        assert_eq!(
            resized_crop_params(&mut rng, 30, 32, (2.0, 3.0), (0.5, 1.0)),
            (0, 1, 30, 30)
        );
        assert_eq!(
            resized_crop_params(&mut rng, 10, 32, (2.0, 3.0), (0.5, 2.0)),
            (0, 6, 10, 20)
        );
        assert_eq!(
            resized_crop_params(&mut rng, 32, 32, (2.0, 3.0), (0.9, 1.1)),
            (0, 0, 32, 32)
        );
    }

    #[test]
    fn taps_of_a_full_row_are_the_identity() {
        for (o, tap) in taps(0, IMAGE_SIZE, |x| x).iter().enumerate() {
            assert_eq!((tap.i0, tap.w0, tap.w1), (o, 1.0, 0.0));
        }
    }

    #[test]
    fn taps_follow_half_pixel_centres() {
        // 16 source pixels over 32: output o samples (o + 0.5) / 2 - 0.5.
        let t = taps(4, 16, |x| x);
        assert_eq!((t[0].i0, t[0].i1, t[0].w1), (4, 5, 0.0)); // -0.25 clamped to 0
        assert_eq!((t[1].i0, t[1].i1, t[1].w1), (4, 5, 0.25));
        assert_eq!((t[2].i0, t[2].i1, t[2].w1), (4, 5, 0.75));
        assert_eq!((t[3].i0, t[3].i1, t[3].w1), (5, 6, 0.25));
        assert_eq!((t[31].i0, t[31].i1, t[31].w1), (19, 19, 0.25)); // 15.25: the last pixel repeats
    }
}
