//! Concatenation along the last (channel) axis, and its backward split.

use crate::float::Float;
use crate::tensor::Tensor;

/// `[.., c_i]` tensors with equal leading dims -> `[.., sum c_i]`.
pub fn forward<T: Float>(parts: &[&Tensor<T>]) -> Tensor<T> {
    let lead = &parts[0].shape()[..parts[0].shape().len() - 1];
    let widths: Vec<usize> = parts
        .iter()
        .map(|p| {
            let (last, rest) = p.shape().split_last().expect("concat of a scalar");
            assert_eq!(rest, lead, "concat: leading dims differ");
            *last
        })
        .collect();
    let total: usize = widths.iter().sum();
    let rows: usize = lead.iter().product();
    let mut y = Vec::with_capacity(rows * total);
    for r in 0..rows {
        for (p, &w) in parts.iter().zip(&widths) {
            y.extend_from_slice(&p.data()[r * w..(r + 1) * w]);
        }
    }
    let mut shape = lead.to_vec();
    shape.push(total);
    Tensor::new(&shape, y)
}

/// Splits `dy` back into pieces of the given channel widths.
pub fn backward<T: Float>(dy: &Tensor<T>, widths: &[usize]) -> Vec<Tensor<T>> {
    let (&total, lead) = dy.shape().split_last().expect("concat of a scalar");
    assert_eq!(widths.iter().sum::<usize>(), total, "concat widths do not add up");
    let rows: usize = lead.iter().product();
    let mut start = 0;
    widths
        .iter()
        .map(|&w| {
            let mut part = Vec::with_capacity(rows * w);
            for r in 0..rows {
                part.extend_from_slice(&dy.data()[r * total + start..][..w]);
            }
            start += w;
            let mut shape = lead.to_vec();
            shape.push(w);
            Tensor::new(&shape, part)
        })
        .collect()
}
