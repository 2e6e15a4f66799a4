// gated_delta.cu — the gated delta rule (ggml GATED_DELTA_NET), fp32 state, two forms.
//
// What (gdn-reference §2): per sequence s and value head h, with key head κ = h / (H_v/H_k),
// state S ∈ R^{dk×dv} (rows = key dims), q̂ = q·q_scale (q_scale = 1/sqrt(dk)), per token t:
//     S ← e^{g_t}·S;   δ = β_t·(v_t − Sᵀk_t);   S ← S + k_t δᵀ;   o_t = Sᵀq̂_t
// (q and k arrive already L2-normalised by the graph).
//   gdn_recurrent_k{1,2,4,8}  the recurrent form, token by token (decode; any T)
//   gdn_chunked_f32           the chunked WY/UT form, chunk c = 64 (prefill; any T ≥ 1): per
//                             chunk γ = cumsum g, Γ_ij = e^{γ_i−γ_j} (i ≥ j, masked before exp),
//                             L = strict_lower(β_i k_i·k_j Γ_ij), V_new = (I+L)⁻¹ [β ⊙ (V − e^γ ⊙ K S)]
//                             (forward substitution), O = e^γ ⊙ Q S + (Q Kᵀ ⊙ Γ) V_new,
//                             S ← e^{γ_last} S + Kᵀ (e^{γ_last−γ} ⊙ V_new). The tail chunk is
//                             zero-padded (g = β = 0, k = v = 0), which changes nothing. Strong
//                             decay (γ → −∞) underflows e^γ to 0 and never forms e^{+large}.
//
// Shape legend (ggml ne, fastest first; byte strides, any views):
//   q, k   [dk, H_k, T, n_seq]        v  [dv, H_v, T, n_seq]
//   g, β   [1, H_v, T, n_seq]         state [dk, dv, H_v, n_seq]  (ne0 = key index: S[key][value])
//   dst    contiguous f32: the outputs o[dv, H_v, T, n_seq], then the new states
//          [dk, dv, H_v, n_seq] — LACE's packed GATED_DELTA_NET result (numpy_arena's layout).
//
// Launch:
//   gdn_recurrent_k<KPL>: one warp per value column j (the columns of S are independent),
//     blockDim.x = 32·W (W warps → W columns), grid = (ceil(dv/W), H_v, n_seq); requires
//     dk ≤ 32·KPL. The state column stays in registers (KPL floats per lane) across all T tokens.
//   gdn_chunked_f32: one block per (16 value columns, H_v, n_seq): grid = (ceil(dv/16), H_v,
//     n_seq), blockDim.x = 256 exactly; dynamic shared memory
//     4·(2·64·(dk+1) + 2·64·65 + 16·dk + 3·64·16 + 3·64) bytes (≈ 121 KB at dk = 128: the caller
//     raises the function's max dynamic shared memory); dk ≤ 256.
#include "common.cuh"

template <int KPL>
__device__ void gdn_recurrent_body(const Ten d, const Ten q, const Ten k, const Ten v, const Ten g,
                                   const Ten beta, const Ten st, float q_scale) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, wpb = blockDim.x >> 5;
    const i64 dk = q.n[0], hk = q.n[1], dv = v.n[0], hv = v.n[1], T = v.n[2], ns = v.n[3];
    const i64 j = (i64)blockIdx.x * wpb + warp;  // the value column this warp owns
    const i64 h = blockIdx.y, s = blockIdx.z;
    if (j >= dv) return;  // the whole warp leaves together
    const i64 kh = h / (hv / hk);

    float S[KPL];
#pragma unroll
    for (int u = 0; u < KPL; ++u) {
        const i64 x = lane + 32 * u;
        S[u] = x < dk ? load_f<DT_F32>(st.at(x, j, h, s)) : 0.0f;
    }
    float* out = (float*)d.p;
    for (i64 t = 0; t < T; ++t) {
        const float alpha = expf(load_f<DT_F32>(g.at(0, h, t, s)));
        const float b = load_f<DT_F32>(beta.at(0, h, t, s));
        float kv[KPL], qv[KPL];
        float m = 0.0f;
#pragma unroll
        for (int u = 0; u < KPL; ++u) {
            const i64 x = lane + 32 * u;
            kv[u] = x < dk ? load_f<DT_F32>(k.at(x, kh, t, s)) : 0.0f;
            qv[u] = x < dk ? load_f<DT_F32>(q.at(x, kh, t, s)) * q_scale : 0.0f;
            S[u] *= alpha;
            m += S[u] * kv[u];
        }
        m = warp_sum(m);
        const float delta = b * (load_f<DT_F32>(v.at(j, h, t, s)) - m);
        float o = 0.0f;
#pragma unroll
        for (int u = 0; u < KPL; ++u) {
            S[u] += kv[u] * delta;
            o += S[u] * qv[u];
        }
        o = warp_sum(o);
        if (lane == 0) out[((s * T + t) * hv + h) * dv + j] = o;
    }
    float* new_state = out + dv * hv * T * ns;
#pragma unroll
    for (int u = 0; u < KPL; ++u) {
        const i64 x = lane + 32 * u;
        if (x < dk) new_state[((s * hv + h) * dv + j) * dk + x] = S[u];
    }
}

#define GDN_REC(KPL)                                                                              \
    extern "C" __global__ void gdn_recurrent_k##KPL(TEN(d), TEN(q), TEN(k), TEN(v), TEN(g),      \
                                                    TEN(beta), TEN(st), float q_scale) {          \
        gdn_recurrent_body<KPL>(MKTEN(d), MKTEN(q), MKTEN(k), MKTEN(v), MKTEN(g), MKTEN(beta),   \
                                MKTEN(st), q_scale);                                              \
    }
GDN_REC(1)
GDN_REC(2)
GDN_REC(4)
GDN_REC(8)

#define GDN_C 64   // chunk length
#define GDN_CT 16  // value columns per block

extern "C" __global__ void __launch_bounds__(256)
    gdn_chunked_f32(TEN(d), TEN(q), TEN(k), TEN(v), TEN(g), TEN(beta), TEN(st), float q_scale) {
    extern __shared__ float sm[];
    const Ten D = MKTEN(d), Q = MKTEN(q), K = MKTEN(k), V = MKTEN(v), G = MKTEN(g),
              BT = MKTEN(beta), ST = MKTEN(st);
    const int dk = (int)Q.n[0], hk = (int)Q.n[1];
    const int dv = (int)V.n[0], hv = (int)V.n[1];
    const i64 T = V.n[2], ns = V.n[3];
    const int j0 = blockIdx.x * GDN_CT, h = blockIdx.y;
    const i64 s = blockIdx.z;
    const int kh = h / (hv / hk);
    const int C = GDN_C, CT = GDN_CT, ldk = dk + 1, ldc = GDN_C + 1;

    float* Kc = sm;                // [C][ldk]  keys of the chunk
    float* Qc = Kc + C * ldk;      // [C][ldk]  queries · q_scale
    float* L = Qc + C * ldk;       // [C][ldc]  strict lower β_i k_i·k_j Γ_ij
    float* M = L + C * ldc;        // [C][ldc]  lower (q_i·k_j) Γ_ij, diagonal included
    float* Sx = M + C * ldc;       // [dk][CT]  the state tile S[:, j0:j0+CT]
    float* KS = Sx + dk * CT;      // [C][CT]   K·S
    float* QS = KS + C * CT;       // [C][CT]   Q·S
    float* R = QS + C * CT;        // [C][CT]   V, then the right-hand side, then V_new
    float* gam = R + C * CT;       // [C]       γ (inclusive cumsum of g within the chunk)
    float* bet = gam + C;          // [C]       β
    float* wdec = bet + C;         // [C]       e^{γ_last − γ_i}

    const int tid = threadIdx.x, nt = blockDim.x;
    for (int e = tid; e < dk * CT; e += nt) {
        const int x = e % dk, jj = e / dk, j = j0 + jj;
        Sx[x * CT + jj] = j < dv ? load_f<DT_F32>(ST.at(x, j, h, s)) : 0.0f;
    }
    float* out = (float*)D.p;

    for (i64 c0 = 0; c0 < T; c0 += C) {
        const int nv = (int)(T - c0 < C ? T - c0 : C);
        __syncthreads();  // the previous chunk is done with every buffer
        for (int e = tid; e < C * dk; e += nt) {
            const int i = e / dk, x = e % dk;
            const bool ok = i < nv;
            Kc[i * ldk + x] = ok ? load_f<DT_F32>(K.at(x, kh, c0 + i, s)) : 0.0f;
            Qc[i * ldk + x] = ok ? load_f<DT_F32>(Q.at(x, kh, c0 + i, s)) * q_scale : 0.0f;
        }
        for (int e = tid; e < C * CT; e += nt) {
            const int i = e / CT, jj = e % CT, j = j0 + jj;
            R[e] = (i < nv && j < dv) ? load_f<DT_F32>(V.at(j, h, c0 + i, s)) : 0.0f;
        }
        for (int i = tid; i < C; i += nt) {
            gam[i] = i < nv ? load_f<DT_F32>(G.at(0, h, c0 + i, s)) : 0.0f;
            bet[i] = i < nv ? load_f<DT_F32>(BT.at(0, h, c0 + i, s)) : 0.0f;
        }
        __syncthreads();
        if (tid == 0) {
            float acc = 0.0f;
            for (int i = 0; i < C; ++i) {
                acc += gam[i];
                gam[i] = acc;
            }
        }
        __syncthreads();
        for (int i = tid; i < C; i += nt) wdec[i] = expf(gam[C - 1] - gam[i]);
        for (int e = tid; e < C * C; e += nt) {
            const int i = e / C, j = e % C;
            float lv = 0.0f, mv = 0.0f;
            if (i >= j) {
                const float* ki = Kc + i * ldk;
                const float* kj = Kc + j * ldk;
                const float* qi = Qc + i * ldk;
                float kk = 0.0f, qk = 0.0f;
                for (int x = 0; x < dk; ++x) {
                    kk += ki[x] * kj[x];
                    qk += qi[x] * kj[x];
                }
                const float decay = expf(gam[i] - gam[j]);  // i ≥ j: exponent ≤ 0 for g ≤ 0
                if (i > j) lv = bet[i] * kk * decay;
                mv = qk * decay;
            }
            L[i * ldc + j] = lv;
            M[i * ldc + j] = mv;
        }
        for (int e = tid; e < C * CT; e += nt) {
            const int i = e / CT, jj = e % CT;
            float a = 0.0f, b = 0.0f;
            for (int x = 0; x < dk; ++x) {
                const float sv = Sx[x * CT + jj];
                a += Kc[i * ldk + x] * sv;
                b += Qc[i * ldk + x] * sv;
            }
            KS[e] = a;
            QS[e] = b;
        }
        __syncthreads();
        for (int e = tid; e < C * CT; e += nt) {
            const int i = e / CT;
            R[e] = bet[i] * (R[e] - expf(gam[i]) * KS[e]);
        }
        __syncthreads();
        {   // forward substitution (I + L) V_new = R, row by row; 16 threads per column
            const int part = tid & 15, jj = tid >> 4;
            for (int i = 1; i < C; ++i) {
                float acc = 0.0f;
                for (int j = part; j < i; j += 16) acc += L[i * ldc + j] * R[j * CT + jj];
                acc += __shfl_xor_sync(0xffffffffu, acc, 8);
                acc += __shfl_xor_sync(0xffffffffu, acc, 4);
                acc += __shfl_xor_sync(0xffffffffu, acc, 2);
                acc += __shfl_xor_sync(0xffffffffu, acc, 1);
                if (part == 0) R[i * CT + jj] -= acc;
                __syncthreads();
            }
        }
        for (int e = tid; e < C * CT; e += nt) {
            const int i = e / CT, jj = e % CT, j = j0 + jj;
            float o = expf(gam[i]) * QS[e];
            for (int jn = 0; jn <= i; ++jn) o += M[i * ldc + jn] * R[jn * CT + jj];
            if (i < nv && j < dv) out[((s * T + c0 + i) * hv + h) * dv + j] = o;
        }
        const float glast = expf(gam[C - 1]);
        for (int e = tid; e < dk * CT; e += nt) {
            const int x = e / CT, jj = e % CT;
            float a = glast * Sx[e];
            for (int i = 0; i < C; ++i) a += Kc[i * ldk + x] * wdec[i] * R[i * CT + jj];
            Sx[e] = a;
        }
    }
    __syncthreads();
    float* new_state = out + (i64)dv * hv * T * ns;
    for (int e = tid; e < dk * CT; e += nt) {
        const int x = e % dk, jj = e / dk, j = j0 + jj;
        if (j < dv) new_state[((s * hv + h) * dv + j) * dk + x] = Sx[x * CT + jj];
    }
}
