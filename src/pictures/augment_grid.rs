//! `cifar-kern augment-preview`: the tutorial's picture of the training
//! augmentation, the first images of the training split with their
//! augmentation above them.
//!
//! The tutorial draws `make_grid` of the first images of its training set,
//! four per row, augmented ones above the originals. We draw the top row
//! with the training loader's own function, [`training_augmentation`], for
//! the given seed and (0-based) epoch, so the picture shows what training
//! feeds the network in that epoch, not a look-alike. The normalised values
//! it produces go back to 8 bits by [`to_u8`]; each 32x32 image is then
//! enlarged `scale` times by repeating pixels (nearest neighbour), so the
//! pixels stay visible, and the cells are separated by a thin grey border
//! (`make_grid`'s padding of 2, in the tutorial's pad value 0.9).

use crate::data::{training_augmentation, ImageSet, CHANNELS, IMAGE_BYTES, IMAGE_SIZE, MEAN, STD};
use image::{Rgb, RgbImage};

/// Pixels of grey between and around the cells.
pub const BORDER: u32 = 2;
/// The border's grey: the tutorial's `pad_value=0.9`.
pub const BORDER_GREY: u8 = 230;

/// A normalised value of `channel` back to 8 bits:
/// round(clamp((x * std + mean) * 255, 0, 255)).
pub fn to_u8(x: f32, channel: usize) -> u8 {
    ((f64::from(x) * STD[channel] + MEAN[channel]) * 255.0)
        .clamp(0.0, 255.0)
        .round() as u8
}

/// Width and height of the grid of `count` images enlarged `scale` times:
/// `count` cells across and two down, with [`BORDER`] around every cell.
pub fn grid_size(count: usize, scale: u32) -> (u32, u32) {
    let cell = IMAGE_SIZE as u32 * scale;
    let across = count as u32;
    (across * (cell + BORDER) + BORDER, 2 * (cell + BORDER) + BORDER)
}

/// The augmented images `indices` of `train` (the training images, as the
/// loader indexes them) as training draws them in `epoch` of a run with
/// `seed`: 32x32x3 u8 each, through [`to_u8`].
pub fn augmented_pixels(train: &ImageSet, indices: &[usize], seed: u64, epoch: usize) -> Vec<Vec<u8>> {
    indices
        .iter()
        .map(|&i| {
            let mut normalised = vec![0f32; IMAGE_BYTES];
            training_augmentation(seed, epoch, i).apply(train.image(i), &mut normalised);
            normalised
                .iter()
                .enumerate()
                .map(|(k, &x)| to_u8(x, k % CHANNELS))
                .collect()
        })
        .collect()
}

/// The grid: the augmented images `indices` in the top row, the same images
/// as stored in the bottom row, each enlarged `scale` times.
pub fn augment_grid(train: &ImageSet, indices: &[usize], seed: u64, epoch: usize, scale: u32) -> RgbImage {
    let (width, height) = grid_size(indices.len(), scale);
    let mut grid = RgbImage::from_pixel(width, height, Rgb([BORDER_GREY; 3]));
    let cell = IMAGE_SIZE as u32 * scale + BORDER;
    let augmented = augmented_pixels(train, indices, seed, epoch);
    for (column, (pixels, &i)) in augmented.iter().zip(indices).enumerate() {
        let left = BORDER + column as u32 * cell;
        paste(&mut grid, pixels, (left, BORDER), scale);
        paste(&mut grid, train.image(i), (left, BORDER + cell), scale);
    }
    grid
}

/// Draws the 32x32x3 `pixels` into `grid` from `(left, top)` on, each
/// pixel as a `scale` x `scale` square.
fn paste(grid: &mut RgbImage, pixels: &[u8], (left, top): (u32, u32), scale: u32) {
    let size = IMAGE_SIZE as u32 * scale;
    for y in 0..size {
        for x in 0..size {
            let source = ((y / scale) as usize * IMAGE_SIZE + (x / scale) as usize) * CHANNELS;
            let rgb = [pixels[source], pixels[source + 1], pixels[source + 2]];
            grid.put_pixel(left + x, top + y, Rgb(rgb));
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn to_u8_inverts_the_normalisation() {
        for channel in 0..CHANNELS {
            for v in [0u8, 1, 127, 254, 255] {
                let x = ((f64::from(v) / 255.0 - MEAN[channel]) / STD[channel]) as f32;
                assert_eq!(to_u8(x, channel), v);
            }
            assert_eq!(to_u8(-100.0, channel), 0);
            assert_eq!(to_u8(100.0, channel), 255);
        }
    }

    #[test]
    fn grid_size_counts_cells_and_borders() {
        // Four 128-pixel cells across, two down, 2-pixel borders.
        assert_eq!(grid_size(4, 4), (4 * 130 + 2, 2 * 130 + 2));
        assert_eq!(grid_size(1, 1), (36, 70));
    }
}
