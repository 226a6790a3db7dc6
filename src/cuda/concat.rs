//! Launchers for `kernels/concat.cu`: concatenation along the last
//! (channel) axis and its backward split, as `ops::concat`.
//!
//! The piece pointers, widths and channel offsets travel in fixed arrays of
//! [`MAX_PIECES`] inside the parameter struct; a list of more pieces (the
//! networks use 2 and 4) takes one launch per group of [`MAX_PIECES`].

use super::launch::Launch;
use super::{launch_1d, DeviceFloat, Gpu, GpuTensor};
use crate::float::Float;
use cudarc::driver::LaunchConfig;

/// Pieces per launch (`MAX_PIECES` in concat.cu).
const MAX_PIECES: usize = 8;

crate::kernel_params! {
    /// `ConcatParams<T>` in concat.cu; unused slots stay zero.
    pub struct ConcatParams {
        pieces: [u64; MAX_PIECES],
        widths: [u64; MAX_PIECES],
        offsets: [u64; MAX_PIECES],
        whole: u64,
        rows: u64,
        total: u64,
    }
}

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

/// Copies every piece into (`kernel` = "concat") or out of ("split")
/// `whole`, one launch per group of [`MAX_PIECES`]: piece k holds
/// `rows * widths[k]` elements of T, `whole` `rows * sum of widths`.
fn copy_plan<T: Float>(kernel: &str, pieces: &[u64], widths: &[usize], whole: u64, rows: usize) -> Vec<Launch> {
    assert_eq!(pieces.len(), widths.len(), "{kernel}: a width per piece");
    let offsets = channel_offsets(widths);
    let total: usize = widths.iter().sum();
    (0..pieces.len())
        .step_by(MAX_PIECES)
        .map(|first| {
            let group = first..(first + MAX_PIECES).min(pieces.len());
            let mut params = ConcatParams {
                whole,
                rows: rows as u64,
                total: total as u64,
                ..Default::default()
            };
            for (slot, k) in group.clone().enumerate() {
                params.pieces[slot] = pieces[k];
                params.widths[slot] = widths[k] as u64;
                params.offsets[slot] = offsets[k] as u64;
            }
            Launch::new::<T, _>("concat", kernel, group_launch(rows, &widths[group]), params)
        })
        .collect()
}

/// `y = [parts[0], parts[1], ..]` along the channels: part k holds `rows *
/// widths[k]` elements of T, `y` `rows * sum of widths`.
pub fn forward_plan<T: Float>(parts: &[u64], widths: &[usize], y: u64, rows: usize) -> Vec<Launch> {
    copy_plan::<T>("concat", parts, widths, y, rows)
}

/// Splits `dy` (`rows * sum of widths` elements of T) into `pieces`, piece k
/// `rows * widths[k]` elements.
pub fn backward_plan<T: Float>(dy: u64, pieces: &[u64], widths: &[usize], rows: usize) -> Vec<Launch> {
    copy_plan::<T>("split", pieces, widths, dy, rows)
}

/// `[.., c_i]` tensors with equal leading dims -> `[.., sum c_i]`.
pub fn forward<T: DeviceFloat>(gpu: &Gpu, parts: &[&GpuTensor<T>]) -> GpuTensor<T> {
    let (_, lead) = parts[0].shape().split_last().expect("concat of a scalar");
    let mut widths = Vec::with_capacity(parts.len());
    for p in parts {
        let (&last, rest) = p.shape().split_last().expect("concat of a scalar");
        assert_eq!(rest, lead, "concat: leading dims differ");
        widths.push(last);
    }
    let mut shape = lead.to_vec();
    shape.push(widths.iter().sum());
    let y = gpu.alloc::<T>(&shape);
    let ptrs: Vec<u64> = parts.iter().map(|p| gpu.ptr(p)).collect();
    let plan = forward_plan::<T>(&ptrs, &widths, gpu.ptr(&y), lead.iter().product());
    // SAFETY: every part has y's leading dims and its own width.
    unsafe { gpu.run(&plan) };
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
    let ptrs: Vec<u64> = pieces.iter().map(|p| gpu.ptr(p)).collect();
    let plan = backward_plan::<T>(gpu.ptr(dy), &ptrs, widths, lead.iter().product());
    // SAFETY: every piece has dy's leading dims and its width, which add up
    // to dy's channels (checked above).
    unsafe { gpu.run(&plan) };
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

    #[test]
    fn a_launch_per_group_of_pieces() {
        let widths: Vec<usize> = (1..=10).collect();
        let pieces: Vec<u64> = (0..10).map(|k| 0x1000 * (k + 1)).collect();
        let plan = forward_plan::<f32>(&pieces, &widths, 0x9000, 64);
        assert_eq!(plan.len(), 2);
        assert_eq!(plan[1].cfg.grid_dim.1, 2);
        crate::cuda::launch::assert_plan_matches_ptx(&plan);
        let split = backward_plan::<f64>(0x9000, &pieces[..2], &widths[..2], 64);
        assert_eq!(split[0].kernel, "split_f64");
        crate::cuda::launch::assert_plan_matches_ptx(&split);
    }
}
