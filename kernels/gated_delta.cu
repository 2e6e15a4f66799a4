// gated_delta.cu — the gated delta rule (ggml GATED_DELTA_NET), fp32 state, two forms.
//
// What (gdn-reference §2): per sequence s and value head h, with key head κ = h / (H_v/H_k),
// state S ∈ R^{dk×dv} (rows = key dims), q̂ = q·q_scale (q_scale = 1/sqrt(dk)), per token t:
//     S ← e^{g_t}·S;   δ = β_t·(v_t − Sᵀk_t);   S ← S + k_t δᵀ;   o_t = Sᵀq̂_t
// (q and k arrive already L2-normalised by the graph).
//
//   gdn_recurrent_{v,s}{NV}[_l{LPC}]
//                             the recurrent form, token by token (decode; any T).
//   gdn_chunk_{prep,state,out}_d{DKP}[_tf32]
//                             the chunked WY/UT form (prefill; any T ≥ 1), chunk c = 64, three
//                             kernels launched in this order on the node's stream (below).
//   gdn_chunked_f32           the chunked form in one FFMA kernel, for head sizes 129…256.
//
// Shape legend (ggml ne, fastest first; byte strides, any views):
//   q, k   [dk, H_k, T, n_seq]        v  [dv, H_v, T, n_seq]
//   g, β   [1, H_v, T, n_seq]         state [dk, dv, H_v, n_seq]  (ne0 = key index: S[key][value])
//   dst    contiguous f32: the outputs o[dv, H_v, T, n_seq], then the new states
//          [dk, dv, H_v, n_seq] — LACE's packed GATED_DELTA_NET result (numpy_arena's layout).
//
// Launch, recurrent (decode):
// _v: eight lanes own one value column j (the columns of S are independent): lane l of the
// group holds keys 4(l + 8u) … 4(l + 8u) + 3 for u < NV (dk ≤ 32·NV), so each of its NV loads
// of the state column is one 16-byte piece and the group's eight pieces are 128 contiguous
// bytes. A warp holds 4 columns, a block of 128 threads 16; the state is read once and written
// once, all of a thread's loads (state, k, q) in flight together. Sᵀk and Sᵀq are sums over the
// group (3 shuffles). Needs 16-byte aligned state and q/k rows with unit key stride, dk a
// multiple of 4 and a 16-byte aligned new-state region (the lowering checks).
//   grid = (ceil(dv / 16), H_v, n_seq), blockDim.x = 128.
// _s: any strides, per-element accesses, a warp per column (dk ≤ 128·NV):
//   grid = (ceil(dv / 4), H_v, n_seq), blockDim.x = 128.
//
// Launch, chunked (prefill):
// Per chunk of c = 64 tokens (gdn-reference §2.2), γ = within-chunk cumsum of g, Γ_ij =
// e^{γ_i−γ_j} for i ≥ j (masked BEFORE the exponential), L = strict_lower(β_i k̂_i·k̂_j Γ_ij),
// 𝒯 = (I + L)⁻¹, U = 𝒯 diag(β) V, Wm = 𝒯 diag(β e^γ) K̂, then sequentially over chunks
//   V_new = U − Wm S,   S ← e^{γ_last} S + K̂ᵀ diag(e^{γ_last−γ}) V_new,
// and in parallel again O = diag(e^γ) Q̂ S_chunk + ((Q̂K̂ᵀ) ⊙ Γ) V_new. The tail chunk is
// zero-padded (g = β = 0, k = v = 0), which changes nothing; strong decay underflows e^γ to 0
// and never forms e^{+large}.
//   prep  grid (NC, H_v, n_seq): γ; K̂K̂ᵀ → L; 𝒯 by blocked forward substitution (four 16×16
//         diagonal blocks in registers, then three block rows) in FFMA; Wm and U = 𝒯·(…) on
//         tensor cores. Writes γ, Wm and U to the node's scratch.
//   state grid (DVP/64, H_v, n_seq): one block owns 64 value columns of one state for the whole
//         prompt, the tile held in registers; per chunk V_new = U − Wm S (written over U) and
//         the state update, Wm/U of the next chunk and K̂ of this one streamed in with cp.async
//         behind the math. Writes the state entering every chunk (for `out`) and the final
//         state into dst.
//   out   grid (NC, H_v, n_seq): Q̂K̂ᵀ ⊙ Γ, then per 64 value columns the output rows.
//   blockDim.x = 256 for all three; dynamic shared memory as `gdn_chunk_shared_bytes` in
//   lowering.py computes it (prep ≈ 108 KB, state ≈ 141 KB, out ≈ 107 KB at DKP = 128; the
//   caller raises each function's limit). DKP ∈ {32, 64, 128} is dk rounded up (zero-padded).
// Scratch (float32, the node's own region outside the arena, laid out by the lowering):
//   gam [n_seq][H_v][NC][64], wm [..][64][DKP], u [..][64][DVP] (V_new after `state`),
//   states [..][DKP][DVP], with NC = ceil(T/64) and DVP = dv rounded up to 64.
// Products run on the tensor cores (mma.sync m16n8k8 TF32, f32 accumulation). Each operand is
// split into a TF32 value and a TF32 remainder, x = hi + lo, and A·B = A_lo B_hi + A_hi B_lo +
// A_hi B_hi ("3xTF32", NP = 3): the dropped A_lo B_lo term is 2⁻²² relative, so the result is
// fp32-accurate (gdn-reference §5.4's 1e-5 gate). NP = 1 (the _tf32 kernels) uses A_hi B_hi
// only: TF32 accuracy (≈1e-3, §5.4's 5e-3 gate), three times fewer tensor-core operations.
#include "common.cuh"

// ================================================================ recurrent form
template <int NV, int LPC, bool VEC>
__device__ __forceinline__ void gdn_rec_load(float (&x)[NV][4], const Ten& t, i64 i1, i64 i2,
                                             i64 i3, int sub, i64 n0, float scale) {
    const char* row = t.at(0, i1, i2, i3);
#pragma unroll
    for (int u = 0; u < NV; ++u) {
        const i64 x0 = 4 * (sub + LPC * u);
        if (VEC) {
            F4 f = F4{0.0f, 0.0f, 0.0f, 0.0f};
            if (x0 < n0) f = *(const F4*)(row + 4 * x0);
            x[u][0] = f.x * scale;
            x[u][1] = f.y * scale;
            x[u][2] = f.z * scale;
            x[u][3] = f.w * scale;
        } else {
#pragma unroll
            for (int e = 0; e < 4; ++e)
                x[u][e] = x0 + e < n0 ? load_f<DT_F32>(row + (x0 + e) * t.b[0]) * scale : 0.0f;
        }
    }
}

template <int LPC>
__device__ __forceinline__ float group_sum(float v) {
#pragma unroll
    for (int o = LPC / 2; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}

// LPC lanes per value column, NV 4-key pieces per lane (dk ≤ 4·LPC·NV).
template <int NV, int LPC, bool VEC>
__device__ __forceinline__ void gdn_recurrent_body(const Ten d, const Ten q, const Ten k,
                                                   const Ten v, const Ten g, const Ten beta,
                                                   const Ten st, float q_scale) {
    const int sub = threadIdx.x & (LPC - 1);
    const i64 dk = q.n[0], hk = q.n[1], dv = v.n[0], hv = v.n[1], T = v.n[2], ns = v.n[3];
    const i64 j = (i64)blockIdx.x * (blockDim.x / LPC) + threadIdx.x / LPC;  // this group's column
    const i64 h = blockIdx.y, s = blockIdx.z;
    const bool live = j < dv;
    const i64 jc = live ? j : 0;  // a group past dv computes on column 0 and stores nothing
    const i64 kh = h / (hv / hk);

    float S[NV][4];
    gdn_rec_load<NV, LPC, VEC>(S, st, jc, h, s, sub, dk, 1.0f);
    float* out = (float*)d.p;
    for (i64 t = 0; t < T; ++t) {
        float kv[NV][4], qv[NV][4];
        gdn_rec_load<NV, LPC, VEC>(kv, k, kh, t, s, sub, dk, 1.0f);
        if (VEC) gdn_rec_load<NV, LPC, VEC>(qv, q, kh, t, s, sub, dk, q_scale);  // all in flight
        const float alpha = expf(load_f<DT_F32>(g.at(0, h, t, s)));
        const float b = load_f<DT_F32>(beta.at(0, h, t, s));
        const float vj = load_f<DT_F32>(v.at(jc, h, t, s));
        float m = 0.0f;
#pragma unroll
        for (int u = 0; u < NV; ++u)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                S[u][e] *= alpha;
                m += S[u][e] * kv[u][e];
            }
        m = group_sum<LPC>(m);
        const float delta = b * (vj - m);
        if (!VEC) gdn_rec_load<NV, LPC, VEC>(qv, q, kh, t, s, sub, dk, q_scale);  // fewer registers
        float o = 0.0f;
#pragma unroll
        for (int u = 0; u < NV; ++u)
#pragma unroll
            for (int e = 0; e < 4; ++e) {
                S[u][e] += kv[u][e] * delta;
                o += S[u][e] * qv[u][e];
            }
        o = group_sum<LPC>(o);
        if (live && sub == 0) out[((s * T + t) * hv + h) * dv + j] = o;
    }
    if (!live) return;
    float* col = out + dv * hv * T * ns + ((s * hv + h) * dv + j) * dk;
#pragma unroll
    for (int u = 0; u < NV; ++u) {
        const i64 x0 = 4 * (sub + LPC * u);
        if (VEC) {
            if (x0 < dk) *(F4*)(col + x0) = F4{S[u][0], S[u][1], S[u][2], S[u][3]};
        } else {
#pragma unroll
            for (int e = 0; e < 4; ++e)
                if (x0 + e < dk) col[x0 + e] = S[u][e];
        }
    }
}

// _v: 8 lanes per column, 16-byte accesses; _s: a warp per column, per element.
#define GDN_REC(NV)                                                                               \
    extern "C" __global__ void __launch_bounds__(128, 4)                                          \
        gdn_recurrent_v##NV(TEN(d), TEN(q), TEN(k), TEN(v), TEN(g), TEN(beta), TEN(st),           \
                            float q_scale) {                                                      \
        gdn_recurrent_body<NV, 8, true>(MKTEN(d), MKTEN(q), MKTEN(k), MKTEN(v), MKTEN(g),         \
                                        MKTEN(beta), MKTEN(st), q_scale);                         \
    }
#define GDN_REC_S(NV)                                                                             \
    extern "C" __global__ void __launch_bounds__(128, 4)                                          \
        gdn_recurrent_s##NV(TEN(d), TEN(q), TEN(k), TEN(v), TEN(g), TEN(beta), TEN(st),           \
                            float q_scale) {                                                      \
        gdn_recurrent_body<NV, 32, false>(MKTEN(d), MKTEN(q), MKTEN(k), MKTEN(v), MKTEN(g),       \
                                          MKTEN(beta), MKTEN(st), q_scale);                       \
    }
// _v{NV}_l{LPC}: as _v with 16 or 32 lanes per column (16-byte accesses): more, smaller blocks
// for small batches; grid = (ceil(dv / (128 / LPC)), H_v, n_seq), blockDim.x = 128.
#define GDN_REC_L(NV, LPC)                                                                        \
    extern "C" __global__ void __launch_bounds__(128, 4)                                          \
        gdn_recurrent_v##NV##_l##LPC(TEN(d), TEN(q), TEN(k), TEN(v), TEN(g), TEN(beta), TEN(st),  \
                                     float q_scale) {                                             \
        gdn_recurrent_body<NV, LPC, true>(MKTEN(d), MKTEN(q), MKTEN(k), MKTEN(v), MKTEN(g),       \
                                          MKTEN(beta), MKTEN(st), q_scale);                       \
    }
GDN_REC(1)
GDN_REC(2)
GDN_REC(4)
GDN_REC(8)
GDN_REC_L(1, 16)
GDN_REC_L(2, 16)
GDN_REC_L(4, 16)
GDN_REC_L(1, 32)
GDN_REC_L(2, 32)
GDN_REC_S(1)
GDN_REC_S(2)

// ================================================================ tensor-core helpers
// A float rounded to TF32 (nearest, ties away: the rounding of cvt.rna.tf32.f32) as f32 bits
// whose low 13 bits are zero, so x − hi is exact in f32. Integer arithmetic, identical on the
// device and in the CPU emulation.
__device__ __forceinline__ u32 tf32_bits(float x) {
    return (__float_as_uint(x) + 0x1000u) & 0xffffe000u;
}

struct FragA {  // 16×8 A fragment: a0 (g, t) a1 (g+8, t) a2 (g, t+4) a3 (g+8, t+4)
    u32 hi[4], lo[4];
};
struct FragB {  // 8×8 B fragment: b0 (k t, n g) b1 (k t+4, n g)
    u32 hi[2], lo[2];
};

template <int NP>
__device__ __forceinline__ void tf32_split(float x, u32& hi, u32& lo) {
    hi = tf32_bits(x);
    if (NP == 3) lo = tf32_bits(x - __uint_as_float(hi));
}

// D = A·B + D for one m16n8k8 TF32 tile (f32 accumulation).
__device__ __forceinline__ void mma_tf32(float (&c)[4], const u32 (&a)[4], const u32 (&b)[2]) {
#if defined(__CUDA_ARCH__)
    asm("mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 {%0, %1, %2, %3}, {%4, %5, %6, %7}, "
        "{%8, %9}, {%0, %1, %2, %3};"
        : "+f"(c[0]), "+f"(c[1]), "+f"(c[2]), "+f"(c[3])
        : "r"(a[0]), "r"(a[1]), "r"(a[2]), "r"(a[3]), "r"(b[0]), "r"(b[1]));
#elif defined(LACE_CUDA_EMU)
    emu_mma_m16n8k8_tf32(c, a, b);
#endif
}

template <int NP>
__device__ __forceinline__ void mma_acc(float (&c)[4], const FragA& a, const FragB& b) {
    if (NP == 3) {  // the small cross terms first, then the main product
        mma_tf32(c, a.lo, b.hi);
        mma_tf32(c, a.hi, b.lo);
    }
    mma_tf32(c, a.hi, b.hi);
}

// A(m, k) = X[(m0 + m)·ld + k0 + k] (X row-major), times sc[k0 + k] when sc is given.
template <int NP>
__device__ __forceinline__ void ld_a(FragA& f, const float* X, int ld, int m0, int k0,
                                     const float* sc) {
    const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const float* p = X + (m0 + g) * ld + k0 + t;
    float v0 = p[0], v1 = p[8 * ld], v2 = p[4], v3 = p[8 * ld + 4];
    if (sc) {
        const float s0 = sc[k0 + t], s1 = sc[k0 + t + 4];
        v0 *= s0;
        v1 *= s0;
        v2 *= s1;
        v3 *= s1;
    }
    tf32_split<NP>(v0, f.hi[0], f.lo[0]);
    tf32_split<NP>(v1, f.hi[1], f.lo[1]);
    tf32_split<NP>(v2, f.hi[2], f.lo[2]);
    tf32_split<NP>(v3, f.hi[3], f.lo[3]);
}
// A(m, k) = X[(k0 + k)·ld + m0 + m] (X holds Aᵀ row-major).
template <int NP>
__device__ __forceinline__ void ld_at(FragA& f, const float* X, int ld, int m0, int k0) {
    const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const float* p = X + (k0 + t) * ld + m0 + g;
    tf32_split<NP>(p[0], f.hi[0], f.lo[0]);
    tf32_split<NP>(p[8], f.hi[1], f.lo[1]);
    tf32_split<NP>(p[4 * ld], f.hi[2], f.lo[2]);
    tf32_split<NP>(p[4 * ld + 8], f.hi[3], f.lo[3]);
}
// B(k, n) = X[(k0 + k)·ld + n0 + n] (X row-major K×N).
template <int NP>
__device__ __forceinline__ void ld_b_kn(FragB& f, const float* X, int ld, int k0, int n0) {
    const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const float* p = X + (k0 + t) * ld + n0 + g;
    tf32_split<NP>(p[0], f.hi[0], f.lo[0]);
    tf32_split<NP>(p[4 * ld], f.hi[1], f.lo[1]);
}
// B(k, n) = Y[(n0 + n)·ld + k0 + k] (Y row-major N×K: the product X·Yᵀ).
template <int NP>
__device__ __forceinline__ void ld_b_nk(FragB& f, const float* Y, int ld, int k0, int n0) {
    const int lane = threadIdx.x & 31, g = lane >> 2, t = lane & 3;
    const float* p = Y + (n0 + g) * ld + k0 + t;
    tf32_split<NP>(p[0], f.hi[0], f.lo[0]);
    tf32_split<NP>(p[4], f.hi[1], f.lo[1]);
}
// Shared-memory leading dimensions: X[m][k] read as A or Y[n][k] read as B need ld ≡ 4 (mod 32)
// (lanes hit banks 4g + t), X[k][n] read as B or Aᵀ need ld ≡ 8 (mod 32) (banks 8t + g).

// The two 16-row m-tiles of a "pair" (of a 64-row product): {0, 3} or {1, 2}, so that a
// lower-triangular product (m-tile I needs k < 16(I+1)) gives every pair the same work.
__device__ __forceinline__ int pair_tile(int pair, int which) {
    return which == 0 ? pair : 3 - pair;
}

// acc[mi][ni] += A·B over the warp's pair of m-tiles and NW n8-tiles from column n0. A is
// X[m][k] (lda, columns scaled by sc when given), B is X[k][n] (ldb). TRI: m-tile I stops at
// k = 16(I + 1) (A lower block-triangular); else k runs to kdim.
template <int NP, int NW, bool TRI>
__device__ __forceinline__ void gemm_pair(float (&acc)[2][NW][4], const float* A, int lda,
                                          const float* sc, const float* B, int ldb, int kdim,
                                          int pair, int n0) {
    const int m0 = pair_tile(pair, 0), m1 = pair_tile(pair, 1);  // m0 < m1
    const int kend0 = TRI ? 16 * (m0 + 1) : kdim, kend1 = TRI ? 16 * (m1 + 1) : kdim;
#pragma unroll 2
    for (int k0 = 0; k0 < kend1; k0 += 8) {
        FragB b[NW];
#pragma unroll
        for (int ni = 0; ni < NW; ++ni) ld_b_kn<NP>(b[ni], B, ldb, k0, n0 + 8 * ni);
        if (k0 < kend0) {
            FragA a;
            ld_a<NP>(a, A, lda, 16 * m0, k0, sc);
#pragma unroll
            for (int ni = 0; ni < NW; ++ni) mma_acc<NP>(acc[0][ni], a, b[ni]);
        }
        FragA a;
        ld_a<NP>(a, A, lda, 16 * m1, k0, sc);
#pragma unroll
        for (int ni = 0; ni < NW; ++ni) mma_acc<NP>(acc[1][ni], a, b[ni]);
    }
}

// The 20 (m-tile I, n8-tile) pairs of a 64×64 product's lower 16-blocks (n8-tile ≤ 2I + 1).
__device__ __forceinline__ void lower_tile(int tau, int& mt, int& nt) {
    mt = tau < 2 ? 0 : tau < 6 ? 1 : tau < 12 ? 2 : 3;
    nt = tau - mt * (mt + 1);
}

// acc[q] = X[i]·Y[j] over the lower 16-blocks of a 64×64 product (X, Y row-major [64][ld],
// K = kdim): the warp takes lower tiles w, w + 8, w + 16.
template <int NP>
__device__ __forceinline__ void gemm_lower_xyt(float (&acc)[3][4], const float* X,
                                               const float* Y, int ld, int kdim) {
    const int warp = threadIdx.x >> 5;
#pragma unroll 2
    for (int k0 = 0; k0 < kdim; k0 += 8) {
#pragma unroll
        for (int q = 0; q < 3; ++q) {
            const int tau = warp + 8 * q;
            if (tau < 20) {
                int mt, nt;
                lower_tile(tau, mt, nt);
                FragA a;
                FragB b;
                ld_a<NP>(a, X, ld, 16 * mt, k0, nullptr);
                ld_b_nk<NP>(b, Y, ld, k0, 8 * nt);
                mma_acc<NP>(acc[q], a, b);
            }
        }
    }
}

// ---------------------------------------------------------------- asynchronous copies
__device__ __forceinline__ u32 smem_addr(const void* p) {
#if defined(__CUDA_ARCH__)
    u32 a;
    asm("{ .reg .u64 t; cvta.to.shared.u64 t, %1; cvt.u32.u64 %0, t; }" : "=r"(a) : "l"(p));
    return a;
#else
    return 0;
#endif
}
// 16 bytes global → shared, asynchronously (both 16-byte aligned).
__device__ __forceinline__ void cp16(void* dst, const void* src) {
#if defined(__CUDA_ARCH__)
    asm volatile("cp.async.cg.shared.global [%0], [%1], 16;" ::"r"(smem_addr(dst)), "l"(src)
                 : "memory");
#else
    *(U4*)dst = *(const U4*)src;
#endif
}
__device__ __forceinline__ void cp_commit() {
#if defined(__CUDA_ARCH__)
    asm volatile("cp.async.commit_group;" ::: "memory");
#endif
}
template <int N>
__device__ __forceinline__ void cp_wait() {
#if defined(__CUDA_ARCH__)
    asm volatile("cp.async.wait_group %0;" ::"n"(N) : "memory");
#endif
}

// A tensor whose rows (ne0) are contiguous and 16-byte aligned at every ne1/ne2/ne3 position.
__device__ __forceinline__ bool rows16(const Ten& X) {
    return X.b[0] == 4 && ((((u64)X.p) | (u64)X.b[1] | (u64)X.b[2] | (u64)X.b[3]) & 15) == 0;
}

// dst[i·ld + x] = X(x0 + x, head, c0 + i, s) for the 64 rows of a chunk and x < W (W a multiple
// of 4), zero past the prompt (i ≥ nv) or past the row (x0 + x ≥ ncol). 16-byte cp.async
// pieces when `vec`, else per element (the caller commits and waits).
__device__ __forceinline__ void load_rows(float* dst, int ld, int W, const Ten& X, i64 x0,
                                          i64 ncol, i64 head, i64 c0, int nv, i64 s, bool vec) {
    const int pieces = W >> 2;
    for (int p = threadIdx.x; p < 64 * pieces; p += blockDim.x) {
        const int i = p / pieces, x = 4 * (p - i * pieces);
        float* out = dst + i * ld + x;
        if (vec && i < nv && x0 + x + 4 <= ncol) {
            cp16(out, X.at(x0 + x, head, c0 + i, s));
            continue;
        }
#pragma unroll
        for (int e = 0; e < 4; ++e)
            out[e] = (i < nv && x0 + x + e < ncol) ? load_f<DT_F32>(X.at(x0 + x + e, head, c0 + i, s))
                                                   : 0.0f;
    }
}
// dst[r·ld + x] = src[r·src_ld + x] for r < rows, x < W (scratch: 16-byte aligned, W % 4 == 0).
__device__ __forceinline__ void copy_rows(float* dst, int ld, const float* src, i64 src_ld,
                                          int rows, int W) {
    const int pieces = W >> 2;
    for (int p = threadIdx.x; p < rows * pieces; p += blockDim.x) {
        const int r = p / pieces, x = 4 * (p - r * pieces);
        cp16(dst + r * ld + x, src + r * src_ld + x);
    }
}

// ================================================================ chunked form
#define GDN_C 64  // chunk length (tokens)
#define GDN_LDT 68  // leading dimension of the 64×64 matrices L, 𝒯, Q̂K̂ᵀ⊙Γ (≡ 4 mod 32)
#define GDN_LDV 72  // leading dimension of 64-column tiles read as [k][n] (≡ 8 mod 32)
#define GDN_LDZ 52  // the solve's block-row scratch (16 × 48)

// ---------------------------------------------------------------- prep: γ, L, 𝒯, Wm, U
template <int DKP, int NP>
__device__ __forceinline__ void gdn_chunk_prep(const Ten K, const Ten V, const Ten G, const Ten B,
                                               float* gam_o, float* wm_o, float* u_o, int dvp) {
    constexpr int LDK = DKP + 4, LDX = DKP + 8, LDT = GDN_LDT;
    constexpr int R1 = 64 * LDK > 2 * 64 * LDT ? 64 * LDK : 2 * 64 * LDT;
    constexpr int NW = DKP / 32;  // n8-tiles per warp of the 64×DKP products
    extern __shared__ float sm[];
    float* Kb = sm;              // K̂ [i][x] (A and B of K̂K̂ᵀ) …
    float* Lm = sm;              // … then L [i][j] (strict lower 16-blocks)
    float* Tm = sm + 64 * LDT;   // … and 𝒯 [i][j] (lower 16-blocks, unit diagonal)
    float* Xb = sm + R1;         // K̂ [i][x] as the [k][n] operand of Wm
    float* Vb = Xb + 64 * LDX;   // a DKP-column tile of V [i][j]
    float* Zb = Vb + 64 * LDX;   // 16 × 48 block-row scratch of the solve
    float* gam = Zb + 16 * GDN_LDZ;
    float* bet = gam + GDN_C;
    float* sk = bet + GDN_C;     // β e^γ

    const int dk = (int)K.n[0], hk = (int)K.n[1], dv = (int)V.n[0], hv = (int)V.n[1];
    const i64 T = K.n[2], s = blockIdx.z;
    const int n = blockIdx.x, h = blockIdx.y, nc = gridDim.x, kh = h / (hv / hk);
    const i64 c0 = (i64)n * GDN_C;
    const int nv = (int)(T - c0 < GDN_C ? T - c0 : GDN_C);
    const i64 blk = ((s * hv + h) * nc + n);  // this (sequence, head, chunk)
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;

    const bool kvec = rows16(K), vvec = rows16(V);
    load_rows(Kb, LDK, DKP, K, 0, dk, kh, c0, nv, s, kvec);
    load_rows(Xb, LDX, DKP, K, 0, dk, kh, c0, nv, s, kvec);
    load_rows(Vb, LDX, DKP, V, 0, dv, h, c0, nv, s, vvec);
    cp_commit();
    if (warp == 0) {  // γ = inclusive cumsum of g over the chunk (two tokens per lane), and β
        const int i0 = 2 * lane;
        const float a = i0 < nv ? load_f<DT_F32>(G.at(0, h, c0 + i0, s)) : 0.0f;
        const float b = i0 + 1 < nv ? load_f<DT_F32>(G.at(0, h, c0 + i0 + 1, s)) : 0.0f;
        float incl = a + b;
#pragma unroll
        for (int o = 1; o < 32; o <<= 1) {
            const float y = __shfl_up_sync(0xffffffffu, incl, o);
            if (lane >= o) incl += y;
        }
        float before = __shfl_up_sync(0xffffffffu, incl, 1);
        if (lane == 0) before = 0.0f;
        gam[i0] = before + a;
        gam[i0 + 1] = (before + a) + b;
        bet[i0] = i0 < nv ? load_f<DT_F32>(B.at(0, h, c0 + i0, s)) : 0.0f;
        bet[i0 + 1] = i0 + 1 < nv ? load_f<DT_F32>(B.at(0, h, c0 + i0 + 1, s)) : 0.0f;
    }
    cp_wait<0>();
    __syncthreads();
    if (tid < GDN_C) {
        sk[tid] = bet[tid] * expf(gam[tid]);
        gam_o[blk * GDN_C + tid] = gam[tid];
    }

    // K̂K̂ᵀ on the lower 16-blocks, then L_ij = β_i (k̂_i·k̂_j) e^{γ_i−γ_j} for i > j.
    float kk[3][4] = {};
    gemm_lower_xyt<NP>(kk, Kb, Kb, LDK, DKP);
    __syncthreads();  // Kb is dead: L and 𝒯 take its place
#pragma unroll
    for (int q = 0; q < 3; ++q) {
        const int tau = warp + 8 * q;
        if (tau >= 20) continue;
        int mt, nt;
        lower_tile(tau, mt, nt);
#pragma unroll
        for (int r = 0; r < 4; ++r) {
            const int i = 16 * mt + g + 8 * (r >> 1), j = 8 * nt + 2 * t + (r & 1);
            Lm[i * LDT + j] = i > j ? bet[i] * kk[q][r] * expf(gam[i] - gam[j]) : 0.0f;
        }
    }
    __syncthreads();

    // 𝒯 = (I + L)⁻¹. Diagonal 16-blocks: one thread per (block, column), forward substitution
    // in registers (x_r = δ_rc − Σ_{m<r} L_rm x_m; zero above the diagonal, one on it).
    if (tid < 64) {
        const int I = tid >> 4, c = tid & 15;
        const float* L0 = Lm + 16 * I * LDT + 16 * I;
        float x[16];
#pragma unroll
        for (int r = 0; r < 16; ++r) {
            float v = r == c ? 1.0f : 0.0f;
#pragma unroll
            for (int m = 0; m < r; ++m) v -= L0[r * LDT + m] * x[m];
            x[r] = v;
        }
#pragma unroll
        for (int r = 0; r < 16; ++r) Tm[(16 * I + r) * LDT + 16 * I + c] = x[r];
    }
    __syncthreads();
    // Block rows I = 1…3: 𝒯_{I,c} = −𝒯_II Σ_{J<I} L_IJ 𝒯_{J,c} for the columns c < 16I (𝒯 is zero
    // above its diagonal blocks, which are never read).
    for (int I = 1; I < 4; ++I) {
        const int w = 16 * I;
        for (int e = tid; e < 16 * w; e += blockDim.x) {
            const int r = e / w, c = e - r * w;
            const float* Lr = Lm + (w + r) * LDT;
            float z = 0.0f;
            for (int m = c & ~15; m < w; ++m) z += Lr[m] * Tm[m * LDT + c];
            Zb[r * GDN_LDZ + c] = z;
        }
        __syncthreads();
        for (int e = tid; e < 16 * w; e += blockDim.x) {
            const int r = e / w, c = e - r * w;
            const float* Tr = Tm + (w + r) * LDT + w;
            float z = Zb[r * GDN_LDZ + c];
            for (int m = 0; m < r; ++m) z += Tr[m] * Zb[m * GDN_LDZ + c];
            Tm[(w + r) * LDT + c] = -z;
        }
        __syncthreads();
    }

    // Wm = 𝒯 diag(β e^γ) K̂ and U = 𝒯 diag(β) V (DKP columns at a time), lower-triangular A.
    const int pair = warp & 1, n0 = (warp >> 1) * 8 * NW;
    {
        float acc[2][NW][4] = {};
        gemm_pair<NP, NW, true>(acc, Tm, LDT, sk, Xb, LDX, GDN_C, pair, n0);
        float* w = wm_o + blk * GDN_C * DKP;
#pragma unroll
        for (int mi = 0; mi < 2; ++mi)
#pragma unroll
            for (int ni = 0; ni < NW; ++ni)
#pragma unroll
                for (int hr = 0; hr < 2; ++hr) {
                    const int i = 16 * pair_tile(pair, mi) + g + 8 * hr, x = n0 + 8 * ni + 2 * t;
                    w[i * DKP + x] = acc[mi][ni][2 * hr];
                    w[i * DKP + x + 1] = acc[mi][ni][2 * hr + 1];
                }
    }
    for (int v0 = 0; v0 < dvp; v0 += DKP) {
        if (v0 > 0) {
            __syncthreads();  // every warp is done with the previous tile
            load_rows(Vb, LDX, DKP, V, v0, dv, h, c0, nv, s, vvec);
            cp_commit();
            cp_wait<0>();
            __syncthreads();
        }
        float acc[2][NW][4] = {};
        gemm_pair<NP, NW, true>(acc, Tm, LDT, bet, Vb, LDX, GDN_C, pair, n0);
        float* u = u_o + blk * GDN_C * dvp;
#pragma unroll
        for (int mi = 0; mi < 2; ++mi)
#pragma unroll
            for (int ni = 0; ni < NW; ++ni)
#pragma unroll
                for (int hr = 0; hr < 2; ++hr) {
                    const int i = 16 * pair_tile(pair, mi) + g + 8 * hr;
                    const int x = v0 + n0 + 8 * ni + 2 * t;
                    if (x < dvp) {  // dvp is a multiple of 64, so x + 1 < dvp too
                        u[i * dvp + x] = acc[mi][ni][2 * hr];
                        u[i * dvp + x + 1] = acc[mi][ni][2 * hr + 1];
                    }
                }
    }
}

// ---------------------------------------------------------------- state: the pass over chunks
template <int DKP, int NP>
__device__ __forceinline__ void gdn_chunk_state(const Ten D, const Ten K, const Ten ST,
                                                const float* gam_i, const float* wm_i,
                                                float* u_io, float* states_o, int dvp) {
    constexpr int LDK = DKP + 4, LDX = DKP + 8, LDV = GDN_LDV;
    constexpr int MT3 = DKP / 16;      // m-tiles of the state update (rows = keys)
    constexpr int NT3 = DKP / 16;      // its n8-tiles per warp: 8 warps cover MT3 × 8 tiles
    extern __shared__ float sm[];
    float* Wb = sm;                  // Wm of the chunk [i][x]
    float* Kb = Wb + 64 * LDK;       // K̂ of the chunk [i][x] (read as K̂ᵀ)
    float* Sb = Kb + 64 * LDX;       // the state tile [x][j]
    float* Vw = Sb + DKP * LDV;      // e^{γ_last−γ_i} V_new [i][j]
    float* Ub = Vw + 64 * LDV;       // U tile [i][j]
    float* gb = Ub + 64 * LDV;       // γ of chunks n (even/odd buffer)

    const int dk = (int)K.n[0], hk = (int)K.n[1];
    const int dv = (int)ST.n[1], hv = (int)ST.n[2];
    const i64 T = K.n[2], ns = ST.n[3], s = blockIdx.z;
    const int h = blockIdx.y, v0 = 64 * blockIdx.x, kh = h / (hv / hk);
    const int nc = (int)((T + GDN_C - 1) / GDN_C);
    const i64 head = (s * hv + h) * nc;  // (sequence, head, chunk 0)
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
    const int mt = warp % MT3, nb = (warp / MT3) * NT3 * 8;  // state-update tiles of this warp
    const int pair = warp & 1, n0 = (warp >> 1) * 16;          // V_new tiles of this warp
    const bool kvec = rows16(K);

    // The state tile, rows x = keys, columns j = v0 + jl, in the update's accumulator layout.
    float S[NT3][4];
#pragma unroll
    for (int ni = 0; ni < NT3; ++ni)
#pragma unroll
        for (int r = 0; r < 4; ++r) {
            const int x = 16 * mt + g + 8 * (r >> 1), j = v0 + nb + 8 * ni + 2 * t + (r & 1);
            S[ni][r] = (x < dk && j < dv) ? load_f<DT_F32>(ST.at(x, j, h, s)) : 0.0f;
        }
    auto keep_state = [&](int chunk) {  // S → Sb, and the state entering `chunk` → states
        float* st = states_o + (head + chunk) * DKP * dvp;
#pragma unroll
        for (int ni = 0; ni < NT3; ++ni)
#pragma unroll
            for (int r = 0; r < 4; ++r) {
                const int x = 16 * mt + g + 8 * (r >> 1), jl = nb + 8 * ni + 2 * t + (r & 1);
                Sb[x * LDV + jl] = S[ni][r];
                if (chunk < nc) st[x * dvp + v0 + jl] = S[ni][r];
            }
    };
    auto fetch_wu = [&](int chunk) {  // Wm, the U tile and γ of `chunk` (one cp.async group)
        copy_rows(Wb, LDK, wm_i + (head + chunk) * GDN_C * DKP, DKP, GDN_C, DKP);
        copy_rows(Ub, LDV, u_io + (head + chunk) * GDN_C * dvp + v0, dvp, GDN_C, 64);
        copy_rows(gb + (chunk & 1) * GDN_C, GDN_C, gam_i + (head + chunk) * GDN_C, GDN_C, 1,
                  GDN_C);
    };
    keep_state(0);
    fetch_wu(0);
    cp_commit();
    for (int n = 0; n < nc; ++n) {
        const i64 c0 = (i64)n * GDN_C;
        const int nv = (int)(T - c0 < GDN_C ? T - c0 : GDN_C);
        load_rows(Kb, LDX, DKP, K, 0, dk, kh, c0, nv, s, kvec);
        cp_commit();
        cp_wait<1>();  // this chunk's Wm, U, γ (K̂ may still be in flight)
        __syncthreads();
        const float* gc = gb + (n & 1) * GDN_C;
        const float glast = gc[GDN_C - 1];

        // V_new = U − Wm S → u (in place) and, decayed to the chunk end, → Vw
        float P[2][2][4] = {};
        gemm_pair<NP, 2, false>(P, Wb, LDK, nullptr, Sb, LDV, DKP, pair, n0);
        float* un = u_io + (head + n) * GDN_C * dvp + v0;
#pragma unroll
        for (int mi = 0; mi < 2; ++mi)
#pragma unroll
            for (int hr = 0; hr < 2; ++hr) {
                const int i = 16 * pair_tile(pair, mi) + g + 8 * hr;
                const float dec = expf(glast - gc[i]);
#pragma unroll
                for (int ni = 0; ni < 2; ++ni)
#pragma unroll
                    for (int e = 0; e < 2; ++e) {
                        const int jl = n0 + 8 * ni + 2 * t + e;
                        const float vn = Ub[i * LDV + jl] - P[mi][ni][2 * hr + e];
                        un[i * dvp + jl] = vn;
                        Vw[i * LDV + jl] = vn * dec;
                    }
            }
        __syncthreads();  // Wb, Ub, Sb read; Vw complete
        if (n + 1 < nc) fetch_wu(n + 1);
        cp_commit();
        cp_wait<1>();  // this chunk's K̂
        __syncthreads();

        // S ← e^{γ_last} S + K̂ᵀ Vw
        const float decay = expf(glast);
#pragma unroll
        for (int ni = 0; ni < NT3; ++ni)
#pragma unroll
            for (int r = 0; r < 4; ++r) S[ni][r] *= decay;
#pragma unroll 2
        for (int k0 = 0; k0 < GDN_C; k0 += 8) {
            FragA a;
            ld_at<NP>(a, Kb, LDX, 16 * mt, k0);
#pragma unroll
            for (int ni = 0; ni < NT3; ++ni) {
                FragB b;
                ld_b_kn<NP>(b, Vw, LDV, k0, nb + 8 * ni);
                mma_acc<NP>(S[ni], a, b);
            }
        }
        keep_state(n + 1);
        __syncthreads();  // Kb, Vw read; Sb complete
    }
    // the final state → dst (after the outputs), S[key][value] with the key fastest
    float* out = (float*)D.p + (i64)dv * hv * T * ns;
#pragma unroll
    for (int ni = 0; ni < NT3; ++ni)
#pragma unroll
        for (int r = 0; r < 4; ++r) {
            const int x = 16 * mt + g + 8 * (r >> 1), j = v0 + nb + 8 * ni + 2 * t + (r & 1);
            if (x < dk && j < dv) out[((s * hv + h) * dv + j) * dk + x] = S[ni][r];
        }
}

// ---------------------------------------------------------------- out: the output rows
template <int DKP, int NP>
__device__ __forceinline__ void gdn_chunk_out(const Ten D, const Ten Q, const Ten K, const Ten V,
                                              const float* gam_i, const float* vn_i,
                                              const float* states_i, int dvp, float q_scale) {
    constexpr int LDK = DKP + 4, LDV = GDN_LDV, LDT = GDN_LDT;
    constexpr int R1 = 64 * LDK > DKP * LDV ? 64 * LDK : DKP * LDV;
    extern __shared__ float sm[];
    float* Qb = sm;              // Q̂ [i][x]
    float* Kb = sm + 64 * LDK;   // K̂ [j][x] …
    float* Sb = Kb;              // … then the state tile [x][j]
    float* Mb = Kb + R1;         // (Q̂K̂ᵀ) ⊙ Γ [i][j]
    float* Vb = Mb + 64 * LDT;   // V_new tile [i][j]
    float* gb = Vb + 64 * LDV;   // γ
    float* eg = gb + GDN_C;      // e^γ

    const int dk = (int)Q.n[0], hk = (int)Q.n[1], dv = (int)V.n[0], hv = (int)V.n[1];
    const i64 T = Q.n[2], s = blockIdx.z;
    const int n = blockIdx.x, h = blockIdx.y, nc = gridDim.x, kh = h / (hv / hk);
    const i64 c0 = (i64)n * GDN_C;
    const int nv = (int)(T - c0 < GDN_C ? T - c0 : GDN_C);
    const i64 blk = (s * hv + h) * nc + n;
    const int tid = threadIdx.x, warp = tid >> 5, lane = tid & 31, g = lane >> 2, t = lane & 3;
    const bool qvec = rows16(Q), kvec = rows16(K);

    load_rows(Qb, LDK, DKP, Q, 0, dk, kh, c0, nv, s, qvec);
    load_rows(Kb, LDK, DKP, K, 0, dk, kh, c0, nv, s, kvec);
    copy_rows(gb, GDN_C, gam_i + blk * GDN_C, GDN_C, 1, GDN_C);
    copy_rows(Vb, LDV, vn_i + blk * GDN_C * dvp, dvp, GDN_C, 64);
    cp_commit();
    cp_wait<0>();
    __syncthreads();
    if (tid < GDN_C) eg[tid] = expf(gb[tid]);

    float p[3][4] = {};
    gemm_lower_xyt<NP>(p, Qb, Kb, LDK, DKP);
    __syncthreads();  // Kb is dead: the state tile takes its place
#pragma unroll
    for (int q = 0; q < 3; ++q) {
        const int tau = warp + 8 * q;
        if (tau >= 20) continue;
        int mt, nt;
        lower_tile(tau, mt, nt);
#pragma unroll
        for (int r = 0; r < 4; ++r) {
            const int i = 16 * mt + g + 8 * (r >> 1), j = 8 * nt + 2 * t + (r & 1);
            Mb[i * LDT + j] = i >= j ? p[q][r] * expf(gb[i] - gb[j]) : 0.0f;
        }
    }
    const float* st = states_i + blk * DKP * dvp;
    copy_rows(Sb, LDV, st, dvp, DKP, 64);
    cp_commit();
    cp_wait<0>();
    __syncthreads();

    const int pair = warp & 1, n0 = (warp >> 1) * 16;
    float* out = (float*)D.p;
    for (int v0 = 0; v0 < dvp; v0 += 64) {
        if (v0 > 0) {
            __syncthreads();  // every warp is done with the previous tiles
            copy_rows(Sb, LDV, st + v0, dvp, DKP, 64);
            copy_rows(Vb, LDV, vn_i + blk * GDN_C * dvp + v0, dvp, GDN_C, 64);
            cp_commit();
            cp_wait<0>();
            __syncthreads();
        }
        float acc[2][2][4] = {};
        gemm_pair<NP, 2, false>(acc, Qb, LDK, nullptr, Sb, LDV, DKP, pair, n0);
#pragma unroll
        for (int mi = 0; mi < 2; ++mi)
#pragma unroll
            for (int r = 0; r < 4; ++r) {
                const int i = 16 * pair_tile(pair, mi) + g + 8 * (r >> 1);
#pragma unroll
                for (int ni = 0; ni < 2; ++ni) acc[mi][ni][r] *= eg[i];
            }
        gemm_pair<NP, 2, true>(acc, Mb, LDT, nullptr, Vb, LDV, GDN_C, pair, n0);
#pragma unroll
        for (int mi = 0; mi < 2; ++mi)
#pragma unroll
            for (int ni = 0; ni < 2; ++ni)
#pragma unroll
                for (int r = 0; r < 4; ++r) {
                    const int i = 16 * pair_tile(pair, mi) + g + 8 * (r >> 1);
                    const int j = v0 + n0 + 8 * ni + 2 * t + (r & 1);
                    if (i < nv && j < dv)
                        out[((s * T + c0 + i) * hv + h) * dv + j] = acc[mi][ni][r] * q_scale;
                }
    }
}

#define GDN_CHUNKED(DKP, NP, NAME)                                                                \
    extern "C" __global__ void __launch_bounds__(256, 2)                                          \
        gdn_chunk_prep_##NAME(TEN(k), TEN(v), TEN(g), TEN(beta), char* gam, char* wm, char* u,    \
                              int dvp) {                                                          \
        gdn_chunk_prep<DKP, NP>(MKTEN(k), MKTEN(v), MKTEN(g), MKTEN(beta), (float*)gam,           \
                                (float*)wm, (float*)u, dvp);                                      \
    }                                                                                             \
    extern "C" __global__ void __launch_bounds__(256, 2)                                          \
        gdn_chunk_state_##NAME(TEN(d), TEN(k), TEN(st), char* gam, char* wm, char* u,             \
                               char* states, int dvp) {                                           \
        gdn_chunk_state<DKP, NP>(MKTEN(d), MKTEN(k), MKTEN(st), (const float*)gam,                \
                                 (const float*)wm, (float*)u, (float*)states, dvp);               \
    }                                                                                             \
    extern "C" __global__ void __launch_bounds__(256, 2)                                          \
        gdn_chunk_out_##NAME(TEN(d), TEN(q), TEN(k), TEN(v), char* gam, char* u, char* states,    \
                             int dvp, float q_scale) {                                            \
        gdn_chunk_out<DKP, NP>(MKTEN(d), MKTEN(q), MKTEN(k), MKTEN(v), (const float*)gam,         \
                               (const float*)u, (const float*)states, dvp, q_scale);              \
    }
GDN_CHUNKED(32, 3, d32)
GDN_CHUNKED(64, 3, d64)
GDN_CHUNKED(128, 3, d128)
GDN_CHUNKED(128, 1, d128_tf32)

// ---------------------------------------------------------------- one-kernel FFMA form (dk > 128)
// gdn_chunked_f32: one block per (16 value columns, H_v, n_seq): grid = (ceil(dv/16), H_v,
// n_seq), blockDim.x = 256 exactly; dynamic shared memory
// 4·(2·64·(dk+1) + 2·64·65 + 16·dk + 3·64·16 + 3·64) bytes; dk ≤ 256.
#define GDN_CT 16  // value columns per block


extern "C" __global__ void __launch_bounds__(256)
    gdn_chunked_f32(TEN(d), TEN(q), TEN(k), TEN(v), TEN(g), TEN(beta), TEN(st), float q_scale) {
    extern __shared__ float fsm[];
    const Ten D = MKTEN(d), Q = MKTEN(q), K = MKTEN(k), V = MKTEN(v), G = MKTEN(g),
              BT = MKTEN(beta), ST = MKTEN(st);
    const int dk = (int)Q.n[0], hk = (int)Q.n[1];
    const int dv = (int)V.n[0], hv = (int)V.n[1];
    const i64 T = V.n[2], ns = V.n[3];
    const int j0 = blockIdx.x * GDN_CT, h = blockIdx.y;
    const i64 s = blockIdx.z;
    const int kh = h / (hv / hk);
    const int C = GDN_C, CT = GDN_CT, ldk = dk + 1, ldc = GDN_C + 1;

    float* Kc = fsm;                // [C][ldk]  keys of the chunk
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
