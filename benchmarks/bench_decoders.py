"""The CUDA decode kernels (pose_edge.kernels) against our NumPy decoders, on identical inputs.

    python benchmarks/bench_decoders.py [--rounds 7] [--batches 1,8,64,128] [--out benchmarks/results]   (a GPU)
    python benchmarks/bench_decoders.py --emulate --batches 1,4 --images 1 --size 640                  (no GPU)

This measures what the originals cannot show: the kernels on the device where an engine leaves its outputs (device
buffers in, final results copied back). The NumPy decoders are compared with the original implementations by
bench_vs_originals.py. Inputs from decoder_workloads.py: heatmaps (quarter and DARK; crops of 17 maps at 64x48) and
KAPAO-S grids (4 images at 1280). Outputs are checked before times are reported: heatmap peak values bit for bit
and coordinates within 1e-4 px (DARK's float64 blur sums in another order); KAPAO the same number of poses and the
same fused keypoints, scores within 1e-5 relative, coordinates within 1e-2 px (the GPU's expf and NumPy's exp
differ in the last bit). The kernels keep at most `capacity` (4,096) candidates per pass, so the NumPy reference
runs with max_nms = 4,096. --emulate runs the checks on the CPU emulation of the kernels (g++) and times nothing:
it checks this script where there is no GPU.
"""

from __future__ import annotations

import argparse
import sys
from datetime import datetime, timezone
from pathlib import Path

from bench_vs_originals import machine, time_pair  # noqa: I001  (sets one BLAS thread before NumPy loads)

import numpy as np

from decoder_workloads import KAPAO_ANCHORS, KAPAO_STRIDES, NC, K, heatmap_workload, kapao_workload
from pose_edge.fsutil import atomic_write_json, atomic_write_text
from pose_edge.runtime import kapao_decode as kd
from pose_edge.runtime.heatmap_decode import decode_heatmaps

CAPACITY = 4096  # kernels/params.py MAX_CAPACITY


def crop_affines(center: np.ndarray, scale: np.ndarray, h: int, w: int) -> np.ndarray:
    """float64 [N, 2, 3] heatmap pixel -> image pixel per crop (Simple Baselines' box: scale * 200 px wide)."""
    affine = np.zeros((len(center), 2, 3))
    affine[:, 0, 0] = scale[:, 0] * 200 / w
    affine[:, 1, 1] = scale[:, 1] * 200 / h
    affine[:, :, 2] = center - scale * 100
    return affine


def heatmap_rows(dev, batches, rounds: int, rng, emulate: bool) -> list[dict]:
    from pose_edge.kernels.launch import HeatmapDecoder

    rows = []
    for crops in batches:
        maps, center, scale = heatmap_workload(rng, crops)
        affine = crop_affines(center, scale, *maps.shape[2:])
        hm_ptr, aff_ptr = dev.upload(maps), dev.upload(affine)
        res_ptr = dev.alloc(maps.shape[0] * maps.shape[1] * 12)
        host = np.empty(maps.shape[:2] + (3,), np.float32)
        for refine in ("quarter", "dark"):
            decoder = HeatmapDecoder(dev, refine)

            def kernel():
                decoder.run(hm_ptr, maps.shape, maps.dtype, aff_ptr, res_ptr)
                dev.copy_to_host(host, res_ptr)
                dev.synchronize()
                return host

            ours = decode_heatmaps(maps, affine, refine)
            got = kernel()
            np.testing.assert_array_equal(got[..., 2], ours[..., 2])
            diff = float(np.max(np.abs(got[..., :2] - ours[..., :2])))
            if not diff <= 1e-4:
                raise SystemExit(f"{refine}, {crops} crops: kernel and NumPy differ by {diff} px")
            row = {"decoder": refine, "crops": crops, "max_diff_image_px": diff}
            if not emulate:
                timing = time_pair(kernel, lambda: decode_heatmaps(maps, affine, refine), rounds)
                row.update(gpu_ms=timing["ours_wall_ms"], numpy_ms=timing["original_wall_ms"], ratio=timing["speedup_wall"])
            rows.append(row)
            print(row, flush=True)
        for ptr in (hm_ptr, aff_ptr, res_ptr):
            dev.free(ptr)
    return rows


def kapao_rows(dev, rounds: int, rng, images: int, size: int, emulate: bool) -> list[dict]:
    from pose_edge.kernels.launch import KapaoPostprocessor, letterbox_array

    grids, letterboxes = kapao_workload(rng, images, size)
    thresholds = kd.Thresholds(max_nms=CAPACITY)
    post = KapaoPostprocessor(dev, KAPAO_STRIDES, KAPAO_ANCHORS, NC, K, thresholds, capacity=CAPACITY)
    level_ptrs = [dev.upload(g) for g in grids]
    lb_ptr = dev.upload(letterbox_array(letterboxes, images))
    sizes = [g.shape[2:] for g in grids]

    def kernel():
        return post.fetch(post.run(level_ptrs, sizes, images, grids[0].dtype, lb_ptr))

    def numpy():
        return kd.postprocess(grids, KAPAO_STRIDES, KAPAO_ANCHORS, NC, K, letterboxes, thresholds)

    worst = 0.0
    for got, ref in zip(kernel(), numpy()):
        if len(got) != len(ref) or not np.array_equal(got.keypoints[..., 2] > 0, ref.keypoints[..., 2] > 0):
            raise SystemExit(f"KAPAO: the kernels give {len(got)} poses, NumPy {len(ref)}, or other fused keypoints")
        np.testing.assert_allclose(got.scores, ref.scores, rtol=1e-5)
        worst = max(worst, float(np.max(np.abs(got.boxes - ref.boxes), initial=0)),
                    float(np.max(np.abs(got.keypoints[..., :2] - ref.keypoints[..., :2]), initial=0)))
    if worst > 1e-2:
        raise SystemExit(f"KAPAO: kernel and NumPy coordinates differ by {worst} px")
    row = {"decoder": "kapao", "images": images, "input": size, "max_diff_px": worst}
    if not emulate:
        timing = time_pair(kernel, numpy, rounds)
        row.update(gpu_ms=timing["ours_wall_ms"], numpy_ms=timing["original_wall_ms"], ratio=timing["speedup_wall"])
    for ptr in level_ptrs + [lb_ptr]:
        dev.free(ptr)
    print(row, flush=True)
    return [row]


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--batches", default="1,8,64,128", help="crops per heatmap batch")
    parser.add_argument("--images", type=int, default=4)
    parser.add_argument("--size", type=int, default=1280, help="KAPAO input side")
    parser.add_argument("--emulate", action="store_true", help="check on the CPU emulation of the kernels, no timing")
    parser.add_argument("--out", type=Path, help="folder for kernels_vs_numpy.json and .md")
    args = parser.parse_args(argv)
    rng = np.random.default_rng(0)
    batches = [int(b) for b in args.batches.split(",")]
    if args.emulate:
        from pose_edge.kernels.emulator import EmulatedDevice

        dev = EmulatedDevice()
        heatmap_rows(dev, batches, args.rounds, rng, True)
        kapao_rows(dev, args.rounds, rng, args.images, args.size, True)
        print("the CPU emulation of the kernels agrees with the NumPy decoders (nothing timed)")
        return 0
    from pose_edge.kernels.cuda_device import CudaDevice

    with CudaDevice() as dev:
        device = f"{dev.name} (sm_{dev.arch}), kernels from {dev.module_origin}"
        results = heatmap_rows(dev, batches, args.rounds, rng, False)
        results += kapao_rows(dev, args.rounds, rng, args.images, args.size, False)
    record = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine(),
              "device": device, "rounds": args.rounds, "results": results}
    lines = [f"Recorded {record['date']} on {device}, host {record['machine']['cpu']}. Medians of {args.rounds} "
             "rounds, wall-clock; GPU: device buffers in, results copied back; NumPy: one thread.", "",
             "| decoder | workload | GPU ms | NumPy ms | NumPy / GPU |", "| --- | --- | --- | --- | --- |"]
    for r in results:
        what = f"{r['crops']} crops" if "crops" in r else f"{r['images']} images at {r['input']}"
        lines.append(f"| {r['decoder']} | {what} | {r['gpu_ms']:.3f} | {r['numpy_ms']:.2f} | {r['ratio']:.0f}x |")
    text = "\n".join(lines) + "\n"
    print(text)
    if args.out:
        atomic_write_json(args.out / "kernels_vs_numpy.json", record, indent=1)
        atomic_write_text(args.out / "kernels_vs_numpy.md", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
