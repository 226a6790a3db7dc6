// The CPU execution of a kernel launch: every CUDA thread is a fiber
// (ucontext) on the calling OS thread, so concurrent launches from several
// test threads never share anything.
//
// Scheduling: the blocks of the grid run one after another, in an order
// drawn from the seed. Within a block the threads run one at a time, each
// until its next barrier (__syncthreads) or warp collective (shuffles,
// ballots, mma, ldmatrix); the order of each round is drawn from the seed,
// so a seed always gives the same run. When every thread waits, the
// scheduler completes the warp collectives whose lanes have all arrived, or
// else the block barrier, and reports instead of deadlocking: a thread that
// exited while others wait at a barrier, a barrier reached at two different
// places (divergent code), a collective whose lanes went elsewhere.
//
// Checks: every global access through gptr<T> must fall inside one of the
// launch's buffers (memcheck); every shared-memory byte remembers, since the
// last barrier, which thread wrote it and which thread(s) read it, and a
// write-write, write-read or read-write pair of two threads is a race
// (racecheck). cp.async writes poison at issue and its data only at the
// matching wait, so a missing wait reads poison.
//
// Errors end the launch: the fiber that found it is abandoned (its stack is
// reused; kernels hold no resources) and emu_launch returns the message.

#include <sys/mman.h>
#include <ucontext.h>

#include <algorithm>
#include <cstdarg>
#include <cstdio>
#include <string>
#include <vector>

#include "cuda_emu.h"
#include "emu_abi.h"

namespace emu {
namespace {

constexpr int WARP = 32;
constexpr size_t STACK_BYTES = 256 * 1024;
constexpr size_t MAX_THREADS = 1024;
// The most shared memory one block may use (sm_90's opt-in maximum).
constexpr size_t SHARED_BYTES = 227 * 1024;
constexpr int NO_THREAD = -1;
constexpr int MANY_THREADS = -2;

enum class State { Ready, AtBarrier, AtCollective, Done };

enum class Collective { Warp, Mma, Ldmatrix };

struct PendingCopy {
    unsigned char* dst;
    std::vector<unsigned char> data;
    long group;  // -1 until committed
};

struct Fiber {
    ucontext_t context;
    uint3 tid;
    int linear = 0;
    State state = State::Ready;
    // Where it waits (barrier or collective).
    const char* file = nullptr;
    int line = 0;
    // The collective it waits at.
    Collective kind = Collective::Warp;
    WarpOp op = WarpOp::ShflIdx;
    unsigned mask = 0;
    int arg = 0, width = WARP;
    uint64_t in[10] = {};
    uint64_t out[4] = {};
    const void* address = nullptr;
    // cp.async
    std::vector<PendingCopy> copies;
    long groups_committed = 0;
};

// Per byte of shared memory, since the last barrier (entries of older
// epochs are empty).
struct Shadow {
    uint32_t epoch;
    int32_t writer;
    int32_t reader;  // NO_THREAD, a thread, or MANY_THREADS
};

struct SharedVar {
    const void* key;
    const char* name;
    size_t offset, bytes;
};

// Memory reused by every launch of one OS thread.
struct Workspace {
    unsigned char* stacks = nullptr;
    unsigned char* shared = nullptr;
    std::vector<Shadow> shadow;
    uint32_t epoch = 0;
    Workspace() {
        size_t bytes = STACK_BYTES * MAX_THREADS;
        void* p = mmap(nullptr, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_NORESERVE, -1, 0);
        if (p == MAP_FAILED) throw std::bad_alloc();
        stacks = static_cast<unsigned char*>(p);
        // A guard page below each stack turns an overflow into a crash
        // rather than a silent corruption of the neighbouring fiber.
        for (size_t i = 0; i < MAX_THREADS; ++i) mprotect(stacks + i * STACK_BYTES, 4096, PROT_NONE);
        shared = static_cast<unsigned char*>(aligned_alloc(256, SHARED_BYTES));
        shadow.assign(SHARED_BYTES, Shadow{0, NO_THREAD, NO_THREAD});
    }
    ~Workspace() {
        munmap(stacks, STACK_BYTES * MAX_THREADS);
        free(shared);
    }
};

struct Launch {
    const EmuKernel* kernel;
    const void* params;
    const EmuBuffer* buffers;
    size_t buffer_count;
    dim3 grid, block;
    uint3 block_idx;
    std::vector<Fiber> fibers;
    Fiber* current = nullptr;
    ucontext_t scheduler;
    Workspace* ws;
    size_t shared_used = 0;
    std::vector<SharedVar> shared_vars;
    std::string error;
    uint64_t rng;
};

thread_local Launch* running = nullptr;

Launch& launch() { return *running; }
Fiber& me() { return *running->current; }

uint64_t next_random(uint64_t& state) {  // splitmix64
    uint64_t z = (state += 0x9e3779b97f4a7c15ull);
    z = (z ^ (z >> 30)) * 0xbf58476d1ce4e5b9ull;
    z = (z ^ (z >> 27)) * 0x94d049bb133111ebull;
    return z ^ (z >> 31);
}

template <typename V>
void shuffle_order(std::vector<V>& v, uint64_t& rng) {
    for (size_t i = v.size(); i > 1; --i) std::swap(v[i - 1], v[next_random(rng) % i]);
}

std::string format(const char* fmt, ...) {
    char buf[1024];
    va_list args;
    va_start(args, fmt);
    vsnprintf(buf, sizeof buf, fmt, args);
    va_end(args);
    return buf;
}

std::string where(const Launch& l) {
    return format("%s, block (%u,%u,%u)", l.kernel->name, l.block_idx.x, l.block_idx.y, l.block_idx.z);
}
std::string thread_name(const Launch& l, int linear) {
    const uint3& t = l.fibers[linear].tid;
    return format("thread (%u,%u,%u)", t.x, t.y, t.z);
}

// Records the first error of the launch (later ones are consequences).
void report(const std::string& message) {
    Launch& l = launch();
    if (l.error.empty()) l.error = where(l) + ": " + message;
}

// From a fiber: stop here for good.
[[noreturn]] void abandon() {
    Launch& l = launch();
    swapcontext(&l.current->context, &l.scheduler);
    __builtin_unreachable();  // the scheduler never resumes a failed fiber
}

void yield() {
    Launch& l = launch();
    swapcontext(&l.current->context, &l.scheduler);
}

// ---- shared memory shadow ---------------------------------------------------

bool in_shared(const Launch& l, const void* p, size_t bytes) {
    auto a = reinterpret_cast<uintptr_t>(p), base = reinterpret_cast<uintptr_t>(l.ws->shared);
    return a >= base && a + bytes <= base + l.shared_used;
}

std::string shared_name(const Launch& l, size_t offset) {
    for (const SharedVar& v : l.shared_vars)
        if (offset >= v.offset && offset < v.offset + v.bytes)
            return format("%s + %zu bytes", v.name, offset - v.offset);
    return format("shared byte %zu", offset);
}

// The race check of one access by thread `who`; returns the message or "".
std::string shadow_access(Launch& l, const void* p, size_t bytes, bool write, int who) {
    size_t offset = reinterpret_cast<const unsigned char*>(p) - l.ws->shared;
    for (size_t i = offset; i < offset + bytes; ++i) {
        Shadow& s = l.ws->shadow[i];
        if (s.epoch != l.ws->epoch) s = Shadow{l.ws->epoch, NO_THREAD, NO_THREAD};
        const char* conflict = nullptr;
        int other = NO_THREAD;
        if (s.writer != NO_THREAD && s.writer != who) {
            conflict = write ? "write-write" : "write-read";
            other = s.writer;
        } else if (write && s.reader != NO_THREAD && s.reader != who) {
            conflict = "read-write";
            other = s.reader;
        }
        if (conflict) {
            std::string first = other == MANY_THREADS ? std::string("several threads") : thread_name(l, other);
            return format("race on shared memory (%s): %s %s %s (address %p) after %s %s it with no barrier between",
                          conflict, thread_name(l, who).c_str(), write ? "writes" : "reads",
                          shared_name(l, i).c_str(), (const void*)(l.ws->shared + i), first.c_str(),
                          conflict[0] == 'w' ? "wrote" : "read");
        }
        if (write) {
            s.writer = who;
        } else if (s.reader == NO_THREAD) {
            s.reader = who;
        } else if (s.reader != who) {
            s.reader = MANY_THREADS;
        }
    }
    return "";
}

// ---- a block ----------------------------------------------------------------

void fiber_main() {
    Launch& l = launch();
    l.kernel->entry(l.params);
    Fiber& f = me();
    if (!f.copies.empty())
        report(format("%s exited with %zu cp.async copies it never waited for", thread_name(l, f.linear).c_str(),
                      f.copies.size()));
    f.state = State::Done;
    abandon();
}

std::string group_of(const Launch& l, const std::vector<int>& threads) {
    std::string s;
    for (size_t i = 0; i < threads.size() && i < 4; ++i) s += (i ? ", " : "") + thread_name(l, threads[i]);
    if (threads.size() > 4) s += format(" and %zu more", threads.size() - 4);
    return s;
}

// Completes the collective lane `first` of a warp waits at, if all of its
// lanes have arrived; returns false (with an error, or none if it must wait).
bool complete_collective(Launch& l, int warp_base, int warp_lanes, Fiber& first);

// Lets the waiting threads go on: warp collectives first, then the barrier.
// Returns false when the block is finished or failed.
bool resolve(Launch& l) {
    int n = (int)l.fibers.size();
    bool progress = false;
    for (int base = 0; base < n; base += WARP) {
        int lanes = std::min(WARP, n - base);
        for (int i = base; i < base + lanes; ++i) {
            Fiber& f = l.fibers[i];
            if (f.state == State::AtCollective && complete_collective(l, base, lanes, f)) progress = true;
            if (!l.error.empty()) return false;
        }
    }
    if (progress) return true;

    std::vector<int> waiting, done, stuck;
    for (int i = 0; i < n; ++i) {
        switch (l.fibers[i].state) {
            case State::AtBarrier: waiting.push_back(i); break;
            case State::Done: done.push_back(i); break;
            default: stuck.push_back(i);
        }
    }
    if (!stuck.empty()) {
        report(format("deadlock: %s wait at a warp collective (%s:%d) that can never complete",
                      group_of(l, stuck).c_str(), l.fibers[stuck[0]].file, l.fibers[stuck[0]].line));
        return false;
    }
    if (waiting.empty()) return false;  // every thread finished
    if (!done.empty()) {
        report(format("%s exited while %s wait at __syncthreads() (%s:%d)", group_of(l, done).c_str(),
                      group_of(l, waiting).c_str(), l.fibers[waiting[0]].file, l.fibers[waiting[0]].line));
        return false;
    }
    const Fiber& w = l.fibers[waiting[0]];
    std::vector<int> elsewhere;
    for (int i : waiting)
        if (l.fibers[i].line != w.line || std::strcmp(l.fibers[i].file, w.file) != 0) elsewhere.push_back(i);
    if (!elsewhere.empty()) {
        const Fiber& e = l.fibers[elsewhere[0]];
        report(format("__syncthreads() reached in divergent code: %s at %s:%d, %s at %s:%d",
                      thread_name(l, waiting[0]).c_str(), w.file, w.line, group_of(l, elsewhere).c_str(), e.file,
                      e.line));
        return false;
    }
    for (Fiber& f : l.fibers) f.state = State::Ready;
    ++l.ws->epoch;  // a barrier orders everything before it
    return true;
}

void run_block(Launch& l, uint64_t seed) {
    size_t threads = (size_t)l.block.x * l.block.y * l.block.z;
    l.fibers.assign(threads, Fiber{});
    l.shared_used = 0;
    l.shared_vars.clear();
    ++l.ws->epoch;
    for (size_t i = 0; i < threads; ++i) {
        Fiber& f = l.fibers[i];
        f.linear = (int)i;
        f.tid = uint3{(unsigned)(i % l.block.x), (unsigned)(i / l.block.x % l.block.y),
                      (unsigned)(i / (l.block.x * l.block.y))};
        getcontext(&f.context);
        f.context.uc_stack.ss_sp = l.ws->stacks + i * STACK_BYTES + 4096;
        f.context.uc_stack.ss_size = STACK_BYTES - 4096;
        f.context.uc_link = nullptr;
        makecontext(&f.context, fiber_main, 0);
    }
    std::vector<int> order;
    do {
        order.clear();
        for (size_t i = 0; i < threads; ++i)
            if (l.fibers[i].state == State::Ready) order.push_back((int)i);
        shuffle_order(order, seed);
        for (int i : order) {
            l.current = &l.fibers[i];
            swapcontext(&l.scheduler, &l.current->context);
            if (!l.error.empty()) return;
        }
    } while (resolve(l));
}

// ---- warp collectives -------------------------------------------------------

// PTX ISA 9.7.14.5.7, "Matrix Fragments for mma.m16n8k8" (.tf32 A and B,
// .f32 C/D): with g = lane >> 2 and t = lane % 4, register i of a lane
// holds element (row, col) = (g * ROW_G + t * ROW_T + ROW, g * COL_G + t *
// COL_T + COL) of its matrix.
struct FragmentEntry {
    int row_g, row_t, row, col_g, col_t, col;
};
constexpr FragmentEntry MMA_A_TF32[4] = {
    {1, 0, 0, 0, 1, 0},  // a0: (g, t)
    {1, 0, 8, 0, 1, 0},  // a1: (g + 8, t)
    {1, 0, 0, 0, 1, 4},  // a2: (g, t + 4)
    {1, 0, 8, 0, 1, 4},  // a3: (g + 8, t + 4)
};
constexpr FragmentEntry MMA_B_TF32[2] = {
    {0, 1, 0, 1, 0, 0},  // b0: (t, g)
    {0, 1, 4, 1, 0, 0},  // b1: (t + 4, g)
};
constexpr FragmentEntry MMA_CD_F32[4] = {
    {1, 0, 0, 0, 2, 0},  // c0: (g, 2t)
    {1, 0, 0, 0, 2, 1},  // c1: (g, 2t + 1)
    {1, 0, 8, 0, 2, 0},  // c2: (g + 8, 2t)
    {1, 0, 8, 0, 2, 1},  // c3: (g + 8, 2t + 1)
};
// PTX ISA, "Warp-level matrix load instruction: ldmatrix", .m8n8 .b16: lanes
// 8i..8i+7 give the addresses of rows 0..7 of matrix i; lane l receives, in
// its register i, row l / 4 of matrix i, 32-bit word l % 4 (b16 columns
// 2 (l % 4) and 2 (l % 4) + 1).
constexpr int LDMATRIX_ROW_BYTES = 16;

int fragment_row(const FragmentEntry& e, int lane) { return (lane >> 2) * e.row_g + (lane % 4) * e.row_t + e.row; }
int fragment_col(const FragmentEntry& e, int lane) { return (lane >> 2) * e.col_g + (lane % 4) * e.col_t + e.col; }

// The mma.sync operand: tensor cores read only the TF32 bits (sign, 8
// exponent bits, the top 10 mantissa bits) of each 32-bit register.
float tf32_operand(uint64_t reg) { return from_bits<float>((uint32_t)reg & 0xffffe000u); }

void do_mma(Launch& l, int base) {
    float a[16][8], b[8][8], c[16][8];
    for (int lane = 0; lane < WARP; ++lane) {
        const Fiber& f = l.fibers[base + lane];
        for (int i = 0; i < 4; ++i)
            a[fragment_row(MMA_A_TF32[i], lane)][fragment_col(MMA_A_TF32[i], lane)] = tf32_operand(f.in[i]);
        for (int i = 0; i < 2; ++i)
            b[fragment_row(MMA_B_TF32[i], lane)][fragment_col(MMA_B_TF32[i], lane)] = tf32_operand(f.in[4 + i]);
        for (int i = 0; i < 4; ++i)
            c[fragment_row(MMA_CD_F32[i], lane)][fragment_col(MMA_CD_F32[i], lane)] = from_bits<float>(f.in[6 + i]);
    }
    // fp32 accumulation in k order: products of TF32 operands are exact in
    // fp32; the hardware's summation order is not specified, so only the
    // logic, not the bits, is the GPU's.
    float d[16][8];
    for (int i = 0; i < 16; ++i)
        for (int j = 0; j < 8; ++j) {
            float acc = c[i][j];
            for (int k = 0; k < 8; ++k) acc += a[i][k] * b[k][j];
            d[i][j] = acc;
        }
    for (int lane = 0; lane < WARP; ++lane) {
        Fiber& f = l.fibers[base + lane];
        for (int i = 0; i < 4; ++i)
            f.out[i] = to_bits(d[fragment_row(MMA_CD_F32[i], lane)][fragment_col(MMA_CD_F32[i], lane)]);
    }
}

// Returns false with an error set when a row address is bad.
bool do_ldmatrix(Launch& l, int base, int count) {
    for (int m = 0; m < count; ++m) {
        for (int r = 0; r < 8; ++r) {
            int source = base + 8 * m + r;
            const void* row = l.fibers[source].address;
            if (!in_shared(l, row, LDMATRIX_ROW_BYTES) || reinterpret_cast<uintptr_t>(row) % 16 != 0) {
                report(format("ldmatrix: %s gives row address %p, which is not a 16-byte aligned row of shared memory",
                              thread_name(l, source).c_str(), row));
                return false;
            }
            std::string race = shadow_access(l, row, LDMATRIX_ROW_BYTES, false, source);
            if (!race.empty()) {
                report("ldmatrix: " + race);
                return false;
            }
            uint32_t words[4];
            std::memcpy(words, row, sizeof words);
            for (int word = 0; word < 4; ++word) l.fibers[base + 4 * r + word].out[m] = words[word];
        }
    }
    return true;
}

uint64_t warp_result(WarpOp op, const Launch& l, int base, int lane, unsigned mask) {
    const Fiber& f = l.fibers[base + lane];
    int width = f.width, segment = lane / width * width;
    auto from = [&](int src) -> uint64_t {
        // A source lane outside the mask or the segment leaves the value.
        if (src < segment || src >= segment + width || !(mask >> src & 1)) return f.in[0];
        return l.fibers[base + src].in[0];
    };
    switch (op) {
        case WarpOp::ShflIdx: return from(segment + ((f.arg % width) + width) % width);
        case WarpOp::ShflUp: return from(lane - f.arg);
        case WarpOp::ShflDown: return from(lane + f.arg);
        case WarpOp::ShflXor: return from(lane ^ f.arg);
        case WarpOp::Ballot:
        case WarpOp::Any:
        case WarpOp::All: {
            uint32_t ballot = 0;
            for (int i = 0; i < WARP; ++i)
                if (mask >> i & 1 && l.fibers[base + i].in[0]) ballot |= 1u << i;
            if (op == WarpOp::Ballot) return ballot;
            if (op == WarpOp::Any) return ballot != 0;
            return ballot == mask;
        }
        case WarpOp::SyncWarp: return 0;
    }
    return 0;
}

const char* collective_name(const Fiber& f) {
    switch (f.kind) {
        case Collective::Mma: return "mma.sync";
        case Collective::Ldmatrix: return "ldmatrix";
        case Collective::Warp: break;
    }
    switch (f.op) {
        case WarpOp::ShflIdx: return "__shfl_sync";
        case WarpOp::ShflUp: return "__shfl_up_sync";
        case WarpOp::ShflDown: return "__shfl_down_sync";
        case WarpOp::ShflXor: return "__shfl_xor_sync";
        case WarpOp::Ballot: return "__ballot_sync";
        case WarpOp::Any: return "__any_sync";
        case WarpOp::All: return "__all_sync";
        case WarpOp::SyncWarp: return "__syncwarp";
    }
    return "a warp collective";
}

bool complete_collective(Launch& l, int base, int lanes, Fiber& first) {
    unsigned mask = first.mask;
    unsigned existing = lanes == WARP ? 0xffffffffu : (1u << lanes) - 1;
    int first_lane = first.linear - base;
    if (!(mask >> first_lane & 1)) {
        report(format("%s calls %s (%s:%d) with mask 0x%08x, which does not include its own lane %d",
                      thread_name(l, first.linear).c_str(), collective_name(first), first.file, first.line, mask,
                      first_lane));
        return false;
    }
    if (mask & ~existing) {
        report(format("%s (%s:%d): mask 0x%08x names lanes that do not exist in a warp of %d threads",
                      collective_name(first), first.file, first.line, mask, lanes));
        return false;
    }
    for (int lane = 0; lane < lanes; ++lane) {
        if (!(mask >> lane & 1)) continue;
        const Fiber& f = l.fibers[base + lane];
        if (f.state == State::AtCollective && f.kind == first.kind && f.op == first.op && f.mask == mask &&
            f.line == first.line && std::strcmp(f.file, first.file) == 0)
            continue;
        std::string other = f.state == State::Done        ? std::string("has exited")
                            : f.state == State::AtBarrier ? format("waits at __syncthreads() (%s:%d)", f.file, f.line)
                            : f.state == State::AtCollective
                                ? format("waits at %s (%s:%d) with mask 0x%08x", collective_name(f), f.file, f.line, f.mask)
                                : std::string("is running");
        report(format("%s at %s:%d (mask 0x%08x) waits for lane %d, which %s", collective_name(first), first.file,
                      first.line, mask, lane, other.c_str()));
        return false;
    }
    if (first.kind == Collective::Mma || first.kind == Collective::Ldmatrix) {
        if (lanes != WARP || mask != 0xffffffffu) {
            report(format("%s (%s:%d) needs all 32 lanes of a full warp", collective_name(first), first.file,
                          first.line));
            return false;
        }
        if (first.kind == Collective::Mma) {
            do_mma(l, base);
        } else if (!do_ldmatrix(l, base, first.arg)) {
            return false;
        }
    } else {
        for (int lane = 0; lane < lanes; ++lane)
            if (mask >> lane & 1) l.fibers[base + lane].out[0] = warp_result(first.op, l, base, lane, mask);
    }
    for (int lane = 0; lane < lanes; ++lane)
        if (mask >> lane & 1) l.fibers[base + lane].state = State::Ready;
    return true;
}

void arrive(Collective kind, const char* file, int line) {
    Fiber& f = me();
    f.kind = kind;
    f.file = file;
    f.line = line;
    f.state = State::AtCollective;
    yield();
}

}  // namespace

// ---- the kernel-facing API of cuda_emu.h -------------------------------------

const uint3& thread_idx() { return me().tid; }
const uint3& block_idx() { return launch().block_idx; }
const dim3& block_dim() { return launch().block; }
const dim3& grid_dim() { return launch().grid; }

void fail(const char* what) {
    Launch& l = launch();
    report(thread_name(l, me().linear) + ": " + what);
    abandon();
}

void check_global(const void* p, size_t bytes, bool write) {
    Launch& l = launch();
    auto a = reinterpret_cast<uintptr_t>(p);
    const EmuBuffer* nearest = nullptr;
    uint64_t distance = UINT64_MAX;
    for (size_t i = 0; i < l.buffer_count; ++i) {
        const EmuBuffer& b = l.buffers[i];
        if (a >= b.base && a + bytes <= b.base + b.len) return;
        uint64_t d = a < b.base ? b.base - a : a - (b.base + b.len);
        if (d < distance) distance = d, nearest = &b;
    }
    std::string message = format("out-of-bounds %s of %zu bytes at %p", write ? "write" : "read", bytes, p);
    if (nearest) {
        bool before = a < nearest->base;
        message += format(", %llu bytes %s buffer '%s' [%p, +%llu)",
                          (unsigned long long)(before ? nearest->base - a : a - (nearest->base + nearest->len)),
                          before ? "before the start of" : "past the end of", nearest->label,
                          reinterpret_cast<const void*>(nearest->base), (unsigned long long)nearest->len);
    }
    fail(message.c_str());
}

void record_shared(const void* p, size_t bytes, bool write) {
    Launch& l = launch();
    if (!in_shared(l, p, bytes)) fail(format("a shared-memory element at %p lies outside this block's shared memory", p).c_str());
    std::string race = shadow_access(l, p, bytes, write, me().linear);
    if (!race.empty()) {
        report(race);
        abandon();
    }
}

void* shared_variable(const void* key, const char* name, size_t bytes, size_t align) {
    Launch& l = launch();
    for (const SharedVar& v : l.shared_vars)
        if (v.key == key) return l.ws->shared + v.offset;
    size_t offset = (l.shared_used + align - 1) / align * align;
    if (offset + bytes > SHARED_BYTES)
        fail(format("__shared__ %s (%zu bytes) does not fit: %zu of %zu bytes are in use", name, bytes, offset,
                    SHARED_BYTES)
                 .c_str());
    l.shared_vars.push_back(SharedVar{key, name, offset, bytes});
    l.shared_used = offset + bytes;
    // Shared memory starts out as garbage on the GPU: poison (NaN) here.
    std::memset(l.ws->shared + offset, 0xff, bytes);
    return l.ws->shared + offset;
}

void syncthreads(const char* file, int line) {
    Fiber& f = me();
    f.file = file;
    f.line = line;
    f.state = State::AtBarrier;
    yield();
}

uint64_t warp_collective(WarpOp op, unsigned mask, uint64_t value, int arg, int width, const char* file, int line) {
    Fiber& f = me();
    if (width <= 0 || width > WARP || (width & (width - 1)))
        fail(format("%s:%d: shuffle width %d is not a power of two up to 32", file, line, width).c_str());
    f.op = op;
    f.mask = mask;
    f.in[0] = value;
    f.arg = arg;
    f.width = width;
    arrive(Collective::Warp, file, line);
    return f.out[0];
}

void mma_m16n8k8_tf32(float (&d)[4], const uint32_t (&a)[4], const uint32_t (&b)[2], const float (&c)[4],
                      const char* file, int line) {
    Fiber& f = me();
    for (int i = 0; i < 4; ++i) f.in[i] = a[i];
    for (int i = 0; i < 2; ++i) f.in[4 + i] = b[i];
    for (int i = 0; i < 4; ++i) f.in[6 + i] = to_bits(c[i]);
    f.mask = 0xffffffffu;
    f.op = WarpOp::SyncWarp;
    arrive(Collective::Mma, file, line);
    for (int i = 0; i < 4; ++i) d[i] = from_bits<float>(f.out[i]);
}

void ldmatrix_m8n8_b16(uint32_t* regs, int count, const void* row, const char* file, int line) {
    Fiber& f = me();
    f.address = row;
    f.arg = count;
    f.mask = 0xffffffffu;
    f.op = WarpOp::SyncWarp;
    arrive(Collective::Ldmatrix, file, line);
    for (int i = 0; i < count; ++i) regs[i] = (uint32_t)f.out[i];
}

void cp_async(void* shared_dst, const void* global_src, size_t bytes, size_t src_bytes) {
    Launch& l = launch();
    Fiber& f = me();
    if (bytes != 4 && bytes != 8 && bytes != 16) fail(format("cp.async of %zu bytes (4, 8 or 16)", bytes).c_str());
    if (reinterpret_cast<uintptr_t>(shared_dst) % bytes || reinterpret_cast<uintptr_t>(global_src) % bytes)
        fail(format("cp.async of %zu bytes from %p to %p: both must be %zu-byte aligned", bytes, global_src,
                    shared_dst, bytes)
                 .c_str());
    if (!in_shared(l, shared_dst, bytes)) fail(format("cp.async destination %p is not shared memory", shared_dst).c_str());
    PendingCopy copy{static_cast<unsigned char*>(shared_dst), std::vector<unsigned char>(bytes, 0), -1};
    if (src_bytes > 0) {
        check_global(global_src, src_bytes, false);
        std::memcpy(copy.data.data(), global_src, std::min(src_bytes, bytes));
    }
    // Until the wait, the destination holds poison (NaN in every float).
    record_shared(shared_dst, bytes, true);
    std::memset(shared_dst, 0xff, bytes);
    f.copies.push_back(std::move(copy));
}

void cp_async_commit() {
    Fiber& f = me();
    ++f.groups_committed;
    for (PendingCopy& c : f.copies)
        if (c.group < 0) c.group = f.groups_committed;
}

void cp_async_wait(int pending_groups) {
    Fiber& f = me();
    std::vector<PendingCopy> still;
    for (PendingCopy& c : f.copies) {
        if (c.group >= 0 && c.group <= f.groups_committed - pending_groups) {
            record_shared(c.dst, c.data.size(), true);
            std::memcpy(c.dst, c.data.data(), c.data.size());
        } else {
            still.push_back(std::move(c));
        }
    }
    f.copies = std::move(still);
}

}  // namespace emu

// ---- the C ABI ----------------------------------------------------------------

extern "C" int emu_launch(const EmuKernel* kernel, const void* params, const uint32_t grid[3], const uint32_t block[3],
                          uint32_t dynamic_shared_bytes, uint64_t seed, const EmuBuffer* buffers, size_t buffer_count,
                          char* error, size_t error_len) {
    using namespace emu;
    static thread_local Workspace workspace;
    auto fail_with = [&](const std::string& message) {
        snprintf(error, error_len, "%s", message.c_str());
        return 1;
    };
    size_t threads = (size_t)block[0] * block[1] * block[2];
    if (threads == 0 || threads > MAX_THREADS)
        return fail_with(format("%s: a block of %u x %u x %u threads (1 to 1024)", kernel->name, block[0], block[1], block[2]));
    if (dynamic_shared_bytes != 0)
        return fail_with(format("%s: dynamic shared memory is not emulated (declare it with SHARED)", kernel->name));
    if (grid[0] == 0 || grid[1] == 0 || grid[2] == 0 || grid[1] > 65535 || grid[2] > 65535)
        return fail_with(format("%s: grid %u x %u x %u is out of range", kernel->name, grid[0], grid[1], grid[2]));
    Launch l;
    l.kernel = kernel;
    l.params = params;
    l.buffers = buffers;
    l.buffer_count = buffer_count;
    l.grid = dim3{grid[0], grid[1], grid[2]};
    l.block = dim3{block[0], block[1], block[2]};
    l.ws = &workspace;
    l.rng = seed;
    Launch* outer = running;
    running = &l;
    std::vector<uint3> blocks;
    for (unsigned z = 0; z < grid[2]; ++z)
        for (unsigned y = 0; y < grid[1]; ++y)
            for (unsigned x = 0; x < grid[0]; ++x) blocks.push_back(uint3{x, y, z});
    shuffle_order(blocks, l.rng);
    for (const uint3& b : blocks) {
        l.block_idx = b;
        run_block(l, next_random(l.rng));
        if (!l.error.empty()) break;
    }
    running = outer;
    if (!l.error.empty()) return fail_with(l.error);
    return 0;
}
