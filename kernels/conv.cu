// 2-D convolution (NHWC activations, HWIO kernels) by implicit GEMM: the
// im2col matrix is never built; each GEMM tile gathers its operands straight
// from the tensors, reading zeros where a window falls in the padding.
//
//   forward          y[M, O]    = patches(x)[M, K] * w[K, O]   (+ bias)
//   backward_data    dx[P, C]   = taps(dy)[P, R]   * wt[R, C]
//   backward_weight  dw[K, O]   = patches(x)^T[K, M] * dy[M, O]
//   backward_bias    db[O]      = sum over M of dy[M, O]
//
// with M = N*OH*OW output pixels, K = KH*KW*C (the HWIO kernel's own row
// order (ky, kx, c)), P = N*H*W input pixels and R = KH*KW*O. Row r = (ky,
// kx, o) of taps(dy) for input pixel (n, iy, ix) is dy[n, oy, ox, o] where
// oy = (iy + pad_h - ky) / stride_h divides exactly and lies in [0, OH)
// (likewise ox), else 0: the output pixels whose window put tap (ky, kx) on
// that input pixel. wt[(ky, kx, o), c] = w[ky, kx, c, o].
//
// Work split: one GEMM routine serves all three products. A block of 256
// threads computes a 64 x 64 tile of the result, stepping through the
// reduction 16 at a time: both operand tiles are gathered into shared memory,
// then each thread accumulates a 4 x 4 register sub-tile (rows ty + 16i,
// columns tx + 16j, so reads of shared memory are broadcasts or consecutive).
// Operands are "views" with an outer index (a row of the result for the left
// operand, a column for the right) and a reduction index; a loader gathers a
// 64 x 16 tile of a view with consecutive threads along whichever index is
// contiguous in memory, decoding each thread's outer coordinates once.
//
// Determinism: every result element is summed by one thread, in reduction
// order. The weight gradient's reduction over M (up to 131,072 rows) is split
// into fixed chunks of rows, a function of the shape only: each block writes
// its chunk's partial K x O tile to a workspace, and a second kernel adds the
// partials in chunk order. The bias gradient does the same with chunks of
// rows, adding a block's lanes in lane order, in double like the CPU op.
// No atomics anywhere.

#include "conv_params.cuh"

template <typename T>
struct BiasPartialParams {
    gptr<const T> dy;       // [rows, channels]
    gptr<double> partials;  // [chunks, channels]
    int rows, channels;
    int chunk_rows;
};

template <typename P, typename T>
struct TotalParams {
    gptr<const P> partials;  // [chunks, count]
    gptr<T> out;             // [count]
    int count, chunks;
};

// ---- the tiled GEMM --------------------------------------------------------

constexpr int GEMM_TILE = 64;     // rows and columns of a block's result tile
constexpr int GEMM_BK = 16;       // reduction step
constexpr int GEMM_THREADS = 256;
constexpr int GEMM_SUB = 4;       // a thread's sub-tile is GEMM_SUB x GEMM_SUB
constexpr int GEMM_LANES = GEMM_TILE / GEMM_SUB;  // 16 threads across a tile
constexpr int LOADS_PER_THREAD = GEMM_TILE * GEMM_BK / GEMM_THREADS;  // 4
static_assert(GEMM_LANES * GEMM_LANES == GEMM_THREADS, "one thread per sub-tile");
static_assert(LOADS_PER_THREAD * GEMM_THREADS == GEMM_TILE * GEMM_BK, "loads cover a tile");

// [reduction step][outer index]; the +1 column spreads the k-fastest loader's
// stores over the banks.
template <typename T>
using Tile = smem<T>[GEMM_BK][GEMM_TILE + 1];

// Which tile cell (outer, kk) the i-th load of thread t fills. K_FASTEST puts
// consecutive threads on consecutive reduction indices (for operands that
// are contiguous along the reduction), else on consecutive outer indices.
template <bool K_FASTEST>
__device__ __forceinline__ int load_outer(int t, int i) {
    return K_FASTEST ? t / GEMM_BK + i * (GEMM_THREADS / GEMM_BK) : t % GEMM_TILE;
}
template <bool K_FASTEST>
__device__ __forceinline__ int load_kk(int t, int i) {
    return K_FASTEST ? t % GEMM_BK : t / GEMM_TILE + i * (GEMM_THREADS / GEMM_TILE);
}

// Gathers 64 x GEMM_BK tiles of a view: the outer coordinates of this
// thread's cells are decoded once, the reduction index once per load.
template <typename T, class View, bool K_FASTEST>
struct TileLoader {
    const View& view;
    typename View::Outer outer[LOADS_PER_THREAD];
    bool in_range[LOADS_PER_THREAD];

    __device__ TileLoader(const View& v, int outer0, int outer_extent) : view(v) {
#pragma unroll
        for (int i = 0; i < LOADS_PER_THREAD; ++i) {
            int idx = outer0 + load_outer<K_FASTEST>(threadIdx.x, i);
            in_range[i] = idx < outer_extent;
            outer[i] = view.outer(in_range[i] ? idx : 0);  // 0: decoded, never loaded
        }
    }

    // Cells whose outer index or reduction index (k >= k_end) is out of
    // range hold 0, so they add nothing.
    __device__ void load(Tile<T>& tile, int k0, int k_end) const {
#pragma unroll
        for (int i = 0; i < LOADS_PER_THREAD; ++i) {
            int kk = load_kk<K_FASTEST>(threadIdx.x, i);
            int k = k0 + kk;
            tile[kk][load_outer<K_FASTEST>(threadIdx.x, i)] =
                in_range[i] && k < k_end ? view.load(outer[i], view.red(k)) : T(0);
        }
    }
};

// acc[i][j] = sum over k in [k_begin, k_end) of a(m0 + ty + 16i, k) *
// b(k, n0 + tx + 16j), with (tx, ty) = (t % 16, t / 16). Every thread of the
// block must call it (it synchronises).
template <typename T, class A, bool A_K_FASTEST, class B, bool B_K_FASTEST>
__device__ void gemm_tile(const A& a, int m0, int m_extent, const B& b, int n0, int n_extent, int k_begin,
                          int k_end, T (&acc)[GEMM_SUB][GEMM_SUB]) {
    SHARED(Tile<T>, a_tile);
    SHARED(Tile<T>, b_tile);
    TileLoader<T, A, A_K_FASTEST> a_loader(a, m0, m_extent);
    TileLoader<T, B, B_K_FASTEST> b_loader(b, n0, n_extent);
    const int tx = threadIdx.x % GEMM_LANES, ty = threadIdx.x / GEMM_LANES;
#pragma unroll
    for (int i = 0; i < GEMM_SUB; ++i)
#pragma unroll
        for (int j = 0; j < GEMM_SUB; ++j) acc[i][j] = T(0);

    for (int k0 = k_begin; k0 < k_end; k0 += GEMM_BK) {
        a_loader.load(a_tile, k0, k_end);
        b_loader.load(b_tile, k0, k_end);
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < GEMM_BK; ++kk) {
            T av[GEMM_SUB], bv[GEMM_SUB];
#pragma unroll
            for (int i = 0; i < GEMM_SUB; ++i) av[i] = a_tile[kk][ty + GEMM_LANES * i];
#pragma unroll
            for (int j = 0; j < GEMM_SUB; ++j) bv[j] = b_tile[kk][tx + GEMM_LANES * j];
#pragma unroll
            for (int i = 0; i < GEMM_SUB; ++i)
#pragma unroll
                for (int j = 0; j < GEMM_SUB; ++j) acc[i][j] += av[i] * bv[j];
        }
        __syncthreads();  // the tiles are overwritten next step
    }
}

// Writes the block's result tile to out (row-major, rows x cols), through
// value(acc, col) for the epilogue.
template <typename T, class Value>
__device__ void store_tile(gptr<T> out, int m0, int rows, int n0, int cols, const T (&acc)[GEMM_SUB][GEMM_SUB],
                           Value value) {
    const int tx = threadIdx.x % GEMM_LANES, ty = threadIdx.x / GEMM_LANES;
#pragma unroll
    for (int i = 0; i < GEMM_SUB; ++i) {
        int m = m0 + ty + GEMM_LANES * i;
#pragma unroll
        for (int j = 0; j < GEMM_SUB; ++j) {
            int col = n0 + tx + GEMM_LANES * j;
            if (m < rows && col < cols) out[m * cols + col] = value(acc[i][j], col);
        }
    }
}

// ---- operand views ---------------------------------------------------------
// A view has an outer index and a reduction index: outer(i) and red(k) decode
// them, load(outer, red) reads the element (0 in the padding). The loader
// decodes only in-range indices, so no offset can overflow.

// patches(x)[m, k]: outer = output pixel, reduction = tap.
template <typename T>
struct Patches {
    gptr<const T> x;
    ConvShape s;
    using Outer = PixelWindow;
    __device__ Outer outer(int m) const { return pixel_window(s, m); }
    __device__ KernelTap red(int k) const { return kernel_tap(s, k); }
    __device__ T load(const PixelWindow& p, const KernelTap& t) const {
        int iy = p.iy0 + t.ky, ix = p.ix0 + t.kx;
        bool inside = iy >= 0 && iy < s.h && ix >= 0 && ix < s.w;
        return inside ? x[p.image + (iy * s.w + ix) * s.c + t.ci] : T(0);
    }
};

// patches(x)^T[k, m]: outer = tap, reduction = output pixel.
template <typename T>
struct PatchesTransposed {
    Patches<T> p;
    using Outer = KernelTap;
    __device__ Outer outer(int k) const { return p.red(k); }
    __device__ PixelWindow red(int m) const { return p.outer(m); }
    __device__ T load(const KernelTap& t, const PixelWindow& w) const { return p.load(w, t); }
};

// A row-major [reduction, outer] matrix with `cols` columns: w as [K, O] in
// the forward, dy as [M, O] in the weight gradient.
template <typename T>
struct Matrix {
    gptr<const T> data;
    int cols;
    using Outer = int;
    __device__ Outer outer(int col) const { return col; }
    __device__ int red(int row) const { return row; }
    __device__ T load(int col, int row) const { return data[row * cols + col]; }
};

// Row r = (ky, kx, o) of the reduction in the data gradient.
struct OutputTap {
    int ky, kx, o;
};
__device__ __forceinline__ OutputTap output_tap(const ConvShape& s, int r) {
    int o = r % s.o, tap = r / s.o;
    return {tap / s.kw, tap % s.kw, o};
}

// The input pixel p = (n, iy, ix), shifted by the padding: output pixel oy
// covers it with tap ky where oy * stride_h = y - ky.
struct InputPixel {
    int image;  // offset of image n in dy
    int y, x;   // iy + pad_h, ix + pad_w
};

// taps(dy)[p, r]: outer = input pixel, reduction = (ky, kx, o).
template <typename T>
struct DyTaps {
    gptr<const T> dy;
    ConvShape s;
    using Outer = InputPixel;
    __device__ Outer outer(int p) const {
        int ix = p % s.w, rest = p / s.w;
        int iy = rest % s.h, n = rest / s.h;
        return {n * s.oh * s.ow * s.o, iy + s.pad_h, ix + s.pad_w};
    }
    __device__ OutputTap red(int r) const { return output_tap(s, r); }
    __device__ T load(const InputPixel& p, const OutputTap& t) const {
        int ny = p.y - t.ky, nx = p.x - t.kx;
        if (ny < 0 || nx < 0 || ny % s.stride_h != 0 || nx % s.stride_w != 0) return T(0);
        int oy = ny / s.stride_h, ox = nx / s.stride_w;
        if (oy >= s.oh || ox >= s.ow) return T(0);
        return dy[p.image + (oy * s.ow + ox) * s.o + t.o];
    }
};

// wt[r, c] = w[ky, kx, c, o]: outer = input channel, reduction = (ky, kx, o).
template <typename T>
struct WeightTransposed {
    gptr<const T> w;
    ConvShape s;
    using Outer = int;
    __device__ Outer outer(int c) const { return c; }
    __device__ OutputTap red(int r) const { return output_tap(s, r); }
    __device__ T load(int c, const OutputTap& t) const {
        return w[((t.ky * s.kw + t.kx) * s.c + c) * s.o + t.o];
    }
};

// ---- kernels ---------------------------------------------------------------
// GEMM kernels: GEMM_THREADS threads; blockIdx.x tiles the result's rows,
// blockIdx.y its columns (blockIdx.z: the weight gradient's row chunk).

template <typename T>
__device__ void forward(ForwardParams<T> p) {
    const ConvShape& s = p.s;
    const int rows = s.n * s.oh * s.ow, k = s.kh * s.kw * s.c;
    const int m0 = blockIdx.x * GEMM_TILE, n0 = blockIdx.y * GEMM_TILE;
    T acc[GEMM_SUB][GEMM_SUB];
    // x is contiguous along the tap's channel, w along its columns.
    gemm_tile<T, Patches<T>, true, Matrix<T>, false>(Patches<T>{p.x, s}, m0, rows, Matrix<T>{p.w, s.o}, n0, s.o, 0,
                                                     k, acc);
    gptr<const T> bias = p.bias;
    store_tile(p.y, m0, rows, n0, s.o, acc, [bias](T v, int col) { return bias ? v + bias[col] : v; });
}

template <typename T>
__device__ void backward_data(BackwardDataParams<T> p) {
    const ConvShape& s = p.s;
    const int rows = s.n * s.h * s.w, r = s.kh * s.kw * s.o;
    const int m0 = blockIdx.x * GEMM_TILE, n0 = blockIdx.y * GEMM_TILE;
    T acc[GEMM_SUB][GEMM_SUB];
    // dy and w are both contiguous along o, the fastest part of r.
    gemm_tile<T, DyTaps<T>, true, WeightTransposed<T>, true>(DyTaps<T>{p.dy, s}, m0, rows,
                                                              WeightTransposed<T>{p.w, s}, n0, s.c, 0, r, acc);
    store_tile(p.dx, m0, rows, n0, s.c, acc, [](T v, int) { return v; });
}

template <typename T>
__device__ void weight_partial(WeightPartialParams<T> p) {
    const ConvShape& s = p.s;
    const int rows = s.n * s.oh * s.ow, k = s.kh * s.kw * s.c;
    const int m0 = blockIdx.x * GEMM_TILE, n0 = blockIdx.y * GEMM_TILE;
    const int chunk = blockIdx.z;
    const int row_begin = chunk * p.chunk_rows;
    const int row_end = min(row_begin + p.chunk_rows, rows);
    T acc[GEMM_SUB][GEMM_SUB];
    // x is contiguous along the tap's channel, dy along o: both outer indices.
    gemm_tile<T, PatchesTransposed<T>, false, Matrix<T>, false>(
        PatchesTransposed<T>{Patches<T>{p.x, s}}, m0, k, Matrix<T>{p.dy, s.o}, n0, s.o, row_begin, row_end, acc);
    store_tile(p.partials + chunk * k * s.o, m0, k, n0, s.o, acc, [](T v, int) { return v; });
}

// Bias gradient, first level: block (chunk, channel group) of BIAS_CHANNELS x
// BIAS_LANES threads; lane l sums rows l, l + BIAS_LANES, ... of the chunk,
// then lane 0 adds the lanes' sums in lane order.
constexpr int BIAS_CHANNELS = 32;
constexpr int BIAS_LANES = 8;

template <typename T>
__device__ void bias_partial(BiasPartialParams<T> p) {
    using LaneSums = smem<double>[BIAS_LANES][BIAS_CHANNELS];
    SHARED(LaneSums, lane_sums);
    const int tx = threadIdx.x % BIAS_CHANNELS, lane = threadIdx.x / BIAS_CHANNELS;
    const int channel = blockIdx.y * BIAS_CHANNELS + tx;
    const int row_begin = blockIdx.x * p.chunk_rows;
    const int row_end = min(row_begin + p.chunk_rows, p.rows);
    double sum = 0;
    if (channel < p.channels)
        for (int row = row_begin + lane; row < row_end; row += BIAS_LANES) sum += double(p.dy[row * p.channels + channel]);
    lane_sums[lane][tx] = sum;
    __syncthreads();
    if (lane == 0 && channel < p.channels) {
        double total = 0;
        for (int l = 0; l < BIAS_LANES; ++l) total += lane_sums[l][tx];
        p.partials[blockIdx.x * p.channels + channel] = total;
    }
}

// Second level of both gradients: out[i] = sum of the chunks' partials, in
// chunk order. One thread per element, grid-stride.
template <typename P, typename T>
__device__ void sum_partials(TotalParams<P, T> p) {
    for (int i = blockIdx.x * blockDim.x + threadIdx.x; i < p.count; i += gridDim.x * blockDim.x) {
        P total = 0;
        for (int chunk = 0; chunk < p.chunks; ++chunk) total += p.partials[chunk * p.count + i];
        p.out[i] = T(total);
    }
}

#define INSTANTIATE(T, suffix)                                                                                     \
    extern "C" __global__ void __launch_bounds__(GEMM_THREADS) conv_forward_##suffix(ForwardParams<T> p) {         \
        forward(p);                                                                                                \
    }                                                                                                              \
    extern "C" __global__ void __launch_bounds__(GEMM_THREADS)                                                     \
        conv_backward_data_##suffix(BackwardDataParams<T> p) {                                                     \
        backward_data(p);                                                                                          \
    }                                                                                                              \
    extern "C" __global__ void __launch_bounds__(GEMM_THREADS)                                                     \
        conv_weight_partial_##suffix(WeightPartialParams<T> p) {                                                   \
        weight_partial(p);                                                                                         \
    }                                                                                                              \
    extern "C" __global__ void conv_weight_total_##suffix(TotalParams<T, T> p) { sum_partials(p); }               \
    extern "C" __global__ void conv_bias_partial_##suffix(BiasPartialParams<T> p) { bias_partial(p); }             \
    extern "C" __global__ void conv_bias_total_##suffix(TotalParams<double, T> p) { sum_partials(p); }

INSTANTIATE(float, f32)
INSTANTIATE(double, f64)
