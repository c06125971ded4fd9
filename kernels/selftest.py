"""Checks of the decode kernels that `pose-edge selftest [--gpu]` can run, each with what it proves.

    python -m pose_edge.kernels.selftest [--gpu] [--json]

Without --gpu (any machine with g++ and cuda-python): NVRTC compiles the kernels for this machine's newest target, and
the CPU emulation of the same source matches the NumPy decoders. With --gpu: the kernels load on the GPU (and from
where: fatbin or NVRTC), run on it, match the NumPy decoders (bit for bit after the sigmoid, as in the tests), and
their latency on a realistic workload is measured.
"""

from __future__ import annotations

import argparse
import json
import sys
import time
from dataclasses import asdict, dataclass

import numpy as np


@dataclass
class Check:
    name: str
    ok: bool
    detail: str
    seconds: float


def _run(name: str, fn) -> Check:
    start = time.perf_counter()
    try:
        detail = fn()
        return Check(name, True, detail, time.perf_counter() - start)
    except Exception as e:  # a check reports its failure; it does not stop the others
        return Check(name, False, f"{type(e).__name__}: {e}", time.perf_counter() - start)


def _compare_on(device, repeat: int = 0) -> str:
    """Heatmap and KAPAO decodes on `device` against the NumPy references; optional timing (ms, median)."""
    from pose_edge.kernels.exercise import KAPAO_ANCHORS, KAPAO_STRIDES
    from pose_edge.kernels.launch import HeatmapDecoder, KapaoPostprocessor

    from pose_edge.runtime import kapao_decode as kd
    from pose_edge.runtime.heatmap_decode import decode_heatmaps

    rng = np.random.default_rng(0)
    maps = rng.random((8, 17, 64, 48), dtype=np.float32)
    maps[:, :, 30, 20] += 2.0
    affine = rng.normal(size=(8, 2, 3))
    for dtype in (np.float32, np.float16):
        for refine in ("quarter", "dark"):
            got = HeatmapDecoder(device, refine)(maps.astype(dtype), affine)
            ref = decode_heatmaps(maps.astype(dtype), affine, refine)
            if not (np.array_equal(got[..., 2], ref[..., 2]) and np.allclose(got, ref, rtol=0, atol=1e-4)):
                raise AssertionError(f"heatmap decode ({refine}, {np.dtype(dtype).name}) differs from NumPy")
    nc, k = 18, 17
    depth = 5 + nc + 2 * k
    grids = [rng.normal(-3.0, 2.5, (2, 3 * depth, 256 // s, 320 // s)).astype(np.float32) for s in KAPAO_STRIDES]
    post = KapaoPostprocessor(device, KAPAO_STRIDES, KAPAO_ANCHORS, nc, k)
    got = post(grids)
    rows = post.decode_rows(grids)
    poses = 0
    for n in range(2):
        ref = kd.postprocess_rows(rows[n], nc, k)
        if not (len(ref) == len(got[n]) and np.array_equal(ref.keypoints, got[n].keypoints)
                and np.array_equal(ref.boxes, got[n].boxes) and np.array_equal(ref.scores, got[n].scores)):
            raise AssertionError("KAPAO post-processing differs from NumPy on the kernels' own decoded rows")
        poses += len(ref)
    detail = f"heatmaps (quarter, DARK; fp32, fp16) and KAPAO ({poses} poses) match NumPy"
    if repeat:
        times = {}
        big = rng.random((64, 17, 64, 48), dtype=np.float32).astype(np.float16)
        hm_ptr, out_ptr = device.upload(big), device.alloc(64 * 17 * 12)
        host = np.empty((64, 17, 3), np.float32)
        dark = HeatmapDecoder(device, "dark")
        level_grids = [rng.normal(-8.0, 1.5, (1, 3 * depth, 1280 // s, 1280 // s)).astype(np.float16)
                       for s in KAPAO_STRIDES]
        level_ptrs = [device.upload(g) for g in level_grids]
        big_post = KapaoPostprocessor(device, KAPAO_STRIDES, KAPAO_ANCHORS, nc, k)

        def heatmaps():
            dark.run(hm_ptr, big.shape, big.dtype, None, out_ptr)
            device.copy_to_host(host, out_ptr)
            device.synchronize()

        def kapao():
            big_post.fetch(big_post.run(level_ptrs, [g.shape[2:] for g in level_grids], 1, np.float16))

        for name, fn in (("DARK 64x17 maps 64x48 fp16", heatmaps), ("KAPAO 1280x1280 fp16", kapao)):
            fn()
            samples = []
            for _ in range(repeat):
                start = time.perf_counter()
                fn()
                samples.append(time.perf_counter() - start)
            times[name] = float(np.median(samples)) * 1e3
        detail += "; " + ", ".join(f"{k}: {v:.3f} ms" for k, v in times.items())
    return detail


def run_checks(gpu: bool = False) -> list[Check]:
    from pose_edge.kernels import build

    checks = [_run("NVRTC compiles the kernels (sm_120)", lambda: f"{len(build.nvrtc_compile(120))} byte cubin"),
              _run("CPU emulation matches the NumPy decoders", lambda: _compare_on(_emulator()))]
    if gpu:
        holder = {}

        def load():
            from pose_edge.kernels.cuda_device import CudaDevice

            holder["dev"] = CudaDevice()
            return f"{holder['dev'].name} (sm_{holder['dev'].arch}): {holder['dev'].module_origin}"

        checks.append(_run("kernels load on the GPU", load))
        if "dev" in holder:
            checks.append(_run("GPU kernels match the NumPy decoders (with latency)",
                               lambda: _compare_on(holder["dev"], repeat=20)))
            holder["dev"].close()
    return checks


def _emulator():
    from pose_edge.kernels.emulator import EmulatedDevice

    return EmulatedDevice()


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pose_edge.kernels.selftest", description=__doc__.split("\n")[0])
    parser.add_argument("--gpu", action="store_true", help="also run the kernels on the GPU")
    parser.add_argument("--json", action="store_true")
    args = parser.parse_args(argv)
    checks = run_checks(args.gpu)
    if args.json:
        print(json.dumps([asdict(c) for c in checks], indent=1))
    else:
        for c in checks:
            print(f"{'PASS' if c.ok else 'FAIL'}  {c.name} ({c.seconds:.1f} s): {c.detail}")
    return 0 if all(c.ok for c in checks) else 1


if __name__ == "__main__":
    sys.exit(main())
