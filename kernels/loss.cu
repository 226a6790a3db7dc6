// Softmax cross-entropy with integer labels (mean over the batch), its
// backward, and the count of correct predictions; logits [n, k], labels u32.
//
// Design: one thread per row computes the row's log-sum-exp in double,
// exactly as the CPU does (max, then max + log(sum exp(v - max))).
// - cross_entropy: ONE block; thread t sums the losses of rows t, t + B,
//   t + 2B, ... in that order into a double partial, the partials go to
//   shared memory, and thread 0 adds them in thread order and writes the
//   mean. One launch, no workspace.
// - cross_entropy_backward: grid-stride over rows; each row writes
//   (softmax - onehot) * dloss / n. dloss is read from device memory, so a
//   captured graph can take it as an input.
// - accumulate_step: adds a training step to the epoch's totals in device
//   memory: its correct predictions (counted like cross_entropy's sum, with
//   integer partials) and its loss. A non-finite loss is not added: it sets
//   `first_bad_step`, after which nothing is added any more, and the
//   optimiser and the running-statistics update (optim.cu, batchnorm.cu)
//   read that word and change nothing. The host reads the totals once per
//   epoch, so a step never waits for the GPU.
// Deterministic: every sum has a fixed partition (rows by thread index) and
// a fixed order; no atomics.
//
// A label outside 0..k (the CPU op panics on one) makes its row's loss and
// gradient NaN and never counts as correct, so it cannot go unnoticed and
// never reads out of bounds.

#include <cmath>
#include "common.cuh"

// Threads of the single block of cross_entropy and correct; the launcher
// uses the same number (REDUCE_THREADS in loss.rs).
constexpr unsigned REDUCE_THREADS = 256;

template <typename T>
struct LossParams {
    gptr<const T> logits;         // [n, k]
    gptr<const uint32_t> labels;  // [n]
    gptr<T> out;                  // cross_entropy: the mean loss, a scalar
    uint64_t n;
    uint64_t k;
};

template <typename T>
struct LossBackwardParams {
    gptr<const T> logits;
    gptr<const uint32_t> labels;
    gptr<const T> dloss;  // scalar
    gptr<T> dlogits;      // [n, k]
    uint64_t n;
    uint64_t k;
};

// An epoch's totals (EpochTotals in src/layers.rs, word for word).
struct EpochTotals {
    double loss_sum;          // the finite losses, summed
    uint64_t correct;         // correct predictions of those steps
    uint64_t steps;           // steps counted, the first bad one included
    uint64_t first_bad_step;  // 1-based step of the first non-finite loss; 0: none
    double bad_loss;          // that loss
};

template <typename T>
struct AccumulateParams {
    gptr<const T> logits;
    gptr<const uint32_t> labels;
    gptr<const T> loss;  // the step's mean loss, a scalar
    gptr<EpochTotals> totals;
    uint64_t n;
    uint64_t k;
};

template <typename T>
__device__ double log_sum_exp(gptr<const T> row, uint64_t k) {
    double max = -INFINITY;
    for (uint64_t j = 0; j < k; ++j) max = fmax(max, (double)row[j]);  // fmax skips NaN, as f64::max
    double sum = 0.0;
    for (uint64_t j = 0; j < k; ++j) sum += exp((double)row[j] - max);
    return max + log(sum);
}

// The first index of the largest value (NaN never wins a comparison).
template <typename T>
__device__ uint64_t argmax(gptr<const T> row, uint64_t k) {
    uint64_t best = 0;
    for (uint64_t j = 1; j < k; ++j) {
        if (row[j] > row[best]) best = j;
    }
    return best;
}

// Thread 0's in-order sum of every thread's partial; call from all threads.
template <typename A>
__device__ A block_sum(A partial) {
    using Partials = smem<A>[REDUCE_THREADS];
    SHARED(Partials, partials);
    partials[threadIdx.x] = partial;
    __syncthreads();
    A total = A(0);
    if (threadIdx.x == 0) {
        for (unsigned t = 0; t < REDUCE_THREADS; ++t) total += partials[t];
    }
    return total;
}

template <typename T>
__device__ void cross_entropy(LossParams<T> p) {
    double partial = 0.0;
    for (uint64_t r = threadIdx.x; r < p.n; r += REDUCE_THREADS) {
        gptr<const T> row = p.logits + r * p.k;
        const uint32_t label = p.labels[r];
        partial += label < p.k ? log_sum_exp(row, p.k) - (double)row[label] : NAN;
    }
    const double total = block_sum(partial);
    if (threadIdx.x == 0) *p.out = (T)(total / (double)p.n);
}

template <typename T>
__device__ void cross_entropy_backward(LossBackwardParams<T> p) {
    const double scale = (double)*p.dloss / (double)p.n;
    GRID_STRIDE(r, p.n) {
        gptr<const T> row = p.logits + r * p.k;
        gptr<T> grad = p.dlogits + r * p.k;
        const uint32_t label = p.labels[r];
        const double lse = label < p.k ? log_sum_exp(row, p.k) : NAN;
        for (uint64_t j = 0; j < p.k; ++j) {
            const double onehot = j == label ? 1.0 : 0.0;
            grad[j] = (T)((exp((double)row[j] - lse) - onehot) * scale);
        }
    }
}

template <typename T>
__device__ void accumulate_step(AccumulateParams<T> p) {
    uint64_t partial = 0;
    for (uint64_t r = threadIdx.x; r < p.n; r += REDUCE_THREADS) {
        partial += argmax(p.logits + r * p.k, p.k) == p.labels[r];
    }
    const uint64_t correct = block_sum(partial);
    if (threadIdx.x != 0 || p.totals->first_bad_step != 0) return;
    const double loss = (double)*p.loss;
    p.totals->steps += 1;
    if (isfinite(loss)) {
        p.totals->loss_sum += loss;
        p.totals->correct += correct;
    } else {
        p.totals->first_bad_step = p.totals->steps;
        p.totals->bad_loss = loss;
    }
}

#define INSTANTIATE(T, suffix)                                                                   \
    extern "C" __global__ void __launch_bounds__(REDUCE_THREADS)                                  \
        cross_entropy_##suffix(LossParams<T> p) { cross_entropy(p); }                             \
    extern "C" __global__ void cross_entropy_backward_##suffix(LossBackwardParams<T> p) {         \
        cross_entropy_backward(p);                                                                \
    }                                                                                             \
    extern "C" __global__ void __launch_bounds__(REDUCE_THREADS)                                  \
        accumulate_step_##suffix(AccumulateParams<T> p) { accumulate_step(p); }

INSTANTIATE(float, f32)
INSTANTIATE(double, f64)
