//! Reading the PNG and JPEG images that `predict` classifies.
//!
//! The format is told by content, whatever the file is named. The size the
//! header claims is checked before any pixel is decoded, because decoders
//! allocate the whole picture up front: a 100-byte PNG that claims 100,000 x
//! 100,000 pixels would otherwise ask for 30 GB. Every other size is resized
//! to the model's 32x32.

use std::io::Cursor;
use std::path::Path;

use image::{ImageError, ImageFormat, ImageReader, Limits};

use super::error::{DataError, ImageProblem};
pub use super::format::MAX_IMAGE_SIDE;
use super::format::{IMAGE_SIZE, MAX_DECODED_BYTES};

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
