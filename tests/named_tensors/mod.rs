//! Named tensor maps (checkpoints) compared bit for bit, for the test
//! binaries that read checkpoints (`tests/checkpoint.rs`, `tests/fixtures/`).

use cifar_kern::Tensor;
use std::collections::BTreeMap;

pub fn assert_bit_identical(got: &BTreeMap<String, Tensor<f32>>, want: &BTreeMap<String, Tensor<f32>>, what: &str) {
    assert!(got.keys().eq(want.keys()), "{what}: names differ");
    for (name, w) in want {
        let g = &got[name];
        assert_eq!(g.shape(), w.shape(), "{what}: shape of {name}");
        let same_bits = g.data().iter().zip(w.data()).all(|(a, b)| a.to_bits() == b.to_bits());
        assert!(same_bits, "{what}: values of {name}");
    }
}
