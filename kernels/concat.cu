// Concatenation of NHWC tensors along channels, and its backward split,
// mirroring src/ops/concat.rs.
//
// The whole is [rows, total]; piece k is [rows, widths[k]] and occupies
// channels [offsets[k], offsets[k] + widths[k]) of every row. One launch
// handles up to MAX_PIECES pieces: blockIdx.y picks the piece, and the
// blocks of that column run a grid-stride loop over the piece's elements, so
// reads (concat) or writes (split) of the piece are contiguous. Pure copies:
// every output element is written once, nothing is accumulated.

#include "common.cuh"

// MAX_PIECES in src/cuda/concat.rs; more pieces take several launches.
constexpr int MAX_PIECES = 8;

template <typename T>
struct ConcatParams {
    gptr<T> pieces[MAX_PIECES];    // read by concat, written by split
    uint64_t widths[MAX_PIECES];
    uint64_t offsets[MAX_PIECES];  // first channel of each piece in the whole
    gptr<T> whole;                 // written by concat, read by split
    uint64_t rows;
    uint64_t total;                // channels of the whole
};

// Copies piece blockIdx.y into the whole (TO_WHOLE) or out of it.
template <typename T, bool TO_WHOLE>
__device__ void copy_piece(const ConcatParams<T>& p) {
    const unsigned k = blockIdx.y;
    gptr<T> piece = p.pieces[k];
    const uint64_t width = p.widths[k], offset = p.offsets[k];
    const uint64_t n = p.rows * width;
    GRID_STRIDE(i, n) {
        gptr<T> whole = p.whole + (i / width) * p.total + offset + i % width;
        if (TO_WHOLE) {
            *whole = piece[i];
        } else {
            piece[i] = *whole;
        }
    }
}

#define INSTANTIATE(T, suffix)                                                                       \
    extern "C" __global__ void concat_##suffix(ConcatParams<T> p) { copy_piece<T, true>(p); }        \
    extern "C" __global__ void split_##suffix(ConcatParams<T> p) { copy_piece<T, false>(p); }

INSTANTIATE(float, f32)
INSTANTIATE(double, f64)
