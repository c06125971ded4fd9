"""Decoder benchmark: the NumPy decoders against the reference implementations' approach, on identical inputs.

    python benchmarks/bench_decoders.py [--repeat 7] [--out benchmarks/results] [--gpu]

What is compared (each pair on the same inputs; the outputs are checked to agree before any time is reported):
  dark     pose_edge heatmap_decode (refine="dark": Gaussian blur only in the 5 x 5 window the Taylor step reads,
           vectorised over all maps) against DarkPose's approach (blur every whole map, rescale it, take the log of
           the whole map, then a Python loop per keypoint for the Taylor step).
  quarter  heatmap_decode (refine="quarter", vectorised) against Simple Baselines' get_final_preds (a Python loop
           per keypoint for the quarter offset).
  kapao    kapao_decode.postprocess (NumPy decode, NMS, vectorised fusion) against KAPAO's approach (torch decode,
           torchvision batched_nms per pass, a Python loop per keypoint detection for the fusion).
  --gpu    also times the CUDA kernels (pose_edge.kernels) on the same inputs, device buffers in, host results out.
The reference approaches below are written for this benchmark, in our own words, to cost what those repositories'
code costs; they reproduce our references' results (checked), not the repositories' quirks.
Timings: median of --repeat runs after one warm-up, one thread for torch (NumPy here is single-threaded too).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import statistics
import sys
import time
from datetime import datetime, timezone
from pathlib import Path

import cv2
import numpy as np

from pose_edge.fsutil import atomic_write_json, atomic_write_text
from pose_edge.geometry import fit
from pose_edge.runtime import kapao_decode as kd
from pose_edge.runtime.heatmap_decode import LOG_FLOOR, dark_blur_weights, decode_heatmaps

KAPAO_STRIDES = (8, 16, 32, 64)
KAPAO_ANCHORS = (((19, 27), (44, 40), (38, 94)), ((96, 68), (86, 152), (180, 137)),
                 ((140, 301), (303, 264), (238, 542)), ((436, 615), (739, 380), (925, 792)))
NC, K = 18, 17
D = 5 + NC + 2 * K


def timed(fn, repeat: int) -> tuple[float, object]:
    """(median seconds over `repeat` runs after a warm-up, the last result)."""
    result = fn()
    times = []
    for _ in range(repeat):
        start = time.perf_counter()
        result = fn()
        times.append(time.perf_counter() - start)
    return statistics.median(times), result


# --------------------------------------------------------------------------------------------------------------
# Workloads

def heatmap_workload(rng, n=64, k=17, h=64, w=48, sigma=2.0):
    """A batch of SB-256x192-like heatmaps: a Gaussian at a sub-pixel spot per map, plus noise; crop affines."""
    ys, xs = np.mgrid[0:h, 0:w]
    cx = rng.uniform(3, w - 4, (n, k, 1, 1))
    cy = rng.uniform(3, h - 4, (n, k, 1, 1))
    maps = np.exp(-((xs - cx) ** 2 + (ys - cy) ** 2) / (2 * sigma**2)) * rng.uniform(0.3, 1.0, (n, k, 1, 1))
    maps = (maps + rng.normal(0, 0.005, maps.shape)).astype(np.float32)
    affine = np.zeros((n, 2, 3))
    scale = rng.uniform(2, 6, n)
    affine[:, 0, 0] = affine[:, 1, 1] = scale
    affine[:, 0, 2], affine[:, 1, 2] = rng.uniform(0, 1000, n), rng.uniform(0, 600, n)
    return maps, affine


def _logit(p):
    p = np.clip(np.asarray(p, np.float64), 1e-6, 1 - 1e-6)
    return np.log(p / (1 - p)).astype(np.float32)


def kapao_workload(rng, n=1, size=1280, persons=8):
    """KAPAO-S-like raw grids at size x size: low background scores (a few thousand person candidates at
    conf 0.001, as a trained network gives), persons with duplicate detections, keypoint objects near keypoints."""
    grids = []
    for s in KAPAO_STRIDES:
        g = rng.normal(-4.0, 1.5, (n, 3 * D, size // s, size // s)).astype(np.float32)
        for a in range(3):
            g[:, a * D + 4] = rng.normal(-8.0, 1.5, g[:, a * D + 4].shape)  # objectness
            g[:, a * D + 5] = rng.normal(-2.0, 1.5, g[:, a * D + 5].shape)  # person class
        grids.append(g)
    for image in range(n):
        for person in range(persons):
            level, anchor = 1, rng.integers(3)
            s = KAPAO_STRIDES[level]
            aw, ah = KAPAO_ANCHORS[level][anchor]
            gx, gy = rng.integers(4, size // s - 4, 2)
            kps = np.stack([gx * s + rng.uniform(-1.5, 1.5, K) * aw, gy * s + rng.uniform(-1.5, 1.5, K) * ah], -1)
            cx, cy = (gx + 0.7) * s, (gy + 0.7) * s
            bw, bh = aw * rng.uniform(0.7, 1.5), ah * rng.uniform(0.7, 1.5)
            for dup in range(3):  # the same box from neighbouring cells, lower scores: the NMS removes these
                x, y = gx + dup % 2, gy + dup // 2
                raw = grids[level][image, anchor * D:(anchor + 1) * D, y, x]
                raw[0:2] = _logit(((cx / s - x) + 0.5) / 2), _logit(((cy / s - y) + 0.5) / 2)
                raw[2:4] = _logit(np.sqrt(bw / aw) / 2), _logit(np.sqrt(bh / ah) / 2)
                raw[4] = _logit(0.95 - 0.2 * dup - 0.013 * person)  # distinct scores: torchvision orders ties
                                                                     # arbitrarily
                raw[5] = _logit(0.9)
                raw[5 + NC::2] = _logit(((kps[:, 0] - x * s) / aw + 2) / 4)
                raw[6 + NC::2] = _logit(((kps[:, 1] - y * s) / ah + 2) / 4)
            for j in range(K):  # a keypoint object near most keypoints
                if rng.random() < 0.3:
                    continue
                kx, ky = kps[j] + rng.normal(0, 4, 2)
                x, y = int(kx // 8), int(ky // 8)
                if not (0 <= x < size // 8 and 0 <= y < size // 8):
                    continue
                raw = grids[0][image, 0:D, y, x]
                raw[0], raw[1] = _logit(((kx / 8 - x) + 0.5) / 2), _logit(((ky / 8 - y) + 0.5) / 2)
                raw[2], raw[3] = _logit(np.sqrt(64 / 19) / 2), _logit(np.sqrt(64 / 27) / 2)
                raw[4], raw[5:5 + NC] = _logit(rng.uniform(0.5, 0.95)), -8.0
                raw[6 + j] = _logit(0.9)
    letterboxes = [fit((720, 1280), (size, size))] * n
    return grids, letterboxes


# --------------------------------------------------------------------------------------------------------------
# The reference implementations' approaches

def dark_like_darkpose(heatmaps: np.ndarray, affine: np.ndarray, kernel: int) -> np.ndarray:
    """DarkPose's get_final_preds: argmax, then blur each *whole* map (zero padding), rescale it to the original
    maximum, log of the whole map, and a Python loop over keypoints for the Taylor step; then the affine."""
    n, k, h, w = heatmaps.shape
    flat = heatmaps.reshape(n, k, -1)
    idx = np.argmax(flat, axis=2)
    maxvals = np.take_along_axis(flat, idx[..., None], 2)[..., 0]
    coords = np.stack([idx % w, idx // w], -1).astype(np.float64)
    coords *= (maxvals > 0)[..., None]
    r = (kernel - 1) // 2
    g = dark_blur_weights(kernel)
    logs = np.empty((n, k, h, w))
    for i in range(n):
        for j in range(k):
            padded = np.zeros((h + 2 * r, w + 2 * r))
            padded[r:r + h, r:r + w] = heatmaps[i, j]
            blurred = cv2.sepFilter2D(padded, -1, g, g, borderType=cv2.BORDER_CONSTANT)[r:r + h, r:r + w]
            blurred *= heatmaps[i, j].max() / blurred.max()
            logs[i, j] = np.log(np.maximum(blurred, LOG_FLOOR))
    for i in range(n):
        for j in range(k):
            px, py = int(coords[i, j, 0]), int(coords[i, j, 1])
            if not (maxvals[i, j] > 0 and 1 < px < w - 2 and 1 < py < h - 2):
                continue
            p = logs[i, j]
            dx = 0.5 * (p[py, px + 1] - p[py, px - 1])
            dy = 0.5 * (p[py + 1, px] - p[py - 1, px])
            dxx = 0.25 * (p[py, px + 2] - 2 * p[py, px] + p[py, px - 2])
            dyy = 0.25 * (p[py + 2, px] - 2 * p[py, px] + p[py - 2, px])
            dxy = 0.25 * (p[py + 1, px + 1] - p[py - 1, px + 1] - p[py + 1, px - 1] + p[py - 1, px - 1])
            det = dxx * dyy - dxy**2
            if det != 0 and np.isfinite(det):
                coords[i, j] -= np.linalg.inv(np.array([[dxx, dxy], [dxy, dyy]])) @ np.array([dx, dy])
    return _affine_out(coords, maxvals, affine)


def quarter_like_simple_baselines(heatmaps: np.ndarray, affine: np.ndarray) -> np.ndarray:
    """Simple Baselines' get_final_preds: argmax, then a Python loop per keypoint for the quarter offset."""
    n, k, h, w = heatmaps.shape
    flat = heatmaps.reshape(n, k, -1)
    idx = np.argmax(flat, axis=2)
    maxvals = np.take_along_axis(flat, idx[..., None], 2)[..., 0]
    coords = np.stack([idx % w, idx // w], -1).astype(np.float64)
    coords *= (maxvals > 0)[..., None]
    for i in range(n):
        for j in range(k):
            hm = heatmaps[i, j]
            px, py = int(np.floor(coords[i, j, 0] + 0.5)), int(np.floor(coords[i, j, 1] + 0.5))
            if 1 < px < w - 1 and 1 < py < h - 1:
                diff = np.array([hm[py, px + 1] - hm[py, px - 1], hm[py + 1, px] - hm[py - 1, px]])
                coords[i, j] += np.sign(diff) * 0.25
    return _affine_out(coords, maxvals, affine)


def _affine_out(coords, maxvals, affine):
    x, y = coords[..., 0], coords[..., 1]
    out = np.empty(coords.shape[:2] + (3,), np.float32)
    out[..., 0] = affine[:, None, 0, 0] * x + affine[:, None, 0, 1] * y + affine[:, None, 0, 2]
    out[..., 1] = affine[:, None, 1, 0] * x + affine[:, None, 1, 1] * y + affine[:, None, 1, 2]
    out[..., 2] = maxvals
    return out


def kapao_like_reference(grids, letterboxes, t: kd.Thresholds = kd.COCO_THRESHOLDS) -> list[kd.PoseDetections]:
    """KAPAO's approach: torch decode (Detect.forward), non_max_suppression_kp per pass with torchvision NMS,
    scale_coords, and post_process_batch's Python loop over keypoint detections for the fusion."""
    import torch
    import torchvision

    rows = []
    for raw, s, anchors in zip(grids, KAPAO_STRIDES, KAPAO_ANCHORS):
        x = torch.from_numpy(raw)
        bs, _, ny, nx = x.shape
        y = x.view(bs, 3, D, ny, nx).permute(0, 1, 3, 4, 2).sigmoid()
        gy, gx = torch.meshgrid(torch.arange(ny), torch.arange(nx), indexing="ij")
        grid = torch.stack((gx, gy), 2).view(1, 1, ny, nx, 2).float()
        anchor_grid = torch.tensor(anchors, dtype=torch.float32).view(1, 3, 1, 1, 2)
        xy = (y[..., 0:2] * 2 - 0.5 + grid) * s
        wh = (y[..., 2:4] * 2) ** 2 * anchor_grid
        kp = y[..., 5 + NC:].reshape(bs, 3, ny, nx, K, 2)
        kp = (kp * 4 - 2) * anchor_grid[..., None, :] + grid[..., None, :] * s
        rows.append(torch.cat([xy, wh, y[..., 4:5 + NC], kp.reshape(bs, 3, ny, nx, 2 * K)], -1).view(bs, -1, D))
    pred = torch.cat(rows, 1)

    def nms_pass(x, conf_thres, iou_thres, classes):
        x = x[x[:, 4] > conf_thres]
        conf, j = (x[:, 5:5 + NC] * x[:, 4:5]).max(1, keepdim=True)
        keep = (conf.view(-1) > conf_thres) & (j.view(-1)[:, None] == torch.tensor(classes)).any(1)
        x, conf, j = x[keep], conf[keep], j[keep]
        order = conf.view(-1).argsort(descending=True, stable=True)[:t.max_nms]
        x, conf, j = x[order], conf[order], j[order]
        boxes = torch.cat([x[:, 0:2] - x[:, 2:4] / 2, x[:, 0:2] + x[:, 2:4] / 2], 1)
        kept = torchvision.ops.batched_nms(boxes, conf.view(-1), j.view(-1), iou_thres)[:t.max_det]
        return x[kept], conf.view(-1)[kept], j.view(-1)[kept]

    out = []
    for i, lb in enumerate(letterboxes):
        person, person_conf, _ = nms_pass(pred[i], t.conf_thres, t.iou_thres, [0])
        kps_det, kp_conf, kp_cls = nms_pass(pred[i], t.conf_thres_kp, t.iou_thres_kp, list(range(1, K + 1)))
        pad, scale = np.asarray(lb.pad, np.float32), np.asarray(lb.scale, np.float32)
        person = person.numpy()
        boxes = np.concatenate([person[:, 0:2] - person[:, 2:4] / 2, person[:, 0:2] + person[:, 2:4] / 2], 1)
        boxes = ((boxes.reshape(-1, 2, 2) - pad) / scale).reshape(-1, 4)
        poses = np.concatenate([(person[:, 5 + NC:].reshape(-1, K, 2) - pad) / scale,
                                np.zeros((len(person), K, 1), np.float32)], -1)
        scores = person_conf.numpy()
        eligible = np.flatnonzero(scores > t.conf_thres_kp_person)
        for det, conf, cls in zip(kps_det.numpy(), kp_conf.numpy(), kp_cls.numpy()):
            if not len(eligible):
                break
            x, y = (det[0:2] - pad) / scale
            k = int(cls) - 1
            d2 = ((poses[eligible, k, 0] - x) ** 2 + (poses[eligible, k, 1] - y) ** 2)
            best = eligible[int(np.argmin(d2))]
            if conf > poses[best, k, 2] and float(d2.min()) < t.overwrite_tol**2:
                poses[best, k] = (x, y, conf)
        out.append(kd.PoseDetections(keypoints=poses, boxes=boxes.astype(np.float32), scores=scores))
    return out


# --------------------------------------------------------------------------------------------------------------

def compare_heatmaps(a, b) -> float:
    assert np.array_equal(np.isnan(a), np.isnan(b)) and np.array_equal(a[..., 2], b[..., 2])
    return float(np.max(np.abs(a[..., :2] - b[..., :2])))


def compare_poses(a: list[kd.PoseDetections], b: list[kd.PoseDetections]) -> float:
    worst = 0.0
    for x, y in zip(a, b):
        assert len(x) == len(y), (len(x), len(y))
        np.testing.assert_allclose(x.scores, y.scores, rtol=1e-5)
        assert np.array_equal(x.keypoints[..., 2] > 0, y.keypoints[..., 2] > 0)
        worst = max(worst, float(np.max(np.abs(x.boxes - y.boxes), initial=0)),
                    float(np.max(np.abs(x.keypoints[..., :2] - y.keypoints[..., :2]), initial=0)))
    return worst


def gpu_timings(maps, affine, grids, letterboxes, repeat) -> dict:
    """The CUDA kernels on device-resident inputs (as an engine leaves them), results copied back."""
    from pose_edge.kernels.cuda_device import CudaDevice
    from pose_edge.kernels.launch import HeatmapDecoder, KapaoPostprocessor, letterbox_array

    out = {}
    with CudaDevice() as dev:
        out["device"] = f"{dev.name} (sm_{dev.arch}), kernels from {dev.module_origin}"
        hm_ptr, aff_ptr = dev.upload(maps), dev.upload(affine)
        res_ptr = dev.alloc(maps.shape[0] * maps.shape[1] * 12)
        host = np.empty(maps.shape[:2] + (3,), np.float32)
        for refine in ("quarter", "dark"):
            dec = HeatmapDecoder(dev, refine)

            def run():
                dec.run(hm_ptr, maps.shape, maps.dtype, aff_ptr, res_ptr)
                dev.copy_to_host(host, res_ptr)
                dev.synchronize()
                return host.copy()

            seconds, result = timed(run, repeat)
            out[f"{refine}_gpu_ms"] = seconds * 1e3
            out[f"{refine}_gpu_max_diff_px"] = compare_heatmaps(result, decode_heatmaps(maps, affine, refine))
        post = KapaoPostprocessor(dev, KAPAO_STRIDES, KAPAO_ANCHORS, NC, K)
        level_ptrs = [dev.upload(g) for g in grids]
        lb_ptr = dev.upload(letterbox_array(letterboxes, len(letterboxes)))
        sizes = [g.shape[2:] for g in grids]
        seconds, result = timed(lambda: post.fetch(post.run(level_ptrs, sizes, len(letterboxes), grids[0].dtype,
                                                             lb_ptr)), repeat)
        out["kapao_gpu_ms"] = seconds * 1e3
        out["kapao_gpu_max_diff_px"] = compare_poses(result, kd.postprocess(grids, KAPAO_STRIDES, KAPAO_ANCHORS,
                                                                             NC, K, letterboxes))
    return out


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=7)
    parser.add_argument("--out", type=Path, help="folder for bench_decoders.json and .md")
    parser.add_argument("--gpu", action="store_true", help="also time the CUDA kernels (needs a GPU)")
    args = parser.parse_args(argv)

    import torch

    torch.set_num_threads(1)
    rng = np.random.default_rng(0)
    maps, affine = heatmap_workload(rng)
    grids, letterboxes = kapao_workload(rng)
    rows = []

    ours, result_ours = timed(lambda: decode_heatmaps(maps, affine, "dark"), args.repeat)
    theirs, result_theirs = timed(lambda: dark_like_darkpose(maps, affine, 11), max(1, args.repeat // 3))
    rows.append(("dark", f"{maps.shape[0]}x{maps.shape[1]} maps {maps.shape[2]}x{maps.shape[3]}, k=11", ours, theirs,
                 compare_heatmaps(result_ours, result_theirs)))

    ours, result_ours = timed(lambda: decode_heatmaps(maps, affine, "quarter"), args.repeat)
    theirs, result_theirs = timed(lambda: quarter_like_simple_baselines(maps, affine), max(1, args.repeat // 3))
    rows.append(("quarter", f"{maps.shape[0]}x{maps.shape[1]} maps {maps.shape[2]}x{maps.shape[3]}", ours, theirs,
                 compare_heatmaps(result_ours, result_theirs)))

    ours, result_ours = timed(lambda: kd.postprocess(grids, KAPAO_STRIDES, KAPAO_ANCHORS, NC, K, letterboxes),
                              args.repeat)
    theirs, result_theirs = timed(lambda: kapao_like_reference(grids, letterboxes), args.repeat)
    extra = kd.select_candidates(kd.decode(grids, KAPAO_STRIDES, KAPAO_ANCHORS, NC, K)[0], NC, 0.001, [0], 10**9)
    rows.append(("kapao", f"1 image 1280x1280 ({len(extra[0])} person candidates, {len(result_ours[0])} poses)",
                 ours, theirs, compare_poses(result_ours, result_theirs)))

    record = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "python": platform.python_version(), "numpy": np.__version__, "torch": torch.__version__,
                    "opencv": cv2.__version__, "cpus": os.cpu_count(),
                    "load_average_1min": round(os.getloadavg()[0], 1)},
        "repeat": args.repeat,
        "results": [{"decoder": name, "workload": what, "ours_ms": a * 1e3, "reference_approach_ms": b * 1e3,
                     "speedup": b / a, "max_output_diff_px": diff} for name, what, a, b, diff in rows],
    }
    if args.gpu:
        record["gpu"] = gpu_timings(maps, affine, grids, letterboxes, args.repeat)

    lines = ["| decoder | workload | ours (NumPy) ms | reference approach ms | speed-up | max output diff px |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in record["results"]:
        lines.append(f"| {r['decoder']} | {r['workload']} | {r['ours_ms']:.2f} | {r['reference_approach_ms']:.2f} | "
                     f"{r['speedup']:.1f}x | {r['max_output_diff_px']:.1e} |")
    text = "\n".join(lines)
    if "gpu" in record:
        text += "\n\nGPU: " + json.dumps(record["gpu"], indent=1)
    print(text)
    if args.out:
        atomic_write_json(args.out / "bench_decoders.json", record, indent=1)
        atomic_write_text(args.out / "bench_decoders.md",
                          f"Recorded {record['date']} on {record['machine']['platform']} "
                          f"({record['machine']['processor']}, {record['machine']['cpus']} CPUs, load average "
                          f"{record['machine']['load_average_1min']}), Python {record['machine']['python']}, NumPy "
                          f"{record['machine']['numpy']}, torch {record['machine']['torch']} (1 thread).\n"
                          f"Command: python benchmarks/bench_decoders.py --repeat {args.repeat} --out "
                          f"benchmarks/results\n\n{text}\n")
    return 0


if __name__ == "__main__":
    sys.exit(main())
