"""The CPU emulation itself (kernels/emulation.h): intrinsics, shared memory, atomics, launch checks, the parameter
layouts, the GPU division routine's exactness, and the ThreadSanitizer build that catches a missing barrier."""

from __future__ import annotations

import ctypes
import os
import shutil
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
from pose_edge.kernels import build, params
from pose_edge.kernels.emulator import EmulatedDevice

from pose_edge.errors import PoseEdgeError

pytestmark = pytest.mark.skipif(shutil.which("g++") is None, reason="needs g++ (C++20)")

# Test kernels for the intrinsics, written as kernel code (CUDA spelling) and run through pe_emu::launch.
INTRINSICS_SOURCE = r"""
#include "pe_cuda.h"

__global__ void shuffles(int* out) {  // out[5 * tid + i]
    const int lane = threadIdx.x & 31;
    const int v = 100 * blockIdx.x + threadIdx.x;
    int* o = out + 5 * (blockIdx.x * blockDim.x + threadIdx.x);
    o[0] = __shfl_xor_sync(PE_FULL_MASK, v, 5);
    o[1] = __shfl_down_sync(PE_FULL_MASK, v, 3);
    o[2] = __shfl_up_sync(PE_FULL_MASK, v, 2);
    o[3] = __shfl_sync(PE_FULL_MASK, v, 7);
    o[4] = static_cast<int>(__ballot_sync(PE_FULL_MASK, lane % 3 == 0)) + __any_sync(PE_FULL_MASK, lane == 31) * 7 +
           __all_sync(PE_FULL_MASK, lane < 32) * 11;
}

__global__ void shared_and_atomics(float* out, unsigned long long* counters) {
    PE_DYNAMIC_SHARED(float, dyn);  // blockDim.x floats
    __shared__ int s_total;
    const int t = threadIdx.x;
    if (t == 0) s_total = 0;
    dyn[t] = static_cast<float>(t * t);
    __syncthreads();
    atomicAdd(&s_total, t);
    out[blockIdx.x * blockDim.x + t] = dyn[blockDim.x - 1 - t];  // written by another thread
    __syncthreads();
    if (t == 0) out[gridDim.x * blockDim.x + blockIdx.x] = static_cast<float>(s_total);
    atomicAdd(counters + 0, 1ull);
    atomicMax(reinterpret_cast<unsigned int*>(counters + 1), static_cast<unsigned>(blockIdx.x * 1000 + t));
    atomicOr(reinterpret_cast<unsigned int*>(counters + 2), 1u << (t % 32));
    atomicAdd(reinterpret_cast<float*>(counters + 3), 0.5f);
}

__global__ void early_exit(int* out) {  // threads that return do not hold up the barrier of the others
    __shared__ int s_value;
    if (threadIdx.x >= 20) return;
    if (threadIdx.x == 0) s_value = 42 + blockIdx.z;
    __syncthreads();
    out[(blockIdx.z * gridDim.y + blockIdx.y) * 20 + threadIdx.x] = s_value;
}

__global__ void unread_shared(float* out) {  // dynamic shared memory starts poisoned (NaN), not zeroed
    PE_DYNAMIC_SHARED(float, dyn);
    out[threadIdx.x] = dyn[threadIdx.x];
}

extern "C" int run_shuffles(int* out, unsigned blocks, unsigned threads) {
    return pe_emu::launch(dim3(blocks), dim3(threads), 0, [&] { shuffles(out); });
}
extern "C" int run_shared(float* out, unsigned long long* counters, unsigned blocks, unsigned threads) {
    return pe_emu::launch(dim3(blocks), dim3(threads), threads * sizeof(float),
                          [&] { shared_and_atomics(out, counters); });
}
extern "C" int run_early_exit(int* out) {
    return pe_emu::launch(dim3(1, 2, 3), dim3(64), 0, [&] { early_exit(out); });
}
extern "C" int run_unread_shared(float* out) {
    return pe_emu::launch(dim3(1), dim3(32), 32 * sizeof(float), [&] { unread_shared(out); });
}
"""

DIVISION_SOURCE = r"""
#include <cstdio>
#include <cstdint>
#include <cstring>
#include <random>
#include "pe_cuda.h"

static bool same(float a, float b) {
    if (a != a) return b != b;
    return __float_as_uint(a) == __float_as_uint(b);
}

int main() {
    long long bad = 0, checked = 0;
    auto check = [&](float a, float b) {
        ++checked;
        const float want = a / b, newton = pe_div_newton(a, b), fast = pe_div_fast(a, b);
        if (!same(newton, want) || !same(fast, want)) {
            if (bad++ < 5) std::printf("mismatch %a / %a: %a, %a vs %a\n", a, b, newton, fast, want);
        }
    };
    std::mt19937_64 rng(1);
    for (int i = 0; i < 4000000; ++i) {  // any two bit patterns: subnormals, Inf, NaN, overflow, underflow
        check(__uint_as_float(static_cast<unsigned>(rng())), __uint_as_float(static_cast<unsigned>(rng())));
    }
    std::uniform_real_distribution<float> unit(0.0f, 1.0f);
    for (int i = 0; i < 2000000; ++i) check(unit(rng) * 1000.0f - 500.0f, unit(rng) * 4.0f + 0.01f);  // letterbox
    for (unsigned bits = 0x3F800000u; bits < 0x40000000u; bits += 3) check(1.0f, __uint_as_float(bits));  // sigmoid
    const float specials[] = {0.0f, -0.0f, 1.0f, -1.0f, 3.0f, 1e-45f, 1e-38f, 1.17549435e-38f, 3.4028235e38f,
                              __int_as_float(0x7F800000), __int_as_float(0xFF800000), __int_as_float(0x7FC00000)};
    for (float a : specials)
        for (float b : specials) check(a, b);
    std::printf("%lld checked, %lld mismatches\n", checked, bad);
    return bad != 0;
}
"""


def compile_cpp(source: str, out: Path, shared: bool, extra: tuple[str, ...] = ()) -> Path:
    src = out.with_suffix(".cpp")
    src.write_text(source)
    flags = [*build.EMULATION_FLAGS] if shared else ["-std=c++20", "-O2", "-ffp-contract=off", "-pthread"]
    subprocess.run(["g++", *flags, *extra, f"-I{build.KERNEL_DIR}", "-o", str(out), str(src)], check=True)
    return out


@pytest.fixture(scope="module")
def intrinsics(tmp_path_factory):
    lib = ctypes.CDLL(str(compile_cpp(INTRINSICS_SOURCE, tmp_path_factory.mktemp("emu") / "libintr.so", True)))
    for name in ("run_shuffles", "run_shared", "run_early_exit", "run_unread_shared"):
        getattr(lib, name).restype = ctypes.c_int
    return lib


def test_warp_shuffles_and_votes(intrinsics):
    blocks, threads = 2, 64
    out = np.zeros((blocks * threads, 5), np.int32)
    assert intrinsics.run_shuffles(out.ctypes.data_as(ctypes.c_void_p), blocks, threads) == 0
    tid = np.arange(blocks * threads)
    v = 100 * (tid // threads) + tid % threads
    lane = tid % 32
    warp_base = v - lane
    np.testing.assert_array_equal(out[:, 0], warp_base + (lane ^ 5))
    np.testing.assert_array_equal(out[:, 1], np.where(lane + 3 < 32, v + 3, v))
    np.testing.assert_array_equal(out[:, 2], np.where(lane >= 2, v - 2, v))
    np.testing.assert_array_equal(out[:, 3], warp_base + 7)
    ballot = sum(1 << i for i in range(32) if i % 3 == 0)
    np.testing.assert_array_equal(out[:, 4], np.int32(np.uint32(ballot).view(np.int32)) + 7 + 11)


def test_shared_memory_and_atomics(intrinsics):
    blocks, threads = 3, 40  # a partial last warp
    out = np.zeros(blocks * threads + blocks, np.float32)
    counters = np.zeros(4, np.uint64)
    assert intrinsics.run_shared(out.ctypes.data_as(ctypes.c_void_p), counters.ctypes.data_as(ctypes.c_void_p),
                                 blocks, threads) == 0
    t = np.arange(threads)
    np.testing.assert_array_equal(out[:blocks * threads].reshape(blocks, threads), np.tile((threads - 1 - t) ** 2,
                                                                                        (blocks, 1)))
    np.testing.assert_array_equal(out[blocks * threads:], [t.sum()] * blocks)
    assert counters[0] == blocks * threads
    assert int(counters[1]) & 0xFFFFFFFF == (blocks - 1) * 1000 + threads - 1
    assert int(counters[2]) & 0xFFFFFFFF == 0xFFFFFFFF
    assert np.uint32(int(counters[3]) & 0xFFFFFFFF).view(np.float32) == 0.5 * blocks * threads


def test_early_exit_and_3d_grid(intrinsics):
    out = np.zeros((3, 2, 20), np.int32)
    assert intrinsics.run_early_exit(out.ctypes.data_as(ctypes.c_void_p)) == 0
    np.testing.assert_array_equal(out, 42 + np.arange(3)[:, None, None] + np.zeros((3, 2, 20), np.int32))


def test_dynamic_shared_memory_starts_poisoned(intrinsics):
    out = np.zeros(32, np.float32)
    assert intrinsics.run_unread_shared(out.ctypes.data_as(ctypes.c_void_p)) == 0
    assert np.isnan(out).all()


def test_gpu_division_routine_is_exact_on_the_cpu(tmp_path):
    # pe_div_fast (and its fallback pe_div_newton) is how the GPU divides (no call to the compiler's division routine,
    # so no spills, and float64 only where float32 cannot prove its result); here both run with an estimate of 1/b
    # that is 3, -3 and 64 ulps off (the GPU's is within about 1) and must equal IEEE a / b bit for bit.
    for ulps in (3, -3, 64):
        exe = compile_cpp(DIVISION_SOURCE, tmp_path / f"div{ulps & 0xFFFF}", False, (f"-DPE_RCP_ESTIMATE_ULPS={ulps}",))
        result = subprocess.run([str(exe)], capture_output=True, text=True)
        assert result.returncode == 0, result.stdout
        assert "0 mismatches" in result.stdout


def test_launch_checks_like_the_gpu():
    dev = EmulatedDevice()
    p = params.HeatmapDecodeParams()
    with pytest.raises(PoseEdgeError, match="would refuse"):
        dev.launch("pe_heatmap_decode_f32", (1, 1, 1), (2048, 1, 1), 0, p)
    with pytest.raises(PoseEdgeError, match="would refuse"):
        dev.launch("pe_heatmap_decode_f32", (0, 1, 1), (128, 1, 1), 0, p)
    with pytest.raises(PoseEdgeError, match="would refuse"):
        dev.launch("pe_kapao_sort_f32", (1, 1, 1), (256, 1, 1), 64 * 1024, params.KapaoParams())
    with pytest.raises(PoseEdgeError, match="no such kernel"):
        dev.launch("pe_missing", (1, 1, 1), (32, 1, 1), 0, p)
    with pytest.raises(PoseEdgeError, match="size"):
        dev.launch("pe_kapao_select_f32", (1, 1, 1), (32, 1, 1), 0, p)


def test_parameter_blocks_have_the_same_layout_in_python_and_cpp():
    c_layout = EmulatedDevice().c_layout()
    assert set(c_layout) == set(params.STRUCTS)
    for name, struct in params.STRUCTS.items():
        assert params.layout(struct) == c_layout[name], name


# ThreadSanitizer ------------------------------------------------------------------------------------------------

def run_under_tsan(source_dir: Path) -> subprocess.CompletedProcess:
    """python -m pose_edge.kernels.exercise with the TSan build of source_dir's kernels and libtsan preloaded."""
    try:
        build.tsan_runtime()
    except PoseEdgeError as e:
        pytest.skip(str(e))
    library = build.build_emulation(tsan=True, source_dir=source_dir)
    env = dict(os.environ, PE_EMU_LIBRARY=str(library), LD_PRELOAD=str(build.tsan_runtime()),
               TSAN_OPTIONS="exitcode=66 report_signal_unsafe=0")
    return subprocess.run([sys.executable, "-m", "pose_edge.kernels.exercise"], env=env, capture_output=True,
                          text=True, timeout=300)


def copy_sources(dest: Path) -> Path:
    dest.mkdir()
    for f in build.KERNEL_DIR.iterdir():
        if f.suffix in (".h", ".cuh", ".cpp", ".cu"):
            shutil.copy(f, dest / f.name)
    return dest


def test_tsan_finds_no_race_in_the_kernels(tmp_path):
    result = run_under_tsan(build.KERNEL_DIR)
    assert "ThreadSanitizer" not in result.stderr, result.stderr[-4000:]
    assert result.returncode == 0 and "ran every kernel" in result.stdout


@pytest.mark.parametrize("header, barrier", [
    ("heatmap_decode.cuh", "__syncthreads();  // the warp partials are complete"),
    ("kapao_decode.cuh", "__syncthreads();  // the keys are padded"),
])
def test_tsan_catches_a_missing_barrier(tmp_path, header, barrier):
    sources = copy_sources(tmp_path / "src")
    text = (sources / header).read_text()
    assert text.count(barrier) == 1  # the barrier this test removes is still there
    (sources / header).write_text(text.replace(barrier, "/* barrier removed by the test */"))
    result = run_under_tsan(sources)
    assert "WARNING: ThreadSanitizer: data race" in result.stderr
    assert f"/{header}:" in result.stderr  # reported inside the kernel that lost its barrier
    assert result.returncode == 66
