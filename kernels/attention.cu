// attention.cu — scaled dot-product attention over a KV cache (ggml FLASH_ATTN_EXT), decode and
// prefill alike, with an online (flash) softmax in f32.
//
// What: for query row i of head h in KV stream s, with KV head κ = h / (H_q/H_kv):
//     o = Σ_j softmax_j(scale · q·k_j + mask[j, i]) · v_j
// Keys whose mask is −inf are skipped (they weigh exactly 0); a row with every key masked gives
// zeros (the NumPy reference's convention).
//   flash_attn_ext_{f16,f32}_d{1,2,4,8}   K/V stored as f16 (ggml's KV cache) or f32; head
//   dimension ≤ 32·{1,2,4,8}.
//
// Shape legend (ggml ne after llama.cpp's permutes; byte strides, any views):
//   q    [D, n_q, H_q, n_streams]        k [D, n_kv, H_kv, n_streams]   v [Dv, n_kv, H_kv, n_streams]
//   mask f16 [n_kv, ≥ n_q, 1, n_streams] (0 or −inf; broadcast over heads)
//   dst  [Dv, H_q, n_q, n_streams] (the permuted result ggml returns)
//
// Launch: one block per (query row, head, stream): grid = (n_q, H_q, n_streams), blockDim.x =
// 32·W with W ≤ 8 warps; warp w takes keys w, w+W, …; the warps' partial softmax states are
// merged in shared memory. D, Dv ≤ 32·DPL.
#include "common.cuh"

#define FA_MAX_WARPS 8

template <int KT, int DPL>
__device__ void fattn_body(const Ten d, const Ten q, const Ten k, const Ten v, const Ten mask,
                           float scale) {
    __shared__ float sm_m[FA_MAX_WARPS], sm_l[FA_MAX_WARPS];
    __shared__ float sm_acc[FA_MAX_WARPS][32 * DPL];
    const float NEG_INF = -__int_as_float(0x7f800000);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    const i64 iq = blockIdx.x, h = blockIdx.y, s = blockIdx.z;
    const i64 D = q.n[0], Dv = v.n[0], nkv = k.n[1], hq = q.n[2], hkv = k.n[2];
    const i64 kvh = h / (hq / hkv);
    const i64 ks = s % k.n[3], vs = s % v.n[3];
    const i64 mrow = iq % mask.n[1], mh = h % mask.n[2], ms = s % mask.n[3];

    float qv[DPL], acc[DPL];
#pragma unroll
    for (int u = 0; u < DPL; ++u) {
        const i64 x = lane + 32 * u;
        qv[u] = x < D ? load_f<DT_F32>(q.at(x, iq, h, s)) * scale : 0.0f;
        acc[u] = 0.0f;
    }
    float m = NEG_INF, l = 0.0f;
    for (i64 j = warp; j < nkv; j += nw) {
        const float mv = load_f<DT_F16>(mask.at(j, mrow, mh, ms));
        if (mv == NEG_INF) continue;  // uniform across the warp
        float sc = 0.0f;
#pragma unroll
        for (int u = 0; u < DPL; ++u) {
            const i64 x = lane + 32 * u;
            if (x < D) sc += qv[u] * load_f<KT>(k.at(x, j, kvh, ks));
        }
        sc = warp_sum(sc) + mv;
        const float mn = fmaxf(m, sc);
        const float corr = expf(m - mn);  // 0 while m is still −inf
        const float p = expf(sc - mn);
        l = l * corr + p;
#pragma unroll
        for (int u = 0; u < DPL; ++u) {
            const i64 x = lane + 32 * u;
            const float vv = x < Dv ? load_f<KT>(v.at(x, j, kvh, vs)) : 0.0f;
            acc[u] = acc[u] * corr + p * vv;
        }
        m = mn;
    }
    if (lane == 0) {
        sm_m[warp] = m;
        sm_l[warp] = l;
    }
#pragma unroll
    for (int u = 0; u < DPL; ++u) sm_acc[warp][lane + 32 * u] = acc[u];
    __syncthreads();
    float mt = NEG_INF;
    for (int w = 0; w < nw; ++w) mt = fmaxf(mt, sm_m[w]);
    float lt = 0.0f;
    for (int w = 0; w < nw; ++w)
        if (sm_m[w] != NEG_INF) lt += sm_l[w] * expf(sm_m[w] - mt);
    for (i64 x = threadIdx.x; x < Dv; x += blockDim.x) {
        float o = 0.0f;
        for (int w = 0; w < nw; ++w)
            if (sm_m[w] != NEG_INF) o += sm_acc[w][x] * expf(sm_m[w] - mt);
        store_f<DT_F32>(d.at(x, h, iq, s), lt > 0.0f ? o / lt : 0.0f);
    }
}

#define FATTN(KNAME, KT, DPL)                                                                     \
    extern "C" __global__ void flash_attn_ext_##KNAME##_d##DPL(TEN(d), TEN(q), TEN(k), TEN(v),   \
                                                               TEN(mask), float scale) {         \
        fattn_body<KT, DPL>(MKTEN(d), MKTEN(q), MKTEN(k), MKTEN(v), MKTEN(mask), scale);         \
    }
FATTN(f16, DT_F16, 1)
FATTN(f16, DT_F16, 2)
FATTN(f16, DT_F16, 4)
FATTN(f16, DT_F16, 8)
FATTN(f32, DT_F32, 1)
FATTN(f32, DT_F32, 2)
FATTN(f32, DT_F32, 4)
FATTN(f32, DT_F32, 8)
