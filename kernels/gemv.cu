// gemv.cu — projections (ggml MUL_MAT with a 2-D weight) computed by LACE's own kernels.
//
// What: dst[m, c] = Σ_k W[k, m] · x[k, c] for every activation column c = (i1, i2, i3) — ggml's
// MUL_MAT with src0 = a weight [K, M] (f32, f16 or bf16; the f16 form is what llama.cpp runs) and
// src1 = f32 activations. Accumulation is f32; the activations are NOT rounded to the weight type.
//   mul_mat_vec_{f32,f16,bf16}         small batches (≤ 8 columns), any strides: one warp per
//                                      weight row streams the row once and dots it with every column.
//   mul_mat_vec16_{f32,f16,bf16}_c{NC} the decode path (the weight read is the memory floor), for
//                                      up to NC ∈ {1, 2, 4, 8} columns. A team of `wpr` warps owns
//                                      R = 2 consecutive weight rows and splits K between its
//                                      threads: each thread keeps U·R independent 16-byte weight
//                                      loads in flight (U = 4, 4, 2, 1 for NC = 1, 2, 4, 8),
//                                      streamed past L1, and reads each 16-byte piece of x once
//                                      (read-only path, L1-resident) for both rows. The team's
//                                      partial sums meet in shared memory. Every weight byte is
//                                      read exactly once. wpr ∈ {1, 2, 4, 8}: many rows → one warp
//                                      per team; thin outputs (M = 48) → the whole block on one
//                                      row pair, so 48 rows still occupy 24 SMs with 256 threads
//                                      each. Requires K a multiple of 16/ES (ES = weight element
//                                      bytes), W contiguous along K, 16-byte aligned, row stride a
//                                      multiple of 16; x contiguous along K (nb0 = 4), every
//                                      column 16-byte aligned.
//   gemm_{f32,f16,bf16}                any number of columns: a plain 64×64 shared-memory tiled
//                                      GEMM (the fallback when cuBLASLt through nvmath-python is
//                                      not used).
// Decode batches (≤ 8 sequences) use the GEMV kernels; larger ones go through cuBLASLt
// (nvmath-python) in the executor, which needs the activations in the weight's type first.
//
// Shape legend: W [K, M] (ne2 = ne3 = 1), x [K, N1, N2, N3], dst [M, N1, N2, N3]; N = N1·N2·N3
// activation columns; byte strides.
//
// Launch:
//   mul_mat_vec*: grid.x = ceil(M / warps_per_block), blockDim.x = 32·warps (≤ 1024), N ≤ 8.
//   mul_mat_vec16_*_c{NC}: blockDim.x = 256 exactly, N ≤ NC, last argument wpr ∈ {1, 2, 4, 8};
//     grid.x = ceil(M / (2 · 8 / wpr)).
//   gemm: grid = (ceil(M/64), ceil(N/64)), blockDim.x = 256 exactly.
#include "common.cuh"

#define GEMV_MAX_COLS 8

__device__ __forceinline__ void column_coords(const Ten& x, i64 c, i64& c1, i64& c2, i64& c3) {
    c1 = c % x.n[1];
    c2 = (c / x.n[1]) % x.n[2];
    c3 = c / (x.n[1] * x.n[2]);
}

template <int WT>
__device__ void gemv_body(const Ten d, const Ten w, const Ten x) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    const i64 m = (i64)blockIdx.x * (blockDim.x >> 5) + warp;
    const i64 K = w.n[0], M = w.n[1];
    const i64 N = x.n[1] * x.n[2] * x.n[3];
    if (m >= M) return;
    const char* xcol[GEMV_MAX_COLS];
    float acc[GEMV_MAX_COLS];
#pragma unroll
    for (int c = 0; c < GEMV_MAX_COLS; ++c) {
        i64 c1 = 0, c2 = 0, c3 = 0;
        if (c < N) column_coords(x, c, c1, c2, c3);
        xcol[c] = x.at(0, c1, c2, c3);
        acc[c] = 0.0f;
    }
    for (i64 k = lane; k < K; k += 32) {
        const float wv = load_f<WT>(w.at(k, m, 0, 0));
#pragma unroll
        for (int c = 0; c < GEMV_MAX_COLS; ++c)
            if (c < N) acc[c] += wv * load_f<DT_F32>(xcol[c] + k * x.b[0]);
    }
#pragma unroll
    for (int c = 0; c < GEMV_MAX_COLS; ++c) {
        if (c < N) {
            const float s = warp_sum(acc[c]);
            if (lane == 0) {
                i64 c1, c2, c3;
                column_coords(x, c, c1, c2, c3);
                store_f<DT_F32>(d.at(m, c1, c2, c3), s);
            }
        }
    }
}

// Unpack 16 bytes of weights into VE floats (VE = 4 for f32, 8 for f16/bf16).
template <int WT>
__device__ __forceinline__ void unpack16(const U4& r, float* out);
template <>
__device__ __forceinline__ void unpack16<DT_F32>(const U4& r, float* out) {
    out[0] = __uint_as_float(r.a);
    out[1] = __uint_as_float(r.b);
    out[2] = __uint_as_float(r.c);
    out[3] = __uint_as_float(r.d);
}
template <>
__device__ __forceinline__ void unpack16<DT_F16>(const U4& r, float* out) {
    const u32 v[4] = {r.a, r.b, r.c, r.d};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        out[2 * i] = f16_to_f32((u16)(v[i] & 0xffffu));
        out[2 * i + 1] = f16_to_f32((u16)(v[i] >> 16));
    }
}
template <>
__device__ __forceinline__ void unpack16<DT_BF16>(const U4& r, float* out) {
    const u32 v[4] = {r.a, r.b, r.c, r.d};
#pragma unroll
    for (int i = 0; i < 4; ++i) {
        out[2 * i] = bf16_to_f32((u16)(v[i] & 0xffffu));
        out[2 * i + 1] = bf16_to_f32((u16)(v[i] >> 16));
    }
}

#define GEMV16_WARPS 8

template <int WT, int NC, int R, int U>
__device__ void gemv16_body(const Ten d, const Ten w, const Ten x, int wpr) {
    constexpr int VE = WT == DT_F32 ? 4 : 8;  // weights per 16-byte load
    constexpr int XQ = VE / 4;                // 16-byte pieces of x per weight load
    __shared__ float part[GEMV16_WARPS][R * NC];
    const int tid = threadIdx.x, lane = tid & 31, warp = tid >> 5;
    const int team = warp / wpr, teams = GEMV16_WARPS / wpr;
    const int tt = tid - team * wpr * 32, tsize = 32 * wpr;
    const i64 M = w.n[1];
    const i64 nch = w.n[0] / VE;  // 16-byte weight pieces per row
    const i64 N = x.n[1] * x.n[2] * x.n[3];
    const i64 m0 = ((i64)blockIdx.x * teams + team) * R;
    const char* wrow[R];
#pragma unroll
    for (int r = 0; r < R; ++r) wrow[r] = w.p + (m0 + r < M ? m0 + r : M - 1) * w.b[1];
    const char* xcol[NC];
#pragma unroll
    for (int c = 0; c < NC; ++c) {
        i64 c1, c2, c3;
        column_coords(x, c < N ? c : 0, c1, c2, c3);
        xcol[c] = x.at(0, c1, c2, c3);
    }
    float acc[R][NC];
#pragma unroll
    for (int r = 0; r < R; ++r)
#pragma unroll
        for (int c = 0; c < NC; ++c) acc[r][c] = 0.0f;

    for (i64 i0 = tt; i0 < nch; i0 += (i64)tsize * U) {
        U4 wv[U][R];
#pragma unroll
        for (int u = 0; u < U; ++u) {
            const i64 i = i0 + (i64)u * tsize;
#pragma unroll
            for (int r = 0; r < R; ++r)
                wv[u][r] = i < nch ? ld_stream16(wrow[r] + i * 16) : U4{0u, 0u, 0u, 0u};
        }
#pragma unroll
        for (int u = 0; u < U; ++u) {
            const i64 i = i0 + (i64)u * tsize;
            if (i >= nch) break;
            float wf[R][VE];
#pragma unroll
            for (int r = 0; r < R; ++r) unpack16<WT>(wv[u][r], wf[r]);
#pragma unroll
            for (int c = 0; c < NC; ++c) {
#pragma unroll
                for (int q = 0; q < XQ; ++q) {
                    const F4 a = as_f4(ld_ro16(xcol[c] + (i * VE + 4 * q) * 4));
#pragma unroll
                    for (int r = 0; r < R; ++r)
                        acc[r][c] += wf[r][4 * q] * a.x + wf[r][4 * q + 1] * a.y +
                                     wf[r][4 * q + 2] * a.z + wf[r][4 * q + 3] * a.w;
                }
            }
        }
    }
#pragma unroll
    for (int r = 0; r < R; ++r)
#pragma unroll
        for (int c = 0; c < NC; ++c) acc[r][c] = warp_sum(acc[r][c]);
    if (wpr == 1) {  // the warp is the team: lane r·NC + c writes (row r, column c)
#pragma unroll
        for (int r = 0; r < R; ++r)
#pragma unroll
            for (int c = 0; c < NC; ++c) {
                const i64 m = m0 + r;
                if (lane == r * NC + c && m < M && c < N) {
                    i64 c1, c2, c3;
                    column_coords(x, c, c1, c2, c3);
                    store_f<DT_F32>(d.at(m, c1, c2, c3), acc[r][c]);
                }
            }
        return;
    }
    if (lane == 0) {
#pragma unroll
        for (int r = 0; r < R; ++r)
#pragma unroll
            for (int c = 0; c < NC; ++c) part[warp][r * NC + c] = acc[r][c];
    }
    __syncthreads();
    if (warp % wpr == 0 && lane < R * NC) {
        const int r = lane / NC, c = lane % NC;
        const i64 m = m0 + r;
        if (m < M && c < N) {
            float s = 0.0f;
            for (int j = 0; j < wpr; ++j) s += part[warp + j][lane];
            i64 c1, c2, c3;
            column_coords(x, c, c1, c2, c3);
            store_f<DT_F32>(d.at(m, c1, c2, c3), s);
        }
    }
}

#define GEMM_T 64
#define GEMM_K 16

template <int WT>
__device__ void gemm_body(const Ten d, const Ten w, const Ten x) {
    __shared__ float Ws[GEMM_K][GEMM_T + 1];
    __shared__ float Xs[GEMM_K][GEMM_T + 1];
    const i64 K = w.n[0], M = w.n[1];
    const i64 N = x.n[1] * x.n[2] * x.n[3];
    const i64 m0 = (i64)blockIdx.x * GEMM_T, n0 = (i64)blockIdx.y * GEMM_T;
    const int tid = threadIdx.x, tx = tid % 16, ty = tid / 16;
    float acc[4][4];
#pragma unroll
    for (int i = 0; i < 4; ++i)
#pragma unroll
        for (int j = 0; j < 4; ++j) acc[i][j] = 0.0f;
    for (i64 k0 = 0; k0 < K; k0 += GEMM_K) {
        for (int e = tid; e < GEMM_T * GEMM_K; e += 256) {
            const int r = e / GEMM_K, kk = e % GEMM_K;
            const i64 m = m0 + r, kg = k0 + kk;
            Ws[kk][r] = (m < M && kg < K) ? load_f<WT>(w.at(kg, m, 0, 0)) : 0.0f;
            const i64 n = n0 + r;
            float xv = 0.0f;
            if (n < N && kg < K) {
                i64 c1, c2, c3;
                column_coords(x, n, c1, c2, c3);
                xv = load_f<DT_F32>(x.at(kg, c1, c2, c3));
            }
            Xs[kk][r] = xv;
        }
        __syncthreads();
#pragma unroll
        for (int kk = 0; kk < GEMM_K; ++kk) {
            float a[4], b[4];
#pragma unroll
            for (int i = 0; i < 4; ++i) a[i] = Ws[kk][tx * 4 + i];
#pragma unroll
            for (int j = 0; j < 4; ++j) b[j] = Xs[kk][ty * 4 + j];
#pragma unroll
            for (int i = 0; i < 4; ++i)
#pragma unroll
                for (int j = 0; j < 4; ++j) acc[i][j] += a[i] * b[j];
        }
        __syncthreads();
    }
#pragma unroll
    for (int j = 0; j < 4; ++j) {
        const i64 n = n0 + ty * 4 + j;
        if (n >= N) continue;
        i64 c1, c2, c3;
        column_coords(x, n, c1, c2, c3);
#pragma unroll
        for (int i = 0; i < 4; ++i) {
            const i64 m = m0 + tx * 4 + i;
            if (m < M) store_f<DT_F32>(d.at(m, c1, c2, c3), acc[i][j]);
        }
    }
}

#define GEMV16(NAME, WT, NC, R, U)                                                                \
    extern "C" __global__ void __launch_bounds__(256)                                             \
        mul_mat_vec16_##NAME##_c##NC(TEN(d), TEN(w), TEN(x), int wpr) {                           \
        gemv16_body<WT, NC, R, U>(MKTEN(d), MKTEN(w), MKTEN(x), wpr);                             \
    }

#define GEMV_KERNELS(NAME, WT)                                                                    \
    extern "C" __global__ void mul_mat_vec_##NAME(TEN(d), TEN(w), TEN(x)) {                       \
        gemv_body<WT>(MKTEN(d), MKTEN(w), MKTEN(x));                                              \
    }                                                                                             \
    GEMV16(NAME, WT, 1, 2, 4)                                                                     \
    GEMV16(NAME, WT, 2, 2, 4)                                                                     \
    GEMV16(NAME, WT, 4, 2, 2)                                                                     \
    GEMV16(NAME, WT, 8, 2, 1)                                                                     \
    extern "C" __global__ void __launch_bounds__(256) gemm_##NAME(TEN(d), TEN(w), TEN(x)) {       \
        gemm_body<WT>(MKTEN(d), MKTEN(w), MKTEN(x));                                              \
    }
GEMV_KERNELS(f32, DT_F32)
GEMV_KERNELS(f16, DT_F16)
GEMV_KERNELS(bf16, DT_BF16)
