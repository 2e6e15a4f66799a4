// attention.cu — scaled dot-product attention over a KV cache (ggml FLASH_ATTN_EXT), decode and
// prefill alike, with an online (flash) softmax in f32; decode splits the KV sequence across
// blocks (flash-decoding) so that one query row still fills the GPU.
//
// What: for query row i of head h in KV stream s, with KV head κ = h / (H_q/H_kv):
//     o = Σ_j softmax_j(scale · q·k_j + mask[j, i]) · v_j
// Keys whose mask is −inf are skipped (they weigh exactly 0); a row with every key masked gives
// zeros (the NumPy reference's convention).
//   flash_attn_ext_{f16,f32}_d{1,2,4,8}   K/V stored as f16 (ggml's KV cache) or f32; head
//       dimension ≤ 32·{1,2,4,8}. With n_split = 1 it writes dst; with n_split > 1 the keys are
//       cut into n_split equal spans, one block each, and every block writes its partial softmax
//       state (running max m, sum l, unnormalised Σ e^{s−m}·v) to `part` instead.
//   flash_attn_combine_f32   merges the n_split partial states of each (query row, head, stream)
//       into dst: M = max m_i, o = Σ_i e^{m_i−M}·acc_i / Σ_i e^{m_i−M}·l_i (spans with no unmasked
//       key carry m = −inf and weigh 0).
// Lane λ of a warp owns the head dimensions [λ·DPL, λ·DPL + DPL): when K and V are contiguous
// along the head (nb0 = element size) and 16-byte aligned, each key row is one 16-byte load per
// lane (f16, DPL = 8) instead of DPL 2-byte ones. A warp scores 4 keys before it exponentiates,
// so 4 key rows are in flight at a time.
//
// Shape legend (ggml ne after llama.cpp's permutes; byte strides, any views):
//   q    [D, n_q, H_q, n_streams]        k [D, n_kv, H_kv, n_streams]   v [Dv, n_kv, H_kv, n_streams]
//   mask f16 [n_kv, ≥ n_q, 1, n_streams] (0 or −inf; broadcast over heads)
//   dst  [Dv, H_q, n_q, n_streams] (the permuted result ggml returns)
//   part f32 records of Dv + 2 floats (m, l, acc[Dv]), record ((s·H_q + h)·n_q + i)·n_split + span
//
// Launch:
//   flash_attn_ext_*: grid = (n_q, H_q, n_streams · n_split), blockDim.x = 32·W with W ≤ 8
//     warps; warp w takes keys w, w+W, … of its block's span; the warps' partial softmax states
//     are merged in shared memory. D, Dv ≤ 32·DPL.
//   flash_attn_combine_f32: grid = (n_q, H_q, n_streams), blockDim.x ≥ 32 (threads stride over
//     Dv).
#include "common.cuh"

#define FA_MAX_WARPS 8
#define FA_KEYS 4  // keys a warp scores before it updates its softmax state

// DPL consecutive elements of one row starting at `p` (element x0 of the row): 16-byte loads
// when `vec` (the row is contiguous and 16-byte aligned; only for DPL·element bytes ≥ 16), else
// element by element with the row's stride; elements at or past `n` read as 0. K/V are f16 or
// f32.
template <int KT, int DPL>
__device__ __forceinline__ void load_slice(const char* p, i64 stride, i64 x0, i64 n, bool vec,
                                           float* out) {
    constexpr int ES = KT == DT_F32 ? 4 : 2;
    constexpr int BYTES = DPL * ES;
    if constexpr (BYTES >= 16) {
        if (vec && x0 + DPL <= n) {
#pragma unroll
            for (int q = 0; q < BYTES / 16; ++q) {
                const U4 r = *(const U4*)(p + 16 * q);
                const u32 w[4] = {r.a, r.b, r.c, r.d};
                if constexpr (KT == DT_F32) {
#pragma unroll
                    for (int e = 0; e < 4; ++e) out[4 * q + e] = __uint_as_float(w[e]);
                } else {
#pragma unroll
                    for (int e = 0; e < 4; ++e) {  // f16 pairs, low half first
                        out[8 * q + 2 * e] = f16_to_f32((u16)(w[e] & 0xffffu));
                        out[8 * q + 2 * e + 1] = f16_to_f32((u16)(w[e] >> 16));
                    }
                }
            }
            return;
        }
    }
#pragma unroll
    for (int u = 0; u < DPL; ++u) out[u] = x0 + u < n ? load_f<KT>(p + u * stride) : 0.0f;
}

template <int KT, int DPL>
__device__ void fattn_body(const Ten d, const Ten q, const Ten k, const Ten v, const Ten mask,
                           float scale, char* part, int n_split) {
    constexpr int ES = KT == DT_F32 ? 4 : 2;
    __shared__ float sm_m[FA_MAX_WARPS], sm_l[FA_MAX_WARPS];
    __shared__ float sm_acc[FA_MAX_WARPS][32 * DPL];
    const float NEG_INF = -__int_as_float(0x7f800000);
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nw = blockDim.x >> 5;
    const i64 iq = blockIdx.x, h = blockIdx.y;
    const i64 s = blockIdx.z / n_split, span = blockIdx.z % n_split;
    const i64 D = q.n[0], Dv = v.n[0], nkv = k.n[1], hq = q.n[2], hkv = k.n[2];
    const i64 kvh = h / (hq / hkv);
    const i64 ks = s % k.n[3], vs = s % v.n[3];
    const i64 mrow = iq % mask.n[1], mh = h % mask.n[2], ms = s % mask.n[3];
    const i64 per_span = (nkv + n_split - 1) / n_split;
    const i64 j_begin = span * per_span, j_end = j_begin + per_span < nkv ? j_begin + per_span : nkv;
    const i64 x0 = (i64)lane * DPL;
    // 16-byte slices (DPL·ES ≥ 16) need every row start 16-byte aligned
    const bool vec = DPL * ES >= 16 && k.b[0] == ES && v.b[0] == ES && ((u64)k.p % 16) == 0 &&
                     ((u64)v.p % 16) == 0 && k.b[1] % 16 == 0 && k.b[2] % 16 == 0 &&
                     k.b[3] % 16 == 0 && v.b[1] % 16 == 0 && v.b[2] % 16 == 0 && v.b[3] % 16 == 0;

    float qv[DPL], acc[DPL];
#pragma unroll
    for (int u = 0; u < DPL; ++u) {
        qv[u] = x0 + u < D ? load_f<DT_F32>(q.at(x0 + u, iq, h, s)) * scale : 0.0f;
        acc[u] = 0.0f;
    }
    float m = NEG_INF, l = 0.0f;
    for (i64 j0 = j_begin + warp; j0 < j_end; j0 += (i64)nw * FA_KEYS) {
        float sc[FA_KEYS];
        bool any = false;
#pragma unroll
        for (int b = 0; b < FA_KEYS; ++b) {  // masks first: uniform across the warp
            const i64 j = j0 + (i64)b * nw;
            sc[b] = j < j_end ? load_f<DT_F16>(mask.at(j, mrow, mh, ms)) : NEG_INF;
            any |= sc[b] != NEG_INF;
        }
        if (!any) continue;  // a masked batch costs its mask reads only (decode's empty cells)
        float dot[FA_KEYS];
#pragma unroll
        for (int b = 0; b < FA_KEYS; ++b) {
            dot[b] = 0.0f;
            if (sc[b] != NEG_INF) {
                float kv[DPL];
                load_slice<KT, DPL>(k.at(x0, j0 + (i64)b * nw, kvh, ks), k.b[0], x0, D, vec, kv);
#pragma unroll
                for (int u = 0; u < DPL; ++u) dot[b] += qv[u] * kv[u];
            }
        }
        float mb = NEG_INF;
#pragma unroll
        for (int b = 0; b < FA_KEYS; ++b) {
            const float t = warp_sum(dot[b]);
            sc[b] = sc[b] == NEG_INF ? NEG_INF : t + sc[b];
            mb = fmaxf(mb, sc[b]);
        }
        const float mn = fmaxf(m, mb);
        const float corr = expf(m - mn);  // 0 while m is still −inf
        l *= corr;
#pragma unroll
        for (int u = 0; u < DPL; ++u) acc[u] *= corr;
#pragma unroll
        for (int b = 0; b < FA_KEYS; ++b) {
            if (sc[b] == NEG_INF) continue;
            const float p = expf(sc[b] - mn);
            float vv[DPL];
            load_slice<KT, DPL>(v.at(x0, j0 + (i64)b * nw, kvh, vs), v.b[0], x0, Dv, vec, vv);
            l += p;
#pragma unroll
            for (int u = 0; u < DPL; ++u) acc[u] += p * vv[u];
        }
        m = mn;
    }
    if (lane == 0) {
        sm_m[warp] = m;
        sm_l[warp] = l;
    }
#pragma unroll
    for (int u = 0; u < DPL; ++u) sm_acc[warp][x0 + u] = acc[u];
    __syncthreads();
    float mt = NEG_INF;
    for (int w = 0; w < nw; ++w) mt = fmaxf(mt, sm_m[w]);
    float lt = 0.0f;
    for (int w = 0; w < nw; ++w)
        if (sm_m[w] != NEG_INF) lt += sm_l[w] * expf(sm_m[w] - mt);
    float* rec = nullptr;
    if (n_split > 1) {
        rec = (float*)part + (((s * hq + h) * q.n[1] + iq) * n_split + span) * (Dv + 2);
        if (threadIdx.x == 0) {
            rec[0] = mt;
            rec[1] = lt;
        }
    }
    for (i64 x = threadIdx.x; x < Dv; x += blockDim.x) {
        float o = 0.0f;
        for (int w = 0; w < nw; ++w)
            if (sm_m[w] != NEG_INF) o += sm_acc[w][x] * expf(sm_m[w] - mt);
        if (rec != nullptr)
            rec[2 + x] = o;
        else
            store_f<DT_F32>(d.at(x, h, iq, s), lt > 0.0f ? o / lt : 0.0f);
    }
}

#define FATTN(KNAME, KT, DPL)                                                                     \
    extern "C" __global__ void flash_attn_ext_##KNAME##_d##DPL(                                  \
        TEN(d), TEN(q), TEN(k), TEN(v), TEN(mask), float scale, char* part, int n_split) {       \
        fattn_body<KT, DPL>(MKTEN(d), MKTEN(q), MKTEN(k), MKTEN(v), MKTEN(mask), scale, part,    \
                            n_split);                                                             \
    }
FATTN(f16, DT_F16, 1)
FATTN(f16, DT_F16, 2)
FATTN(f16, DT_F16, 4)
FATTN(f16, DT_F16, 8)
FATTN(f32, DT_F32, 1)
FATTN(f32, DT_F32, 2)
FATTN(f32, DT_F32, 4)
FATTN(f32, DT_F32, 8)

extern "C" __global__ void flash_attn_combine_f32(TEN(d), char* part, int n_split) {
    const Ten D = MKTEN(d);
    const float NEG_INF = -__int_as_float(0x7f800000);
    const i64 iq = blockIdx.x, h = blockIdx.y, s = blockIdx.z;
    const i64 Dv = D.n[0], hq = D.n[1], nq = D.n[2];
    const float* rec = (const float*)part + ((s * hq + h) * nq + iq) * n_split * (Dv + 2);
    float mt = NEG_INF;
    for (int i = 0; i < n_split; ++i) mt = fmaxf(mt, rec[i * (Dv + 2)]);
    float lt = 0.0f;
    for (int i = 0; i < n_split; ++i) {
        const float mi = rec[i * (Dv + 2)];
        if (mi != NEG_INF) lt += rec[i * (Dv + 2) + 1] * expf(mi - mt);
    }
    for (i64 x = threadIdx.x; x < Dv; x += blockDim.x) {
        float o = 0.0f;
        for (int i = 0; i < n_split; ++i) {
            const float mi = rec[i * (Dv + 2)];
            if (mi != NEG_INF) o += rec[i * (Dv + 2) + 2 + x] * expf(mi - mt);
        }
        store_f<DT_F32>(D.at(x, h, iq, s), lt > 0.0f ? o / lt : 0.0f);
    }
}
