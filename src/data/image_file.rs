//! Reading the PNG and JPEG images that `predict` classifies.
//!
//! The format is told by content, whatever the file is named. The size the
//! header claims is checked before any pixel is decoded, because decoders
//! allocate the whole picture up front: a 100-byte PNG that claims 100,000 x
//! 100,000 pixels would otherwise ask for 30 GB. Every other size is resized
//! to the model's 32x32.

use std::fmt;
use std::io::{self, Cursor};
use std::path::Path;

use image::{ImageError, ImageFormat, ImageReader, Limits};

use super::{DataError, IMAGE_SIZE};

/// The widest and tallest image accepted: twice the long side of a
/// 48-megapixel camera picture (8,000 x 6,000).
pub const MAX_IMAGE_SIDE: u32 = 16_384;
/// The most memory one image may take, decoded (a 16-bit RGBA image of 33
/// megapixels) or as the 8-bit RGB copy the model reads (89 megapixels).
const MAX_DECODED_BYTES: u64 = 256 << 20;

/// What is wrong with an image file.
#[derive(Debug)]
pub enum ImageProblem {
    Read(io::Error),
    NotPngOrJpeg,
    /// Larger than [`MAX_IMAGE_SIDE`] on a side, or than [`MAX_DECODED_BYTES`]
    /// decoded or as RGB.
    TooLarge {
        width: u32,
        height: u32,
    },
    /// The decoder's own complaint: a truncated or corrupt file.
    Decode(ImageError),
}

impl fmt::Display for ImageProblem {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ImageProblem::Read(e) => write!(f, "{e}"),
            ImageProblem::NotPngOrJpeg => write!(f, "it is neither a PNG nor a JPEG file"),
            ImageProblem::TooLarge { width, height } => write!(
                f,
                "its header says {width} x {height} pixels, more than predict decodes (at most \
                 {MAX_IMAGE_SIDE} pixels a side and {} MiB): shrink it first, the model sees it at \
                 {IMAGE_SIZE} x {IMAGE_SIZE} anyway",
                MAX_DECODED_BYTES >> 20
            ),
            ImageProblem::Decode(e) => write!(f, "{e}"),
        }
    }
}

/// Decodes a PNG or JPEG file to 32x32 RGB bytes (HWC), resizing bilinearly
/// if needed.
pub fn read_image(path: &Path) -> Result<Vec<u8>, DataError> {
    let fail = |problem| DataError::Image {
        path: path.to_path_buf(),
        problem,
    };
    let bytes = std::fs::read(path).map_err(|e| fail(ImageProblem::Read(e)))?;
    let format = match image::guess_format(&bytes) {
        Ok(format @ (ImageFormat::Png | ImageFormat::Jpeg)) => format,
        _ => return Err(fail(ImageProblem::NotPngOrJpeg)),
    };
    let reader = |limits| {
        let mut reader = ImageReader::with_format(Cursor::new(&bytes), format);
        reader.limits(limits);
        reader
    };
    // Reading the dimensions decodes only the header; without limits, so
    // that the error can say what size the header claims.
    let (width, height) = reader(Limits::no_limits())
        .into_dimensions()
        .map_err(|e| fail(ImageProblem::Decode(e)))?;
    let too_large = || fail(ImageProblem::TooLarge { width, height });
    // The decoder's limits below cover its own buffer; the RGB copy made
    // after it is checked here, since a grey image triples in it. The sides
    // are checked first, so that the product cannot overflow.
    if width > MAX_IMAGE_SIDE || height > MAX_IMAGE_SIDE || u64::from(width) * u64::from(height) * 3 > MAX_DECODED_BYTES
    {
        return Err(too_large());
    }
    let mut limits = Limits::default();
    limits.max_image_width = Some(MAX_IMAGE_SIDE);
    limits.max_image_height = Some(MAX_IMAGE_SIDE);
    limits.max_alloc = Some(MAX_DECODED_BYTES);
    let image = match reader(limits).decode() {
        Ok(image) => image.to_rgb8(),
        Err(ImageError::Limits(_)) => return Err(too_large()),
        Err(e) => return Err(fail(ImageProblem::Decode(e))),
    };
    let size = IMAGE_SIZE as u32;
    let image = if image.dimensions() == (size, size) {
        image
    } else {
        image::imageops::resize(&image, size, size, image::imageops::FilterType::Triangle)
    };
    Ok(image.into_raw())
}
