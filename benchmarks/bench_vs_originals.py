"""Our decoders against the original implementations themselves, on identical inputs, one thread.

    python benchmarks/bench_vs_originals.py --kapao DIR --darkpose DIR --simplebaselines DIR \
        [--rounds 7] [--batches 1,2,4,8,16,32,64,128] [--out benchmarks/results]

DIRs are checkouts of github.com/wmcnally/kapao, github.com/ilovepose/DarkPose and
github.com/microsoft/human-pose-estimation.pytorch (any may be left out; its comparison is skipped). Only the named
top-level definitions are compiled from the original files and run unchanged: the modules that hold them import
pandas, yaml, requests and more, and the three repositories each have their own `utils` package. This script ships
none of their code.

Compared, raw network outputs -> final results:
  kapao    KAPAO's models/yolo.py Detect.forward (the head's output transform, with its 1x1 convolutions replaced by
           identities so that it takes the raw grids), val.py run_nms (utils/general.py non_max_suppression_kp, one
           person pass and one keypoint pass) and val.py post_process_batch (letterbox undone by scale_coords,
           keypoint objects fused into poses), against pose_edge.runtime.kapao_decode.postprocess. Workload:
           4 images at 1280 (KAPAO-S's four output levels), decoder_workloads.kapao_workload.
  dark     DarkPose's lib/core/inference.py get_final_preds (argmax, gaussian_blur of every map, log, taylor per
           keypoint, transform_preds back to the image), against heatmap_decode.decode_heatmaps(refine="dark").
  quarter  Simple Baselines' lib/core/inference.py get_final_preds (argmax, quarter offset per keypoint,
           transform_preds), against decode_heatmaps(refine="quarter"): NumPy's argmax, then the C finish
           (pose_edge/runtime/_peaks_native.c) where it is built, else NumPy; the record says which ran.
  Heatmaps: 1..128 crops of 17 maps at 64x48 (SB-256x192), decoder_workloads.heatmap_workload.
Each original receives its own inputs (torch tensors for KAPAO; heatmaps, centres and scales for the top-down
ones); ours receives the same data as its API takes it (arrays; the heatmap -> image matrix of each crop, which
the originals build inside get_final_preds and our pipeline has already built for the crop warp).

Outputs are checked before any time is reported, and where they differ on purpose the check applies the original's
rule to ours first:
  - KAPAO clips keypoints 0 and 1 of every pose (scale_coords treats the first four numbers of any row as a box),
    clips every keypoint object's box to the image before taking its centre, and rounds the pose boxes after
    clipping them; ours clips and rounds nothing (the workload keeps keypoint objects inside the image so that
    their clipping changes nothing; the other two are applied to ours before comparing).
  - KAPAO decodes with torch's sigmoid and ours with NumPy's, which differ in the last float32 bit: scores and
    coordinates agree to about 1e-6 relative, not bit for bit.
  - DarkPose blurs into its float32 heatmap array and rescales the blurred map to the original maximum; ours blurs
    only the 5 x 5 window the Taylor step reads, in float64 (heatmap_decode's docstring): coordinates agree to
    about 1e-4 heatmap px.
  - Heatmap conventions: DarkPose maps heatmap pixel centres with (W-1)/2, Simple Baselines with W/2 (each
    original's get_affine_transform); each comparison gives ours that original's matrix. pose-edge's own matrix
    (heatmap_codec) is the exact area mapping, a third convention.
Timing: `--rounds` rounds; in each, ours and the original run alternately, each repeated enough to last >= 20 ms
and the per-call time taken; medians over rounds, and their ratio (original / ours), all measured in this run. The
times are CPU time of this process (time.process_time), which other programs sharing the machine do not inflate by
taking the CPU away; wall-clock medians and their ratio are recorded next to them. Torch, OpenCV and BLAS run one
thread. The load average before and after is recorded.
"""

from __future__ import annotations

import os

for _var in ("OMP_NUM_THREADS", "OPENBLAS_NUM_THREADS", "MKL_NUM_THREADS"):  # before NumPy loads its BLAS
    os.environ[_var] = "1"

import argparse  # noqa: E402
import ast  # noqa: E402
import math  # noqa: E402
import os.path as osp  # noqa: E402
import platform  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import time  # noqa: E402
import types  # noqa: E402
from datetime import datetime, timezone  # noqa: E402
from pathlib import Path  # noqa: E402

import cv2  # noqa: E402
import numpy as np  # noqa: E402

from decoder_workloads import K, KAPAO_ANCHORS, KAPAO_STRIDES, NC, heatmap_workload, kapao_workload  # noqa: E402
from pose_edge.bench.machine import cpu_model  # noqa: E402
from pose_edge.fsutil import atomic_write_json, atomic_write_text  # noqa: E402
from pose_edge.runtime import heatmap_decode  # noqa: E402
from pose_edge.runtime import kapao_decode as kd  # noqa: E402
from pose_edge.runtime.heatmap_decode import decode_heatmaps  # noqa: E402

HEATMAP_SIZE = (64, 48)  # (H, W) of SB-256x192's maps
MIN_MEASURE_S = 0.02


# ---------------------------------------------------------------------------------------------------------------
# Loading the originals


def load_definitions(path: Path, names: set[str], namespace: dict) -> dict:
    """Compile only the top-level functions and classes `names` of the Python file `path` into `namespace`."""
    if not path.is_file():
        raise SystemExit(f"{path} not found: is the checkout complete?")
    tree = ast.parse(path.read_text(), filename=str(path))
    nodes = [n for n in tree.body if isinstance(n, (ast.FunctionDef, ast.ClassDef)) and n.name in names]
    missing = names - {n.name for n in nodes}
    if missing:
        raise SystemExit(f"{path} defines no {', '.join(sorted(missing))}: is it the right repository?")
    exec(compile(ast.Module(body=nodes, type_ignores=[]), str(path), "exec"), namespace)
    return namespace


def checkout_commit(folder: Path) -> str:
    try:
        return subprocess.run(["git", "-C", str(folder), "rev-parse", "HEAD"], capture_output=True, text=True,
                              check=True).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"


def load_kapao(folder: Path) -> types.SimpleNamespace:
    import torch
    import torchvision
    from torch import nn

    ns = {"torch": torch, "torchvision": torchvision, "nn": nn, "np": np, "cv2": cv2, "time": time, "math": math,
          "Path": Path, "osp": osp, "PAD_COLOR": (114 / 255,) * 3}
    load_definitions(folder / "utils/general.py",
                     {"non_max_suppression_kp", "xywh2xyxy", "scale_coords", "clip_coords"}, ns)
    load_definitions(folder / "val.py", {"run_nms", "post_process_batch"}, ns)
    load_definitions(folder / "models/yolo.py", {"Detect"}, ns)
    # The head of KAPAO-S: 18 classes + 34 keypoint coordinates per anchor (its `nc` counts both).
    detect = ns["Detect"](nc=NC + 2 * K, anchors=[[v for wh in level for v in wh] for level in KAPAO_ANCHORS],
                          ch=[1] * len(KAPAO_STRIDES), num_coords=2 * K)
    detect.m = nn.ModuleList(nn.Identity() for _ in KAPAO_STRIDES)  # raw grids in, as the convolutions left them
    detect.stride = torch.tensor(KAPAO_STRIDES, dtype=torch.float32)
    detect.eval()
    return types.SimpleNamespace(detect=detect, run_nms=ns["run_nms"], post_process_batch=ns["post_process_batch"],
                                 commit=checkout_commit(folder))


def load_topdown(folder: Path, with_dark: bool) -> types.SimpleNamespace:
    ns = {"np": np, "cv2": cv2, "math": math}
    load_definitions(folder / "lib/utils/transforms.py",
                     {"transform_preds", "get_affine_transform", "affine_transform", "get_3rd_point", "get_dir"}, ns)
    names = {"get_max_preds", "get_final_preds"} | ({"taylor", "gaussian_blur"} if with_dark else set())
    load_definitions(folder / "lib/core/inference.py", names, ns)
    return types.SimpleNamespace(get_final_preds=ns["get_final_preds"],
                                 get_affine_transform=ns["get_affine_transform"], commit=checkout_commit(folder))


# ---------------------------------------------------------------------------------------------------------------
# Timing


def per_call_seconds(fn, number: int, prepare=None) -> tuple[float, float]:
    """(CPU, wall) seconds per call of fn over `number` calls; prepare() makes each call's arguments untimed.

    CPU time is this process's (all its threads; one here): a shared machine's time-slicing does not inflate it.
    """
    args = [prepare() if prepare else () for _ in range(number)]
    cpu, wall = time.process_time(), time.perf_counter()
    for a in args:
        fn(*a)
    return (time.process_time() - cpu) / number, (time.perf_counter() - wall) / number


def calls_per_measure(fn, prepare=None) -> int:
    one = per_call_seconds(fn, 1, prepare)[1]
    return max(1, math.ceil(MIN_MEASURE_S / max(one, 1e-7)))


def time_pair(ours, theirs, rounds: int, theirs_prepare=None) -> dict:
    """Alternate ours and theirs for `rounds` rounds: medians (ms, CPU time; wall-clock too) and their ratio."""
    n_ours, n_theirs = calls_per_measure(ours), calls_per_measure(theirs, theirs_prepare)
    ours_s, theirs_s = [], []
    for r in range(rounds):
        for side in ((0, 1) if r % 2 == 0 else (1, 0)):
            if side == 0:
                ours_s.append(per_call_seconds(ours, n_ours))
            else:
                theirs_s.append(per_call_seconds(theirs, n_theirs, theirs_prepare))
    med = {name: [statistics.median(s[i] for s in runs) * 1e3 for i in (0, 1)]
           for name, runs in (("ours", ours_s), ("original", theirs_s))}
    return {"ours_ms": med["ours"][0], "original_ms": med["original"][0], "speedup": med["original"][0] / med["ours"][0],
            "ours_wall_ms": med["ours"][1], "original_wall_ms": med["original"][1],
            "speedup_wall": med["original"][1] / med["ours"][1],
            "ours_ms_rounds": [round(c * 1e3, 4) for c, _ in ours_s],
            "original_ms_rounds": [round(c * 1e3, 4) for c, _ in theirs_s]}


# ---------------------------------------------------------------------------------------------------------------
# Heatmaps


def heatmap_rows(dark, sb, batches, rounds: int, rng) -> list[dict]:
    config = types.SimpleNamespace(TEST=types.SimpleNamespace(BLUR_KERNEL=11, POST_PROCESS=True))
    h, w = HEATMAP_SIZE
    rows = []
    for crops in batches:
        maps, center, scale = heatmap_workload(rng, crops, h=h, w=w)
        for name, original, refine in (("dark", dark, "dark"), ("quarter", sb, "quarter")):
            if original is None:
                continue
            affine = np.stack([original.get_affine_transform(center[i], scale[i], 0, [w, h], inv=1)
                               for i in range(crops)])
            ours = decode_heatmaps(maps, affine, refine, 11)
            coords, maxvals = original.get_final_preds(config, maps.copy(), center, scale)  # DARK blurs in place
            np.testing.assert_array_equal(ours[..., 2], maxvals[..., 0])
            diff = float(np.max(np.abs(ours[..., :2] - coords)))
            tolerance = 1e-3 if refine == "dark" else 1e-4  # image px; see the docstring
            if not diff <= tolerance:
                raise SystemExit(f"{name}, {crops} crops: ours and the original differ by {diff} px")
            timing = time_pair(lambda: decode_heatmaps(maps, affine, refine, 11),
                               lambda m: original.get_final_preds(config, m, center, scale), rounds,
                               theirs_prepare=lambda: (maps.copy(),))
            rows.append({"decoder": name, "crops": crops, "maps": crops * maps.shape[1], **timing,
                         "max_diff_image_px": diff})
            print(f"{name:8s} {crops:4d} crops  ours {timing['ours_ms']:9.3f} ms  original "
                  f"{timing['original_ms']:9.2f} ms  x{timing['speedup']:6.1f} (wall x{timing['speedup_wall']:6.1f})"
                  f"  diff {diff:.1e} px", flush=True)
    return rows


# ---------------------------------------------------------------------------------------------------------------
# KAPAO


def kapao_original(kapao, grids, data, imgs, shapes):
    """KAPAO's val.py path from the head's raw grids to poses: Detect, run_nms, post_process_batch."""
    import torch

    with torch.no_grad():
        out = kapao.detect([torch.from_numpy(g) for g in grids])[0]
        person_dets, kp_dets = kapao.run_nms(data, out)
        return kapao.post_process_batch(data, imgs, [], shapes, person_dets, kp_dets)


def kapao_compare(ours: list, theirs, image_sizes) -> dict:
    """Check that both give the same poses, after applying the original's clipping and rounding to ours."""
    bboxes, poses, scores, ids, _ = theirs
    ids = np.asarray(ids)
    worst = {"score_rel": 0.0, "box_px": 0.0, "keypoint_px": 0.0, "keypoint_conf": 0.0}
    fused = 0
    for i, (det, (h, w)) in enumerate(zip(ours, image_sizes)):
        mine = np.flatnonzero(ids == i)
        if len(mine) != len(det):
            raise SystemExit(f"image {i}: {len(det)} poses (ours) against {len(mine)} (original)")
        if not len(det):
            continue
        their_scores = np.asarray([scores[j] for j in mine], np.float64)
        their_boxes = np.stack([bboxes[j] for j in mine]).astype(np.float64)
        their_kps = np.stack([poses[j] for j in mine]).astype(np.float64)
        boxes = det.boxes.astype(np.float64)  # the original clips the boxes to the image, then rounds them
        boxes[:, 0::2] = np.round(np.clip(boxes[:, 0::2], 0, w))
        boxes[:, 1::2] = np.round(np.clip(boxes[:, 1::2], 0, h))
        kps = det.keypoints.astype(np.float64)  # ... and clips keypoints 0 and 1 as if they were a box
        kps[:, :2, 0] = np.clip(kps[:, :2, 0], 0, w)
        kps[:, :2, 1] = np.clip(kps[:, :2, 1], 0, h)
        worst["score_rel"] = max(worst["score_rel"], float(np.max(np.abs(their_scores - det.scores) / det.scores)))
        # a box edge within float rounding of x.5 may round either way
        worst["box_px"] = max(worst["box_px"], float(np.max(np.abs(their_boxes - boxes))))
        worst["keypoint_px"] = max(worst["keypoint_px"], float(np.max(np.abs(their_kps[..., :2] - kps[..., :2]))))
        worst["keypoint_conf"] = max(worst["keypoint_conf"], float(np.max(np.abs(their_kps[..., 2] - kps[..., 2]))))
        if not np.array_equal(their_kps[..., 2] > 0, kps[..., 2] > 0):
            raise SystemExit(f"image {i}: the fused keypoints differ")
        fused += int((kps[..., 2] > 0).sum())
    if worst["score_rel"] > 1e-5 or worst["box_px"] > 1.0 or worst["keypoint_px"] > 1e-2 or worst["keypoint_conf"] > 1e-5:
        raise SystemExit(f"KAPAO: ours and the original differ: {worst}")
    return {**worst, "poses": sum(len(d) for d in ours), "fused_keypoints": fused}


def kapao_rows(kapao, rounds: int, rng, images: int) -> list[dict]:
    grids, letterboxes = kapao_workload(rng, images)
    image_sizes = [lb.image_size for lb in letterboxes]
    size = grids[0].shape[2] * KAPAO_STRIDES[0]
    data = {"num_coords": 2 * K, "use_kp_dets": True, "conf_thres": 0.001, "iou_thres": 0.65, "conf_thres_kp": 0.2,
            "iou_thres_kp": 0.25, "conf_thres_kp_person": 0.3, "overwrite_tol": 50, "count_fused": False,
            "kp_flip": list(range(K))}
    thresholds = kd.Thresholds(conf_thres=0.001, iou_thres=0.65, conf_thres_kp=0.2, iou_thres_kp=0.25,
                               conf_thres_kp_person=0.3, overwrite_tol=50.0, max_det=300, max_nms=30000)
    imgs = np.broadcast_to(np.float32(0), (images, 3, size, size))  # post_process_batch reads only its shape
    shapes = [[size_hw] for size_hw in image_sizes]

    def ours():
        return kd.postprocess(grids, KAPAO_STRIDES, KAPAO_ANCHORS, NC, K, letterboxes, thresholds)

    def theirs():
        return kapao_original(kapao, grids, data, imgs, shapes)

    agreement = kapao_compare(ours(), theirs(), image_sizes)
    rows = kd.decode(grids, KAPAO_STRIDES, KAPAO_ANCHORS, NC, K)
    candidates = [len(kd.select_candidates(r, NC, 0.001, [0], 10**9)[0]) for r in rows]
    timing = time_pair(ours, theirs, rounds)
    print(f"kapao    {images} images {size}  ours {timing['ours_ms']:9.2f} ms  original {timing['original_ms']:9.2f} ms"
          f"  x{timing['speedup']:6.1f} (wall x{timing['speedup_wall']:6.1f})  ({candidates} person candidates)",
          flush=True)
    return [{"decoder": "kapao", "images": images, "input": size, "person_candidates": candidates,
             **timing, **{f"agreement_{k}": v for k, v in agreement.items()}}]


# ---------------------------------------------------------------------------------------------------------------


def machine() -> dict:
    import torch

    return {"platform": platform.platform(), "cpu": cpu_model(), "cpus": os.cpu_count(), "python": platform.python_version(),
            "numpy": np.__version__, "torch": torch.__version__, "opencv": cv2.__version__,
            "threads": "1 (torch, OpenCV, BLAS)",
            "heatmap_finish": "C (_peaks_native)" if heatmap_decode.NATIVE_FINISH else "NumPy (C finish not built)"}


def markdown(record: dict) -> str:
    m = record["machine"]
    lines = [f"Recorded {record['date']} on {m['platform']} ({m['cpu']}, {m['cpus']} CPUs; load average "
             f"{record['load_average_before']} before, {record['load_average_after']} after), Python {m['python']}, "
             f"NumPy {m['numpy']}, torch {m['torch']}, OpenCV {m['opencv']}, one thread. Heatmap finish (none and "
             f"quarter): {m.get('heatmap_finish', 'NumPy')}.",
             f"Command: `{record['command']}`", "",
             "Originals: " + ", ".join(f"{k} {v}" for k, v in record["originals"].items()), "",
             f"Medians of {record['rounds']} rounds (ours and the original alternating), ratio = original / ours, "
             "measured in this run.", ""]
    heat = [r for r in record["results"] if r["decoder"] in ("dark", "quarter")]
    if heat:
        lines += ["| crops | DARK ours ms | DarkPose ms | speed-up (wall) | quarter ours ms | Simple Baselines ms "
                  "| speed-up (wall) |", "| --- | --- | --- | --- | --- | --- | --- |"]
        for crops in sorted({r["crops"] for r in heat}):
            d = next((r for r in heat if r["crops"] == crops and r["decoder"] == "dark"), None)
            q = next((r for r in heat if r["crops"] == crops and r["decoder"] == "quarter"), None)
            cell = (lambda r: f"{r['ours_ms']:.3f} | {r['original_ms']:.2f} | {r['speedup']:.1f}x "
                    f"({r['speedup_wall']:.1f}x)" if r else "- | - | -")
            lines.append(f"| {crops} | {cell(d)} | {cell(q)} |")
        lines += ["", "Times are CPU time per call; the speed-up in wall-clock time, measured in the same rounds, in "
                  "brackets.", ""]
    for r in record["results"]:
        if r["decoder"] == "kapao":
            lines += ["| KAPAO post-processing | ours ms | original ms | speed-up (wall) |", "| --- | --- | --- | --- |",
                      f"| {r['images']} images at {r['input']} ({', '.join(map(str, r['person_candidates']))} "
                      f"person candidates) | {r['ours_ms']:.1f} | {r['original_ms']:.1f} | {r['speedup']:.1f}x "
                      f"({r['speedup_wall']:.1f}x) |", "",
                      f"Agreement: {r['agreement_poses']} poses, {r['agreement_fused_keypoints']} fused keypoints, "
                      f"scores within {r['agreement_score_rel']:.1e} relative, keypoints within "
                      f"{r['agreement_keypoint_px']:.1e} px, boxes (rounded by the original) within "
                      f"{r['agreement_box_px']:.0f} px.", ""]
    lines += ["Where the outputs differ on purpose: see the docstring of benchmarks/bench_vs_originals.py."]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--kapao", type=Path, help="checkout of github.com/wmcnally/kapao")
    parser.add_argument("--darkpose", type=Path, help="checkout of github.com/ilovepose/DarkPose")
    parser.add_argument("--simplebaselines", type=Path, help="checkout of github.com/microsoft/human-pose-estimation.pytorch")
    parser.add_argument("--rounds", type=int, default=7)
    parser.add_argument("--batches", default="1,2,4,8,16,32,64,128", help="crops per heatmap batch")
    parser.add_argument("--images", type=int, default=4, help="KAPAO images per batch")
    parser.add_argument("--out", type=Path, help="folder for vs_originals.json and .md")
    args = parser.parse_args(argv)
    if not (args.kapao or args.darkpose or args.simplebaselines):
        parser.error("pass at least one of --kapao, --darkpose, --simplebaselines")

    import torch

    torch.set_num_threads(1)
    cv2.setNumThreads(1)
    load_before = round(os.getloadavg()[0], 1)
    kapao = load_kapao(args.kapao) if args.kapao else None
    dark = load_topdown(args.darkpose, with_dark=True) if args.darkpose else None
    sb = load_topdown(args.simplebaselines, with_dark=False) if args.simplebaselines else None
    rng = np.random.default_rng(0)
    results = []
    if dark or sb:
        results += heatmap_rows(dark, sb, [int(b) for b in args.batches.split(",")], args.rounds, rng)
    if kapao:
        results += kapao_rows(kapao, args.rounds, rng, args.images)
    originals = {name: o.commit for name, o in (("wmcnally/kapao", kapao), ("ilovepose/DarkPose", dark),
                                                ("microsoft/human-pose-estimation.pytorch", sb)) if o}
    record = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine(),
              "load_average_before": load_before, "load_average_after": round(os.getloadavg()[0], 1),
              "command": " ".join(["python benchmarks/bench_vs_originals.py"] + sys.argv[1:]),
              "rounds": args.rounds, "originals": originals, "results": results}
    text = markdown(record)
    print(text)
    if args.out:
        atomic_write_json(args.out / "vs_originals.json", record, indent=1)
        atomic_write_text(args.out / "vs_originals.md", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
