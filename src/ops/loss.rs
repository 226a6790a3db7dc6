//! Softmax cross-entropy with integer labels (mean over the batch), and
//! accuracy.

use crate::float::Float;
use crate::tensor::Tensor;

/// Checks logits `[n, k]` against `n` labels in `0..k`.
fn check<T>(logits: &Tensor<T>, labels: &[u32]) -> usize {
    let &[n, k] = logits.shape() else {
        panic!("logits must be [n, classes], got {:?}", logits.shape())
    };
    assert_eq!(labels.len(), n, "{n} logits rows but {} labels", labels.len());
    assert!(labels.iter().all(|&l| (l as usize) < k), "label out of range 0..{k}");
    k
}

fn rows<'a, T: Float>(logits: &'a Tensor<T>, labels: &[u32]) -> std::slice::Chunks<'a, T> {
    logits.data().chunks(check(logits, labels))
}

/// Per-row log-softmax, in f64.
fn log_softmax<T: Float>(row: &[T]) -> impl Iterator<Item = f64> + '_ {
    let max = row.iter().fold(f64::NEG_INFINITY, |m, v| m.max(v.f64()));
    let lse = max + row.iter().map(|v| (v.f64() - max).exp()).sum::<f64>().ln();
    row.iter().map(move |v| v.f64() - lse)
}

/// Mean over the batch of `-log softmax(logits)[label]`.
pub fn cross_entropy<T: Float>(logits: &Tensor<T>, labels: &[u32]) -> T {
    let total: f64 = rows(logits, labels)
        .zip(labels)
        .map(|(row, &l)| -log_softmax(row).nth(l as usize).expect("label checked"))
        .sum();
    T::of(total / labels.len() as f64)
}

/// d loss / d logits, scaled by `dloss`: `(softmax - onehot) * dloss / n`.
pub fn cross_entropy_backward<T: Float>(logits: &Tensor<T>, labels: &[u32], dloss: T) -> Tensor<T> {
    let scale = dloss.f64() / labels.len() as f64;
    let grad = rows(logits, labels)
        .zip(labels)
        .flat_map(|(row, &l)| {
            log_softmax(row)
                .enumerate()
                .map(move |(j, lp)| T::of((lp.exp() - if j == l as usize { 1.0 } else { 0.0 }) * scale))
        })
        .collect();
    Tensor::new(logits.shape(), grad)
}

/// Index of the largest value in a row (the first one on ties).
fn argmax_row<T: Float>(row: &[T]) -> u32 {
    let mut best = 0;
    for (j, &v) in row.iter().enumerate() {
        if v > row[best] {
            best = j;
        }
    }
    best as u32
}

/// The predicted class of every row.
pub fn argmax<T: Float>(logits: &Tensor<T>) -> Vec<u32> {
    logits.data().chunks(logits.shape()[1]).map(argmax_row).collect()
}

/// How many rows' largest logit is the label.
pub fn correct<T: Float>(logits: &Tensor<T>, labels: &[u32]) -> usize {
    rows(logits, labels)
        .zip(labels)
        .filter(|(row, &l)| argmax_row(row) == l)
        .count()
}

/// Fraction of rows whose largest logit is the label.
pub fn accuracy<T: Float>(logits: &Tensor<T>, labels: &[u32]) -> f64 {
    correct(logits, labels) as f64 / labels.len() as f64
}

#[cfg(test)]
mod tests {
    use super::*;

    /// Logits of +-1000: exp overflows without the max-subtraction. Row 0
    /// (label 1) loses 2000 + ln(1 + e^-1000 + e^-2000) = 2000, row 1 (label 0)
    /// loses ln(1 + e^-1000 + e^-2000) = 0; the softmax is (1, 0, 0) in both.
    fn large_logits<T: Float>() {
        let logits = Tensor::<T>::new(
            &[2, 3],
            [1000.0, -1000.0, 0.0, 1000.0, -1000.0, 0.0].map(T::of).to_vec(),
        );
        let labels = [1, 0];
        assert_eq!(cross_entropy(&logits, &labels).f64(), 1000.0);
        let grad = cross_entropy_backward(&logits, &labels, T::of(1.0));
        let want = [0.5, -0.5, 0.0, 0.0, 0.0, 0.0];
        assert_eq!(grad.data().iter().map(|g| g.f64()).collect::<Vec<_>>(), want);
    }

    #[test]
    fn large_logits_give_the_analytic_loss_and_gradient() {
        large_logits::<f32>();
        large_logits::<f64>();
    }
}
