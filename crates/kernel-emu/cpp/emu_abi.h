// The emulator's C ABI, shared by emu_runtime.cpp, the kernel tables that
// build.rs generates for each kernels/*.cu, and src/lib.rs (which mirrors
// these structs).
#pragma once

#include <cstddef>
#include <cstdint>

// One field of a kernel's parameter struct, nested structs flattened
// ("s.n").
struct EmuField {
    const char* name;
    uint64_t offset;
    uint64_t size;
};

// One extern "C" kernel of a kernels/*.cu file.
struct EmuKernel {
    const char* module;
    const char* name;
    // Runs the kernel body as the current emulated thread, with the
    // parameter struct copied from these bytes.
    void (*entry)(const void* params);
    uint64_t param_size;
    const EmuField* fields;
    uint64_t field_count;
};

// A device buffer of the launch: [base, base + len).
struct EmuBuffer {
    uint64_t base;
    uint64_t len;
    const char* label;
};

extern "C" int emu_launch(const EmuKernel* kernel, const void* params, const uint32_t grid[3], const uint32_t block[3],
                          uint32_t dynamic_shared_bytes, uint64_t seed, const EmuBuffer* buffers, size_t buffer_count,
                          char* error, size_t error_len);
