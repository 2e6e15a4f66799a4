// common.cuh — shared device helpers for LACE's kernels (included by every kernels/*.cu).
//
// What: element types, f16/bf16 <-> f32 conversion, the ggml tensor descriptor (`Ten`) and its
// byte-offset arithmetic, warp and block reductions.
//
// Shape legend (every kernel): a tensor is ggml-shaped — ne[0..3] with ne[0] the fastest
// dimension, nb[0..3] its strides in BYTES (ggml's nb), data at a byte address. Kernels read the
// strides directly, so sources may be non-contiguous views (q/k/v views of the conv output,
// permuted KV-cache views) and no copy is needed before a kernel.
//
// Launch ABI: a tensor argument is nine kernel parameters, `TEN(x)` = pointer, ne0..ne3,
// nb0..nb3 (int64). Pointers arrive as raw 64-bit addresses (the executor passes numpy uint64),
// so every kernel is `extern "C"` with an unmangled name and no templates at the boundary.
//
// Self-contained on purpose: no #include of CUDA or C++ headers, so the same file compiles with
// nvcc (the CI/compile test) and with NVRTC (CuPy's RawModule at run time) without a toolkit
// include path. f16/bf16 use PTX cvt instructions (sm_80+ for bf16) on the device; the same
// sources also build as host C++ for the CPU emulation the tests run them in
// (tests/cuda_emu/), where __CUDA_ARCH__ is undefined.
#pragma once

typedef long long i64;
typedef unsigned long long u64;
typedef unsigned int u32;
typedef unsigned short u16;

// ---------------------------------------------------------------- element conversion
// On the device: PTX cvt (round to nearest even). Elsewhere (the CPU emulation the tests run
// the kernels in): the same rounding with integer arithmetic.
__device__ __forceinline__ float f16_to_f32(u16 h) {
#ifdef __CUDA_ARCH__
    float f;
    asm("cvt.f32.f16 %0, %1;" : "=f"(f) : "h"(h));
    return f;
#else
    const u32 sign = (u32)(h & 0x8000u) << 16, e = (h >> 10) & 0x1fu;
    u32 m = h & 0x3ffu, bits;
    if (e == 0x1fu) {
        bits = sign | 0x7f800000u | (m << 13);
    } else if (e != 0) {
        bits = sign | ((e + 112u) << 23) | (m << 13);
    } else if (m == 0) {
        bits = sign;
    } else {  // subnormal: normalise
        int shift = 0;
        while (!(m & 0x400u)) {
            m <<= 1;
            ++shift;
        }
        bits = sign | ((u32)(113 - shift) << 23) | ((m & 0x3ffu) << 13);
    }
    return __uint_as_float(bits);
#endif
}
__device__ __forceinline__ u16 f32_to_f16(float f) {
#ifdef __CUDA_ARCH__
    u16 h;
    asm("cvt.rn.f16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
#else
    const u32 x = __float_as_uint(f), sign = (x >> 16) & 0x8000u, ex = (x >> 23) & 0xffu;
    u32 m = x & 0x7fffffu;
    if (ex == 0xffu) return (u16)(sign | 0x7c00u | (m ? 0x200u : 0u));
    const int e = (int)ex - 112;  // the f16 biased exponent
    if (e >= 31) return (u16)(sign | 0x7c00u);
    if (e <= 0) {
        if (e < -10) return (u16)sign;
        m |= 0x800000u;
        const int shift = 14 - e;
        u32 r = m >> shift;
        const u32 rem = m & ((1u << shift) - 1u), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (r & 1u))) ++r;
        return (u16)(sign | r);
    }
    u32 r = ((u32)e << 10) | (m >> 13);
    const u32 rem = m & 0x1fffu;
    if (rem > 0x1000u || (rem == 0x1000u && (r & 1u))) ++r;  // a carry rounds up to inf
    return (u16)(sign | r);
#endif
}
__device__ __forceinline__ float bf16_to_f32(u16 b) { return __uint_as_float(((u32)b) << 16); }
__device__ __forceinline__ u16 f32_to_bf16(float f) {
#ifdef __CUDA_ARCH__
    u16 h;
    asm("cvt.rn.bf16.f32 %0, %1;" : "=h"(h) : "f"(f));
    return h;
#else
    const u32 u = __float_as_uint(f);
    if ((u & 0x7fffffffu) > 0x7f800000u) return (u16)((u >> 16) | 0x40u);  // NaN stays NaN
    return (u16)((u + 0x7fffu + ((u >> 16) & 1u)) >> 16);
#endif
}

// Element type codes used as template arguments: the storage type of a tensor.
enum { DT_F32 = 0, DT_F16 = 1, DT_BF16 = 2, DT_I32 = 3, DT_I64 = 4 };

template <int DT> __device__ __forceinline__ float load_f(const char* p);
template <> __device__ __forceinline__ float load_f<DT_F32>(const char* p) { return *(const float*)p; }
template <> __device__ __forceinline__ float load_f<DT_F16>(const char* p) { return f16_to_f32(*(const u16*)p); }
template <> __device__ __forceinline__ float load_f<DT_BF16>(const char* p) { return bf16_to_f32(*(const u16*)p); }

template <int DT> __device__ __forceinline__ void store_f(char* p, float v);
template <> __device__ __forceinline__ void store_f<DT_F32>(char* p, float v) { *(float*)p = v; }
template <> __device__ __forceinline__ void store_f<DT_F16>(char* p, float v) { *(u16*)p = f32_to_f16(v); }
template <> __device__ __forceinline__ void store_f<DT_BF16>(char* p, float v) { *(u16*)p = f32_to_bf16(v); }

template <int DT> __device__ __forceinline__ i64 load_i(const char* p);
template <> __device__ __forceinline__ i64 load_i<DT_I32>(const char* p) { return (i64)(*(const int*)p); }
template <> __device__ __forceinline__ i64 load_i<DT_I64>(const char* p) { return *(const i64*)p; }

// A row index wrapped into [0, n): a corrupted index (an unsafe plan's race) reads or writes a
// wrong row instead of faulting, exactly as the NumPy executor wraps it.
__device__ __forceinline__ i64 wrap_index(i64 i, i64 n) {
    i64 r = i % n;
    return r < 0 ? r + n : r;
}

// A coordinate of a broadcast operand (ggml_repeat: i mod n) without a 64-bit division in the
// common cases: an extent of 1 (broadcast) or a coordinate already in range (same shape).
__device__ __forceinline__ i64 bcast(i64 i, i64 n) { return n == 1 ? 0 : i < n ? i : i % n; }

// ---------------------------------------------------------------- tensor descriptor
struct Ten {
    char* p;
    i64 n[4];
    i64 b[4];
    __device__ __forceinline__ i64 nel() const { return n[0] * n[1] * n[2] * n[3]; }
    __device__ __forceinline__ i64 off(i64 i0, i64 i1, i64 i2, i64 i3) const {
        return i0 * b[0] + i1 * b[1] + i2 * b[2] + i3 * b[3];
    }
    __device__ __forceinline__ char* at(i64 i0, i64 i1, i64 i2, i64 i3) const {
        return p + off(i0, i1, i2, i3);
    }
};

#define TEN(x)                                                                                    \
    char *x##_p, i64 x##_n0, i64 x##_n1, i64 x##_n2, i64 x##_n3, i64 x##_b0, i64 x##_b1,        \
        i64 x##_b2, i64 x##_b3
#define MKTEN(x) Ten{x##_p, {x##_n0, x##_n1, x##_n2, x##_n3}, {x##_b0, x##_b1, x##_b2, x##_b3}}

// Linear element index (ggml order, ne0 fastest) to its four coordinates. 64-bit division is a
// long software sequence on the GPU: below 2^32 elements the 32-bit one does the same.
__device__ __forceinline__ void unravel(i64 i, const i64* n, i64& i0, i64& i1, i64& i2, i64& i3) {
    if ((u64)i < 0xffffffffull && (u64)n[0] < 0xffffffffull && (u64)n[1] < 0xffffffffull &&
        (u64)n[2] < 0xffffffffull) {
        const u32 a = (u32)i, n0 = (u32)n[0], n1 = (u32)n[1], n2 = (u32)n[2];
        u32 r = a / n0;
        i0 = a - r * n0;
        u32 q = r / n1;
        i1 = r - q * n1;
        r = q / n2;
        i2 = q - r * n2;
        i3 = r;
        return;
    }
    i0 = i % n[0];
    i64 r = i / n[0];
    i1 = r % n[1];
    r /= n[1];
    i2 = r % n[2];
    i3 = r / n[2];
}

__device__ __forceinline__ i64 global_thread() { return (i64)blockIdx.x * blockDim.x + threadIdx.x; }
__device__ __forceinline__ i64 grid_threads() { return (i64)gridDim.x * blockDim.x; }

// ---------------------------------------------------------------- 16-byte loads and stores
struct alignas(16) U4 {
    u32 a, b, c, d;
};
struct alignas(16) F4 {
    float x, y, z, w;
};

// 16 bytes of read-only data through the non-coherent (texture) path, kept in L1: activations
// that every warp of a block reads. `p` must be 16-byte aligned.
__device__ __forceinline__ U4 ld_ro16(const void* p) {
#ifdef __CUDA_ARCH__
    U4 r;
    asm("ld.global.nc.v4.u32 {%0, %1, %2, %3}, [%4];"
        : "=r"(r.a), "=r"(r.b), "=r"(r.c), "=r"(r.d)
        : "l"(p));
    return r;
#else
    return *(const U4*)p;
#endif
}
// 16 bytes read exactly once (weights, copy sources): not allocated in L1, so they never evict
// the data a block reuses. `p` must be 16-byte aligned.
__device__ __forceinline__ U4 ld_stream16(const void* p) {
#ifdef __CUDA_ARCH__
    U4 r;
    asm("ld.global.nc.L1::no_allocate.v4.u32 {%0, %1, %2, %3}, [%4];"
        : "=r"(r.a), "=r"(r.b), "=r"(r.c), "=r"(r.d)
        : "l"(p));
    return r;
#else
    return *(const U4*)p;
#endif
}
__device__ __forceinline__ F4 as_f4(const U4& u) {
    return F4{__uint_as_float(u.a), __uint_as_float(u.b), __uint_as_float(u.c),
              __uint_as_float(u.d)};
}
__device__ __forceinline__ void st16(void* p, const U4& v) { *(U4*)p = v; }

// ---------------------------------------------------------------- reductions
__device__ __forceinline__ float warp_sum(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v += __shfl_xor_sync(0xffffffffu, v, o);
    return v;
}
__device__ __forceinline__ float warp_max(float v) {
#pragma unroll
    for (int o = 16; o > 0; o >>= 1) v = fmaxf(v, __shfl_xor_sync(0xffffffffu, v, o));
    return v;
}

// Sum over the whole block (blockDim.x a multiple of 32, at most 1024); every thread gets the
// result. `scratch` holds at least 32 floats of shared memory.
__device__ __forceinline__ float block_sum(float v, float* scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    v = warp_sum(v);
    __syncthreads();  // scratch may still be read by a previous call
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < nwarps ? scratch[lane] : 0.0f;
    return warp_sum(v);
}
__device__ __forceinline__ float block_max(float v, float* scratch) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5, nwarps = blockDim.x >> 5;
    v = warp_max(v);
    __syncthreads();
    if (lane == 0) scratch[warp] = v;
    __syncthreads();
    v = lane < nwarps ? scratch[lane] : -__int_as_float(0x7f800000);
    return warp_max(v);
}

__device__ __forceinline__ float silu_f(float x) { return x / (1.0f + expf(-x)); }
__device__ __forceinline__ float sigmoid_f(float x) { return 1.0f / (1.0f + expf(-x)); }
// torch's softplus: x above the threshold 20, else log1p(exp(x)).
__device__ __forceinline__ float softplus_f(float x) { return x > 20.0f ? x : log1pf(expf(x)); }
