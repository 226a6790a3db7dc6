//! Every distinct convolution of a network at a batch size, found by running
//! the network's own forward (not a hand-written list): one image through
//! the model on the CPU with [`Ctx::record_convs`] on, then the batch
//! substituted (a conv's geometry does not depend on the batch). `bench`,
//! `tune` and the `gpu_conv` bench time these shapes; the PyTorch peer
//! harness (`benches/peers/peers.py`) finds the same list with hooks on its
//! convs, keyed by [`ConvUse::peers_key`].

use super::{ConvCall, Ctx, ModelKind, ModelState};
use crate::autograd::{Tape, Var};
use crate::layers::Window;
use crate::tensor::Tensor;

/// One distinct convolution of a network and how often one forward runs it.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct ConvUse {
    /// NHWC input, batch included.
    pub x_shape: [usize; 4],
    /// HWIO kernel.
    pub w_shape: [usize; 4],
    pub win: Window,
    pub bias: bool,
    /// Convs of this shape (and bias flag) in one forward pass.
    pub count: usize,
}

impl ConvUse {
    /// The shape's key in the peer harness's JSON and tables:
    /// `n{batch}_h{height}_w{width}_c{in}_o{out}_k{kernel}_s{stride}`, the
    /// input's height and width before padding (always Flax SAME).
    pub fn peers_key(&self) -> String {
        peers_key(&self.x_shape, &self.w_shape, &self.win)
    }
}

/// [`ConvUse::peers_key`] of a conv (square kernel and stride).
pub fn peers_key(x_shape: &[usize; 4], w_shape: &[usize; 4], win: &Window) -> String {
    let [n, h, w, c] = *x_shape;
    let [k, _, _, o] = *w_shape;
    format!("n{n}_h{h}_w{w}_c{c}_o{o}_k{k}_s{}", win.stride[0])
}

/// The convolutions one forward of `kind` runs, in order, at batch 1.
pub fn conv_calls(kind: ModelKind) -> Vec<ConvCall> {
    let mut state = ModelState::<f32>::init(kind, 0);
    let tape = Tape::no_grad();
    let mut ctx = Ctx::new(&tape, &mut state, false);
    ctx.record_convs();
    kind.forward(&mut ctx, &Var::constant(Tensor::zeros(&[1, 32, 32, 3])));
    ctx.take_convs()
}

/// Every distinct convolution (input, kernel, window, bias) of `kind` at
/// `batch` images, in the order of first use, with its count per forward.
pub fn conv_shapes(kind: ModelKind, batch: usize) -> Vec<ConvUse> {
    let mut uses: Vec<ConvUse> = Vec::new();
    for call in conv_calls(kind) {
        let mut x_shape = call.x_shape;
        x_shape[0] = batch;
        let same = |u: &&mut ConvUse| {
            u.x_shape == x_shape && u.w_shape == call.w_shape && u.win == call.win && u.bias == call.bias
        };
        match uses.iter_mut().find(same) {
            Some(u) => u.count += 1,
            None => uses.push(ConvUse {
                x_shape,
                w_shape: call.w_shape,
                win: call.win,
                bias: call.bias,
                count: 1,
            }),
        }
    }
    uses
}

/// A conv geometry (bias aside) and which networks run it how often.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct SharedConv {
    pub x_shape: [usize; 4],
    pub w_shape: [usize; 4],
    pub win: Window,
    /// (network, convs of this geometry in one forward), in `kinds` order.
    pub used_by: Vec<(ModelKind, usize)>,
}

impl SharedConv {
    pub fn peers_key(&self) -> String {
        peers_key(&self.x_shape, &self.w_shape, &self.win)
    }
}

/// The distinct conv geometries of `kinds` at each of `batches` (bias
/// ignored: the conv is timed without it), first use first.
pub fn shared_convs(kinds: &[ModelKind], batches: &[usize]) -> Vec<SharedConv> {
    let mut all: Vec<SharedConv> = Vec::new();
    for &batch in batches {
        for &kind in kinds {
            for u in conv_shapes(kind, batch) {
                let same = |s: &&mut SharedConv| s.x_shape == u.x_shape && s.w_shape == u.w_shape && s.win == u.win;
                let shared = match all.iter_mut().find(same) {
                    Some(s) => s,
                    None => {
                        all.push(SharedConv {
                            x_shape: u.x_shape,
                            w_shape: u.w_shape,
                            win: u.win,
                            used_by: Vec::new(),
                        });
                        all.last_mut().expect("just pushed")
                    }
                };
                match shared.used_by.iter_mut().find(|(k, _)| *k == kind) {
                    Some((_, n)) => *n += u.count,
                    None => shared.used_by.push((kind, u.count)),
                }
            }
        }
    }
    all
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// `peers_key -> count` of a network's convs at `batch`.
    fn by_peers_key(kind: ModelKind, batch: usize) -> BTreeMap<String, usize> {
        let mut keys = BTreeMap::new();
        for u in conv_shapes(kind, batch) {
            *keys.entry(u.peers_key()).or_insert(0) += u.count;
        }
        keys
    }

    /// The list `benches/peers/peers.py`'s conv hook records (`conv_shapes()`
    /// there: a forward hook on every `SameConv2d`) per network at batch
    /// 128, as `(key, count)` in its order: the output of
    /// `python3 benches/peers/check_report.py --conv-shapes 128`, which runs
    /// peers.py's own network code on a shape-only stand-in for torch.
    fn peers_list(kind: ModelKind) -> Vec<(&'static str, usize)> {
        match kind {
            ModelKind::GoogleNet => vec![
                ("n128_h32_w32_c3_o64_k3_s1", 1),
                ("n128_h32_w32_c64_o16_k1_s1", 3),
                ("n128_h32_w32_c64_o32_k1_s1", 2),
                ("n128_h32_w32_c32_o32_k3_s1", 1),
                ("n128_h32_w32_c16_o8_k5_s1", 1),
                ("n128_h32_w32_c64_o8_k1_s1", 1),
                ("n128_h32_w32_c64_o24_k1_s1", 1),
                ("n128_h32_w32_c32_o48_k3_s1", 1),
                ("n128_h32_w32_c16_o12_k5_s1", 1),
                ("n128_h32_w32_c64_o12_k1_s1", 1),
                ("n128_h15_w15_c96_o24_k1_s1", 2),
                ("n128_h15_w15_c96_o32_k1_s1", 5),
                ("n128_h15_w15_c32_o48_k3_s1", 4),
                ("n128_h15_w15_c96_o16_k1_s1", 8),
                ("n128_h15_w15_c16_o12_k5_s1", 1),
                ("n128_h15_w15_c96_o12_k1_s1", 1),
                ("n128_h15_w15_c16_o16_k5_s1", 2),
                ("n128_h15_w15_c16_o24_k5_s1", 1),
                ("n128_h7_w7_c128_o32_k1_s1", 2),
                ("n128_h7_w7_c128_o48_k1_s1", 2),
                ("n128_h7_w7_c48_o64_k3_s1", 2),
                ("n128_h7_w7_c128_o16_k1_s1", 4),
                ("n128_h7_w7_c16_o16_k5_s1", 2),
            ],
            // The same convs: only the order of BN, ReLU and conv differs.
            ModelKind::ResNet | ModelKind::PreActResNet => vec![
                ("n128_h32_w32_c3_o16_k3_s1", 1),
                ("n128_h32_w32_c16_o16_k3_s1", 6),
                ("n128_h32_w32_c16_o32_k3_s2", 1),
                ("n128_h16_w16_c32_o32_k3_s1", 5),
                ("n128_h32_w32_c16_o32_k1_s2", 1),
                ("n128_h16_w16_c32_o64_k3_s2", 1),
                ("n128_h8_w8_c64_o64_k3_s1", 5),
                ("n128_h16_w16_c32_o64_k1_s2", 1),
            ],
            ModelKind::DenseNet => vec![
                ("n128_h32_w32_c3_o32_k3_s1", 1),
                ("n128_h32_w32_c32_o32_k1_s1", 1),
                ("n128_h32_w32_c32_o16_k3_s1", 6),
                ("n128_h32_w32_c48_o32_k1_s1", 1),
                ("n128_h32_w32_c64_o32_k1_s1", 1),
                ("n128_h32_w32_c80_o32_k1_s1", 1),
                ("n128_h32_w32_c96_o32_k1_s1", 1),
                ("n128_h32_w32_c112_o32_k1_s1", 1),
                ("n128_h32_w32_c128_o64_k1_s1", 1),
                ("n128_h16_w16_c64_o32_k1_s1", 1),
                ("n128_h16_w16_c32_o16_k3_s1", 6),
                ("n128_h16_w16_c80_o32_k1_s1", 1),
                ("n128_h16_w16_c96_o32_k1_s1", 1),
                ("n128_h16_w16_c112_o32_k1_s1", 1),
                ("n128_h16_w16_c128_o32_k1_s1", 1),
                ("n128_h16_w16_c144_o32_k1_s1", 1),
                ("n128_h16_w16_c160_o80_k1_s1", 1),
                ("n128_h8_w8_c80_o32_k1_s1", 1),
                ("n128_h8_w8_c32_o16_k3_s1", 6),
                ("n128_h8_w8_c96_o32_k1_s1", 1),
                ("n128_h8_w8_c112_o32_k1_s1", 1),
                ("n128_h8_w8_c128_o32_k1_s1", 1),
                ("n128_h8_w8_c144_o32_k1_s1", 1),
                ("n128_h8_w8_c160_o32_k1_s1", 1),
                ("n128_h8_w8_c176_o88_k1_s1", 1),
                ("n128_h4_w4_c88_o32_k1_s1", 1),
                ("n128_h4_w4_c32_o16_k3_s1", 6),
                ("n128_h4_w4_c104_o32_k1_s1", 1),
                ("n128_h4_w4_c120_o32_k1_s1", 1),
                ("n128_h4_w4_c136_o32_k1_s1", 1),
                ("n128_h4_w4_c152_o32_k1_s1", 1),
                ("n128_h4_w4_c168_o32_k1_s1", 1),
            ],
        }
    }

    fn summed(list: Vec<(&'static str, usize)>) -> BTreeMap<String, usize> {
        list.into_iter().map(|(key, n)| (key.to_string(), n)).collect()
    }

    #[test]
    fn resnet_has_the_peer_harness_convs() {
        let ours = by_peers_key(ModelKind::ResNet, 128);
        assert_eq!(ours, summed(peers_list(ModelKind::ResNet)));
        // 8 distinct shapes, 21 convs: the stem, 6 + 5 + 5 3x3 convs at
        // 32, 16 and 8 pixels, two stride-2 3x3 and two 1x1 shortcuts.
        assert_eq!(ours.len(), 8);
        assert_eq!(ours.values().sum::<usize>(), 21);
        // Only the shortcuts have a bias.
        let uses = conv_shapes(ModelKind::ResNet, 128);
        let biased: Vec<String> = uses.iter().filter(|u| u.bias).map(ConvUse::peers_key).collect();
        assert_eq!(biased, ["n128_h32_w32_c16_o32_k1_s2", "n128_h16_w16_c32_o64_k1_s2"]);
    }

    #[test]
    fn every_network_has_the_peer_harness_convs() {
        for (kind, distinct, total) in [
            (ModelKind::GoogleNet, 23, 49),
            (ModelKind::PreActResNet, 8, 21),
            (ModelKind::DenseNet, 32, 52),
        ] {
            let ours = by_peers_key(kind, 128);
            assert_eq!(ours, summed(peers_list(kind)), "{kind}");
            assert_eq!((ours.len(), ours.values().sum::<usize>()), (distinct, total), "{kind}");
        }
    }

    #[test]
    fn the_batch_is_substituted_and_windows_are_flax_same() {
        let at_256 = conv_shapes(ModelKind::ResNet, 256);
        let at_128 = conv_shapes(ModelKind::ResNet, 128);
        assert_eq!(at_256.len(), at_128.len());
        for (a, b) in at_256.iter().zip(&at_128) {
            assert_eq!((a.x_shape[0], b.x_shape[0]), (256, 128));
            assert_eq!(
                (&a.x_shape[1..], a.w_shape, a.win, a.count),
                (&b.x_shape[1..], b.w_shape, b.win, b.count)
            );
            let [_, h, w, _] = a.x_shape;
            assert_eq!(a.win, Window::same([a.w_shape[0]; 2], a.win.stride, [h, w]));
        }
        // 3x3 stride 2 on 32x32: 0 before, 1 after (SAME's smaller half first).
        let down = at_128
            .iter()
            .find(|u| u.peers_key() == "n128_h32_w32_c16_o32_k3_s2")
            .unwrap();
        assert_eq!((down.win.pad_lo, down.win.pad_hi), ([0, 0], [1, 1]));
        // Forward flops: 128 x 16 x 16 output pixels x 3 x 3 x 16 x 32 multiply-adds, twice.
        let shape = crate::cuda::conv_shape::ConvShape::new(&down.x_shape, &down.w_shape, &down.win);
        let flops = crate::cuda::conv_tiles::Direction::Forward.flops(&shape);
        assert_eq!(flops, 2.0 * (128 * 16 * 16) as f64 * (9 * 16 * 32) as f64);
    }

    #[test]
    fn shared_convs_merge_networks_and_batches() {
        let shared = shared_convs(&[ModelKind::ResNet, ModelKind::PreActResNet], &[128, 256]);
        // The ResNets share all 8 geometries (the bias of ResNet's shortcuts
        // aside), at two batch sizes.
        assert_eq!(shared.len(), 16);
        let stage = shared
            .iter()
            .find(|s| s.peers_key() == "n256_h8_w8_c64_o64_k3_s1")
            .unwrap();
        assert_eq!(stage.used_by, [(ModelKind::ResNet, 5), (ModelKind::PreActResNet, 5)]);
    }
}
