// emu.h — just enough of CUDA to run LACE's kernels as host C++ (tests only).
//
// Each block runs with one std::thread per CUDA thread: __syncthreads is a std::barrier over the
// block, __shfl_xor_sync an exchange through a per-warp buffer between two warp barriers (every
// LACE kernel shuffles with all 32 lanes of a warp, in step). Blocks run one after the other, so
// `__shared__` (made `static`) is the block's shared memory. Grid-wide behaviour, timing and the
// memory model beyond barriers are not emulated: this checks the kernels' arithmetic, indexing,
// strides and barrier structure against the NumPy reference, not their speed.
#pragma once
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
