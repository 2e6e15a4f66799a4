// copy.cu — data movement: CPY/CONT (with type conversion), CONCAT, GET_ROWS, SET_ROWS.
//
// What:
//   cpy_<src>_<dst>     dst element i = src element i, both in ggml linear order (ne0 fastest);
//                       the shapes may differ, the element counts are equal (CPY into a cache
//                       view, CONT to a contiguous tensor, the f32 → f16/bf16 activation casts in
//                       front of cuBLASLt). <src>,<dst> ∈ f32/f16/bf16; cpy_{2,4,8}b copy raw bits.
//   concat_f32          dst = concat(a, b) along ggml dimension `dim` (CONCAT: the conv input is
//                       the cached conv columns followed by the new tokens)
//   get_rows_<t>_<i>    dst[:, i1, i2, i3] = src[:, idx[i1, i2, i3], i2, i3]   (GET_ROWS: state
//                       gathers, token embeddings, MoE weights; src <t> ∈ f32/f16/bf16, dst f32)
//   set_rows_<t>_<i>    dst[:, idx[i1, i2, i3], i2, i3] = src[:, i1, i2, i3]   (SET_ROWS: KV-cache
//                       writes; src f32, dst <t> ∈ f32/f16/bf16)
//   Index tensors <i> ∈ i32/i64; indices are wrapped into [0, rows) (a race never faults), and
//   the batch coordinates i2, i3 of src/dst/idx are taken modulo their extents (broadcast).
//
// Shape legend: ggml ne/nb (bytes), any strides for every operand.
//
// Launch: cpy/concat: 1-D grid-stride loop over the destination's elements (any grid × block).
//   get_rows: one block per destination row, grid.x = dst.ne1·ne2·ne3; set_rows: one block per
//   source row, grid.x = src.ne1·ne2·ne3; threads stride over ne0 (any multiple of 32).
//   set_rows with duplicate indices writes the rows in an unspecified order (as ggml-cuda).
#include "common.cuh"

template <int S, int D>
__device__ void cpy_body(const Ten d, const Ten s) {
    const i64 n = s.nel();
    for (i64 i = global_thread(); i < n; i += grid_threads()) {
        i64 a0, a1, a2, a3, b0, b1, b2, b3;
        unravel(i, s.n, a0, a1, a2, a3);
        unravel(i, d.n, b0, b1, b2, b3);
        store_f<D>(d.at(b0, b1, b2, b3), load_f<S>(s.at(a0, a1, a2, a3)));
    }
}

template <typename W>
__device__ void cpy_raw_body(const Ten d, const Ten s) {
    const i64 n = s.nel();
    for (i64 i = global_thread(); i < n; i += grid_threads()) {
        i64 a0, a1, a2, a3, b0, b1, b2, b3;
        unravel(i, s.n, a0, a1, a2, a3);
        unravel(i, d.n, b0, b1, b2, b3);
        *(W*)d.at(b0, b1, b2, b3) = *(const W*)s.at(a0, a1, a2, a3);
    }
}

extern "C" __global__ void cpy_f32_f32(TEN(d), TEN(s)) { cpy_body<DT_F32, DT_F32>(MKTEN(d), MKTEN(s)); }
extern "C" __global__ void cpy_f32_f16(TEN(d), TEN(s)) { cpy_body<DT_F32, DT_F16>(MKTEN(d), MKTEN(s)); }
extern "C" __global__ void cpy_f32_bf16(TEN(d), TEN(s)) { cpy_body<DT_F32, DT_BF16>(MKTEN(d), MKTEN(s)); }
extern "C" __global__ void cpy_f16_f32(TEN(d), TEN(s)) { cpy_body<DT_F16, DT_F32>(MKTEN(d), MKTEN(s)); }
extern "C" __global__ void cpy_bf16_f32(TEN(d), TEN(s)) { cpy_body<DT_BF16, DT_F32>(MKTEN(d), MKTEN(s)); }
extern "C" __global__ void cpy_2b(TEN(d), TEN(s)) { cpy_raw_body<u16>(MKTEN(d), MKTEN(s)); }
extern "C" __global__ void cpy_4b(TEN(d), TEN(s)) { cpy_raw_body<u32>(MKTEN(d), MKTEN(s)); }
extern "C" __global__ void cpy_8b(TEN(d), TEN(s)) { cpy_raw_body<u64>(MKTEN(d), MKTEN(s)); }

extern "C" __global__ void concat_f32(TEN(d), TEN(a), TEN(b), int dim) {
    const Ten D = MKTEN(d), A = MKTEN(a), B = MKTEN(b);
    const i64 n = D.nel();
    const i64 split = dim == 0 ? A.n[0] : dim == 1 ? A.n[1] : dim == 2 ? A.n[2] : A.n[3];
    for (i64 i = global_thread(); i < n; i += grid_threads()) {
        i64 c0, c1, c2, c3;
        unravel(i, D.n, c0, c1, c2, c3);
        const i64 c = dim == 0 ? c0 : dim == 1 ? c1 : dim == 2 ? c2 : c3;
        float v;
        if (c < split) {
            v = load_f<DT_F32>(A.at(c0, c1, c2, c3));
        } else {  // the same coordinates with coordinate `dim` shifted back by a's extent
            v = load_f<DT_F32>(B.at(c0 - (dim == 0) * split, c1 - (dim == 1) * split,
                                    c2 - (dim == 2) * split, c3 - (dim == 3) * split));
        }
        store_f<DT_F32>(D.at(c0, c1, c2, c3), v);
    }
}

template <int S, int I>
__device__ void get_rows_body(const Ten d, const Ten s, const Ten idx) {
    const i64 row = blockIdx.x;
    const i64 i1 = row % d.n[1];
    const i64 i2 = (row / d.n[1]) % d.n[2];
    const i64 i3 = row / (d.n[1] * d.n[2]);
    const i64 r = wrap_index(load_i<I>(idx.at(i1, i2, i3, 0)), s.n[1]);
    const i64 s2 = i2 % s.n[2], s3 = i3 % s.n[3];
    for (i64 i0 = threadIdx.x; i0 < d.n[0]; i0 += blockDim.x)
        store_f<DT_F32>(d.at(i0, i1, i2, i3), load_f<S>(s.at(i0, r, s2, s3)));
}

extern "C" __global__ void get_rows_f32_i32(TEN(d), TEN(s), TEN(idx)) {
    get_rows_body<DT_F32, DT_I32>(MKTEN(d), MKTEN(s), MKTEN(idx));
}
extern "C" __global__ void get_rows_f32_i64(TEN(d), TEN(s), TEN(idx)) {
    get_rows_body<DT_F32, DT_I64>(MKTEN(d), MKTEN(s), MKTEN(idx));
}
extern "C" __global__ void get_rows_f16_i32(TEN(d), TEN(s), TEN(idx)) {
    get_rows_body<DT_F16, DT_I32>(MKTEN(d), MKTEN(s), MKTEN(idx));
}
extern "C" __global__ void get_rows_bf16_i32(TEN(d), TEN(s), TEN(idx)) {
    get_rows_body<DT_BF16, DT_I32>(MKTEN(d), MKTEN(s), MKTEN(idx));
}

template <int D, int I>
__device__ void set_rows_body(const Ten d, const Ten s, const Ten idx) {
    const i64 row = blockIdx.x;
    const i64 i1 = row % s.n[1];
    const i64 i2 = (row / s.n[1]) % s.n[2];
    const i64 i3 = row / (s.n[1] * s.n[2]);
    const i64 r = wrap_index(load_i<I>(idx.at(i1, i2 % idx.n[1], i3 % idx.n[2], 0)), d.n[1]);
    const i64 d2 = i2 % d.n[2], d3 = i3 % d.n[3];
    for (i64 i0 = threadIdx.x; i0 < s.n[0]; i0 += blockDim.x)
        store_f<D>(d.at(i0, r, d2, d3), load_f<DT_F32>(s.at(i0, i1, i2, i3)));
}

extern "C" __global__ void set_rows_f32_i64(TEN(d), TEN(s), TEN(idx)) {
    set_rows_body<DT_F32, DT_I64>(MKTEN(d), MKTEN(s), MKTEN(idx));
}
extern "C" __global__ void set_rows_f16_i64(TEN(d), TEN(s), TEN(idx)) {
    set_rows_body<DT_F16, DT_I64>(MKTEN(d), MKTEN(s), MKTEN(idx));
}
extern "C" __global__ void set_rows_bf16_i64(TEN(d), TEN(s), TEN(idx)) {
    set_rows_body<DT_BF16, DT_I64>(MKTEN(d), MKTEN(s), MKTEN(idx));
}
extern "C" __global__ void set_rows_f32_i32(TEN(d), TEN(s), TEN(idx)) {
    set_rows_body<DT_F32, DT_I32>(MKTEN(d), MKTEN(s), MKTEN(idx));
}
extern "C" __global__ void set_rows_f16_i32(TEN(d), TEN(s), TEN(idx)) {
    set_rows_body<DT_F16, DT_I32>(MKTEN(d), MKTEN(s), MKTEN(idx));
}
