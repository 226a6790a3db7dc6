//! The PNG and JPEG images `predict` reads.
//!
//! PNG chunks carry checksums, so the PNG mutator edits one chunk (most
//! often the header's size, bit depth and colour type) and fixes its CRC;
//! the JPEG mutator sets the frame's claimed size. Both targets run the same
//! reader, which tells the format by content.

use crate::mutate::{self, interesting};
use crate::{refused, Target};
use cifar_kern::data::image_file::MAX_IMAGE_SIDE;
use cifar_kern::data::read_image;
use image::{DynamicImage, ImageBuffer, ImageFormat, Luma, Rgb, Rgba};
use rand::Rng;
use rand_chacha::ChaCha8Rng;
use std::fs;
use std::io::Cursor;
use std::path::Path;

pub fn png() -> Target<impl Fn(&mut ChaCha8Rng, &mut Vec<u8>), impl Fn(&[u8], &Path) -> bool> {
    Target {
        name: "png",
        execs: 40_000,
        seeds: seeds(ImageFormat::Png),
        tokens: &[b"IHDR", b"IDAT", b"IEND", b"PLTE", b"tRNS", b"acTL"],
        mutate: mutate_png,
        run: |input: &[u8], dir: &Path| run(input, &dir.join("picture.png")),
    }
}

pub fn jpeg() -> Target<impl Fn(&mut ChaCha8Rng, &mut Vec<u8>), impl Fn(&[u8], &Path) -> bool> {
    Target {
        name: "jpeg",
        execs: 6000,
        seeds: seeds(ImageFormat::Jpeg),
        // Start of image, frame, Huffman table, scan; end of image.
        tokens: &[
            &[0xff, 0xd8],
            &[0xff, 0xc0],
            &[0xff, 0xc2],
            &[0xff, 0xc4],
            &[0xff, 0xda],
            &[0xff, 0xd9],
        ],
        mutate: mutate_jpeg,
        run: |input: &[u8], dir: &Path| run(input, &dir.join("picture.jpg")),
    }
}

fn run(input: &[u8], path: &Path) -> bool {
    fs::write(path, input).unwrap();
    refused(read_image(path), path).is_some()
}

/// Images of the model's size and of other sizes, in several colour types.
fn seeds(format: ImageFormat) -> Vec<Vec<u8>> {
    let rgb = ImageBuffer::from_fn(32, 32, |x, y| Rgb([x as u8 * 8, y as u8 * 8, 128]));
    let rgba = ImageBuffer::from_fn(7, 5, |x, y| Rgba([x as u8 * 30, y as u8 * 40, 9, 200]));
    let gray = ImageBuffer::from_fn(40, 24, |x, y| Luma([(x * y) as u8]));
    let mut images = vec![DynamicImage::ImageRgb8(rgb), DynamicImage::ImageLuma8(gray)];
    if format == ImageFormat::Png {
        images.push(DynamicImage::ImageRgba8(rgba));
    }
    images
        .iter()
        .map(|image| {
            let mut bytes = Cursor::new(Vec::new());
            image.write_to(&mut bytes, format).unwrap();
            bytes.into_inner()
        })
        .collect()
}

/// Edits, repeats or drops one chunk, and recomputes its CRC (almost always).
fn mutate_png(rng: &mut ChaCha8Rng, input: &mut Vec<u8>) {
    let chunks = png_chunks(input);
    if chunks.is_empty() {
        return;
    }
    let (at, len) = chunks[rng.random_range(0..chunks.len())];
    let mut chunk = input[at + 4..at + 8 + len].to_vec(); // type and data
    match rng.random_range(0..6) {
        0 if &chunk[..4] == b"IHDR" && len == 13 => {
            // Width, height, bit depth, colour type, interlacing.
            let i = rng.random_range(0..2) * 4;
            let side = if rng.random_bool(0.75) {
                interesting(rng) as u32
            } else {
                big_side(rng).into()
            };
            chunk[4 + i..8 + i].copy_from_slice(&side.to_be_bytes());
        }
        1 if &chunk[..4] == b"IHDR" && len == 13 => {
            let i = 12 + rng.random_range(0..3);
            chunk[i] = [0, 1, 2, 3, 4, 6, 8, 16, 255][rng.random_range(0..9)];
        }
        2 => {
            let whole = input[at..at + 12 + len].to_vec();
            input.splice(at..at, whole);
            return;
        }
        3 => {
            input.drain(at..at + 12 + len);
            return;
        }
        _ => {
            let mut data = chunk.split_off(4);
            mutate::bytes(rng, &mut data, &[]);
            chunk.extend(data);
        }
    }
    let mut whole = ((chunk.len() - 4) as u32).to_be_bytes().to_vec();
    whole.extend(&chunk);
    let crc = if rng.random_bool(0.95) {
        crc32(&chunk)
    } else {
        rng.random()
    };
    whole.extend(crc.to_be_bytes());
    input.splice(at..at + 12 + len, whole);
}

/// A side near [`MAX_IMAGE_SIDE`]: over it, the reader refuses the header;
/// under it, only the memory limits stand between a short file and a picture
/// of gigabytes. Such pictures take a second to decode, so they are drawn
/// rarely: one time in four here, and rarer still for both sides.
fn big_side(rng: &mut ChaCha8Rng) -> u16 {
    let max = MAX_IMAGE_SIDE as u16;
    [max + 1, u16::MAX, max + 1, rng.random_range(max / 2..=max)][rng.random_range(0..4)]
}

/// (offset, data length) of each whole chunk after the signature.
fn png_chunks(png: &[u8]) -> Vec<(usize, usize)> {
    let mut chunks = Vec::new();
    let mut at = 8;
    while let Some(len) = png.get(at..at + 4) {
        let len = u32::from_be_bytes(len.try_into().unwrap()) as usize;
        if at + 12 + len > png.len() {
            break;
        }
        chunks.push((at, len));
        at += 12 + len;
    }
    chunks
}

/// The CRC-32 PNG chunks end with (over type and data), bit by bit: fast
/// enough for inputs of a few kilobytes.
pub fn crc32(bytes: &[u8]) -> u32 {
    !bytes.iter().fold(!0u32, |crc, &b| {
        (0..8).fold(crc ^ u32::from(b), |c, _| {
            if c & 1 != 0 {
                (c >> 1) ^ 0xedb8_8320
            } else {
                c >> 1
            }
        })
    })
}

/// Sets the height or width of the first frame header (SOF0 or SOF2).
fn mutate_jpeg(rng: &mut ChaCha8Rng, input: &mut Vec<u8>) {
    let frame = input
        .windows(2)
        .position(|w| w[0] == 0xff && (w[1] == 0xc0 || w[1] == 0xc2));
    // Marker, length (2 bytes), precision, then height and width.
    if let Some(at) = frame.filter(|&at| at + 9 <= input.len()) {
        let i = at + 5 + rng.random_range(0..2) * 2;
        let side = if rng.random_bool(0.75) {
            interesting(rng) as u16
        } else {
            big_side(rng)
        };
        input[i..i + 2].copy_from_slice(&side.to_be_bytes());
    }
}
