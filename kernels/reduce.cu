// reduce.cu — row reductions over ne0 for the MoE router, f32, any strides.
//
// What:
//   soft_max_f32   dst = exp(x − max x) / Σ exp(x − max x)     (SOFT_MAX without mask or scale)
//   sum_rows_f32   dst[0, i1, i2, i3] = Σ_i0 x[i0, i1, i2, i3]  (SUM_ROWS)
//
// Shape legend: x [ne0, ne1, ne2, ne3]; one row = ne0 elements at fixed (i1, i2, i3); soft_max's
// dst has x's shape, sum_rows' dst [1, ne1, ne2, ne3].
//
// Launch: one block per row, grid.x = ne1·ne2·ne3, blockDim.x a multiple of 32 in [32, 1024].
// soft_max in place (same layout) is safe: the row max and sum are reduced before any write.
#include "common.cuh"

__device__ __forceinline__ void row_coords_r(const Ten& t, i64 row, i64& i1, i64& i2, i64& i3) {
    i1 = row % t.n[1];
    const i64 r = row / t.n[1];
    i2 = r % t.n[2];
    i3 = r / t.n[2];
}

extern "C" __global__ void soft_max_f32(TEN(d), TEN(x)) {
    __shared__ float scratch[32];
    const Ten D = MKTEN(d), X = MKTEN(x);
    i64 i1, i2, i3;
    row_coords_r(X, blockIdx.x, i1, i2, i3);
    float m = -__int_as_float(0x7f800000);
    for (i64 i0 = threadIdx.x; i0 < X.n[0]; i0 += blockDim.x)
        m = fmaxf(m, load_f<DT_F32>(X.at(i0, i1, i2, i3)));
    m = block_max(m, scratch);
    float s = 0.0f;
    for (i64 i0 = threadIdx.x; i0 < X.n[0]; i0 += blockDim.x)
        s += expf(load_f<DT_F32>(X.at(i0, i1, i2, i3)) - m);
    s = block_sum(s, scratch);
    const float inv = 1.0f / s;
    for (i64 i0 = threadIdx.x; i0 < X.n[0]; i0 += blockDim.x)
        store_f<DT_F32>(D.at(i0, i1, i2, i3), expf(load_f<DT_F32>(X.at(i0, i1, i2, i3)) - m) * inv);
}

extern "C" __global__ void sum_rows_f32(TEN(d), TEN(x)) {
    __shared__ float scratch[32];
    const Ten D = MKTEN(d), X = MKTEN(x);
    i64 i1, i2, i3;
    row_coords_r(X, blockIdx.x, i1, i2, i3);
    float s = 0.0f;
    for (i64 i0 = threadIdx.x; i0 < X.n[0]; i0 += blockDim.x) s += load_f<DT_F32>(X.at(i0, i1, i2, i3));
    s = block_sum(s, scratch);
    if (threadIdx.x == 0) store_f<DT_F32>(D.at(0, i1, i2, i3), s);
}
