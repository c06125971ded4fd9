"""Soak: the runtime over many frames with resident memory and latency sampled, to show that neither creeps.

    python benchmarks/soak_runtime.py [--model M.onnx] [--frames 10000] [--every 500] [--track] [--out DIR]

What runs: pose_edge.load(model, device="cpu") on the CPU through ONNX Runtime and the NumPy decoders, deployment
settings, one frame per call (est(frame), what a robot's loop does), over frames of the built-in synthetic set
(320x240, decoded once and cycled, so file reading is not in the measurement). Without --model, a kapao-tiny with
random weights (seed 0, head biases raised so that it reports people: export_random_kapao_tiny) is exported in a
child process, so that this process never imports torch and its memory is the runtime's alone.

Sampled every --every frames: VmRSS and VmHWM from /proc/self/status, Python's allocated blocks, the latency of the
frames since the last sample (median, 99th percentile), the process CPU time per frame over them, and the machine's
load average. Reported: resident memory at the first sample after the
warm-up and at the end, its growth and its least-squares slope per 1,000 frames; median latency of the first and the
last window and their ratio. The machine and its load average (start and end) are recorded with the result.
"""

from __future__ import annotations

import argparse
import gc
import json
import os
import platform
import statistics
import subprocess
import sys
import tempfile
import time
from datetime import datetime, timezone
from pathlib import Path

import numpy as np

REPO = Path(__file__).resolve().parents[1]
HEAD_SHIFT = 6.0  # logits added to chosen head biases of the random kapao-tiny (export_random_kapao_tiny)


def proc_status() -> dict[str, int]:
    """VmRSS and VmHWM in KiB, from /proc/self/status (Linux)."""
    out = {}
    for line in Path("/proc/self/status").read_text().splitlines():
        key, _, value = line.partition(":")
        if key in ("VmRSS", "VmHWM"):
            out[key] = int(value.split()[0])
    return out


def export_random_kapao_tiny(folder: Path) -> Path:
    """kapao-tiny with random weights (seed 0) as FP32 ONNX, made in a child process (torch stays out of this one).

    Random weights find nobody (the objectness prior is ~8 objects per 640x640 image), so the head's biases are
    raised to give the decode stage people to work on: objectness and person class by HEAD_SHIFT for the first
    anchor of the stride-64 level (pose objects), objectness and the keypoint classes for the first anchor of the
    stride-32 level (keypoint objects to fuse)."""
    code = (
        "import dataclasses, sys, torch\n"
        "from pose_edge.models import build_model, get_preset, model_meta\n"
        "from pose_edge.models.checkpoint import save_checkpoint\n"
        "from pose_edge.export.api import export_artifact\n"
        "torch.manual_seed(0); p = get_preset('kapao-tiny'); run = sys.argv[1]; shift = float(sys.argv[2])\n"
        "m = build_model(p)\n"
        "with torch.no_grad():\n"
        "    b = m.head[3].bias.view(3, -1); b[0, 4] += shift; b[0, 5] += shift\n"
        "    b = m.head[2].bias.view(3, -1); b[0, 4] += shift; b[0, 6:23] += shift\n"
        "save_checkpoint(run + '/best.pt', {'kind': 'weights', 'preset': dataclasses.asdict(p),\n"
        "    'meta': model_meta(p).to_json(), 'model': m.state_dict(), 'epoch': 0, 'iteration': 0,\n"
        "    'metrics': {}, 'config': {}})\n"
        "print(export_artifact(run, progress=False).onnx)\n")
    out = subprocess.run([sys.executable, "-c", code, str(folder), str(HEAD_SHIFT)], capture_output=True, text=True,
                         check=True)
    return Path(out.stdout.strip().splitlines()[-1])


def synthetic_frames(folder: Path, count: int) -> list[np.ndarray]:
    from pose_edge.data import synth
    from pose_edge.data.coco import read_image

    synth.write_dataset(folder, num_train=0, num_val=count, seed=3, size=(320, 240), progress=False)
    return [read_image(p) for p in sorted((folder / "images" / "val").glob("*.jpg"))]


def slope_per_1000(xs: list[int], ys: list[float]) -> float:
    if len(xs) < 2:
        return 0.0
    return float(np.polyfit(np.asarray(xs, float), np.asarray(ys, float), 1)[0] * 1000)


def run(model: Path, frames: list[np.ndarray], total: int, every: int, warmup: int, track: bool) -> dict:
    import pose_edge

    est = pose_edge.load(model, device="cpu", track=track)
    samples, window = [], []
    people = 0
    gc.collect()
    start = time.perf_counter()
    cpu_mark = time.process_time()
    for i in range(1, total + 1):
        frame = frames[i % len(frames)]
        t0 = time.perf_counter()
        poses = est(frame)
        window.append(time.perf_counter() - t0)
        people += len(poses)
        if i % every == 0:
            status = proc_status()
            cpu_now = time.process_time()
            samples.append({"frame": i, "rss_mib": status["VmRSS"] / 1024, "hwm_mib": status["VmHWM"] / 1024,
                            "py_blocks": sys.getallocatedblocks(),
                            "latency_ms_median": 1e3 * statistics.median(window),
                            "latency_ms_p99": 1e3 * float(np.percentile(window, 99)),
                            "cpu_ms_per_frame": 1e3 * (cpu_now - cpu_mark) / len(window),
                            "load_1min": os.getloadavg()[0], "elapsed_s": time.perf_counter() - start})
            window, cpu_mark = [], cpu_now
    steady = [s for s in samples if s["frame"] > warmup] or samples
    first, last = steady[0], steady[-1]
    return {
        "estimator": est.describe()["model"], "tracking": track, "frames": total, "every": every,
        "warmup_frames": warmup, "people_per_frame": people / total, "samples": samples,
        "summary": {
            "rss_mib_first": round(first["rss_mib"], 1), "rss_mib_last": round(last["rss_mib"], 1),
            "rss_growth_mib": round(last["rss_mib"] - first["rss_mib"], 2),
            "rss_slope_mib_per_1000_frames": round(slope_per_1000([s["frame"] for s in steady],
                                                                  [s["rss_mib"] for s in steady]), 3),
            "rss_peak_mib": round(max(s["hwm_mib"] for s in samples), 1),
            "py_blocks_first": first["py_blocks"], "py_blocks_last": last["py_blocks"],
            "latency_ms_median_first": round(first["latency_ms_median"], 2),
            "latency_ms_median_last": round(last["latency_ms_median"], 2),
            "latency_ratio_last_to_first": round(last["latency_ms_median"] / first["latency_ms_median"], 3),
            "latency_ms_median_min": round(min(s["latency_ms_median"] for s in steady), 2),
            "latency_ms_median_max": round(max(s["latency_ms_median"] for s in steady), 2),
            "cpu_ms_per_frame_first": round(first["cpu_ms_per_frame"], 2),
            "cpu_ms_per_frame_last": round(last["cpu_ms_per_frame"], 2),
            "cpu_slope_ms_per_1000_frames": round(slope_per_1000([s["frame"] for s in steady],
                                                                 [s["cpu_ms_per_frame"] for s in steady]), 3),
            "load_1min_min": round(min(s["load_1min"] for s in samples), 1),
            "load_1min_max": round(max(s["load_1min"] for s in samples), 1),
            "wall_s": round(samples[-1]["elapsed_s"], 1),
        },
    }


def markdown(record: dict) -> str:
    s, m = record["summary"], record["machine"]
    lines = [
        "# Runtime soak", "",
        f"Recorded {record['date']} on {m['platform']} ({m['processor']}, {m['cpus']} CPUs, load average "
        f"{m['load_average_1min_start']} at the start, {m['load_average_1min_end']} at the end), Python "
        f"{m['python']}, ONNX Runtime {m['onnxruntime']}, NumPy {m['numpy']}.",
        f"Command: `{record['command']}`", "",
        f"{record['estimator']['preset']} ({record['estimator']['backend']}, {record['estimator']['device']}, "
        f"{record['estimator']['precision']}, decode {record['estimator']['decoder']}), one 320x240 frame per call, "
        f"{record['frames']} frames, tracking {'on' if record['tracking'] else 'off'}, "
        f"{record['people_per_frame']:.1f} poses per frame; samples every {record['every']} frames, the first "
        f"{record['warmup_frames']} frames counted as warm-up.", "",
        "| | first sample after warm-up | last sample | change |", "| --- | --- | --- | --- |",
        f"| resident memory (VmRSS) MiB | {s['rss_mib_first']} | {s['rss_mib_last']} | {s['rss_growth_mib']:+} MiB "
        f"(slope {s['rss_slope_mib_per_1000_frames']:+} MiB per 1,000 frames) |",
        f"| Python allocated blocks | {s['py_blocks_first']} | {s['py_blocks_last']} | "
        f"{s['py_blocks_last'] - s['py_blocks_first']:+} |",
        f"| median latency ms | {s['latency_ms_median_first']} | {s['latency_ms_median_last']} | "
        f"x{s['latency_ratio_last_to_first']} (window medians ranged {s['latency_ms_median_min']}-"
        f"{s['latency_ms_median_max']}) |",
        f"| process CPU time ms per frame | {s['cpu_ms_per_frame_first']} | {s['cpu_ms_per_frame_last']} | "
        f"slope {s['cpu_slope_ms_per_1000_frames']:+} ms per 1,000 frames |", "",
        f"Peak resident memory (VmHWM) {s['rss_peak_mib']} MiB; wall time {s['wall_s']} s; the machine's 1-minute "
        f"load average ranged {s['load_1min_min']}-{s['load_1min_max']} over the run. Wall-clock latency on a shared "
        "machine follows its load; the process CPU time per frame (ONNX Runtime's threads included) much less so.",
        "",
        "| frame | VmRSS MiB | median ms | p99 ms | CPU ms per frame | load (1 min) |",
        "| --- | --- | --- | --- | --- | --- |",
    ]
    lines += [f"| {x['frame']} | {x['rss_mib']:.1f} | {x['latency_ms_median']:.2f} | {x['latency_ms_p99']:.2f} | "
              f"{x['cpu_ms_per_frame']:.2f} | {x['load_1min']:.1f} |" for x in record["samples"]]
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--model", type=Path, default=None, help="An .onnx [default: kapao-tiny, random weights].")
    ap.add_argument("--frames", type=int, default=10_000)
    ap.add_argument("--every", type=int, default=500, help="Sample every this many frames.")
    ap.add_argument("--warmup", type=int, default=500, help="Frames before the first sample that counts.")
    ap.add_argument("--distinct", type=int, default=40, help="Distinct synthetic frames, cycled.")
    ap.add_argument("--track", action="store_true", help="Track people across frames (pose_edge.load(track=True)).")
    ap.add_argument("--out", type=Path, default=REPO / "benchmarks" / "results")
    args = ap.parse_args(argv)

    from pose_edge.fsutil import atomic_write_json, atomic_write_text

    load_start = round(os.getloadavg()[0], 1)
    with tempfile.TemporaryDirectory(prefix="pose-edge-soak-") as tmp:
        model = args.model or export_random_kapao_tiny(Path(tmp))
        frames = synthetic_frames(Path(tmp) / "synth", args.distinct)
        result = run(model, frames, args.frames, args.every, args.warmup, args.track)
    assert "torch" not in sys.modules, "the soak must measure the torch-free runtime"
    import onnxruntime

    record = {
        "date": datetime.now(timezone.utc).isoformat(timespec="seconds"),
        "command": "python benchmarks/soak_runtime.py " + " ".join(argv if argv is not None else sys.argv[1:]),
        "machine": {"platform": platform.platform(), "processor": platform.processor() or platform.machine(),
                    "cpus": os.cpu_count(), "python": platform.python_version(), "numpy": np.__version__,
                    "onnxruntime": onnxruntime.__version__, "load_average_1min_start": load_start,
                    "load_average_1min_end": round(os.getloadavg()[0], 1)},
        **result,
    }
    name = f"soak_runtime-{platform.node() or 'machine'}"
    atomic_write_json(args.out / f"{name}.json", record, indent=1)
    atomic_write_text(args.out / f"{name}.md", markdown(record))
    print(markdown(record).split("\n\n| frame")[0])
    return 0


if __name__ == "__main__":
    sys.exit(main())
