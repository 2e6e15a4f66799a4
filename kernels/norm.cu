// norm.cu — row normalisations over ne0, f32 in and out, any strides.
//
// What:
//   rms_norm_f32        dst = x / sqrt(mean(x²) + eps)                  (ggml RMS_NORM; the GDN
//                       L2 norm is RMS_NORM with eps/S followed by SCALE 1/sqrt(S))
//   rms_norm_mul_f32    dst = x / sqrt(mean(x²) + eps) · w             (RMSNorm + weight, fused)
//   l2_norm_f32         dst = x / sqrt(Σ x² + eps) · scale             (fused L2 norm + scale)
//   gated_rms_norm_f32  dst = x / sqrt(mean(x²) + eps) · w · silu(z)    (GDN's gated norm, fused)
//
// Shape legend: x, z, dst [ne0, ne1, ne2, ne3]; one row = the ne0 elements at fixed (i1, i2, i3);
// w [ne0] (broadcast over rows; w.ne[0] must equal ne0). Byte strides, any views.
//
// Launch: one block per row, grid.x = ne1·ne2·ne3 (rows; at most 2^31−1), blockDim.x a multiple
// of 32 in [32, 1024] (the executor picks 32·ceil(ne0/32), capped at 1024 below 264 rows — a
// decode step's few long rows — and at 256 above). In place
// (dst on x's bytes, same layout) is safe: the sum is reduced before any thread writes, and each
// thread writes only the elements it read.
#include "common.cuh"

__device__ __forceinline__ void row_coords(const Ten& t, i64 row, i64& i1, i64& i2, i64& i3) {
    i1 = row % t.n[1];
    const i64 r = row / t.n[1];
    i2 = r % t.n[2];
    i3 = r / t.n[2];
}

__device__ __forceinline__ float row_sum_sq(const Ten& x, i64 i1, i64 i2, i64 i3, float* scratch) {
    float acc = 0.0f;
    for (i64 i0 = threadIdx.x; i0 < x.n[0]; i0 += blockDim.x) {
        const float v = load_f<DT_F32>(x.at(i0, i1, i2, i3));
        acc += v * v;
    }
    return block_sum(acc, scratch);
}

extern "C" __global__ void rms_norm_f32(TEN(d), TEN(x), float eps) {
    __shared__ float scratch[32];
    const Ten D = MKTEN(d), X = MKTEN(x);
    i64 i1, i2, i3;
    row_coords(D, blockIdx.x, i1, i2, i3);
    const float ss = row_sum_sq(X, i1, i2, i3, scratch);
    const float inv = 1.0f / sqrtf(ss / (float)X.n[0] + eps);
    for (i64 i0 = threadIdx.x; i0 < X.n[0]; i0 += blockDim.x)
        store_f<DT_F32>(D.at(i0, i1, i2, i3), load_f<DT_F32>(X.at(i0, i1, i2, i3)) * inv);
}

extern "C" __global__ void rms_norm_mul_f32(TEN(d), TEN(x), TEN(w), float eps) {
    __shared__ float scratch[32];
    const Ten D = MKTEN(d), X = MKTEN(x), W = MKTEN(w);
    i64 i1, i2, i3;
    row_coords(D, blockIdx.x, i1, i2, i3);
    const float ss = row_sum_sq(X, i1, i2, i3, scratch);
    const float inv = 1.0f / sqrtf(ss / (float)X.n[0] + eps);
    for (i64 i0 = threadIdx.x; i0 < X.n[0]; i0 += blockDim.x) {
        const float wv = load_f<DT_F32>(W.at(i0, 0, 0, 0));
        store_f<DT_F32>(D.at(i0, i1, i2, i3), load_f<DT_F32>(X.at(i0, i1, i2, i3)) * inv * wv);
    }
}

extern "C" __global__ void l2_norm_f32(TEN(d), TEN(x), float eps, float scale) {
    __shared__ float scratch[32];
    const Ten D = MKTEN(d), X = MKTEN(x);
    i64 i1, i2, i3;
    row_coords(D, blockIdx.x, i1, i2, i3);
    const float ss = row_sum_sq(X, i1, i2, i3, scratch);
    const float inv = scale / sqrtf(ss + eps);
    for (i64 i0 = threadIdx.x; i0 < X.n[0]; i0 += blockDim.x)
        store_f<DT_F32>(D.at(i0, i1, i2, i3), load_f<DT_F32>(X.at(i0, i1, i2, i3)) * inv);
}

extern "C" __global__ void gated_rms_norm_f32(TEN(d), TEN(x), TEN(w), TEN(z), float eps) {
    __shared__ float scratch[32];
    const Ten D = MKTEN(d), X = MKTEN(x), W = MKTEN(w), Z = MKTEN(z);
    i64 i1, i2, i3;
    row_coords(D, blockIdx.x, i1, i2, i3);
    const float ss = row_sum_sq(X, i1, i2, i3, scratch);
    const float inv = 1.0f / sqrtf(ss / (float)X.n[0] + eps);
    for (i64 i0 = threadIdx.x; i0 < X.n[0]; i0 += blockDim.x) {
        const float wv = load_f<DT_F32>(W.at(i0, 0, 0, 0));
        const float zv = load_f<DT_F32>(Z.at(i0, i1, i2, i3));
        store_f<DT_F32>(D.at(i0, i1, i2, i3),
                        load_f<DT_F32>(X.at(i0, i1, i2, i3)) * inv * wv * silu_f(zv));
    }
}
