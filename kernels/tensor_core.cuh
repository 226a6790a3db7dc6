// Tensor-core and async-copy wrappers: on the GPU each is one PTX
// instruction (sm_80 and later); in the CPU emulator (CIFAR_KERN_EMU) each is
// emulated from the PTX ISA manual's definition (fragment layouts in
// crates/kernel-emu/cpp/emu_runtime.cpp, as tables citing the section). Every
// use of these instructions in kernels/ goes through here, so the emu_ tests
// run it.
#pragma once

#include "common.cuh"

// cvt.rna.tf32.f32: x rounded to TF32 (10 mantissa bits; to nearest, ties
// away from zero), as the 32-bit pattern mma.sync takes.
__device__ __forceinline__ uint32_t to_tf32(float x) {
#ifdef CIFAR_KERN_EMU
    uint32_t bits = __float_as_uint(x);
    if (isnan(x)) return 0x7fffffffu;
    // Add half of the dropped 13 bits to the magnitude, then drop them: ties
    // go away from zero, a carry moves into the exponent (up to infinity).
    return (bits + 0x1000u) & 0xffffe000u;
#else
    uint32_t r;
    asm("cvt.rna.tf32.f32 %0, %1;" : "=r"(r) : "f"(x));
    return r;
#endif
}

// mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32: d = a * b + c for a
// 16x8 A (row), an 8x8 B (col) and a 16x8 fp32 C, spread over the warp's 32
// lanes as the PTX ISA's fragment layouts say (9.7.14.5.7). Every lane of
// the warp must call it.
__device__ __forceinline__ void mma_tf32_m16n8k8(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2],
                                                 const float (&c)[4]) {
#ifdef CIFAR_KERN_EMU
    emu::mma_m16n8k8_tf32(d, a, b, c, __FILE__, __LINE__);
#else
    asm volatile(
        "mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, {%8, %9}, "
        "{%10, %11, %12, %13};\n"
        : "=f"(d[0]), "=f"(d[1]), "=f"(d[2]), "=f"(d[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]), "f"(c[0]), "f"(c[1]), "f"(c[2]),
          "f"(c[3]));
#endif
}

// ldmatrix.sync.aligned.m8n8.xN.shared.b16, N = 1, 2 or 4: lanes 8i..8i+7
// give the 16-byte-aligned addresses of rows 0..7 of matrix i; lane l gets,
// in r[i], 32-bit word l % 4 of row l / 4 of matrix i (for 32-bit data: an
// 8 x 4 matrix). Every lane of the warp must call it.
template <int N>
__device__ __forceinline__ void ldmatrix(uint32_t (&r)[N], const smem<float>* row) {
    static_assert(N == 1 || N == 2 || N == 4, "ldmatrix loads 1, 2 or 4 matrices");
#ifdef CIFAR_KERN_EMU
    emu::ldmatrix_m8n8_b16(r, N, row, __FILE__, __LINE__);
#else
    const uint32_t addr = (uint32_t)__cvta_generic_to_shared(row);
    if constexpr (N == 1) {
        asm volatile("ldmatrix.sync.aligned.m8n8.x1.shared.b16 {%0}, [%1];\n" : "=r"(r[0]) : "r"(addr) : "memory");
    } else if constexpr (N == 2) {
        asm volatile("ldmatrix.sync.aligned.m8n8.x2.shared.b16 {%0, %1}, [%2];\n"
                     : "=r"(r[0]), "=r"(r[1])
                     : "r"(addr)
                     : "memory");
    } else {
        asm volatile("ldmatrix.sync.aligned.m8n8.x4.shared.b16 {%0, %1, %2, %3}, [%4];\n"
                     : "=r"(r[0]), "=r"(r[1]), "=r"(r[2]), "=r"(r[3])
                     : "r"(addr)
                     : "memory");
    }
#endif
}

// cp.async: copies BYTES (4, 8 or 16) from global to shared memory without
// passing through registers; when !valid the destination is zero-filled
// instead (src-size 0: padding, out-of-range rows). The data is guaranteed
// to be there only after a cp_async_wait that covers its group; the
// emulator holds poison there until then.
template <int BYTES>
__device__ __forceinline__ void cp_async(smem<float>* dst, gptr<const float> src, bool valid) {
    static_assert(BYTES == 4 || BYTES == 8 || BYTES == 16, "cp.async copies 4, 8 or 16 bytes");
#ifdef CIFAR_KERN_EMU
    emu::cp_async(dst, src.raw(), BYTES, valid ? BYTES : 0);
#else
    const uint32_t addr = (uint32_t)__cvta_generic_to_shared(dst);
    if constexpr (BYTES == 16) {  // .cg: cached in L2 only, for streamed tiles
        asm volatile("cp.async.cg.shared.global [%0], [%1], 16, %2;\n" ::"r"(addr), "l"(src), "r"(valid ? 16 : 0)
                     : "memory");
    } else {
        asm volatile("cp.async.ca.shared.global [%0], [%1], %2, %3;\n" ::"r"(addr), "l"(src), "n"(BYTES),
                     "r"(valid ? BYTES : 0)
                     : "memory");
    }
#endif
}

// cp.async.commit_group: the copies this thread issued since the last
// commit form one group.
__device__ __forceinline__ void cp_async_commit() {
#ifdef CIFAR_KERN_EMU
    emu::cp_async_commit();
#else
    asm volatile("cp.async.commit_group;\n" ::: "memory");
#endif
}

// cp.async.wait_group N: waits until at most N of this thread's committed
// groups are still in flight (the newest N). Other threads' copies need a
// __syncthreads() after their wait before they are visible.
template <int N>
__device__ __forceinline__ void cp_async_wait() {
#ifdef CIFAR_KERN_EMU
    emu::cp_async_wait(N);
#else
    asm volatile("cp.async.wait_group %0;\n" ::"n"(N) : "memory");
#endif
}
