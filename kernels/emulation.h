// CPU emulation of the CUDA execution model, so that the kernel headers (*.cuh) compile with g++ and run in tests.
//
// What it provides, and how:
//   * one std::thread per CUDA thread of a block, from a pool that lives as long as the process. Worker t plays
//     thread t of every block of a launch, blocks one after another (so function-static `__shared__` arrays are
//     correct: no two blocks are ever alive at once);
//   * `__syncthreads()` is a std::barrier over the block; `__syncwarp()`, shuffles and ballots use a barrier and an
//     exchange slot per warp. A thread that returns from the kernel drops out of both, as exited threads do on the
//     GPU, so an early return never deadlocks the others;
//   * static `__shared__` = function `static`; dynamic shared memory (`extern __shared__` on the GPU) is reached
//     through PE_DYNAMIC_SHARED(type, name) (pe_cuda.h), a per-launch buffer refilled with 0xFF before every block,
//     so that a kernel that reads shared memory it never wrote sees NaNs and -1s, not zeros;
//   * atomics are std::atomic_ref with CUDA's relaxed ordering, so ThreadSanitizer still reports a race that only a
//     missing barrier would have ordered;
//   * threadIdx/blockIdx are thread_local, blockDim/gridDim are set once per launch.
// Not emulated: shuffles or ballots with a partial mask (aborts with a message), cooperative groups, clusters,
// texture memory, memory-model subtleties beyond what std::atomic_ref gives.
//
// Launches are serialised (one at a time per process) and synchronous.
#pragma once

#if defined(__CUDACC__) || defined(__CUDACC_RTC__)
#error "emulation.h is the host-compiler stand-in for CUDA; nvcc and NVRTC must not include it"
#endif

#include <atomic>
#include <barrier>
#include <bit>
#include <cmath>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <functional>
#include <memory>
#include <mutex>
#include <new>
#include <thread>
#include <vector>

#define __global__
#define __device__
#define __host__
#define __forceinline__ inline
#define __noinline__
#define __shared__ static
#define __restrict__ __restrict
#define __launch_bounds__(...)
#define __align__(n) alignas(n)

struct dim3 {
    unsigned int x, y, z;
    constexpr dim3(unsigned int x_ = 1, unsigned int y_ = 1, unsigned int z_ = 1) : x(x_), y(y_), z(z_) {}
};

inline thread_local dim3 threadIdx;
inline thread_local dim3 blockIdx;
inline dim3 blockDim;
inline dim3 gridDim;
constexpr int warpSize = 32;

namespace pe_emu {

[[noreturn]] inline void fail(const char* what) {
    std::fprintf(stderr, "pe_emu: %s\n", what);
    std::fflush(stderr);
    std::abort();
}

// One warp's rendezvous: a barrier over its live lanes and two banks of a slot per lane for shuffles and ballots.
// Exchanges alternate banks, so one barrier per exchange suffices: a lane can only write a bank again after the
// next exchange's barrier, which every lane reaches after it has read that bank.
struct Warp {
    explicit Warp(unsigned lanes) : size(lanes), bar(lanes) {}
    unsigned size;
    std::barrier<> bar;
    std::uint64_t slot[2][32] = {};
};

// Everything one block shares. Rebuilt between blocks by the completion step of `block_end`.
struct Block {
    unsigned threads = 0;
    std::unique_ptr<std::barrier<>> sync;       // __syncthreads
    std::vector<std::unique_ptr<Warp>> warps;  // __syncwarp, shuffles, ballots
};

struct Launch {
    dim3 grid, block;
    unsigned threads = 0, blocks = 0;
    const std::function<void()>* body = nullptr;
    unsigned char* dynamic_shared = nullptr;
    std::size_t dynamic_bytes = 0;
};

inline Block g_block;
inline Launch g_launch;
inline thread_local unsigned t_linear = 0;  // this thread's linear index in its block
inline thread_local unsigned t_bank = 0;    // the slot bank of this thread's next warp exchange

inline void reset_block() {
    const unsigned n = g_launch.threads;
    g_block.threads = n;
    g_block.sync = std::make_unique<std::barrier<>>(static_cast<std::ptrdiff_t>(n));
    g_block.warps.clear();
    for (unsigned first = 0; first < n; first += 32) {
        g_block.warps.push_back(std::make_unique<Warp>(n - first < 32 ? n - first : 32));
    }
    if (g_launch.dynamic_bytes) std::memset(g_launch.dynamic_shared, 0xFF, g_launch.dynamic_bytes);
}

struct BlockEnd {
    void operator()() noexcept { reset_block(); }
};

// The pool: worker t waits on its own counter, then plays thread t of every block of the launch.
class Pool {
public:
    static Pool& instance() {
        static Pool pool;
        return pool;
    }

    // Runs body for every thread of every block; returns when the launch is complete.
    void run(unsigned threads, unsigned blocks) {
        ensure(threads);
        block_end_ = std::make_unique<std::barrier<BlockEnd>>(static_cast<std::ptrdiff_t>(threads));
        blocks_ = blocks;
        remaining_.store(static_cast<int>(threads), std::memory_order_relaxed);
        for (unsigned t = 0; t < threads; ++t) {
            go_[t]->fetch_add(1, std::memory_order_release);
            go_[t]->notify_one();
        }
        int left;
        while ((left = remaining_.load(std::memory_order_acquire)) != 0) {
            remaining_.wait(left, std::memory_order_acquire);
        }
        block_end_.reset();
    }

    ~Pool() {
        stop_.store(true, std::memory_order_relaxed);
        for (std::size_t t = 0; t < workers_.size(); ++t) {
            go_[t]->fetch_add(1, std::memory_order_release);
            go_[t]->notify_one();
        }
        for (auto& w : workers_) w.join();
    }

private:
    void ensure(unsigned n) {
        while (workers_.size() < n) {
            go_.push_back(std::make_unique<std::atomic<std::uint64_t>>(0));
            // The worker keeps its own counter's address: go_ may reallocate while it runs.
            std::atomic<std::uint64_t>* go = go_.back().get();
            const unsigned id = static_cast<unsigned>(workers_.size());
            workers_.emplace_back([this, id, go] { loop(id, go); });
        }
    }

    void loop(unsigned id, std::atomic<std::uint64_t>* go) {
        std::uint64_t seen = 0;
        for (;;) {
            go->wait(seen, std::memory_order_acquire);
            seen = go->load(std::memory_order_acquire);
            if (stop_.load(std::memory_order_relaxed)) return;
            play(id);
            if (remaining_.fetch_sub(1, std::memory_order_acq_rel) == 1) remaining_.notify_one();
        }
    }

    void play(unsigned id) {
        const dim3 b = g_launch.block, g = g_launch.grid;
        t_linear = id;
        threadIdx = dim3(id % b.x, (id / b.x) % b.y, id / (b.x * b.y));
        for (unsigned k = 0; k < blocks_; ++k) {
            blockIdx = dim3(k % g.x, (k / g.x) % g.y, k / (g.x * g.y));
            t_bank = 0;
            (*g_launch.body)();
            // Exited threads no longer hold up the barriers of the ones still running.
            g_block.warps[id / 32]->bar.arrive_and_drop();
            g_block.sync->arrive_and_drop();
            block_end_->arrive_and_wait();  // the last arrival rebuilds g_block for the next block
        }
    }

    std::vector<std::thread> workers_;
    std::vector<std::unique_ptr<std::atomic<std::uint64_t>>> go_;
    std::atomic<int> remaining_{0};
    std::atomic<bool> stop_{false};
    std::unique_ptr<std::barrier<BlockEnd>> block_end_;
    unsigned blocks_ = 0;
};

inline std::mutex& launch_mutex() {
    static std::mutex m;
    return m;
}

// Launch errors, numbered like nothing in CUDA on purpose: the Python side turns them into messages.
enum LaunchStatus { kOk = 0, kBadConfig = 1 };

// Runs `body` as a kernel over grid x block with `dynamic_bytes` of dynamic shared memory; synchronous.
inline int launch(dim3 grid, dim3 block, std::size_t dynamic_bytes, const std::function<void()>& body) {
    const unsigned long long threads = 1ull * block.x * block.y * block.z;
    const unsigned long long blocks = 1ull * grid.x * grid.y * grid.z;
    // The GPU's limits: refuse what a real launch would refuse, so that the emulator catches bad configurations.
    if (threads == 0 || threads > 1024 || block.z > 64 || blocks == 0 || grid.y > 65535 || grid.z > 65535 ||
        dynamic_bytes > 48 * 1024) {
        return kBadConfig;
    }
    std::lock_guard<std::mutex> lock(launch_mutex());
    std::unique_ptr<unsigned char[], void (*)(unsigned char*)> smem(
        dynamic_bytes ? static_cast<unsigned char*>(::operator new[](dynamic_bytes, std::align_val_t(16))) : nullptr,
        [](unsigned char* p) { if (p) ::operator delete[](p, std::align_val_t(16)); });
    g_launch = Launch{grid, block, static_cast<unsigned>(threads), static_cast<unsigned>(blocks), &body, smem.get(),
                      dynamic_bytes};
    blockDim = block;
    gridDim = grid;
    reset_block();
    Pool::instance().run(static_cast<unsigned>(threads), static_cast<unsigned>(blocks));
    return kOk;
}

inline unsigned char* dynamic_shared() { return g_launch.dynamic_shared; }

inline Warp& my_warp() { return *g_block.warps[t_linear / 32]; }
inline unsigned my_lane() { return t_linear % 32; }

inline void check_full_mask(unsigned mask, const Warp& w) {
    const unsigned live = w.size == 32 ? 0xFFFFFFFFu : ((1u << w.size) - 1u);
    if ((mask & live) != live) fail("a warp intrinsic with a partial mask is not emulated; use the full mask");
}

template <typename T>
std::uint64_t to_bits(T v) {
    static_assert(sizeof(T) <= 8, "shuffled values must fit in 8 bytes");
    std::uint64_t bits = 0;
    std::memcpy(&bits, &v, sizeof(T));
    return bits;
}

template <typename T>
T from_bits(std::uint64_t bits) {
    T v;
    std::memcpy(&v, &bits, sizeof(T));
    return v;
}

// Every lane publishes v, then reads the slot of lane src(lane) (its own when src is outside the warp).
template <typename T, typename Src>
T exchange(unsigned mask, T v, Src src) {
    Warp& w = my_warp();
    check_full_mask(mask, w);
    const unsigned lane = my_lane();
    std::uint64_t* bank = w.slot[t_bank];
    t_bank ^= 1u;
    bank[lane] = to_bits(v);
    w.bar.arrive_and_wait();
    const unsigned from = src(lane);
    return from < w.size ? from_bits<T>(bank[from]) : v;
}

}  // namespace pe_emu

inline void __syncthreads() { pe_emu::g_block.sync->arrive_and_wait(); }

inline void __syncwarp(unsigned mask = 0xFFFFFFFFu) {
    pe_emu::Warp& w = pe_emu::my_warp();
    pe_emu::check_full_mask(mask, w);
    w.bar.arrive_and_wait();
}

template <typename T>
T __shfl_sync(unsigned mask, T v, int src_lane, int width = 32) {
    return pe_emu::exchange(mask, v, [&](unsigned lane) {
        return (lane & ~static_cast<unsigned>(width - 1)) | (static_cast<unsigned>(src_lane) & (width - 1));
    });
}

template <typename T>
T __shfl_xor_sync(unsigned mask, T v, int lane_mask, int width = 32) {
    return pe_emu::exchange(mask, v, [&](unsigned lane) {
        const unsigned to = lane ^ static_cast<unsigned>(lane_mask);
        return (to / width == lane / width) ? to : lane;
    });
}

template <typename T>
T __shfl_down_sync(unsigned mask, T v, unsigned delta, int width = 32) {
    return pe_emu::exchange(mask, v, [&](unsigned lane) {
        const unsigned to = lane + delta;
        return (to / width == lane / width) ? to : lane;
    });
}

template <typename T>
T __shfl_up_sync(unsigned mask, T v, unsigned delta, int width = 32) {
    return pe_emu::exchange(mask, v, [&](unsigned lane) {
        return (lane % width >= delta) ? lane - delta : lane;
    });
}

inline unsigned __ballot_sync(unsigned mask, int predicate) {
    pe_emu::Warp& w = pe_emu::my_warp();
    pe_emu::check_full_mask(mask, w);
    const unsigned lane = pe_emu::my_lane();
    std::uint64_t* bank = w.slot[pe_emu::t_bank];
    pe_emu::t_bank ^= 1u;
    bank[lane] = predicate ? 1 : 0;
    w.bar.arrive_and_wait();
    unsigned bits = 0;
    for (unsigned l = 0; l < w.size; ++l) bits |= static_cast<unsigned>(bank[l]) << l;
    return bits & mask;
}

inline int __any_sync(unsigned mask, int predicate) { return __ballot_sync(mask, predicate) != 0; }

inline int __all_sync(unsigned mask, int predicate) {
    const pe_emu::Warp& w = pe_emu::my_warp();
    const unsigned live = w.size == 32 ? 0xFFFFFFFFu : ((1u << w.size) - 1u);
    return __ballot_sync(mask, predicate) == (mask & live);
}

inline unsigned __activemask() {
    const pe_emu::Warp& w = pe_emu::my_warp();
    return w.size == 32 ? 0xFFFFFFFFu : ((1u << w.size) - 1u);
}

// Atomics: relaxed, like CUDA's. Overloads (not templates) so that literals convert as they do under nvcc.
#define PE_EMU_ATOMIC_ADD(T)                                                                        \
    inline T atomicAdd(T* address, T value) {                                                      \
        return std::atomic_ref<T>(*address).fetch_add(value, std::memory_order_relaxed);            \
    }
PE_EMU_ATOMIC_ADD(int)
PE_EMU_ATOMIC_ADD(unsigned int)
PE_EMU_ATOMIC_ADD(unsigned long long)
PE_EMU_ATOMIC_ADD(float)
PE_EMU_ATOMIC_ADD(double)
#undef PE_EMU_ATOMIC_ADD

#define PE_EMU_ATOMIC_INT(T)                                                                        \
    inline T atomicSub(T* a, T v) { return std::atomic_ref<T>(*a).fetch_sub(v, std::memory_order_relaxed); } \
    inline T atomicOr(T* a, T v) { return std::atomic_ref<T>(*a).fetch_or(v, std::memory_order_relaxed); }   \
    inline T atomicAnd(T* a, T v) { return std::atomic_ref<T>(*a).fetch_and(v, std::memory_order_relaxed); } \
    inline T atomicXor(T* a, T v) { return std::atomic_ref<T>(*a).fetch_xor(v, std::memory_order_relaxed); } \
    inline T atomicExch(T* a, T v) { return std::atomic_ref<T>(*a).exchange(v, std::memory_order_relaxed); } \
    inline T atomicCAS(T* a, T expected, T desired) {                                              \
        std::atomic_ref<T>(*a).compare_exchange_strong(expected, desired, std::memory_order_relaxed); \
        return expected;                                                                            \
    }                                                                                               \
    inline T atomicMax(T* a, T v) {                                                                 \
        std::atomic_ref<T> r(*a);                                                                   \
        T old = r.load(std::memory_order_relaxed);                                                  \
        while (old < v && !r.compare_exchange_weak(old, v, std::memory_order_relaxed)) {}           \
        return old;                                                                                 \
    }                                                                                               \
    inline T atomicMin(T* a, T v) {                                                                 \
        std::atomic_ref<T> r(*a);                                                                   \
        T old = r.load(std::memory_order_relaxed);                                                  \
        while (v < old && !r.compare_exchange_weak(old, v, std::memory_order_relaxed)) {}           \
        return old;                                                                                 \
    }
PE_EMU_ATOMIC_INT(int)
PE_EMU_ATOMIC_INT(unsigned int)
PE_EMU_ATOMIC_INT(unsigned long long)
#undef PE_EMU_ATOMIC_INT

inline void __threadfence() { std::atomic_thread_fence(std::memory_order_seq_cst); }
inline void __threadfence_block() { std::atomic_thread_fence(std::memory_order_seq_cst); }

template <typename T>
T __ldg(const T* p) { return *p; }

inline int __popc(unsigned int x) { return std::popcount(x); }
inline int __popcll(unsigned long long x) { return std::popcount(x); }
inline int __ffs(int x) { return x ? std::countr_zero(static_cast<unsigned>(x)) + 1 : 0; }
inline int __ffsll(long long x) { return x ? std::countr_zero(static_cast<unsigned long long>(x)) + 1 : 0; }
inline int __clz(int x) { return std::countl_zero(static_cast<unsigned>(x)); }
inline int __clzll(long long x) { return std::countl_zero(static_cast<unsigned long long>(x)); }
inline unsigned int __brev(unsigned int x) {
    unsigned r = 0;
    for (int i = 0; i < 32; ++i) r |= ((x >> i) & 1u) << (31 - i);
    return r;
}

inline float __int_as_float(int x) { return std::bit_cast<float>(x); }
inline float __uint_as_float(unsigned int x) { return std::bit_cast<float>(x); }
inline int __float_as_int(float x) { return std::bit_cast<int>(x); }
inline unsigned int __float_as_uint(float x) { return std::bit_cast<unsigned int>(x); }
inline long long __double_as_longlong(double x) { return std::bit_cast<long long>(x); }
inline double __longlong_as_double(long long x) { return std::bit_cast<double>(x); }

// Rounded float arithmetic that nvcc never contracts into an FMA; on the host they are the plain operations.
inline float __fadd_rn(float a, float b) { return a + b; }
inline float __fsub_rn(float a, float b) { return a - b; }
inline float __fmul_rn(float a, float b) { return a * b; }
inline float __fdiv_rn(float a, float b) { return a / b; }
