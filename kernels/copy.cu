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
// Every kernel is bandwidth-bound and moves data in 16-byte pieces where the layout allows:
//   cpy: both tensors contiguous with 16-byte aligned starts → 8 elements per thread (one or two
//        16-byte loads and stores); the same shape on both sides with rows of ≥ 64 elements (a
//        CONT of a permuted view) → rows × columns with no index division; anything else → per
//        element (32-bit index arithmetic below 2^32 elements).
//   get_rows/set_rows: a row that is contiguous with aligned starts → 4 elements per thread
//        (16-byte f32 side, 8-byte f16/bf16 side); else per element. A 3 MiB state row is spread
//        over hundreds of blocks (grid.x) instead of one.
// Each kernel decides its path from the tensors it gets (uniform per launch or per row), so any
// grid is correct; the executor sizes the grid for the path it expects.
//
// Shape legend: ggml ne/nb (bytes), any strides for every operand.
//
// Launch (all grid-stride loops; blockDim.x any multiple of 32):
//   cpy:      grid.x × grid.y blocks; the contiguous and per-element paths flatten the grid, the
//             same-shape path takes rows from grid.y and columns from grid.x.
//   concat:   1-D grid-stride loop over the destination's elements.
//   get_rows: grid.y strides over the destination rows (dst.ne1·ne2·ne3), grid.x × blockDim.x
//             threads over the columns of a row; set_rows: the same over the source rows.
//   set_rows with duplicate indices writes the rows in an unspecified order (as ggml-cuda).
#include "common.cuh"

struct alignas(8) U2 {
    u32 a, b;
};

template <int DT> struct Bytes { static constexpr int n = 4; };
template <> struct Bytes<DT_F16> { static constexpr int n = 2; };
template <> struct Bytes<DT_BF16> { static constexpr int n = 2; };

// Rows shorter than this copy per element (flattened grid): a block per short row would idle.
#define SAME_SHAPE_MIN_ROW 64

__device__ __forceinline__ bool aligned16(const void* p) { return ((u64)p & 15u) == 0; }

// ggml_is_contiguous on element size `es` (dimensions of extent 1 may have any stride).
__device__ __forceinline__ bool contiguous(const Ten& t, i64 es) {
    i64 expected = es;
#pragma unroll
    for (int k = 0; k < 4; ++k) {
        if (t.n[k] != 1 && t.b[k] != expected) return false;
        expected *= t.n[k];
    }
    return true;
}

__device__ __forceinline__ bool same_shape(const Ten& a, const Ten& b) {
    return a.n[0] == b.n[0] && a.n[1] == b.n[1] && a.n[2] == b.n[2] && a.n[3] == b.n[3];
}

__device__ __forceinline__ i64 flat_thread() {
    return ((i64)blockIdx.y * gridDim.x + blockIdx.x) * blockDim.x + threadIdx.x;
}
__device__ __forceinline__ i64 flat_threads() { return (i64)gridDim.x * gridDim.y * blockDim.x; }

__device__ __forceinline__ u32 pack2(u16 lo, u16 hi) { return (u32)lo | ((u32)hi << 16); }

// Four consecutive elements: load from a (4·ES)-aligned address, store to one.
template <int S> __device__ __forceinline__ void load4(const char* p, float* f);
template <> __device__ __forceinline__ void load4<DT_F32>(const char* p, float* f) {
    const F4 v = as_f4(ld_stream16(p));
    f[0] = v.x, f[1] = v.y, f[2] = v.z, f[3] = v.w;
}
template <> __device__ __forceinline__ void load4<DT_F16>(const char* p, float* f) {
    const U2 v = *(const U2*)p;
    f[0] = f16_to_f32((u16)v.a), f[1] = f16_to_f32((u16)(v.a >> 16));
    f[2] = f16_to_f32((u16)v.b), f[3] = f16_to_f32((u16)(v.b >> 16));
}
template <> __device__ __forceinline__ void load4<DT_BF16>(const char* p, float* f) {
    const U2 v = *(const U2*)p;
    f[0] = bf16_to_f32((u16)v.a), f[1] = bf16_to_f32((u16)(v.a >> 16));
    f[2] = bf16_to_f32((u16)v.b), f[3] = bf16_to_f32((u16)(v.b >> 16));
}
template <int D> __device__ __forceinline__ void store4(char* p, const float* f);
template <> __device__ __forceinline__ void store4<DT_F32>(char* p, const float* f) {
    st16(p, U4{__float_as_uint(f[0]), __float_as_uint(f[1]), __float_as_uint(f[2]),
               __float_as_uint(f[3])});
}
template <> __device__ __forceinline__ void store4<DT_F16>(char* p, const float* f) {
    *(U2*)p = U2{pack2(f32_to_f16(f[0]), f32_to_f16(f[1])), pack2(f32_to_f16(f[2]), f32_to_f16(f[3]))};
}
template <> __device__ __forceinline__ void store4<DT_BF16>(char* p, const float* f) {
    *(U2*)p = U2{pack2(f32_to_bf16(f[0]), f32_to_bf16(f[1])),
                 pack2(f32_to_bf16(f[2]), f32_to_bf16(f[3]))};
}

// ---------------------------------------------------------------------------- CPY / CONT
template <int S, int D>
__device__ void cpy_body(const Ten d, const Ten s) {
    constexpr int ES = Bytes<S>::n, ED = Bytes<D>::n;
    const i64 n = s.nel();
    const i64 t0 = flat_thread(), nt = flat_threads();
    if (contiguous(s, ES) && contiguous(d, ED) && aligned16(s.p) && aligned16(d.p)) {
        const i64 nv = n / 8;  // 8 elements: 16 or 32 bytes on each side, 16-byte aligned
        for (i64 v = t0; v < nv; v += nt) {
            float f[8];
            load4<S>(s.p + v * 8 * ES, f);
            load4<S>(s.p + v * 8 * ES + 4 * ES, f + 4);
            store4<D>(d.p + v * 8 * ED, f);
            store4<D>(d.p + v * 8 * ED + 4 * ED, f + 4);
        }
        for (i64 i = nv * 8 + t0; i < n; i += nt)
            store_f<D>(d.p + i * ED, load_f<S>(s.p + i * ES));
        return;
    }
    if (same_shape(s, d) && s.n[0] >= SAME_SHAPE_MIN_ROW) {  // rows × columns: no division
        const i64 rows = s.n[1] * s.n[2] * s.n[3];
        for (i64 row = blockIdx.y; row < rows; row += gridDim.y) {
            const i64 i1 = row % s.n[1], i2 = (row / s.n[1]) % s.n[2], i3 = row / (s.n[1] * s.n[2]);
            const char* sr = s.at(0, i1, i2, i3);
            char* dr = d.at(0, i1, i2, i3);
            for (i64 i0 = (i64)blockIdx.x * blockDim.x + threadIdx.x; i0 < s.n[0];
                 i0 += (i64)gridDim.x * blockDim.x)
                store_f<D>(dr + i0 * d.b[0], load_f<S>(sr + i0 * s.b[0]));
        }
        return;
    }
    for (i64 i = t0; i < n; i += nt) {
        i64 a0, a1, a2, a3, b0, b1, b2, b3;
        unravel(i, s.n, a0, a1, a2, a3);
        unravel(i, d.n, b0, b1, b2, b3);
        store_f<D>(d.at(b0, b1, b2, b3), load_f<S>(s.at(a0, a1, a2, a3)));
    }
}

// Raw copies (elements of W's size, any type): bytes in 16-byte pieces when both sides are
// contiguous and aligned, else one element at a time.
template <typename W>
__device__ void cpy_raw_body(const Ten d, const Ten s) {
    constexpr int E = sizeof(W);
    const i64 n = s.nel();
    const i64 t0 = flat_thread(), nt = flat_threads();
    if (contiguous(s, E) && contiguous(d, E) && aligned16(s.p) && aligned16(d.p)) {
        const i64 nv = n * E / 16;
        for (i64 v = t0; v < nv; v += nt) st16(d.p + v * 16, ld_stream16(s.p + v * 16));
        for (i64 i = nv * 16 / E + t0; i < n; i += nt) *(W*)(d.p + i * E) = *(const W*)(s.p + i * E);
        return;
    }
    if (same_shape(s, d) && s.n[0] >= SAME_SHAPE_MIN_ROW) {
        const i64 rows = s.n[1] * s.n[2] * s.n[3];
        for (i64 row = blockIdx.y; row < rows; row += gridDim.y) {
            const i64 i1 = row % s.n[1], i2 = (row / s.n[1]) % s.n[2], i3 = row / (s.n[1] * s.n[2]);
            const char* sr = s.at(0, i1, i2, i3);
            char* dr = d.at(0, i1, i2, i3);
            for (i64 i0 = (i64)blockIdx.x * blockDim.x + threadIdx.x; i0 < s.n[0];
                 i0 += (i64)gridDim.x * blockDim.x)
                *(W*)(dr + i0 * d.b[0]) = *(const W*)(sr + i0 * s.b[0]);
        }
        return;
    }
    for (i64 i = t0; i < n; i += nt) {
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

// ---------------------------------------------------------------------------- CONCAT
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

// ---------------------------------------------------------------------------- rows
// One row of ne0 elements from `src` (type S, element stride sb) to `dst` (type D, stride db):
// 4 elements per thread when both rows are contiguous and their starts allow the vector width.
template <int S, int D>
__device__ __forceinline__ void move_row(char* dst, i64 db, const char* src, i64 sb, i64 ne0) {
    constexpr int ES = Bytes<S>::n, ED = Bytes<D>::n;
    const i64 t0 = (i64)blockIdx.x * blockDim.x + threadIdx.x, nt = (i64)gridDim.x * blockDim.x;
    i64 done = 0;
    if (sb == ES && db == ED && ((u64)src % (4 * ES)) == 0 && ((u64)dst % (4 * ED)) == 0) {
        const i64 nv = ne0 / 4;
        for (i64 v = t0; v < nv; v += nt) {
            float f[4];
            load4<S>(src + v * 4 * ES, f);
            store4<D>(dst + v * 4 * ED, f);
        }
        done = nv * 4;
    }
    for (i64 i0 = done + t0; i0 < ne0; i0 += nt) store_f<D>(dst + i0 * db, load_f<S>(src + i0 * sb));
}

template <int S, int I>
__device__ void get_rows_body(const Ten d, const Ten s, const Ten idx) {
    const i64 rows = d.n[1] * d.n[2] * d.n[3];
    for (i64 row = blockIdx.y; row < rows; row += gridDim.y) {
        const i64 i1 = row % d.n[1];
        const i64 i2 = (row / d.n[1]) % d.n[2];
        const i64 i3 = row / (d.n[1] * d.n[2]);
        const i64 r = wrap_index(load_i<I>(idx.at(i1, i2, i3, 0)), s.n[1]);
        move_row<S, DT_F32>(d.at(0, i1, i2, i3), d.b[0], s.at(0, r, i2 % s.n[2], i3 % s.n[3]),
                            s.b[0], d.n[0]);
    }
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
    const i64 rows = s.n[1] * s.n[2] * s.n[3];
    for (i64 row = blockIdx.y; row < rows; row += gridDim.y) {
        const i64 i1 = row % s.n[1];
        const i64 i2 = (row / s.n[1]) % s.n[2];
        const i64 i3 = row / (s.n[1] * s.n[2]);
        const i64 r = wrap_index(load_i<I>(idx.at(i1, i2 % idx.n[1], i3 % idx.n[2], 0)), d.n[1]);
        move_row<DT_F32, D>(d.at(0, r, i2 % d.n[2], i3 % d.n[3]), d.b[0], s.at(0, i1, i2, i3),
                            s.b[0], s.n[0]);
    }
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
