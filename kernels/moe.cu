// moe.cu — the mixture-of-experts router's sort and the expert projections.
//
// What:
//   argsort_desc_f32_i32   dst row = the indices that sort x's row in DESCENDING order, ties by
//                          ascending index (NumPy's stable argsort of −x; ggml ARGSORT desc).
//                          The router's top-k is a view of the first k columns.
//   mul_mat_id_{f32,f16,bf16}  dst[:, e, t] = W[:, :, ids[e, t]]ᵀ · x[:, e mod n_x, t]
//                          (MUL_MAT_ID: each token's chosen experts; expert ids wrapped into
//                          range). Weights in f32, f16 or bf16; activations and result f32.
//
// Shape legend (ggml ne, byte strides, any views):
//   argsort: x [n, rows...] f32, dst [n, rows...] i32.
//   mul_mat_id: W [k, m, n_expert], x [k, n_x, T] (n_x = 1 for up/gate: the token's input;
//   n_x = n_used for down), ids i32 [n_used, T], dst [m, n_used, T].
//
// Launch:
//   argsort: one block per row, grid.x = rows, blockDim.x ≤ 1024 (any multiple of 32), dynamic
//   shared memory 8·npad bytes with npad = the next power of two ≥ n (≤ 4096): a bitonic sort of
//   (value, index) pairs.
//   mul_mat_id: grid = (ceil(m/8), n_used, T), blockDim.x = 256: one warp per output row.
#include "common.cuh"

__device__ __forceinline__ bool sorts_before(float ka, int ia, float kb, int ib) {
    return ka > kb || (ka == kb && ia < ib);
}

extern "C" __global__ void argsort_desc_f32_i32(TEN(d), TEN(x), int npad) {
    extern __shared__ float sh[];
    float* key = sh;
    int* idx = (int*)(sh + npad);
    const Ten D = MKTEN(d), X = MKTEN(x);
    const i64 row = blockIdx.x;
    const i64 i1 = row % X.n[1], i2 = (row / X.n[1]) % X.n[2], i3 = row / (X.n[1] * X.n[2]);
    const int n = (int)X.n[0];
    for (int i = threadIdx.x; i < npad; i += blockDim.x) {
        key[i] = i < n ? load_f<DT_F32>(X.at(i, i1, i2, i3)) : -__int_as_float(0x7f800000);
        idx[i] = i;
    }
    __syncthreads();
    for (int size = 2; size <= npad; size <<= 1) {
        for (int stride = size >> 1; stride > 0; stride >>= 1) {
            for (int i = threadIdx.x; i < npad; i += blockDim.x) {
                const int j = i ^ stride;
                if (j > i) {
                    const bool forward = (i & size) == 0;
                    const bool ordered = sorts_before(key[i], idx[i], key[j], idx[j]);
                    if (forward != ordered) {
                        const float tk = key[i];
                        key[i] = key[j];
                        key[j] = tk;
                        const int ti = idx[i];
                        idx[i] = idx[j];
                        idx[j] = ti;
                    }
                }
            }
            __syncthreads();
        }
    }
    for (int i = threadIdx.x; i < n; i += blockDim.x) *(int*)D.at(i, i1, i2, i3) = idx[i];
}

template <int WT>
__device__ void mul_mat_id_body(const Ten d, const Ten w, const Ten x, const Ten ids) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const i64 r = (i64)blockIdx.x * (blockDim.x >> 5) + warp;
    const i64 e = blockIdx.y, t = blockIdx.z;
    if (r >= w.n[1]) return;
    const i64 expert = wrap_index(load_i<DT_I32>(ids.at(e, t, 0, 0)), w.n[2]);
    const i64 xe = e % x.n[1];
    float acc = 0.0f;
    for (i64 kk = lane; kk < w.n[0]; kk += 32)
        acc += load_f<WT>(w.at(kk, r, expert, 0)) * load_f<DT_F32>(x.at(kk, xe, t, 0));
    acc = warp_sum(acc);
    if (lane == 0) store_f<DT_F32>(d.at(r, e, t, 0), acc);
}

extern "C" __global__ void mul_mat_id_f32(TEN(d), TEN(w), TEN(x), TEN(ids)) {
    mul_mat_id_body<DT_F32>(MKTEN(d), MKTEN(w), MKTEN(x), MKTEN(ids));
}
extern "C" __global__ void mul_mat_id_f16(TEN(d), TEN(w), TEN(x), TEN(ids)) {
    mul_mat_id_body<DT_F16>(MKTEN(d), MKTEN(w), MKTEN(x), MKTEN(ids));
}
extern "C" __global__ void mul_mat_id_bf16(TEN(d), TEN(w), TEN(x), TEN(ids)) {
    mul_mat_id_body<DT_BF16>(MKTEN(d), MKTEN(w), MKTEN(x), MKTEN(ids));
}
