// Training augmentation on the GPU: flip + bilinear resize of a crop to
// 32x32 + normalisation, from the data set held on the device as u8 NHWC,
// exactly as `Augmentation::apply` in src/data/transform.rs.
//
// Design: the host draws each image's flip and crop (the same random
// streams as the CPU loader) and uploads one AugmentRecord per batch image.
// One thread per output value (n x 32 x 32 x 3, grid-stride), each
// recomputing its row's and column's bilinear taps: a few flops, cheaper
// than a second pass to share them. All arithmetic is in double with the
// CPU's expression order, through the _rn intrinsics (never contracted into
// FMAs), so the output equals the CPU's bit for bit; it is rounded to T
// once, at the end.
//
// gather_labels gives the batch its labels from the data set's, held on
// the device too, by each record's image: so a training step uploads only
// its records. One thread per batch image; it has no type of its own, so
// one instantiation.
//
// Deterministic: purely per output value; nothing is shared.

#include <cmath>
#include "common.cuh"

constexpr uint32_t IMAGE_SIZE = 32;
constexpr uint32_t CHANNELS = 3;

// One batch image: which data set image, and its augmentation (the
// `Augmentation` fields; flip is 0 or 1).
struct AugmentRecord {
    uint32_t image;
    uint32_t flip;
    uint32_t top;
    uint32_t left;
    uint32_t height;
    uint32_t width;
};

template <typename T>
struct AugmentParams {
    gptr<const uint8_t> images;         // [num_images, 32, 32, 3]
    gptr<const AugmentRecord> records;  // [n]
    gptr<T> out;                        // [n, 32, 32, 3]
    uint64_t n;
    uint64_t num_images;
    double mean[CHANNELS];              // per channel, on pixel / 255
    double std[CHANNELS];
};

// The two source pixels one output coordinate blends, and their weights.
struct Tap {
    uint32_t i0;
    uint32_t i1;
    double w0;
    double w1;
};

// `taps` of transform.rs for output coordinate o: source pixels start..start
// + len stretched over 32 with half-pixel centres (sample (o + 0.5) * len /
// 32 - 0.5, clamped at 0; the last pixel repeats), mirrored if `flip`.
// len = 32 gives weights of exactly 0 and 1: the crop is copied unchanged.
__device__ Tap tap(uint32_t start, uint32_t len, uint32_t o, bool flip) {
    const double scale = (double)len / (double)IMAGE_SIZE;
    const double src = fmax(__dsub_rn(__dmul_rn((double)o + 0.5, scale), 0.5), 0.0);
    const uint32_t i0 = (uint32_t)src;
    const double w1 = src - (double)i0;
    uint32_t s0 = start + i0, s1 = start + min(i0 + 1, len - 1);
    if (flip) {
        s0 = IMAGE_SIZE - 1 - s0;
        s1 = IMAGE_SIZE - 1 - s1;
    }
    return {s0, s1, 1.0 - w1, w1};
}

__device__ double blend(const Tap& t, double a, double b) {
    return __dadd_rn(__dmul_rn(t.w0, a), __dmul_rn(t.w1, b));
}

__device__ bool fits(const AugmentRecord& r, uint64_t num_images) {
    return r.image < num_images && r.height > 0 && r.width > 0 && r.top + r.height <= IMAGE_SIZE &&
           r.left + r.width <= IMAGE_SIZE;
}

// v[c], selected rather than indexed: indexing the launch parameters with a
// runtime index would copy them to local memory.
__device__ double per_channel(const double (&v)[CHANNELS], uint32_t c) {
    return c == 0 ? v[0] : (c == 1 ? v[1] : v[2]);
}

template <typename T>
__device__ void augment(AugmentParams<T> p) {
    const uint64_t total = p.n * IMAGE_SIZE * IMAGE_SIZE * CHANNELS;
    GRID_STRIDE(i, total) {
        const uint32_t c = i % CHANNELS;
        const uint32_t x = (i / CHANNELS) % IMAGE_SIZE;
        const uint32_t y = (i / (CHANNELS * IMAGE_SIZE)) % IMAGE_SIZE;
        const AugmentRecord r = p.records[i / (CHANNELS * IMAGE_SIZE * IMAGE_SIZE)];
        if (!fits(r, p.num_images)) {  // the launcher checks; never read out of bounds
            p.out[i] = (T)NAN;
            continue;
        }
        const Tap row = tap(r.top, r.height, y, false);
        const Tap col = tap(r.left, r.width, x, r.flip != 0);
        gptr<const uint8_t> image = p.images + (uint64_t)r.image * IMAGE_SIZE * IMAGE_SIZE * CHANNELS;
        auto pixel = [&](uint32_t sy, uint32_t sx) { return (double)image[(sy * IMAGE_SIZE + sx) * CHANNELS + c]; };
        const double upper = blend(col, pixel(row.i0, col.i0), pixel(row.i0, col.i1));
        const double lower = blend(col, pixel(row.i1, col.i0), pixel(row.i1, col.i1));
        const double value = blend(row, upper, lower);
        p.out[i] = (T)__ddiv_rn(__dsub_rn(__ddiv_rn(value, 255.0), per_channel(p.mean, c)), per_channel(p.std, c));
    }
}

#define INSTANTIATE(T, suffix) \
    extern "C" __global__ void augment_##suffix(AugmentParams<T> p) { augment(p); }

INSTANTIATE(float, f32)
INSTANTIATE(double, f64)

struct GatherLabelsParams {
    gptr<const uint8_t> labels;         // [num_images]
    gptr<const AugmentRecord> records;  // [n]
    gptr<uint32_t> out;                 // [n]
    uint64_t n;
    uint64_t num_images;
};

// out[i] = labels[records[i].image]; a record past the set gets a label no
// class has (0xffffffff), whose loss the loss kernels make NaN.
extern "C" __global__ void gather_labels(GatherLabelsParams p) {
    GRID_STRIDE(i, p.n) {
        const uint32_t image = p.records[i].image;
        p.out[i] = image < p.num_images ? (uint32_t)p.labels[image] : UINT32_MAX;
    }
}
