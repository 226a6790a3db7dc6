// The CUDA built-ins for the CPU: force-included (-include) before every
// kernels/*.cu when the emulator compiles it as C++. With this header a
// kernel source compiles unchanged for the CPU, where
//
//   - threadIdx, blockIdx, blockDim and gridDim read the running emulated
//     thread (emu_runtime.cpp runs each CUDA thread as a fiber);
//   - __syncthreads() and the warp collectives yield to the scheduler;
//   - gptr<T> (a plain T* on the GPU, see kernels/common.cuh) checks every
//     access against the launch's argument buffers (a small memcheck);
//   - smem<T> (a plain T on the GPU) records every shared-memory read and
//     write for the race check, and SHARED(type, name) gives each block its
//     own, poisoned, copy of a __shared__ variable.
//
// The emulation proves a kernel's logic: its indexing, its barriers, its
// reductions. It never proves the GPU's bits (nvcc contracts a * b + c into
// fma, this build is compiled with -ffp-contract=off), its timing, or memory
// ordering between blocks.
#pragma once

#define CIFAR_KERN_EMU 1

#include <math.h>

#include <cmath>
#include <cstddef>
#include <cstdint>
#include <cstring>
#include <type_traits>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __restrict__ __restrict

struct uint3 {
    unsigned x, y, z;
};
struct dim3 {
    unsigned x, y, z;
};

namespace emu {

// ---- the running thread (emu_runtime.cpp) -----------------------------------
const uint3& thread_idx();
const uint3& block_idx();
const dim3& block_dim();
const dim3& grid_dim();

// Ends the running thread's launch with an error naming the kernel, block
// and thread; never returns.
[[noreturn]] void fail(const char* what);

// Checks that [p, p + bytes) lies inside one of the launch's buffers.
void check_global(const void* p, size_t bytes, bool write);
// Records a shared-memory access of the running thread for the race check.
void record_shared(const void* p, size_t bytes, bool write);
// Block-local storage of the __shared__ variable identified by key.
void* shared_variable(const void* key, const char* name, size_t bytes, size_t align);

void syncthreads(const char* file, int line);

enum class WarpOp : int { ShflIdx, ShflUp, ShflDown, ShflXor, Ballot, Any, All, SyncWarp };
// A warp collective of the running lane: blocks until every lane of mask
// has reached the same collective (same op and call site), then returns this
// lane's result.
uint64_t warp_collective(WarpOp op, unsigned mask, uint64_t value, int arg, int width, const char* file, int line);

// ---- tensor cores and async copies (kernels/tensor_core.cuh) ----------------
void mma_m16n8k8_tf32(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2], const float (&c)[4],
                      const char* file, int line);
void ldmatrix_m8n8_b16(uint32_t* regs, int count, const void* row, const char* file, int line);
void cp_async(void* shared_dst, const void* global_src, size_t bytes, size_t src_bytes);
void cp_async_commit();
void cp_async_wait(int pending_groups);

// ---- pointers into global memory --------------------------------------------
// A T* whose dereferences are checked; the same size and layout as T*, so a
// parameter struct built on the host for the GPU reads the same here.
template <typename T>
class GlobalPtr {
    T* p_;

   public:
    GlobalPtr() = default;
    GlobalPtr(std::nullptr_t) : p_(nullptr) {}
    explicit GlobalPtr(T* p) : p_(p) {}
    template <typename U, typename = std::enable_if_t<std::is_convertible<U*, T*>::value>>
    GlobalPtr(GlobalPtr<U> other) : p_(other.raw()) {}

    T* raw() const { return p_; }
    explicit operator bool() const { return p_ != nullptr; }

    T& operator*() const {
        check_global(p_, sizeof(T), !std::is_const<T>::value);
        return *p_;
    }
    T* operator->() const { return &**this; }
    template <typename I, typename = std::enable_if_t<std::is_integral<I>::value>>
    T& operator[](I i) const {
        return *(*this + i);
    }
    template <typename I, typename = std::enable_if_t<std::is_integral<I>::value>>
    GlobalPtr operator+(I i) const {
        return GlobalPtr(p_ + i);
    }
    template <typename I, typename = std::enable_if_t<std::is_integral<I>::value>>
    GlobalPtr operator-(I i) const {
        return GlobalPtr(p_ - i);
    }
    template <typename I, typename = std::enable_if_t<std::is_integral<I>::value>>
    GlobalPtr& operator+=(I i) {
        p_ += i;
        return *this;
    }
    bool operator==(GlobalPtr o) const { return p_ == o.p_; }
    bool operator!=(GlobalPtr o) const { return p_ != o.p_; }
};
static_assert(sizeof(GlobalPtr<float>) == sizeof(float*), "a checked pointer has a pointer's layout");

// ---- shared memory ----------------------------------------------------------
// One element of a __shared__ array: reads and writes are recorded between
// barriers, so two threads touching one address without a barrier between
// them is reported as a race.
template <typename T>
struct SharedElem {
    T value;

    operator T() const {
        record_shared(this, sizeof(T), false);
        return value;
    }
    SharedElem& operator=(T v) {
        record_shared(this, sizeof(T), true);
        value = v;
        return *this;
    }
    SharedElem& operator=(const SharedElem& other) { return *this = T(other); }
    SharedElem& operator+=(T v) { return *this = T(*this) + v; }
    SharedElem& operator-=(T v) { return *this = T(*this) - v; }
    SharedElem& operator*=(T v) { return *this = T(*this) * v; }
    SharedElem& operator/=(T v) { return *this = T(*this) / v; }
};
static_assert(sizeof(SharedElem<double>) == sizeof(double), "a shared element has its value's layout");

// The identity of one __shared__ declaration (one per template instance,
// as on the GPU); the storage itself belongs to the running block.
struct SharedSlot {
    template <typename T>
    T& get(const char* name) {
        return *static_cast<T*>(shared_variable(this, name, sizeof(T), alignof(T)));
    }
};

}  // namespace emu

template <typename T>
using gptr = emu::GlobalPtr<T>;
template <typename T>
using smem = emu::SharedElem<T>;

#define SHARED(type, name)                 \
    static ::emu::SharedSlot name##_slot_; \
    type& name = name##_slot_.get<type>(#name)

#define threadIdx (::emu::thread_idx())
#define blockIdx (::emu::block_idx())
#define blockDim (::emu::block_dim())
#define gridDim (::emu::grid_dim())
#define __syncthreads() ::emu::syncthreads(__FILE__, __LINE__)

// ---- warp collectives -------------------------------------------------------
namespace emu {
template <typename T>
uint64_t to_bits(T v) {
    static_assert(sizeof(T) <= 8 && std::is_trivially_copyable<T>::value, "a register value");
    uint64_t bits = 0;
    std::memcpy(&bits, &v, sizeof(T));
    return bits;
}
template <typename T>
T from_bits(uint64_t bits) {
    T v;
    std::memcpy(&v, &bits, sizeof(T));
    return v;
}
template <typename T>
T shuffle(WarpOp op, unsigned mask, T v, int arg, int width, const char* file, int line) {
    return from_bits<T>(warp_collective(op, mask, to_bits(v), arg, width, file, line));
}
}  // namespace emu

#define __shfl_sync(mask, v, lane, ...) \
    ::emu::shuffle(::emu::WarpOp::ShflIdx, mask, v, lane, (__VA_ARGS__ + 0) ? (__VA_ARGS__ + 0) : 32, __FILE__, __LINE__)
#define __shfl_up_sync(mask, v, delta, ...) \
    ::emu::shuffle(::emu::WarpOp::ShflUp, mask, v, delta, (__VA_ARGS__ + 0) ? (__VA_ARGS__ + 0) : 32, __FILE__, __LINE__)
#define __shfl_down_sync(mask, v, delta, ...) \
    ::emu::shuffle(::emu::WarpOp::ShflDown, mask, v, delta, (__VA_ARGS__ + 0) ? (__VA_ARGS__ + 0) : 32, __FILE__, __LINE__)
#define __shfl_xor_sync(mask, v, lane_mask, ...) \
    ::emu::shuffle(::emu::WarpOp::ShflXor, mask, v, lane_mask, (__VA_ARGS__ + 0) ? (__VA_ARGS__ + 0) : 32, __FILE__, __LINE__)
#define __ballot_sync(mask, pred) \
    ((unsigned)::emu::warp_collective(::emu::WarpOp::Ballot, mask, (pred) ? 1 : 0, 0, 32, __FILE__, __LINE__))
#define __any_sync(mask, pred) \
    ((int)::emu::warp_collective(::emu::WarpOp::Any, mask, (pred) ? 1 : 0, 0, 32, __FILE__, __LINE__))
#define __all_sync(mask, pred) \
    ((int)::emu::warp_collective(::emu::WarpOp::All, mask, (pred) ? 1 : 0, 0, 32, __FILE__, __LINE__))
#define __syncwarp(...) \
    ((void)::emu::warp_collective(::emu::WarpOp::SyncWarp, (__VA_ARGS__ + 0) ? (__VA_ARGS__ + 0) : 0xffffffffu, 0, 0, 32, __FILE__, __LINE__))

#define __threadfence() ((void)0)

// Blocks run one after another here, so an atomic is a plain checked
// read-modify-write, and every load sees every earlier block's stores.
inline unsigned atomicAdd(::emu::GlobalPtr<unsigned> p, unsigned v) {
    const unsigned old = *p;
    *p = old + v;
    return old;
}
template <typename T>
inline std::remove_const_t<T> __ldcg(::emu::GlobalPtr<T> p) {
    return *p;
}

// ---- arithmetic -------------------------------------------------------------
// The _rn intrinsics are single correctly rounded operations; with
// -ffp-contract=off the C++ operators are too.
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
inline float __fsqrt_rn(float a) { return std::sqrt(a); }
inline float __fmaf_rn(float a, float b, float c) { return std::fma(a, b, c); }
inline double __dadd_rn(double a, double b) { return a + b; }
inline double __dsub_rn(double a, double b) { return a - b; }
inline double __dmul_rn(double a, double b) { return a * b; }
inline double __ddiv_rn(double a, double b) { return a / b; }
inline double __dsqrt_rn(double a) { return std::sqrt(a); }
inline double __fma_rn(double a, double b, double c) { return std::fma(a, b, c); }
inline uint32_t __float_as_uint(float f) { return (uint32_t)emu::to_bits(f); }
inline float __uint_as_float(uint32_t u) { return emu::from_bits<float>(u); }

// CUDA's integer and floating min/max take mixed argument types.
template <typename A, typename B>
inline std::common_type_t<A, B> min(A a, B b) {
    return b < a ? b : a;
}
template <typename A, typename B>
inline std::common_type_t<A, B> max(A a, B b) {
    return a < b ? b : a;
}
using std::isinf;
using std::isnan;
