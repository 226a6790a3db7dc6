//! The geometry of one convolution as the conv kernels take it
//! (`ConvShape` in kernels/conv_params.cuh), shared by the launchers
//! (`conv.rs`) and the tile choice (`conv_tiles.rs`).

use crate::layers::Window;

/// The largest element count a kernel indexes; half of i32's range, so a
/// grid-stride step past the end cannot overflow.
const MAX_INDEX: usize = i32::MAX as usize / 2;

crate::kernel_params! {
    /// `ConvShape` in conv_params.cuh. `pad_h`/`pad_w` are the padding before; the
    /// padding after is implied by `oh`/`ow`.
    pub struct ConvShape {
        n: i32,
        h: i32,
        w: i32,
        c: i32,
        oh: i32,
        ow: i32,
        o: i32,
        kh: i32,
        kw: i32,
        stride_h: i32,
        stride_w: i32,
        pad_h: i32,
        pad_w: i32,
    }
}

/// `v` as a kernel's 32-bit index; panics past [`MAX_INDEX`], naming `what`.
pub(crate) fn index(v: usize, what: &str) -> i32 {
    assert!(
        v <= MAX_INDEX,
        "conv: {what} has {v} elements, more than the kernels index"
    );
    v as i32
}

impl ConvShape {
    /// The convolution of an NHWC input of `x_shape` with an HWIO kernel of
    /// `w_shape` over `win`; panics on mismatched shapes or on tensors past
    /// the kernels' 32-bit indices.
    pub fn new(x_shape: &[usize], w_shape: &[usize], win: &Window) -> Self {
        let &[n, h, w, c] = x_shape else {
            panic!("expected an NHWC tensor, got shape {x_shape:?}")
        };
        let &[kh, kw, ci, o] = w_shape else {
            panic!("conv kernel must be HWIO, got {w_shape:?}")
        };
        assert_eq!(ci, c, "conv kernel expects {ci} input channels, input has {c}");
        assert_eq!([kh, kw], win.size, "conv kernel {kh}x{kw} vs window {:?}", win.size);
        let [oh, ow] = win.out_hw([h, w]);
        index(n * h * w * c, "the input");
        index(n * oh * ow * o, "the output");
        index(kh * kw * c * o, "the kernel");
        let dim = |v: usize| index(v, "a dimension");
        ConvShape {
            n: dim(n),
            h: dim(h),
            w: dim(w),
            c: dim(c),
            oh: dim(oh),
            ow: dim(ow),
            o: dim(o),
            kh: dim(kh),
            kw: dim(kw),
            stride_h: dim(win.stride[0]),
            stride_w: dim(win.stride[1]),
            pad_h: dim(win.pad_lo[0]),
            pad_w: dim(win.pad_lo[1]),
        }
    }
    /// `[n, oh, ow, o]`: the shape of y and dy.
    pub fn y_shape(&self) -> [usize; 4] {
        [self.n, self.oh, self.ow, self.o].map(|v| v as usize)
    }
    /// Input pixels: the rows of x and dx.
    pub fn in_rows(&self) -> usize {
        (self.n * self.h * self.w) as usize
    }
    /// Output pixels: the rows of y and dy.
    pub fn out_rows(&self) -> usize {
        (self.n * self.oh * self.ow) as usize
    }
    /// Taps of one window: the rows of the kernel as a matrix.
    pub fn k(&self) -> usize {
        (self.kh * self.kw * self.c) as usize
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn conv_shape_matches_the_window() {
        // ResNet's 3x3/2 SAME conv at 16x16: pads 0 before, 1 after.
        let win = Window::same([3, 3], [2, 2], [16, 16]);
        let s = ConvShape::new(&[128, 16, 16, 32], &[3, 3, 32, 64], &win);
        assert_eq!(
            s,
            ConvShape {
                n: 128,
                h: 16,
                w: 16,
                c: 32,
                oh: 8,
                ow: 8,
                o: 64,
                kh: 3,
                kw: 3,
                stride_h: 2,
                stride_w: 2,
                pad_h: 0,
                pad_w: 0
            }
        );
        assert_eq!((s.in_rows(), s.out_rows(), s.k()), (128 * 256, 128 * 64, 288));
        assert_eq!(s.y_shape(), [128, 8, 8, 64]);
    }

    #[test]
    #[should_panic(expected = "input channels")]
    fn conv_shape_rejects_mismatched_channels() {
        ConvShape::new(&[1, 4, 4, 3], &[1, 1, 4, 8], &Window::valid([1, 1], [1, 1]));
    }

    #[test]
    #[should_panic(expected = "more than the kernels index")]
    fn conv_shape_rejects_tensors_past_32_bit_indices() {
        ConvShape::new(&[1 << 20, 32, 32, 64], &[1, 1, 64, 1], &Window::valid([1, 1], [1, 1]));
    }
}
