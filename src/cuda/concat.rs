//! Launchers for `kernels/concat.cu`: concatenation along the last
//! (channel) axis and its backward split, as `ops::concat`.
//!
//! The piece pointers, widths and channel offsets travel in fixed arrays of
//! [`MAX_PIECES`] inside the parameter struct; a list of more pieces (the
//! networks use 2 and 4) takes one launch per group of [`MAX_PIECES`].

use super::{launch_1d, DeviceFloat, Gpu, GpuTensor};
use cudarc::driver::{DeviceRepr, LaunchConfig};

/// Pieces per launch (`MAX_PIECES` in concat.cu).
const MAX_PIECES: usize = 8;

/// `ConcatParams<T>` in concat.cu; unused slots stay zero.
#[repr(C)]
#[derive(Default)]
struct ConcatParams {
    pieces: [u64; MAX_PIECES],
    widths: [u64; MAX_PIECES],
    offsets: [u64; MAX_PIECES],
    whole: u64,
    rows: u64,
    total: u64,
}
// SAFETY: a plain #[repr(C)] struct of u64s, laid out as its C++ twin.
unsafe impl DeviceRepr for ConcatParams {}

/// The first channel of each piece in the whole.
fn channel_offsets(widths: &[usize]) -> Vec<usize> {
    widths
        .iter()
        .scan(0, |start, &w| {
            let offset = *start;
            *start += w;
            Some(offset)
        })
        .collect()
}

/// One block column per piece of the group, enough blocks for the widest.
fn group_launch(rows: usize, widths: &[usize]) -> LaunchConfig {
    let widest = widths.iter().copied().max().unwrap_or(0);
    let mut cfg = launch_1d(rows * widest);
    cfg.grid_dim.1 = widths.len() as u32;
    cfg
}

/// Copies every piece into (`kernel` = "concat") or out of ("split") `whole`
/// (`[rows, sum of widths]`), one launch per group of [`MAX_PIECES`].
fn copy_pieces<T: DeviceFloat>(gpu: &Gpu, kernel: &str, pieces: &[&GpuTensor<T>], whole: &GpuTensor<T>) {
    let widths: Vec<usize> = pieces
        .iter()
        .map(|p| *p.shape().last().expect("concat of a scalar"))
        .collect();
    let offsets = channel_offsets(&widths);
    let (&total, lead) = whole.shape().split_last().expect("concat of a scalar");
    let rows: usize = lead.iter().product();
    let f = gpu.function::<T>("concat", kernel);
    for first in (0..pieces.len()).step_by(MAX_PIECES) {
        let group = first..(first + MAX_PIECES).min(pieces.len());
        let mut params = ConcatParams {
            whole: gpu.ptr(whole),
            rows: rows as u64,
            total: total as u64,
            ..Default::default()
        };
        for (slot, k) in group.clone().enumerate() {
            params.pieces[slot] = gpu.ptr(pieces[k]);
            params.widths[slot] = widths[k] as u64;
            params.offsets[slot] = offsets[k] as u64;
        }
        // SAFETY: piece k holds rows * widths[k] elements and whole rows *
        // total, with offsets[k] + widths[k] <= total (checked by the callers).
        unsafe { gpu.launch(&f, group_launch(rows, &widths[group]), params) };
    }
}

/// `[.., c_i]` tensors with equal leading dims -> `[.., sum c_i]`.
pub fn forward<T: DeviceFloat>(gpu: &Gpu, parts: &[&GpuTensor<T>]) -> GpuTensor<T> {
    let (_, lead) = parts[0].shape().split_last().expect("concat of a scalar");
    let mut total = 0;
    for p in parts {
        let (last, rest) = p.shape().split_last().expect("concat of a scalar");
        assert_eq!(rest, lead, "concat: leading dims differ");
        total += last;
    }
    let mut shape = lead.to_vec();
    shape.push(total);
    let y = gpu.alloc::<T>(&shape);
    copy_pieces(gpu, "concat", parts, &y);
    y
}

/// Splits `dy` back into pieces of the given channel widths.
pub fn backward<T: DeviceFloat>(gpu: &Gpu, dy: &GpuTensor<T>, widths: &[usize]) -> Vec<GpuTensor<T>> {
    let (&total, lead) = dy.shape().split_last().expect("concat of a scalar");
    assert_eq!(widths.iter().sum::<usize>(), total, "concat widths do not add up");
    let pieces: Vec<GpuTensor<T>> = widths
        .iter()
        .map(|&w| {
            let mut shape = lead.to_vec();
            shape.push(w);
            gpu.alloc::<T>(&shape)
        })
        .collect();
    copy_pieces(gpu, "split", &pieces.iter().collect::<Vec<_>>(), dy);
    pieces
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn offsets_are_running_sums_of_widths() {
        assert_eq!(channel_offsets(&[16, 32, 8, 8]), [0, 16, 48, 56]);
        assert_eq!(channel_offsets(&[112, 16]), [0, 112]);
        assert!(channel_offsets(&[]).is_empty());
    }

    #[test]
    fn a_block_column_per_piece() {
        let cfg = group_launch(128 * 15 * 15, &[32, 48, 24, 24]);
        assert_eq!(cfg.grid_dim.1, 4);
        // The widest piece, 48 channels, gets a thread per element.
        assert!(cfg.grid_dim.0 as usize * cfg.block_dim.0 as usize >= 128 * 15 * 15 * 48);
    }
}
