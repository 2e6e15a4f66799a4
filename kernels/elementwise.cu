// elementwise.cu — ggml's elementwise ops on f32 tensors of any strides.
//
// What:
//   binary_{add,mul,div}_f32   dst = a OP repeat(b)          (ADD, MUL, DIV; residual adds,
//                                                              norm weights, gates)
//   unary_{silu,sigmoid,softplus}_f32  dst = f(a)            (UNARY; softplus = torch's, x > 20 → x)
//   scale_f32                  dst = a · s                   (SCALE, also in place on a cache view)
//   clamp_f32                  dst = min(max(a, lo), hi)     (CLAMP)
//   swiglu_f32                 dst = silu(gate) · up         (GLU swiglu, split form)
//   repeat_4b                  dst[i] = a[i mod ne(a)]       (REPEAT, any 4-byte element)
//   gdn_gates_f32              β = sigmoid(b); g = ssm_a · softplus(a + dt_bias)   (fused gates)
//
// Shape legend: dst has the shape of `a` (ne0..ne3, ne0 fastest); `b` broadcasts to it by
// repetition (ggml_can_repeat: each b.ne[d] divides a.ne[d]; coordinate i_d reads b at
// i_d mod b.ne[d]). Strides are ggml's byte strides; any source may be a non-contiguous view.
//
// Launch: 1-D grid-stride loop over dst's elements, any grid × block (the executor uses 256
// threads and ≤ 65535 blocks). In place is safe when dst and a share memory with the SAME
// layout (each thread reads then writes its own element), which is the only in-place form the
// allocator produces for these ops.
#include "common.cuh"

enum { OP_ADD = 0, OP_MUL = 1, OP_DIV = 2 };

template <int OP>
__device__ __forceinline__ float binop(float x, float y) {
    if (OP == OP_ADD) return x + y;
    if (OP == OP_MUL) return x * y;
    return x / y;
}

template <int OP>
__device__ void binary_body(const Ten d, const Ten a, const Ten b) {
    const i64 n = d.nel();
    for (i64 i = global_thread(); i < n; i += grid_threads()) {
        i64 i0, i1, i2, i3;
        unravel(i, d.n, i0, i1, i2, i3);
        const float x = load_f<DT_F32>(a.at(i0, i1, i2, i3));
        const float y = load_f<DT_F32>(
            b.at(bcast(i0, b.n[0]), bcast(i1, b.n[1]), bcast(i2, b.n[2]), bcast(i3, b.n[3])));
        store_f<DT_F32>(d.at(i0, i1, i2, i3), binop<OP>(x, y));
    }
}

extern "C" __global__ void binary_add_f32(TEN(d), TEN(a), TEN(b)) {
    binary_body<OP_ADD>(MKTEN(d), MKTEN(a), MKTEN(b));
}
extern "C" __global__ void binary_mul_f32(TEN(d), TEN(a), TEN(b)) {
    binary_body<OP_MUL>(MKTEN(d), MKTEN(a), MKTEN(b));
}
extern "C" __global__ void binary_div_f32(TEN(d), TEN(a), TEN(b)) {
    binary_body<OP_DIV>(MKTEN(d), MKTEN(a), MKTEN(b));
}

enum { UN_SILU = 0, UN_SIGMOID = 1, UN_SOFTPLUS = 2 };

template <int FN>
__device__ __forceinline__ float unop(float x) {
    if (FN == UN_SILU) return silu_f(x);
    if (FN == UN_SIGMOID) return sigmoid_f(x);
    return softplus_f(x);
}

template <int FN>
__device__ void unary_body(const Ten d, const Ten a) {
    const i64 n = d.nel();
    for (i64 i = global_thread(); i < n; i += grid_threads()) {
        i64 i0, i1, i2, i3;
        unravel(i, d.n, i0, i1, i2, i3);
        store_f<DT_F32>(d.at(i0, i1, i2, i3), unop<FN>(load_f<DT_F32>(a.at(i0, i1, i2, i3))));
    }
}

extern "C" __global__ void unary_silu_f32(TEN(d), TEN(a)) { unary_body<UN_SILU>(MKTEN(d), MKTEN(a)); }
extern "C" __global__ void unary_sigmoid_f32(TEN(d), TEN(a)) {
    unary_body<UN_SIGMOID>(MKTEN(d), MKTEN(a));
}
extern "C" __global__ void unary_softplus_f32(TEN(d), TEN(a)) {
    unary_body<UN_SOFTPLUS>(MKTEN(d), MKTEN(a));
}

extern "C" __global__ void scale_f32(TEN(d), TEN(a), float s) {
    const Ten D = MKTEN(d), A = MKTEN(a);
    const i64 n = D.nel();
    for (i64 i = global_thread(); i < n; i += grid_threads()) {
        i64 i0, i1, i2, i3;
        unravel(i, D.n, i0, i1, i2, i3);
        store_f<DT_F32>(D.at(i0, i1, i2, i3), load_f<DT_F32>(A.at(i0, i1, i2, i3)) * s);
    }
}

extern "C" __global__ void clamp_f32(TEN(d), TEN(a), float lo, float hi) {
    const Ten D = MKTEN(d), A = MKTEN(a);
    const i64 n = D.nel();
    for (i64 i = global_thread(); i < n; i += grid_threads()) {
        i64 i0, i1, i2, i3;
        unravel(i, D.n, i0, i1, i2, i3);
        const float x = load_f<DT_F32>(A.at(i0, i1, i2, i3));
        store_f<DT_F32>(D.at(i0, i1, i2, i3), fminf(fmaxf(x, lo), hi));
    }
}

extern "C" __global__ void swiglu_f32(TEN(d), TEN(gate), TEN(up)) {
    const Ten D = MKTEN(d), G = MKTEN(gate), U = MKTEN(up);
    const i64 n = D.nel();
    for (i64 i = global_thread(); i < n; i += grid_threads()) {
        i64 i0, i1, i2, i3;
        unravel(i, D.n, i0, i1, i2, i3);
        const float g = load_f<DT_F32>(G.at(i0, i1, i2, i3));
        const float u = load_f<DT_F32>(U.at(i0, i1, i2, i3));
        store_f<DT_F32>(D.at(i0, i1, i2, i3), silu_f(g) * u);
    }
}

extern "C" __global__ void repeat_4b(TEN(d), TEN(a)) {
    const Ten D = MKTEN(d), A = MKTEN(a);
    const i64 n = D.nel();
    for (i64 i = global_thread(); i < n; i += grid_threads()) {
        i64 i0, i1, i2, i3;
        unravel(i, D.n, i0, i1, i2, i3);
        *(u32*)D.at(i0, i1, i2, i3) =
            *(const u32*)A.at(bcast(i0, A.n[0]), bcast(i1, A.n[1]), bcast(i2, A.n[2]),
                              bcast(i3, A.n[3]));
    }
}

// Fused GDN gates over [Hv, tokens...]: beta_out = sigmoid(b); g_out = ssm_a·softplus(a + dt_bias)
// with dt_bias and ssm_a of shape [Hv] broadcast like binary ops. All four inputs f32.
extern "C" __global__ void gdn_gates_f32(TEN(beta_out), TEN(g_out), TEN(b), TEN(a), TEN(dt_bias),
                                         TEN(ssm_a)) {
    const Ten BO = MKTEN(beta_out), GO = MKTEN(g_out), B = MKTEN(b), A = MKTEN(a);
    const Ten DB = MKTEN(dt_bias), SA = MKTEN(ssm_a);
    const i64 n = GO.nel();
    for (i64 i = global_thread(); i < n; i += grid_threads()) {
        i64 i0, i1, i2, i3;
        unravel(i, GO.n, i0, i1, i2, i3);
        const float x = load_f<DT_F32>(A.at(i0, i1, i2, i3)) +
                        load_f<DT_F32>(DB.at(bcast(i0, DB.n[0]), bcast(i1, DB.n[1]),
                                             bcast(i2, DB.n[2]), bcast(i3, DB.n[3])));
        const float s = load_f<DT_F32>(SA.at(bcast(i0, SA.n[0]), bcast(i1, SA.n[1]),
                                             bcast(i2, SA.n[2]), bcast(i3, SA.n[3])));
        store_f<DT_F32>(GO.at(i0, i1, i2, i3), s * softplus_f(x));
        store_f<DT_F32>(BO.at(i0, i1, i2, i3), sigmoid_f(load_f<DT_F32>(B.at(i0, i1, i2, i3))));
    }
}
