// emu.h — just enough of CUDA to run LACE's kernels as host C++ (tests only).
//
// Each block runs with one std::thread per CUDA thread: __syncthreads is a std::barrier over the
// block, __shfl_xor_sync an exchange through a per-warp buffer between two warp barriers (every
// LACE kernel shuffles with all 32 lanes of a warp, in step). Blocks run one after the other, so
// `__shared__` (made `static`) is the block's shared memory. Grid-wide behaviour, timing and the
// memory model beyond barriers are not emulated: this checks the kernels' arithmetic, indexing,
// strides and barrier structure against the NumPy reference, not their speed.
//
// Warp-collective matrix ops (the TF32 `mma.sync.m16n8k8` of kernels/gated_delta.cu) are
// emulated the same way: every lane deposits its fragment registers, the warp meets, each lane
// computes its four accumulator elements from the PTX fragment layout, and the warp meets again.
// Products of TF32 values are exact in double; the sum is rounded to f32 once (the tensor core
// accumulates in f32, so the device may differ by a few f32 ulps).
#pragma once
#define LACE_CUDA_EMU 1
#include <barrier>
#include <cmath>
#include <cstdint>
#include <cstring>
#include <functional>
#include <memory>
#include <thread>
#include <vector>

struct dim3 {
    unsigned x = 1, y = 1, z = 1;
};
inline dim3 blockIdx, blockDim, gridDim;
inline thread_local dim3 threadIdx;
inline char* emu_dynamic_smem = nullptr;

struct EmuBlock {
    std::unique_ptr<std::barrier<>> block;
    std::vector<std::unique_ptr<std::barrier<>>> warps;
    std::vector<uint64_t> lanes;  // 32 slots per warp for shuffles
    std::vector<uint32_t> frags;  // 32 × 6 slots per warp for mma fragments
};
inline EmuBlock* emu_block = nullptr;

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __launch_bounds__(...)
#define __shared__ static

inline void __syncthreads() { emu_block->block->arrive_and_wait(); }

template <class T>
inline T __shfl_xor_sync(unsigned, T v, int offset) {
    static_assert(sizeof(T) <= 8, "shuffle of a value wider than 8 bytes");
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    uint64_t* slots = &emu_block->lanes[32 * warp];
    uint64_t raw = 0;
    std::memcpy(&raw, &v, sizeof(T));
    slots[lane] = raw;
    emu_block->warps[warp]->arrive_and_wait();
    raw = slots[lane ^ offset];
    emu_block->warps[warp]->arrive_and_wait();
    T out;
    std::memcpy(&out, &raw, sizeof(T));
    return out;
}

// Lane `src` of the warp's value (shfl.idx); `width` 32 only, as LACE's kernels use it.
template <class T>
inline T emu_shfl_from(T v, int src) {
    static_assert(sizeof(T) <= 8, "shuffle of a value wider than 8 bytes");
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    uint64_t* slots = &emu_block->lanes[32 * warp];
    uint64_t raw = 0;
    std::memcpy(&raw, &v, sizeof(T));
    slots[lane] = raw;
    emu_block->warps[warp]->arrive_and_wait();
    raw = slots[src & 31];
    emu_block->warps[warp]->arrive_and_wait();
    T out;
    std::memcpy(&out, &raw, sizeof(T));
    return out;
}
template <class T>
inline T __shfl_up_sync(unsigned, T v, unsigned delta) {
    const int lane = threadIdx.x & 31;
    return emu_shfl_from(v, lane >= (int)delta ? lane - (int)delta : lane);
}
template <class T>
inline T __shfl_sync(unsigned, T v, int src) {
    return emu_shfl_from(v, src);
}

// mma.sync.aligned.m16n8k8.row.col.f32.tf32.tf32.f32 with C = D (PTX fragment layout, g = lane/4,
// t = lane%4): A 16×8 a0 (g, t) a1 (g+8, t) a2 (g, t+4) a3 (g+8, t+4); B 8×8 b0 (k t, n g)
// b1 (k t+4, n g); C/D 16×8 c0 (g, 2t) c1 (g, 2t+1) c2 (g+8, 2t) c3 (g+8, 2t+1). The tensor core
// reads a TF32 operand's top 19 bits; the low 13 are dropped here the same way.
inline void emu_mma_m16n8k8_tf32(float c[4], const unsigned a[4], const unsigned b[2]) {
    const int lane = threadIdx.x & 31, warp = threadIdx.x >> 5;
    uint32_t* slots = &emu_block->frags[32 * 6 * warp];
    for (int r = 0; r < 4; ++r) slots[6 * lane + r] = a[r];
    slots[6 * lane + 4] = b[0];
    slots[6 * lane + 5] = b[1];
    emu_block->warps[warp]->arrive_and_wait();
    auto tf32 = [](uint32_t bits) {
        bits &= 0xffffe000u;
        float f;
        std::memcpy(&f, &bits, 4);
        return (double)f;
    };
    const int g = lane >> 2, t = lane & 3;
    float out[4];
    for (int r = 0; r < 4; ++r) {
        const int row = g + 8 * (r >> 1), col = 2 * t + (r & 1);
        double acc = c[r];
        for (int k = 0; k < 8; ++k) {
            const uint32_t av = slots[6 * (4 * (row & 7) + (k & 3)) + (row >> 3) + 2 * (k >> 2)];
            const uint32_t bv = slots[6 * (4 * col + (k & 3)) + 4 + (k >> 2)];
            acc += tf32(av) * tf32(bv);
        }
        out[r] = (float)acc;
    }
    emu_block->warps[warp]->arrive_and_wait();
    for (int r = 0; r < 4; ++r) c[r] = out[r];
}

inline float __uint_as_float(unsigned u) {
    float f;
    std::memcpy(&f, &u, 4);
    return f;
}
inline unsigned __float_as_uint(float f) {
    unsigned u;
    std::memcpy(&u, &f, 4);
    return u;
}
inline float __int_as_float(int i) {
    float f;
    std::memcpy(&f, &i, 4);
    return f;
}

// Run `body` for every thread of every block: one host thread per CUDA thread of a block, reused
// for all the blocks of the launch (in order); between blocks every thread meets at a barrier
// while thread 0 sets up the next block's barriers and shared memory.
inline void emu_launch(unsigned gx, unsigned gy, unsigned gz, unsigned bx, unsigned by, unsigned bz,
                       size_t shared_bytes, const std::function<void()>& body) {
    gridDim = {gx, gy, gz};
    blockDim = {bx, by, bz};
    const unsigned nthreads = bx * by * bz, nwarps = (nthreads + 31) / 32;
    const unsigned long nblocks = (unsigned long)gx * gy * gz;
    std::vector<char> smem(shared_bytes + 16);
    EmuBlock blk;
    std::barrier<> between(nthreads);
    auto setup = [&](unsigned long b) {
        blockIdx = {(unsigned)(b % gx), (unsigned)((b / gx) % gy), (unsigned)(b / ((unsigned long)gx * gy))};
        blk.block = std::make_unique<std::barrier<>>(nthreads);
        blk.warps.clear();
        for (unsigned w = 0; w < nwarps; ++w)
            blk.warps.push_back(std::make_unique<std::barrier<>>(std::min<unsigned>(32, nthreads - 32 * w)));
        blk.lanes.assign(32 * nwarps, 0);
        blk.frags.assign(32 * 6 * nwarps, 0);
        std::memset(smem.data(), 0xA5, smem.size());  // garbage, as on a GPU
        emu_block = &blk;
        emu_dynamic_smem = smem.data();
    };
    std::vector<std::thread> threads;
    threads.reserve(nthreads);
    for (unsigned t = 0; t < nthreads; ++t)
        threads.emplace_back([&, t] {
            threadIdx = {t % bx, (t / bx) % by, t / (bx * by)};
            for (unsigned long b = 0; b < nblocks; ++b) {
                if (t == 0) setup(b);
                between.arrive_and_wait();  // the block is set up
                body();
                blk.block->arrive_and_drop();
                between.arrive_and_wait();  // every thread is done with it
            }
        });
    for (auto& th : threads) th.join();
}
