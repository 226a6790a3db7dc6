// Batch normalisation over the rows of a [rows, c] tensor (every axis but
// the channels), with what follows it in these networks fused in:
//
//     y = relu(bn(x) + residual)        the add and the ReLU each optional
//
// mirroring src/ops/batchnorm.rs. A training step runs five launches per
// layer, each reading its inputs once:
//   forward   stats       batch mean and variance, and the affine map a, b
//             apply       y = relu((T)(x * a + b) + residual)
//   backward  grad_sums   with g = dy where y > 0 (the ReLU's mask, inline):
//                         sum g (= dbias) and sum g * xhat (= dscale), and
//                         the input gradient's per-channel coefficients
//             input_grad  dx, and d residual = g
//   then      update_running, once the step's loss is known to be finite
// Evaluation runs running_coefficients (a, b from the running statistics),
// then apply.
//
// The two reductions are one launch each. Block (chunk, tile) sums its
// chunk of rows for the channels of its tile in double; thread (x, y) owns
// channel tile * blockDim.x + x and rows y, y + blockDim.y, ... The row
// lanes are added in lane order through shared memory and the block writes
// one partial per (term, chunk, channel). The last block to finish (an
// integer ticket, the only atomic here) then adds every channel's partials
// in chunk order, a warp per channel: lane l takes chunks l, l + 32, ...,
// then a fixed shuffle tree. Every addition happens in an order fixed by the
// shapes alone, whichever block comes last, so reruns give the same bits.
//
// The statistics are single-pass and shifted: each channel's sums are of
// d = x - x[row 0], so mean = x0 + sum d / n and var = sum d^2 / n -
// (sum d / n)^2 lose nothing to cancellation when the mean is far from 0
// (the CPU op's two passes give the same values to within f64 rounding).
//
// The element-wise passes round as the unfused ops did: bn(x) to T first,
// then the add in T, then the ReLU, which keeps NaN (a diverged run must
// show) and passes gradient only where y > 0.

#include "common.cuh"

// Threads per block of the reductions: tile channels x row lanes.
constexpr unsigned REDUCE_THREADS = 256;
constexpr unsigned WARP = 32;

// How the rows are cut into chunks, one per block column of a reduction.
struct RowChunks {
    uint64_t rows;
    uint64_t c;
    uint64_t chunk_rows;
};

template <typename T>
struct StatsParams {
    gptr<const T> x;          // [rows, c]
    gptr<const T> scale;      // [c]
    gptr<const T> bias;       // [c]
    gptr<double> partials;    // [2, chunks, c]: sum d, sum d^2 per chunk
    gptr<unsigned> ticket;    // 0 before the launch, and after it
    gptr<T> mean;             // [c]: the batch mean
    gptr<T> var;              // [c]: the biased batch variance
    gptr<double> coef;        // [2, c]: a = scale / sqrt(var + eps), b = bias - mean * a
    RowChunks g;
    double eps;
};

template <typename T>
struct RunningCoefParams {
    gptr<const T> scale;  // [c]
    gptr<const T> bias;   // [c]
    gptr<const T> mean;   // [c]: running statistics
    gptr<const T> var;    // [c]
    gptr<double> coef;    // [2, c]
    uint64_t c;
    double eps;
};

template <typename T>
struct ApplyParams {
    gptr<const T> x;          // [n / c, c]
    gptr<const T> residual;   // [n / c, c] added after the affine map, or null
    gptr<const double> coef;  // [2, c]
    gptr<T> y;                // [n / c, c]
    uint64_t n;
    uint64_t c;
    uint64_t relu;            // nonzero: y = max(y, 0)
};

// Rows of the input gradient's coefficients (GradSumsParams::coef).
enum GradCoef { MEAN, INV_STD, GAIN, MEAN_G, MEAN_G_XHAT, GRAD_COEFS };

template <typename T>
struct GradSumsParams {
    gptr<const T> dy;        // [rows, c]
    gptr<const T> x;         // [rows, c]
    gptr<const T> y;         // [rows, c]: the forward's output when it ended in a ReLU, else null
    gptr<const T> scale;     // [c]
    gptr<const T> mean;      // [c]: the statistics the forward normalised with
    gptr<const T> var;       // [c]
    gptr<double> partials;   // [2, chunks, c]: sum g, sum g * xhat per chunk
    gptr<unsigned> ticket;   // 0 before the launch, and after it
    gptr<T> dscale;          // [c]
    gptr<T> dbias;           // [c]
    gptr<double> coef;       // [GRAD_COEFS, c]
    RowChunks g;
    double eps;
};

template <typename T>
struct InputGradParams {
    gptr<const T> dy;         // [n / c, c]
    gptr<const T> x;          // [n / c, c]
    gptr<const T> y;          // as in GradSumsParams
    gptr<const double> coef;  // [GRAD_COEFS, c]
    gptr<T> dx;               // [n / c, c]
    gptr<T> dresidual;        // [n / c, c]: g, or null when no residual was added
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


// The channel a reduction thread owns (may be >= c in the last tile).
__device__ uint64_t reduce_channel() {
    return (uint64_t)blockIdx.y * blockDim.x + threadIdx.x;
}

// The gradient that reaches the affine map: dy, masked by a fused ReLU.
template <typename T>
__device__ double masked(gptr<const T> dy, gptr<const T> y, uint64_t i) {
    return (!y || y[i] > T(0)) ? (double)dy[i] : 0.0;
}

// Level 1: term(i, acc) adds element i's K contributions to acc for each row
// of this block's chunk, on the thread's channel ch; the block then writes
// partials[(k * chunks + chunk) * c + ch] for k < K.
template <int K, typename Term>
__device__ void chunk_partials(const RowChunks& g, gptr<double> partials, uint64_t ch, Term term) {
    using LaneSums = smem<double>[K][REDUCE_THREADS];
    SHARED(LaneSums, lane_sums);
    double acc[K] = {};
    const uint64_t begin = blockIdx.x * g.chunk_rows;
    const uint64_t end = begin + g.chunk_rows < g.rows ? begin + g.chunk_rows : g.rows;
    if (ch < g.c) {
        for (uint64_t r = begin + threadIdx.y; r < end; r += blockDim.y) term(r * g.c + ch, acc);
    }
    for (int k = 0; k < K; ++k) lane_sums[k][threadIdx.y * blockDim.x + threadIdx.x] = acc[k];
    __syncthreads();
    if (threadIdx.y == 0 && ch < g.c) {
        for (int k = 0; k < K; ++k) {
            double s = 0.0;
            for (unsigned lane = 0; lane < blockDim.y; ++lane) s += lane_sums[k][lane * blockDim.x + threadIdx.x];
            partials[(k * (uint64_t)gridDim.x + blockIdx.x) * g.c + ch] = s;
        }
    }
}

// True in the one block that finishes last; every other block's partials
// are then visible to it. The last block puts the ticket back to 0 for the
// next launch (or the next replay of a CUDA graph).
__device__ bool last_block(gptr<unsigned> ticket) {
    SHARED(smem<unsigned>, is_last);
    __threadfence();  // this block's partials, before its ticket
    __syncthreads();
    const bool first_thread = threadIdx.x == 0 && threadIdx.y == 0;
    if (first_thread) is_last = atomicAdd(ticket, 1u) == gridDim.x * gridDim.y - 1 ? 1u : 0u;
    __syncthreads();
    const bool last = is_last != 0u;
    if (last && first_thread) *ticket = 0u;
    return last;
}

// Level 2, in the last block: calls done(ch, sums) with channel ch's K sums
// over every chunk, a warp per channel (lane l adds chunks l, l + 32, ...,
// then a fixed shuffle tree); done runs on lane 0.
template <int K, typename Done>
__device__ void merge_partials(const RowChunks& g, gptr<const double> partials, Done done) {
    const unsigned thread = threadIdx.y * blockDim.x + threadIdx.x;
    const unsigned lane = thread % WARP, warps = blockDim.x * blockDim.y / WARP;
    const uint64_t chunks = gridDim.x;
    // ch is the same for the whole warp, so every lane reaches the shuffles.
    for (uint64_t ch = thread / WARP; ch < g.c; ch += warps) {
        double s[K];
        for (int k = 0; k < K; ++k) {
            s[k] = 0.0;
            // __ldcg: from L2, where the other blocks' writes are.
            for (uint64_t j = lane; j < chunks; j += WARP) s[k] += __ldcg(partials + (k * chunks + j) * g.c + ch);
            for (unsigned offset = WARP / 2; offset > 0; offset /= 2) s[k] += __shfl_down_sync(0xffffffffu, s[k], offset);
        }
        if (lane == 0) done(ch, s);
    }
}

template <typename T>
__device__ void stats(StatsParams<T> p) {
    const uint64_t ch = reduce_channel();
    const double shift = ch < p.g.c ? (double)p.x[ch] : 0.0;
    chunk_partials<2>(p.g, p.partials, ch, [&](uint64_t i, double* acc) {
        const double d = (double)p.x[i] - shift;
        acc[0] += d;
        acc[1] += d * d;
    });
    if (!last_block(p.ticket)) return;
    const double rows = (double)p.g.rows;
    merge_partials<2>(p.g, p.partials, [&](uint64_t ch, const double* s) {
        const double mean_d = s[0] / rows;
        const double var = fmax(s[1] / rows - mean_d * mean_d, 0.0);
        const double mean = (double)p.x[ch] + mean_d;
        p.mean[ch] = (T)mean;
        p.var[ch] = (T)var;
        const double a = (double)p.scale[ch] / sqrt(var + p.eps);
        p.coef[ch] = a;
        p.coef[p.g.c + ch] = (double)p.bias[ch] - mean * a;
    });
}

template <typename T>
__device__ void running_coefficients(RunningCoefParams<T> p) {
    GRID_STRIDE(ch, p.c) {
        const double a = (double)p.scale[ch] / sqrt((double)p.var[ch] + p.eps);
        p.coef[ch] = a;
        p.coef[p.c + ch] = (double)p.bias[ch] - (double)p.mean[ch] * a;
    }
}

template <typename T>
__device__ void apply(ApplyParams<T> p) {
    // Tensors stay below 2^32 elements (checked on the host): the 32-bit
    // channel index is a cheap remainder.
    const uint32_t c = (uint32_t)p.c;
    GRID_STRIDE(i, p.n) {
        const uint32_t ch = (uint32_t)i % c;
        T v = (T)((double)p.x[i] * p.coef[ch] + p.coef[c + ch]);
        if (p.residual) v = v + p.residual[i];
        if (p.relu && v < T(0)) v = T(0);
        p.y[i] = v;
    }
}

template <typename T>
__device__ void grad_sums(GradSumsParams<T> p) {
    const uint64_t ch = reduce_channel();
    const double mean = ch < p.g.c ? (double)p.mean[ch] : 0.0;
    const double inv_std = ch < p.g.c ? 1.0 / sqrt((double)p.var[ch] + p.eps) : 0.0;
    chunk_partials<2>(p.g, p.partials, ch, [&](uint64_t i, double* acc) {
        const double g = masked(p.dy, p.y, i);
        acc[0] += g;
        acc[1] += g * ((double)p.x[i] - mean) * inv_std;
    });
    if (!last_block(p.ticket)) return;
    const double rows = (double)p.g.rows;
    const uint64_t c = p.g.c;
    merge_partials<2>(p.g, p.partials, [&](uint64_t ch, const double* s) {
        p.dbias[ch] = (T)s[0];
        p.dscale[ch] = (T)s[1];
        const double inv_std = 1.0 / sqrt((double)p.var[ch] + p.eps);
        p.coef[MEAN * c + ch] = (double)p.mean[ch];
        p.coef[INV_STD * c + ch] = inv_std;
        p.coef[GAIN * c + ch] = (double)p.scale[ch] * inv_std;
        p.coef[MEAN_G * c + ch] = s[0] / rows;
        p.coef[MEAN_G_XHAT * c + ch] = s[1] / rows;
    });
}

// Train: dx = gain * (g - mean(g) - xhat * mean(g * xhat)); eval: dx = gain * g.
template <typename T>
__device__ void input_grad(InputGradParams<T> p) {
    gptr<const double> coef = p.coef;
    const uint32_t c = (uint32_t)p.c;
    GRID_STRIDE(i, p.n) {
        const uint32_t ch = (uint32_t)i % c;
        const double g = masked(p.dy, p.y, i);
        double dx;
        if (p.train) {
            const double xhat = ((double)p.x[i] - coef[MEAN * c + ch]) * coef[INV_STD * c + ch];
            dx = coef[GAIN * c + ch] * (g - coef[MEAN_G * c + ch] - xhat * coef[MEAN_G_XHAT * c + ch]);
        } else {
            dx = coef[GAIN * c + ch] * g;
        }
        p.dx[i] = (T)dx;
        if (p.dresidual) p.dresidual[i] = (T)g;
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

#define INSTANTIATE(T, suffix)                                                                        \
    extern "C" __global__ void __launch_bounds__(REDUCE_THREADS) stats_##suffix(StatsParams<T> p) { stats(p); } \
    extern "C" __global__ void running_coefficients_##suffix(RunningCoefParams<T> p) { running_coefficients(p); } \
    extern "C" __global__ void apply_##suffix(ApplyParams<T> p) { apply(p); }                          \
    extern "C" __global__ void __launch_bounds__(REDUCE_THREADS) grad_sums_##suffix(GradSumsParams<T> p) { grad_sums(p); } \
    extern "C" __global__ void input_grad_##suffix(InputGradParams<T> p) { input_grad(p); }            \
    extern "C" __global__ void update_running_##suffix(UpdateRunningParams<T> p) { update_running(p); }

INSTANTIATE(float, f32)
INSTANTIATE(double, f64)
