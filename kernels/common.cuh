// Shared by the kernel files: included, not compiled on its own (build.rs
// builds only *.cu).
#pragma once

#include <cstdint>

// Pointers into global memory are gptr<T> and elements of __shared__ arrays
// smem<T>; __shared__ variables are declared with SHARED(type, name). On the
// GPU these are exactly T*, T and __shared__ (the PTX is the same as
// without them); the CPU emulator (crates/kernel-emu/cpp/cuda_emu.h)
// defines them as checked wrappers that catch out-of-bounds accesses and
// shared-memory races.
#ifndef CIFAR_KERN_EMU
template <typename T>
using gptr = T*;
template <typename T>
using smem = T;
#define SHARED(type, name) __shared__ type name
#endif

// A grid-stride loop: thread i of the grid visits i, i + gridDim*blockDim, ...
// below n, so any launch size covers any n (see launch_1d in src/cuda/mod.rs).
#define GRID_STRIDE(i, n) \
    for (uint64_t i = blockIdx.x * (uint64_t)blockDim.x + threadIdx.x; i < (n); \
         i += (uint64_t)gridDim.x * blockDim.x)
