// Batch normalisation over the rows of a [rows, c] tensor (every axis but
// the channels), mirroring src/ops/batchnorm.rs.
//
// Per-channel sums (the batch mean, the sum of squared deviations, and the
// backward's sum dy and sum dy * xhat) are reduced in two fixed levels, in
// double whatever T is:
//   1. *_partials: block (chunk, tile) sums rows [chunk * chunk_rows, +chunk_rows)
//      for the 32 channels of its tile. Thread (x, y) owns channel
//      tile * 32 + x and rows y, y + 8, ... of the chunk, so a warp reads 32
//      consecutive channels of one row; the 8 row lanes are then added in
//      lane order through shared memory, and the block writes one partial
//      per (term, chunk, channel).
//   2. finish_sums: one warp per channel adds that channel's chunk partials,
//      lane l taking chunks l, l + 32, ..., then a fixed shuffle tree.
// Every addition happens in an order fixed by the shapes alone, so reruns
// give the same bits. No atomics.
//
// The per-channel constants of the element-wise passes (the affine map of
// the forward, the gradient factors of the backward) are computed once per
// channel by small kernels into a double workspace, then applied one thread
// per element in a grid-stride loop. update_running is a single tiny kernel,
// so it can sit in a CUDA graph; it reads the epoch's `halted` word (see
// optim.cu) and changes nothing once a loss of the epoch was not finite.

#include "common.cuh"

// Block shape of the *_partials kernels; TILE_CHANNELS and ROW_LANES in
// src/cuda/batchnorm.rs launch with these.
constexpr unsigned TILE_CHANNELS = 32;
constexpr unsigned ROW_LANES = 8;
constexpr unsigned WARP = 32;

// How the rows are cut into chunks, one per block column of a partials launch.
struct RowChunks {
    uint64_t rows;
    uint64_t c;
    uint64_t chunk_rows;
};

template <typename T>
struct SumPartialsParams {
    gptr<const T> x;        // [rows, c]
    gptr<double> partials;  // [chunks, c]
    RowChunks g;
};

template <typename T>
struct SqDevPartialsParams {
    gptr<const T> x;          // [rows, c]
    gptr<const double> mean;  // [c]
    gptr<double> partials;    // [chunks, c]
    RowChunks g;
};

template <typename T>
struct GradPartialsParams {
    gptr<const T> dy;       // [rows, c]
    gptr<const T> x;        // [rows, c]
    gptr<const T> mean;     // [c]: the statistics the forward normalised with
    gptr<const T> var;      // [c]
    gptr<double> partials;  // [2, chunks, c]: sum dy, then sum dy * xhat
    RowChunks g;
    double eps;
};

template <typename T>
struct FinishParams {
    gptr<const double> partials;  // [chunks, c]
    gptr<double> sums;            // [c]: sum / divisor, in double
    gptr<T> out;                  // [c]: the same, as T
    uint64_t chunks;
    uint64_t c;
    double divisor;
};

// S is double for batch statistics, T for running statistics.
template <typename T, typename S>
struct AffineParams {
    gptr<const T> scale;  // [c]
    gptr<const T> bias;   // [c]
    gptr<const S> mean;   // [c]
    gptr<const S> var;    // [c]
    gptr<double> coef;    // [2, c]: a = scale / sqrt(var + eps), b = bias - mean * a
    uint64_t c;
    double eps;
};

template <typename T>
struct ApplyAffineParams {
    gptr<const T> x;          // [n / c, c]
    gptr<const double> coef;  // [2, c]
    gptr<T> y;                // [n / c, c]: x * a + b
    uint64_t n;
    uint64_t c;
};

// Rows of the gradient coefficients in GradCoefParams::coef.
enum GradCoef { MEAN, INV_STD, GAIN, MEAN_DY, MEAN_DY_XHAT, GRAD_COEFS };

template <typename T>
struct GradCoefParams {
    gptr<const T> scale;      // [c]
    gptr<const T> mean;       // [c]
    gptr<const T> var;        // [c]
    gptr<const double> sums;  // [2, c]: sum dy, sum dy * xhat
    gptr<double> coef;        // [GRAD_COEFS, c]
    uint64_t c;
    uint64_t rows;
    double eps;
};

template <typename T>
struct InputGradParams {
    gptr<const T> dy;         // [n / c, c]
    gptr<const T> x;          // [n / c, c]
    gptr<const double> coef;  // [GRAD_COEFS, c]
    gptr<T> dx;               // [n / c, c]
    uint64_t n;
    uint64_t c;
    uint64_t train;           // nonzero: differentiate through the batch statistics
};

template <typename T>
struct UpdateRunningParams {
    gptr<T> mean;              // [c], updated in place
    gptr<T> var;               // [c], updated in place
    gptr<const T> batch_mean;  // [c]
    gptr<const T> batch_var;   // [c]
    gptr<const uint64_t> halted;  // nonzero: the step's loss was not finite, change nothing (may be null)
    uint64_t c;
    double momentum;
};


// The channel a *_partials thread owns (may be >= c in the last tile).
__device__ uint64_t partials_channel() {
    return (uint64_t)blockIdx.y * TILE_CHANNELS + threadIdx.x;
}

// Level 1 of the reduction: term(i, acc) adds element i's K contributions to
// acc for each row of this block's chunk, on the thread's channel ch; the
// block then writes partials[(k * chunks + chunk) * c + ch] for k < K.
template <int K, typename Term>
__device__ void chunk_partials(const RowChunks& g, gptr<double> partials, uint64_t ch, Term term) {
    using LaneSums = smem<double>[K][ROW_LANES][TILE_CHANNELS];
    SHARED(LaneSums, lane_sums);
    double acc[K] = {};
    const uint64_t begin = blockIdx.x * g.chunk_rows;
    const uint64_t end = begin + g.chunk_rows < g.rows ? begin + g.chunk_rows : g.rows;
    if (ch < g.c) {
        for (uint64_t r = begin + threadIdx.y; r < end; r += ROW_LANES) term(r * g.c + ch, acc);
    }
    for (int k = 0; k < K; ++k) lane_sums[k][threadIdx.y][threadIdx.x] = acc[k];
    __syncthreads();
    if (threadIdx.y == 0 && ch < g.c) {
        for (int k = 0; k < K; ++k) {
            double s = 0.0;
            for (unsigned lane = 0; lane < ROW_LANES; ++lane) s += lane_sums[k][lane][threadIdx.x];
            partials[(k * (uint64_t)gridDim.x + blockIdx.x) * g.c + ch] = s;
        }
    }
}

template <typename T>
__device__ void sum_partials(SumPartialsParams<T> p) {
    chunk_partials<1>(p.g, p.partials, partials_channel(),
                      [&](uint64_t i, double* acc) { acc[0] += (double)p.x[i]; });
}

template <typename T>
__device__ void sq_dev_partials(SqDevPartialsParams<T> p) {
    const uint64_t ch = partials_channel();
    const double mean = ch < p.g.c ? p.mean[ch] : 0.0;
    chunk_partials<1>(p.g, p.partials, ch, [&](uint64_t i, double* acc) {
        const double d = (double)p.x[i] - mean;
        acc[0] += d * d;
    });
}

template <typename T>
__device__ void grad_partials(GradPartialsParams<T> p) {
    const uint64_t ch = partials_channel();
    const double mean = ch < p.g.c ? (double)p.mean[ch] : 0.0;
    const double inv_std = ch < p.g.c ? 1.0 / sqrt((double)p.var[ch] + p.eps) : 0.0;
    chunk_partials<2>(p.g, p.partials, ch, [&](uint64_t i, double* acc) {
        const double g = (double)p.dy[i];
        acc[0] += g;
        acc[1] += g * ((double)p.x[i] - mean) * inv_std;
    });
}

// Level 2: one warp per channel (blocks of whole warps).
template <typename T>
__device__ void finish_sums(FinishParams<T> p) {
    const unsigned lane = threadIdx.x % WARP;
    const uint64_t warps_per_block = blockDim.x / WARP;
    const uint64_t warps = gridDim.x * warps_per_block;
    // ch is the same for the whole warp, so every lane reaches the shuffles.
    for (uint64_t ch = blockIdx.x * warps_per_block + threadIdx.x / WARP; ch < p.c; ch += warps) {
        double s = 0.0;
        for (uint64_t k = lane; k < p.chunks; k += WARP) s += p.partials[k * p.c + ch];
        for (unsigned offset = WARP / 2; offset > 0; offset /= 2) s += __shfl_down_sync(0xffffffffu, s, offset);
        if (lane == 0) {
            s /= p.divisor;
            p.sums[ch] = s;
            p.out[ch] = (T)s;
        }
    }
}

template <typename T, typename S>
__device__ void affine_coefficients(AffineParams<T, S> p) {
    GRID_STRIDE(ch, p.c) {
        const double a = (double)p.scale[ch] / sqrt((double)p.var[ch] + p.eps);
        p.coef[ch] = a;
        p.coef[p.c + ch] = (double)p.bias[ch] - (double)p.mean[ch] * a;
    }
}

template <typename T>
__device__ void apply_affine(ApplyAffineParams<T> p) {
    GRID_STRIDE(i, p.n) {
        const uint64_t ch = i % p.c;
        p.y[i] = (T)((double)p.x[i] * p.coef[ch] + p.coef[p.c + ch]);
    }
}

template <typename T>
__device__ void grad_coefficients(GradCoefParams<T> p) {
    GRID_STRIDE(ch, p.c) {
        const double inv_std = 1.0 / sqrt((double)p.var[ch] + p.eps);
        p.coef[MEAN * p.c + ch] = (double)p.mean[ch];
        p.coef[INV_STD * p.c + ch] = inv_std;
        p.coef[GAIN * p.c + ch] = (double)p.scale[ch] * inv_std;
        p.coef[MEAN_DY * p.c + ch] = p.sums[ch] / (double)p.rows;
        p.coef[MEAN_DY_XHAT * p.c + ch] = p.sums[p.c + ch] / (double)p.rows;
    }
}

// Train: dx = gain * (dy - mean(dy) - xhat * mean(dy * xhat)); eval: dx = gain * dy.
template <typename T>
__device__ void input_grad(InputGradParams<T> p) {
    gptr<const double> coef = p.coef;
    const uint64_t c = p.c;
    GRID_STRIDE(i, p.n) {
        const uint64_t ch = i % c;
        const double g = (double)p.dy[i];
        double dx;
        if (p.train) {
            const double xhat = ((double)p.x[i] - coef[MEAN * c + ch]) * coef[INV_STD * c + ch];
            dx = coef[GAIN * c + ch] * (g - coef[MEAN_DY * c + ch] - xhat * coef[MEAN_DY_XHAT * c + ch]);
        } else {
            dx = coef[GAIN * c + ch] * g;
        }
        p.dx[i] = (T)dx;
    }
}

template <typename T>
__device__ void update_running(UpdateRunningParams<T> p) {
    if (p.halted && *p.halted != 0) return;
    const double keep = p.momentum, take = 1.0 - p.momentum;
    GRID_STRIDE(ch, p.c) {
        p.mean[ch] = (T)(keep * (double)p.mean[ch] + take * (double)p.batch_mean[ch]);
        p.var[ch] = (T)(keep * (double)p.var[ch] + take * (double)p.batch_var[ch]);
    }
}

#define INSTANTIATE(T, suffix)                                                                       \
    extern "C" __global__ void sum_partials_##suffix(SumPartialsParams<T> p) { sum_partials(p); }       \
    extern "C" __global__ void sq_dev_partials_##suffix(SqDevPartialsParams<T> p) { sq_dev_partials(p); } \
    extern "C" __global__ void grad_partials_##suffix(GradPartialsParams<T> p) { grad_partials(p); }    \
    extern "C" __global__ void finish_sums_##suffix(FinishParams<T> p) { finish_sums(p); }              \
    extern "C" __global__ void batch_affine_##suffix(AffineParams<T, double> p) { affine_coefficients(p); } \
    extern "C" __global__ void running_affine_##suffix(AffineParams<T, T> p) { affine_coefficients(p); } \
    extern "C" __global__ void apply_affine_##suffix(ApplyAffineParams<T> p) { apply_affine(p); }       \
    extern "C" __global__ void grad_coefficients_##suffix(GradCoefParams<T> p) { grad_coefficients(p); } \
    extern "C" __global__ void input_grad_##suffix(InputGradParams<T> p) { input_grad(p); }             \
    extern "C" __global__ void update_running_##suffix(UpdateRunningParams<T> p) { update_running(p); }

INSTANTIATE(float, f32)
INSTANTIATE(double, f64)
