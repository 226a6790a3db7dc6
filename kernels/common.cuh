// Shared by the kernel files: included, not compiled on its own (build.rs
// builds only *.cu).
#pragma once

#include <cstdint>

// A grid-stride loop: thread i of the grid visits i, i + gridDim*blockDim, ...
// below n, so any launch size covers any n (see launch_1d in src/cuda/mod.rs).
#define GRID_STRIDE(i, n) \
    for (uint64_t i = blockIdx.x * (uint64_t)blockDim.x + threadIdx.x; i < (n); \
         i += (uint64_t)gridDim.x * blockDim.x)
