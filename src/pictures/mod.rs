//! The pictures `cifar-kern` draws for a reader without TensorBoard: the
//! tutorial's grid of augmented training images ([`augment_grid`]) and the
//! training curves of finished and running runs ([`curves`]).
//!
//! Both end as PNG files written atomically (a reader never sees half a
//! picture) by the `image` crate the binary already uses for `predict`.

pub mod augment_grid;
pub mod curves;

use anyhow::{Context, Result};
use image::{ImageFormat, RgbImage};
use std::io::Cursor;
use std::path::Path;

/// Encodes `image` as PNG and writes it to `path` atomically.
pub fn save_png(path: &Path, image: &RgbImage) -> Result<()> {
    let mut bytes = Vec::new();
    image
        .write_to(&mut Cursor::new(&mut bytes), ImageFormat::Png)
        .context("cannot encode the PNG")?;
    crate::checkpoint::write_atomically(path, &bytes).with_context(|| format!("cannot write {}", path.display()))
}
