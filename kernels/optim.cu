// The optax optimiser chains of src/optim.rs, over every parameter at once.
//
// Design: the parameters, gradients and moments each live in one flat
// buffer (the host keeps the table of which tensor is where), and the update
// is the same for every element, so ONE launch of `optimizer_update` updates
// all parameters in a grid-stride loop. The update count t (the 0-based
// index of this update) lives in device memory: every thread reads it at the
// start, derives the learning rate and Adam's bias corrections from it, and
// a separate one-thread launch, `advance_step`, increments it afterwards (an
// increment inside the update kernel could race with threads still reading
// t). So a captured CUDA graph of a training step replays correctly: nothing
// that changes from step to step is baked into the launch parameters.
//
// The arithmetic is src/optim.rs's, expression by expression, in T:
// products and sums go through the _rn intrinsics, which nvcc never
// contracts into FMAs, so float64 matches the CPU to the bit except where
// CUDA's pow() differs from the host's by an ulp in the bias corrections.
// The schedule and the corrections are computed in double, as on the CPU.
//
// A step whose loss was not finite changes nothing: both kernels read the
// epoch's `halted` word (EpochTotals::first_bad_step of loss.cu, set by
// accumulate_step earlier on the stream) and return at once when it is set,
// so that step and every later one of the epoch leave parameters, moments
// and the update count as they were. A null `halted` never halts (tests).
//
// Deterministic: purely element-wise; nothing is shared between threads.

#include "common.cuh"

// Kinds, as `OptimizerKind` in src/optim.rs (the launcher passes the same
// numbers); Adam is 1, the kind that is neither.
constexpr uint32_t KIND_SGD = 0;
constexpr uint32_t KIND_ADAMW = 2;

// Schedule boundaries a launch can carry (MAX_BOUNDARIES in optim.rs).
constexpr int MAX_BOUNDARIES = 8;

// The state that changes from step to step, in device memory.
struct StepState {
    uint64_t t;  // updates applied so far: the index of the next update
};

template <typename T>
struct OptimizerParams {
    gptr<T> params;       // [len], updated in place
    gptr<const T> grads;  // [len]
    gptr<T> mu;           // [len]: SGD's momentum trace or Adam's first moment
    gptr<T> nu;           // [len]: Adam's second moment; null for SGD
    gptr<const StepState> state;
    gptr<const uint64_t> halted;  // nonzero: change nothing (may be null)
    uint64_t len;
    uint32_t kind;
    uint32_t num_boundaries;
    uint64_t boundaries[MAX_BOUNDARIES];
    double base_lr;
    double factor;
    double clip;          // gradients are clipped to [-clip, clip]
    double momentum;      // SGD
    double weight_decay;  // SGD (added to the gradient) and AdamW (decoupled)
    double b1;
    double b2;
    double eps;
};

// Correctly rounded, never fused: the CPU's Rust arithmetic, operation by operation.
__device__ inline float mul_rn(float a, float b) { return __fmul_rn(a, b); }
__device__ inline double mul_rn(double a, double b) { return __dmul_rn(a, b); }
__device__ inline float add_rn(float a, float b) { return __fadd_rn(a, b); }
__device__ inline double add_rn(double a, double b) { return __dadd_rn(a, b); }
__device__ inline float div_rn(float a, float b) { return __fdiv_rn(a, b); }
__device__ inline double div_rn(double a, double b) { return __ddiv_rn(a, b); }
__device__ inline float sqrt_rn(float a) { return __fsqrt_rn(a); }
__device__ inline double sqrt_rn(double a) { return __dsqrt_rn(a); }

// optax.piecewise_constant_schedule: base_lr times factor once per boundary
// reached, by repeated multiplication as optax (and LrSchedule::at) does.
template <typename T>
__device__ double learning_rate(const OptimizerParams<T>& p, uint64_t t) {
    double lr = p.base_lr;
    for (uint32_t i = 0; i < p.num_boundaries; ++i) {
        if (t >= p.boundaries[i]) lr *= p.factor;
    }
    return lr;
}

// Comparisons, not min/max, so a NaN gradient stays NaN as in optax.
template <typename T>
__device__ T clip(T g, T bound) {
    return g > bound ? bound : (g < -bound ? -bound : g);
}

struct AdvanceParams {
    gptr<StepState> state;
    gptr<const uint64_t> halted;  // as OptimizerParams::halted
};

__device__ inline bool is_halted(gptr<const uint64_t> halted) { return halted && *halted != 0; }

template <typename T>
__device__ void optimizer_update(const OptimizerParams<T>& p) {
    if (is_halted(p.halted)) return;
    const uint64_t t = p.state->t;
    const T neg_lr = (T)(-learning_rate(p, t));
    const T bound = (T)p.clip;
    const uint64_t stride = (uint64_t)gridDim.x * blockDim.x;
    const uint64_t first = blockIdx.x * (uint64_t)blockDim.x + threadIdx.x;
    if (p.kind == KIND_SGD) {
        const T momentum = (T)p.momentum, wd = (T)p.weight_decay;
        for (uint64_t i = first; i < p.len; i += stride) {
            const T param = p.params[i];
            const T g = add_rn(clip(p.grads[i], bound), mul_rn(wd, param));
            const T m = add_rn(g, mul_rn(momentum, p.mu[i]));
            p.mu[i] = m;
            p.params[i] = add_rn(param, mul_rn(neg_lr, m));
        }
    } else {  // Adam or AdamW
        // 1 - decay**count with count = t + 1, in double as optax's float64.
        const double count = (double)(t + 1);
        const T correction1 = (T)(1.0 - pow(p.b1, count));
        const T correction2 = (T)(1.0 - pow(p.b2, count));
        const T b1 = (T)p.b1, b2 = (T)p.b2, eps = (T)p.eps;
        const T one_minus_b1 = (T)(1.0 - p.b1), one_minus_b2 = (T)(1.0 - p.b2);
        const bool decoupled_decay = p.kind == KIND_ADAMW;
        const T wd = (T)p.weight_decay;
        for (uint64_t i = first; i < p.len; i += stride) {
            const T param = p.params[i];
            const T g = clip(p.grads[i], bound);
            const T m = add_rn(mul_rn(one_minus_b1, g), mul_rn(b1, p.mu[i]));
            const T v = add_rn(mul_rn(one_minus_b2, mul_rn(g, g)), mul_rn(b2, p.nu[i]));
            p.mu[i] = m;
            p.nu[i] = v;
            const T m_hat = div_rn(m, correction1);
            const T v_hat = div_rn(v, correction2);
            T update = div_rn(m_hat, add_rn(sqrt_rn(v_hat), eps));
            if (decoupled_decay) update = add_rn(update, mul_rn(wd, param));
            p.params[i] = add_rn(param, mul_rn(neg_lr, update));
        }
    }
}

// One thread, launched after optimizer_update on the same stream.
__device__ void advance_step(AdvanceParams p) {
    if (!is_halted(p.halted)) p.state->t += 1;
}

#define INSTANTIATE(T, suffix)                                                                  \
    extern "C" __global__ void optimizer_update_##suffix(OptimizerParams<T> p) {                \
        optimizer_update(p);                                                                    \
    }                                                                                           \
    extern "C" __global__ void advance_step_##suffix(AdvanceParams p) { advance_step(p); }

INSTANTIATE(float, f32)
INSTANTIATE(double, f64)
