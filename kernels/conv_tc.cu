// 2-D convolution on the tensor cores: the implicit GEMMs of conv.cu (same
// products, same parameter structs, same results up to TF32 rounding) with
// mma.sync m16n8k8 TF32, fp32 accumulation.
//
//   forward          y[M, O]   = patches(x)[M, K] * w[K, O]        (+ bias)
//   backward_data    dx[P, C]  = taps(dy)[P, R]   * wt[R, C]       per phase
//   backward_weight  dw[K, O]  = patches(x)^T[K, M] * dy[M, O]     per chunk
//
// (M output pixels, K = KH*KW*C taps, P input pixels, R = KH*KW*O; see
// conv.cu.) Every operand element is rounded to TF32 (cvt.rna) as it leaves
// shared memory for a fragment; weights and activations stay fp32 in memory.
//
// Work split. A block of 4 warps (128 threads) computes a BM x BN tile of
// the result; the tile shapes (128x16, 128x32, 64x64, 128x64) fit the
// networks' narrow GEMMs (16 output channels leave three quarters of a 64x64
// tile idle). Each warp owns a WM x WN sub-tile: MI x NI mma tiles of 16 x 8.
// The reduction advances BK = 16 at a time through a STAGES = 3 ring of
// shared-memory tiles filled by cp.async: while tile kt is multiplied, tiles
// kt + 1 and kt + 2 are in flight.
//
// Operands. Each operand is a "view" (as in conv.cu) with an outer index (a
// row of the result for A, a column for B) and a reduction index, and is
// contiguous in memory along one of them:
//   - along the reduction (K_CONTIGUOUS: x's channels in the forward, dy's
//     and w's output channels in the data gradient): staged [outer][BK + 4],
//     fragments read with ldmatrix;
//   - along the outer index (w's and dy's columns, x's channels in the weight
//     gradient): staged [BK][outer + pad], fragments read one word per lane.
// The paddings put the 32 lanes of a fragment read on 32 distinct banks.
// Copies are 16-byte cp.async of 4 consecutive elements where the channel
// counts are multiples of 4 and the tensors 16-byte aligned (VEC = 4), else
// 4-byte copies (VEC = 1: the 3-channel stem). Out-of-range or padding
// elements are zero-filled by the copy itself (src-size 0).
//
// Offsets: each thread decodes its rows once per block (one division each)
// and walks its reduction cursor forward BK at a time with compares and
// adds, never a division per element.
//
// The stride-s data gradient is s_h x s_w independent GEMMs, one per output
// phase (blockIdx.z), as in CUTLASS's strided dgrad: input pixel iy receives
// only the taps ky = (iy + pad_h) mod s (mod s), so a phase's GEMM reduces
// over its own taps and never multiplies the zeros between dy's pixels. A
// phase with no taps (a 1x1/2 kernel) writes zeros.
//
// Determinism: each result element is summed by one lane in reduction order
// (within an mma, in the hardware's fixed order); the weight gradient's
// chunks of rows write partials that conv.cu's conv_weight_total adds in
// chunk order. No atomics. The variant (tile, chunking) is chosen from the
// shapes and the committed table (src/cuda/conv_tiles.rs), never by timing.

#include "conv_params.cuh"
#include "tensor_core.cuh"

constexpr int THREADS = 128;  // 4 warps
constexpr int BK = 16;        // reduction step (two mma k-steps)
constexpr int STAGES = 3;     // shared-memory ring of reduction steps

// A block's result tile: BM x BN, WARPS_M warps down, 4 / WARPS_M across.
template <int BM_, int BN_, int WARPS_M_>
struct TileConfig {
    static constexpr int BM = BM_, BN = BN_;
    static constexpr int WARPS_M = WARPS_M_, WARPS_N = THREADS / 32 / WARPS_M_;
    static constexpr int WM = BM / WARPS_M, WN = BN / WARPS_N;  // a warp's sub-tile
    static constexpr int MI = WM / 16, NI = WN / 8;             // its mma tiles
    static_assert(MI * 16 == WM && NI * 8 == WN, "warp tiles are whole mma tiles");
};

// One operand's STAGES shared tiles of OUTER x BK elements.
template <int OUTER, bool K_CONTIGUOUS>
struct OperandTile {
    static constexpr int ROWS = K_CONTIGUOUS ? OUTER : BK;
    // Row strides: BK + 4 puts the 8 rows of an ldmatrix and the 8 x 4 words
    // of a fragment on distinct banks; OUTER + pad with (OUTER + pad) % 32 =
    // 8 does the same for the 4 x 8 words of a column fragment. Both keep
    // rows 16-byte aligned for cp.async.
    static constexpr int STRIDE = K_CONTIGUOUS ? BK + 4 : OUTER + (40 - OUTER % 32) % 32;
    struct alignas(16) Stages {
        smem<float> v[STAGES][ROWS][STRIDE];
    };
    __device__ static smem<float>* cell(Stages& t, int stage, int outer, int k) {
        return K_CONTIGUOUS ? &t.v[stage][outer][k] : &t.v[stage][k][outer];
    }
};

// Fills the tiles of one operand view. Vector v of a tile (VEC elements
// along the contiguous index) goes to thread v % THREADS; ALONG vectors span
// the contiguous index, so a thread's position along it is fixed and its
// vectors step STEP along the other index. A thread therefore holds several
// decoded rows and one reduction cursor (K_CONTIGUOUS), or one row and
// several cursors.
template <class View, int OUTER>
struct TileLoader {
    static constexpr bool KC = View::K_CONTIGUOUS;
    static constexpr int VEC = View::VEC;
    static constexpr int ALONG = (KC ? BK : OUTER) / VEC;
    static constexpr int VECS = OUTER * BK / VEC;
    static constexpr int PER_THREAD = VECS >= THREADS ? VECS / THREADS : 1;
    static constexpr int STEP = THREADS / ALONG;
    static constexpr int ROWS = KC ? PER_THREAD : 1, CURSORS = KC ? 1 : PER_THREAD;
    static_assert(THREADS % ALONG == 0 && (VECS < THREADS || VECS % THREADS == 0), "vectors tile the threads");
    using Tile = OperandTile<OUTER, KC>;

    View view;
    typename View::Row rows[ROWS];
    bool row_ok[ROWS];
    typename View::Cursor cursors[CURSORS];
    int cursor_k[CURSORS];  // each cursor's reduction index
    int along, across;      // this thread's first vector, along and across the contiguous index
    bool active;            // false for the idle threads of a tile smaller than the block

    __device__ TileLoader(const View& v, int outer0, int outer_extent, int k0) : view(v) {
        const int t = threadIdx.x;
        active = t < VECS;
        along = t % ALONG * VEC;
        across = t / ALONG;
#pragma unroll
        for (int r = 0; r < ROWS; ++r) {
            int outer = outer0 + (KC ? across + r * STEP : along);
            // With VEC = 4 the outer extent is a multiple of 4 where the
            // vectors run along it, so the first element decides.
            row_ok[r] = outer < outer_extent;
            rows[r] = view.row(row_ok[r] ? outer : 0);
        }
#pragma unroll
        for (int q = 0; q < CURSORS; ++q) {
            cursor_k[q] = k0 + (KC ? along : across + q * STEP);
            cursors[q] = view.cursor(cursor_k[q]);
        }
    }

    // Issues the copies of the next BK reduction indices into `stage`
    // (zeros past k_end), then moves every cursor BK on.
    __device__ void load(typename Tile::Stages& tile, int stage, int k_end) {
        if (!active) return;
#pragma unroll
        for (int i = 0; i < PER_THREAD; ++i) {
            const int r = KC ? i : 0, q = KC ? 0 : i;
            const int outer = KC ? across + i * STEP : along;
            const int kk = KC ? along : across + i * STEP;
            bool inside;
            gptr<const float> src = view.at(rows[r], cursors[q], inside);
            const bool valid = inside && row_ok[r] && cursor_k[q] < k_end;
            cp_async<VEC * 4>(Tile::cell(tile, stage, outer, kk), valid ? src : view.base(), valid);
        }
#pragma unroll
        for (int q = 0; q < CURSORS; ++q) {
            view.advance(cursors[q]);
            cursor_k[q] += BK;
        }
    }
};

// A's 16 x 8 fragment at (m, k) of a stage, rounded to TF32 (a0..a3 at rows
// g, g + 8 and columns t, t + 4, g = lane / 4, t = lane % 4).
template <int OUTER, bool KC>
__device__ void a_fragment(uint32_t (&a)[4], typename OperandTile<OUTER, KC>::Stages& tile, int stage, int m,
                           int k) {
    using Tile = OperandTile<OUTER, KC>;
    const int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
    uint32_t raw[4];
    if constexpr (KC) {
        // Four 8 x 4 matrices: rows 0-7 / 8-15 by columns 0-3 / 4-7.
        ldmatrix<4>(raw, Tile::cell(tile, stage, m + lane % 16, k + lane / 16 * 4));
    } else {
        raw[0] = __float_as_uint(*Tile::cell(tile, stage, m + g, k + t));
        raw[1] = __float_as_uint(*Tile::cell(tile, stage, m + g + 8, k + t));
        raw[2] = __float_as_uint(*Tile::cell(tile, stage, m + g, k + t + 4));
        raw[3] = __float_as_uint(*Tile::cell(tile, stage, m + g + 8, k + t + 4));
    }
#pragma unroll
    for (int i = 0; i < 4; ++i) a[i] = to_tf32(__uint_as_float(raw[i]));
}

// B's 8 x 8 fragment at (k, n), rounded to TF32 (b0, b1 at rows t, t + 4 of
// column g).
template <int OUTER, bool KC>
__device__ void b_fragment(uint32_t (&b)[2], typename OperandTile<OUTER, KC>::Stages& tile, int stage, int n,
                           int k) {
    using Tile = OperandTile<OUTER, KC>;
    const int lane = threadIdx.x % 32, g = lane / 4, t = lane % 4;
    uint32_t raw[2];
    if constexpr (KC) {
        // Two 8 x 4 matrices: columns n..n+7 by k 0-3 / 4-7.
        ldmatrix<2>(raw, Tile::cell(tile, stage, n + lane % 8, k + lane / 8 % 2 * 4));
    } else {
        raw[0] = __float_as_uint(*Tile::cell(tile, stage, n + g, k + t));
        raw[1] = __float_as_uint(*Tile::cell(tile, stage, n + g, k + t + 4));
    }
#pragma unroll
    for (int i = 0; i < 2; ++i) b[i] = to_tf32(__uint_as_float(raw[i]));
}

// acc = the block's tile (rows m0.., columns n0..) of a * b over the
// reduction [k_begin, k_end). Lane (g, t) of warp w holds acc[i][j][r] for
// row m0 + wm + 16 i + g + 8 (r / 2) and column n0 + wn + 8 j + 2 t + r % 2
// (warp_origin gives wm, wn). Every thread of the block must call it.
template <class Cfg, class AView, class BView>
__device__ void tc_gemm(const AView& av, int m0, int m_extent, const BView& bv, int n0, int n_extent, int k_begin,
                        int k_end, float (&acc)[Cfg::MI][Cfg::NI][4]) {
    constexpr bool AKC = AView::K_CONTIGUOUS, BKC = BView::K_CONTIGUOUS;
    using ATile = OperandTile<Cfg::BM, AKC>;
    using BTile = OperandTile<Cfg::BN, BKC>;
    SHARED(typename ATile::Stages, a_tile);
    SHARED(typename BTile::Stages, b_tile);
    TileLoader<AView, Cfg::BM> a_loader(av, m0, m_extent, k_begin);
    TileLoader<BView, Cfg::BN> b_loader(bv, n0, n_extent, k_begin);
#pragma unroll
    for (int i = 0; i < Cfg::MI; ++i)
#pragma unroll
        for (int j = 0; j < Cfg::NI; ++j)
#pragma unroll
            for (int r = 0; r < 4; ++r) acc[i][j][r] = 0.0f;

    const int steps = k_end > k_begin ? (k_end - k_begin + BK - 1) / BK : 0;
#pragma unroll
    for (int s = 0; s < STAGES - 1; ++s) {
        if (s < steps) {
            a_loader.load(a_tile, s, k_end);
            b_loader.load(b_tile, s, k_end);
        }
        cp_async_commit();  // possibly empty: the waits below count groups
    }
    const int warp = threadIdx.x / 32;
    const int wm = warp % Cfg::WARPS_M * Cfg::WM, wn = warp / Cfg::WARPS_M * Cfg::WN;
    for (int kt = 0; kt < steps; ++kt) {
        cp_async_wait<STAGES - 2>();  // step kt has landed for this thread...
        __syncthreads();              // ...and for all; step kt - 1's stage is free
        const int next = kt + STAGES - 1;
        if (next < steps) {
            a_loader.load(a_tile, next % STAGES, k_end);
            b_loader.load(b_tile, next % STAGES, k_end);
        }
        cp_async_commit();
        const int stage = kt % STAGES;
#pragma unroll
        for (int k8 = 0; k8 < BK; k8 += 8) {
            uint32_t a[Cfg::MI][4], b[Cfg::NI][2];
#pragma unroll
            for (int i = 0; i < Cfg::MI; ++i) a_fragment<Cfg::BM, AKC>(a[i], a_tile, stage, wm + 16 * i, k8);
#pragma unroll
            for (int j = 0; j < Cfg::NI; ++j) b_fragment<Cfg::BN, BKC>(b[j], b_tile, stage, wn + 8 * j, k8);
#pragma unroll
            for (int i = 0; i < Cfg::MI; ++i)
#pragma unroll
                for (int j = 0; j < Cfg::NI; ++j) mma_tf32_m16n8k8(acc[i][j], a[i], b[j], acc[i][j]);
        }
    }
    cp_async_wait<0>();  // only empty groups remain; leave none in flight
}

// Hands every result element of the block's tile to store(row, col, value)
// (rows and columns relative to the whole result; only those in range).
template <class Cfg, class Store>
__device__ void store_tile(int m0, int rows, int n0, int cols, const float (&acc)[Cfg::MI][Cfg::NI][4], Store store) {
    const int lane = threadIdx.x % 32, warp = threadIdx.x / 32, g = lane / 4, t = lane % 4;
    const int wm = warp % Cfg::WARPS_M * Cfg::WM, wn = warp / Cfg::WARPS_M * Cfg::WN;
#pragma unroll
    for (int i = 0; i < Cfg::MI; ++i)
#pragma unroll
        for (int j = 0; j < Cfg::NI; ++j)
#pragma unroll
            for (int r = 0; r < 4; ++r) {
                const int m = m0 + wm + 16 * i + g + 8 * (r / 2), col = n0 + wn + 8 * j + 2 * t + r % 2;
                if (m < rows && col < cols) store(m, col, acc[i][j][r]);
            }
}

// ---- operand views ---------------------------------------------------------
// row(outer) decodes an outer index once; cursor(k) decodes a reduction
// index once and advance() moves it BK on; at(row, cursor, inside) is the
// address of the first of VEC elements, with inside false in the padding.

// A row-major [reduction, outer] matrix with `cols` columns: w as [K, O] in
// the forward, dy as [M, O] in the weight gradient.
template <int VEC_>
struct RowMajor {
    static constexpr bool K_CONTIGUOUS = false;
    static constexpr int VEC = VEC_;
    gptr<const float> data;
    int cols;
    using Row = int;     // the column
    using Cursor = int;  // the row's offset
    __device__ Row row(int col) const { return col; }
    __device__ Cursor cursor(int k) const { return k * cols; }
    __device__ void advance(Cursor& c) const { c += BK * cols; }
    __device__ gptr<const float> at(Row col, Cursor offset, bool& inside) const {
        inside = true;
        return data + offset + col;
    }
    __device__ gptr<const float> base() const { return data; }
};

// x's element at tap t of window w (inside false in the padding; the
// decoding of m and k is conv_params.cuh's).
__device__ __forceinline__ gptr<const float> pixel(gptr<const float> x, const ConvShape& s, const PixelWindow& w,
                                                   const KernelTap& t, bool& inside) {
    const int iy = w.iy0 + t.ky, ix = w.ix0 + t.kx;
    inside = iy >= 0 && iy < s.h && ix >= 0 && ix < s.w;
    return x + w.image + (iy * s.w + ix) * s.c + t.ci;
}

// patches(x)[m, k] of the forward: rows are output pixels, the reduction
// walks the taps (ci fastest, contiguous in x).
template <int VEC_>
struct Patches {
    static constexpr bool K_CONTIGUOUS = true;
    static constexpr int VEC = VEC_;
    gptr<const float> x;
    ConvShape s;
    using Row = PixelWindow;
    using Cursor = KernelTap;
    __device__ Row row(int m) const { return pixel_window(s, m); }
    __device__ Cursor cursor(int k) const { return kernel_tap(s, k); }
    __device__ void advance(Cursor& t) const {
        t.ci += BK;
        while (t.ci >= s.c) {
            t.ci -= s.c;
            if (++t.kx == s.kw) {
                t.kx = 0;
                ++t.ky;
            }
        }
    }
    __device__ gptr<const float> at(const Row& w, const Cursor& t, bool& inside) const {
        return pixel(x, s, w, t, inside);
    }
    __device__ gptr<const float> base() const { return x; }
};

// patches(x)^T[k, m] of the weight gradient: rows are taps (ci contiguous in
// x), the reduction walks the output pixels.
template <int VEC_>
struct PatchesTransposed {
    static constexpr bool K_CONTIGUOUS = false;
    static constexpr int VEC = VEC_;
    gptr<const float> x;
    ConvShape s;
    using Row = KernelTap;
    // The output pixel (n, oy, ox), kept as image offset and coordinates.
    struct Cursor {
        int image, oy, ox;
    };
    __device__ Row row(int k) const { return kernel_tap(s, k); }
    __device__ Cursor cursor(int m) const {
        int ox = m % s.ow, rest = m / s.ow;
        return {rest / s.oh * s.h * s.w * s.c, rest % s.oh, ox};
    }
    __device__ void advance(Cursor& p) const {
        p.ox += BK;
        while (p.ox >= s.ow) {
            p.ox -= s.ow;
            if (++p.oy == s.oh) {
                p.oy = 0;
                p.image += s.h * s.w * s.c;
            }
        }
    }
    __device__ gptr<const float> at(const Row& t, const Cursor& p, bool& inside) const {
        PixelWindow w{p.image, p.oy * s.stride_h - s.pad_h, p.ox * s.stride_w - s.pad_w};
        return pixel(x, s, w, t, inside);
    }
    __device__ gptr<const float> base() const { return x; }
};

// One output phase (py, px) of the strided data gradient: the input pixels
// iy = iy0 + stride_h * jy (jy < hp) with (iy + pad_h) % stride_h = py, and
// the taps ky = py + stride_h * a (a < khp); tap a of pixel jy reads dy's row
// oy = jy + base_y - a. Likewise along x.
struct Phase {
    int py, px;
    int iy0, ix0;
    int hp, wp;
    int khp, kwp;
    int base_y, base_x;
};
__device__ __forceinline__ int phase_count(int extent, int first, int stride) {
    return first < extent ? (extent - first + stride - 1) / stride : 0;
}
__device__ Phase phase_of(const ConvShape& s, int z) {
    Phase f;
    f.py = z / s.stride_w;
    f.px = z % s.stride_w;
    f.iy0 = ((f.py - s.pad_h) % s.stride_h + s.stride_h) % s.stride_h;
    f.ix0 = ((f.px - s.pad_w) % s.stride_w + s.stride_w) % s.stride_w;
    f.hp = phase_count(s.h, f.iy0, s.stride_h);
    f.wp = phase_count(s.w, f.ix0, s.stride_w);
    f.khp = phase_count(s.kh, f.py, s.stride_h);
    f.kwp = phase_count(s.kw, f.px, s.stride_w);
    f.base_y = (f.iy0 + s.pad_h - f.py) / s.stride_h;
    f.base_x = (f.ix0 + s.pad_w - f.px) / s.stride_w;
    return f;
}

// A phase's reduction index r = (a, b, o): o fastest, contiguous in dy and w.
struct PhaseTap {
    int a, b, o;
};
__device__ __forceinline__ PhaseTap phase_tap(const ConvShape& s, const Phase& f, int r) {
    int o = r % s.o, tap = r / s.o;
    if (f.kwp == 0) return {0, 0, o};  // a phase without taps reduces over nothing
    return {tap / f.kwp, tap % f.kwp, o};
}
__device__ __forceinline__ void advance_phase_tap(const ConvShape& s, const Phase& f, PhaseTap& t) {
    t.o += BK;
    while (t.o >= s.o) {
        t.o -= s.o;
        if (++t.b == f.kwp) {
            t.b = 0;
            ++t.a;
        }
    }
}

// taps(dy)[p, r] of one phase: rows are the phase's input pixels.
template <int VEC_>
struct DyTaps {
    static constexpr bool K_CONTIGUOUS = true;
    static constexpr int VEC = VEC_;
    gptr<const float> dy;
    ConvShape s;
    Phase f;
    // Input pixel jy, jx of the phase: image n's offset in dy and the dy
    // row/column its tap (0, 0) reads.
    struct Row {
        int image, oy, ox;
    };
    using Cursor = PhaseTap;
    __device__ Row row(int p) const {
        int jx = p % f.wp, rest = p / f.wp;
        int jy = rest % f.hp, n = rest / f.hp;
        return {n * s.oh * s.ow * s.o, jy + f.base_y, jx + f.base_x};
    }
    __device__ Cursor cursor(int r) const { return phase_tap(s, f, r); }
    __device__ void advance(Cursor& t) const { advance_phase_tap(s, f, t); }
    __device__ gptr<const float> at(const Row& p, const Cursor& t, bool& inside) const {
        const int oy = p.oy - t.a, ox = p.ox - t.b;
        inside = oy >= 0 && oy < s.oh && ox >= 0 && ox < s.ow;
        return dy + p.image + (oy * s.ow + ox) * s.o + t.o;
    }
    __device__ gptr<const float> base() const { return dy; }
};

// wt[r, c] = w[ky, kx, c, o] of one phase: rows (the outer index) are input
// channels.
template <int VEC_>
struct WeightTaps {
    static constexpr bool K_CONTIGUOUS = true;
    static constexpr int VEC = VEC_;
    gptr<const float> w;
    ConvShape s;
    Phase f;
    using Row = int;  // the input channel
    using Cursor = PhaseTap;
    __device__ Row row(int c) const { return c; }
    __device__ Cursor cursor(int r) const { return phase_tap(s, f, r); }
    __device__ void advance(Cursor& t) const { advance_phase_tap(s, f, t); }
    __device__ gptr<const float> at(Row c, const Cursor& t, bool& inside) const {
        const int ky = f.py + s.stride_h * t.a, kx = f.px + s.stride_w * t.b;
        inside = true;
        return w + ((ky * s.kw + kx) * s.c + c) * s.o + t.o;
    }
    __device__ gptr<const float> base() const { return w; }
};

// ---- kernels ---------------------------------------------------------------
// THREADS threads; blockIdx.x tiles the result's rows, blockIdx.y its
// columns, blockIdx.z is the data gradient's phase or the weight gradient's
// chunk of rows.

template <class Cfg, int VEC>
__device__ void forward(ForwardParams<float> p) {
    const ConvShape& s = p.s;
    const int rows = s.n * s.oh * s.ow, k = s.kh * s.kw * s.c;
    const int m0 = blockIdx.x * Cfg::BM, n0 = blockIdx.y * Cfg::BN;
    float acc[Cfg::MI][Cfg::NI][4];
    tc_gemm<Cfg>(Patches<VEC>{p.x, s}, m0, rows, RowMajor<VEC>{p.w, s.o}, n0, s.o, 0, k, acc);
    gptr<const float> bias = p.bias;
    gptr<float> y = p.y;
    const int cols = s.o;
    store_tile<Cfg>(m0, rows, n0, cols, acc,
                    [=](int m, int col, float v) { y[m * cols + col] = bias ? v + bias[col] : v; });
}

template <class Cfg, int VEC>
__device__ void backward_data(BackwardDataParams<float> p) {
    const ConvShape& s = p.s;
    const Phase f = phase_of(s, blockIdx.z);
    const int rows = s.n * f.hp * f.wp, r = f.khp * f.kwp * s.o;
    const int m0 = blockIdx.x * Cfg::BM, n0 = blockIdx.y * Cfg::BN;
    if (m0 >= rows) return;  // the grid covers the largest phase; the whole block leaves
    float acc[Cfg::MI][Cfg::NI][4];
    tc_gemm<Cfg>(DyTaps<VEC>{p.dy, s, f}, m0, rows, WeightTaps<VEC>{p.w, s, f}, n0, s.c, 0, r, acc);
    gptr<float> dx = p.dx;
    store_tile<Cfg>(m0, rows, n0, s.c, acc, [=](int m, int c, float v) {
        int jx = m % f.wp, rest = m / f.wp;
        int jy = rest % f.hp, n = rest / f.hp;
        int iy = f.iy0 + s.stride_h * jy, ix = f.ix0 + s.stride_w * jx;
        dx[((n * s.h + iy) * s.w + ix) * s.c + c] = v;
    });
}

template <class Cfg, int VEC>
__device__ void weight_partial(WeightPartialParams<float> p) {
    const ConvShape& s = p.s;
    const int rows = s.n * s.oh * s.ow, k = s.kh * s.kw * s.c;
    const int m0 = blockIdx.x * Cfg::BM, n0 = blockIdx.y * Cfg::BN;
    const int chunk = blockIdx.z;
    const int row_begin = chunk * p.chunk_rows;
    const int row_end = min(row_begin + p.chunk_rows, rows);
    float acc[Cfg::MI][Cfg::NI][4];
    tc_gemm<Cfg>(PatchesTransposed<VEC>{p.x, s}, m0, k, RowMajor<VEC>{p.dy, s.o}, n0, s.o, row_begin, row_end, acc);
    gptr<float> out = p.partials + chunk * k * s.o;
    const int cols = s.o;
    store_tile<Cfg>(m0, k, n0, cols, acc, [=](int m, int col, float v) { out[m * cols + col] = v; });
}

// conv_tc_<direction>_<BM>x<BN>_v<VEC>_f32 for each tile and vector width.
#define TC_KERNELS(BM, BN, WARPS_M, VEC)                                                                 \
    extern "C" __global__ void __launch_bounds__(THREADS)                                                \
        conv_tc_forward_##BM##x##BN##_v##VEC##_f32(ForwardParams<float> p) {                             \
        forward<TileConfig<BM, BN, WARPS_M>, VEC>(p);                                                    \
    }                                                                                                    \
    extern "C" __global__ void __launch_bounds__(THREADS)                                                \
        conv_tc_backward_data_##BM##x##BN##_v##VEC##_f32(BackwardDataParams<float> p) {                  \
        backward_data<TileConfig<BM, BN, WARPS_M>, VEC>(p);                                              \
    }                                                                                                    \
    extern "C" __global__ void __launch_bounds__(THREADS)                                                \
        conv_tc_weight_partial_##BM##x##BN##_v##VEC##_f32(WeightPartialParams<float> p) {                \
        weight_partial<TileConfig<BM, BN, WARPS_M>, VEC>(p);                                             \
    }

#define TC_TILE(BM, BN, WARPS_M) TC_KERNELS(BM, BN, WARPS_M, 4) TC_KERNELS(BM, BN, WARPS_M, 1)

TC_TILE(128, 16, 4)
TC_TILE(128, 32, 4)
TC_TILE(64, 64, 2)
TC_TILE(128, 64, 2)
