// Dense layer y = x W + b (x [n, k], W [k, o], b [o]) and its backward.
//
// Design: the classifier heads are tiny (n = 128, k <= 184, o = 10), so one
// strided matrix product serves all three GEMMs: C[m, c] = bias[c] +
// sum_l A[m, l] B[l, c], with A and B read through (row, column) strides so
// the transposes of the backward (dx = dy W^T, dw = x^T dy) need no copies.
// One thread per output element, in a grid-stride loop over the row-major
// C; consecutive threads take consecutive columns, so their B reads
// coalesce and their A reads broadcast. db = sum over rows of dy is a column
// sum, one thread per column, accumulated in double like the CPU's
// channel_sum.
//
// Deterministic: every output is one thread's sequential sum in a fixed
// order; nothing is shared between threads.

#include "common.cuh"

template <typename T>
struct MatmulParams {
    gptr<const T> a;
    gptr<const T> b;
    gptr<const T> bias;    // [cols], added to every row; null for none
    gptr<T> c;             // [rows, cols], contiguous
    uint64_t rows;
    uint64_t cols;
    uint64_t inner;
    int64_t a_row_stride;  // elements between A[m, l] and A[m + 1, l]
    int64_t a_col_stride;  // elements between A[m, l] and A[m, l + 1]
    int64_t b_row_stride;
    int64_t b_col_stride;
};

template <typename T>
struct ColumnSumParams {
    gptr<const T> x;  // [rows, cols]
    gptr<T> sum;      // [cols]
    uint64_t rows;
    uint64_t cols;
};


template <typename T>
__device__ void matmul(MatmulParams<T> p) {
    GRID_STRIDE(i, p.rows * p.cols) {
        const int64_t m = i / p.cols, c = i % p.cols;
        gptr<const T> a = p.a + m * p.a_row_stride;
        gptr<const T> b = p.b + c * p.b_col_stride;
        T acc = p.bias ? p.bias[c] : T(0);
        for (int64_t l = 0; l < (int64_t)p.inner; ++l) {
            acc += a[l * p.a_col_stride] * b[l * p.b_row_stride];
        }
        p.c[i] = acc;
    }
}

template <typename T>
__device__ void column_sum(ColumnSumParams<T> p) {
    GRID_STRIDE(c, p.cols) {
        double acc = 0.0;
        for (uint64_t r = 0; r < p.rows; ++r) acc += (double)p.x[r * p.cols + c];
        p.sum[c] = (T)acc;
    }
}

#define INSTANTIATE(T, suffix)                                                                \
    extern "C" __global__ void matmul_##suffix(MatmulParams<T> p) { matmul(p); }               \
    extern "C" __global__ void column_sum_##suffix(ColumnSumParams<T> p) { column_sum(p); }

INSTANTIATE(float, f32)
INSTANTIATE(double, f64)
