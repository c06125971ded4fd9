"""The runtime's post-processing stage, today's KAPAO/detector decoder against the pre-optimisation one, in a robot's
conditions: frames through `pose_edge.load` (deployment settings), the decode stage timed by the estimator's own
stage timer right after the network ran (so with the caches as inference leaves them, not in a warm loop).

    python benchmarks/bench_post_stage.py MODEL.onnx... --data DIR [--reference FILE] [--rounds 12] [--out DIR]

MODEL: single-stage (KAPAO) or person-detector exports. The reference is another version of kapao_decode.py: by
default tests/kapao_decode_before.py, the frozen decoder today's is proven equal to (same poses, same order); an
earlier release's file (e.g. `git show REV:pose_edge/runtime/kapao_decode.py > old.py`) works the same. Both run in
one process, alternating round by round on the same frames, so the ratio is measured in one run; the number of poses
per frame must agree. Writes NAME.json and NAME.md (--name, default post_stage).
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import platform
import statistics
import sys
from datetime import datetime, timezone
from pathlib import Path

import cv2
import numpy as np
import onnxruntime as ort

import pose_edge
from pose_edge.bench.machine import cpu_model
from pose_edge.fsutil import atomic_write_json, atomic_write_text
from pose_edge.runtime.poses import Poses
from pose_edge.runtime.single_stage import NumpyKapaoDecoder

FROZEN = Path(__file__).resolve().parents[1] / "tests" / "kapao_decode_before.py"


def load_module(path: Path):
    spec = importlib.util.spec_from_file_location(f"reference_{path.stem}", path)
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up
    spec.loader.exec_module(module)
    return module


class ReferenceDecoder(NumpyKapaoDecoder):
    """The host decode stage with another version's post-processing."""

    def __init__(self, module, meta, thresholds):
        super().__init__(meta, thresholds)
        self.module = module

    def __call__(self, outputs, letterboxes):
        m = self.meta
        return [Poses(p.keypoints, p.boxes, p.scores)
                for p in self.module.postprocess(outputs, m.strides, m.anchors, m.num_classes, m.num_keypoints,
                                                 letterboxes, self.thresholds)]


def measure(model: Path, frames: list, rounds: int, reference) -> dict:
    est = pose_edge.load(model, device="cpu")
    today = est.pipeline.decoder
    if not isinstance(today, NumpyKapaoDecoder):
        raise SystemExit(f"{model}: not a single-stage or detector model on the NumPy decode stage")
    decoders = {"today": today, "before": ReferenceDecoder(reference, today.meta, today.thresholds)}
    post = {name: [] for name in decoders}
    model_s, poses = [], {name: [] for name in decoders}
    for r in range(rounds):
        for name in (("today", "before") if r % 2 == 0 else ("before", "today")):
            est.pipeline.decoder = decoders[name]
            for frame in frames:
                found = est(frame)
                post[name].append(est.timer.last["postprocess"])
                model_s.append(est.timer.last["inference"])
                if r < 2:
                    poses[name].append(len(found))
    est.pipeline.decoder = today
    if poses["today"] != poses["before"]:
        raise SystemExit(f"{model}: the two decoders found different numbers of poses")
    med = {name: statistics.median(v) * 1e3 for name, v in post.items()}
    inference = statistics.median(model_s) * 1e3
    return {"model": model.name, "frames": len(frames), "rounds": rounds,
            "poses_per_frame": poses["today"][:len(frames)],
            "post_ms": {k: round(v, 4) for k, v in med.items()}, "inference_ms": round(inference, 3),
            "speedup": round(med["before"] / med["today"], 2),
            "post_over_inference": {k: round(v / inference, 4) for k, v in med.items()}}


def markdown(record: dict) -> str:
    m = record["machine"]
    lines = [f"Recorded {record['date']} on {m['platform']} ({m['cpu']}, {m['cpus']} CPUs), one process, "
             f"`{record['command']}`", "",
             f"Reference (\"before\"): {record['reference']}. Medians over {record['rounds']} alternating rounds of "
             "the decode stage on each frame (deployment settings), timed by the estimator's stage timer right after "
             "inference.", "",
             "| model | frames | post today ms | post before ms | speed-up | inference ms | post / inference today "
             "(before) |", "| --- | --- | --- | --- | --- | --- | --- |"]
    for r in record["results"]:
        lines.append(f"| {r['model']} | {r['frames']} | {r['post_ms']['today']:.3f} | {r['post_ms']['before']:.3f} | "
                     f"{r['speedup']}x | {r['inference_ms']:.2f} | {r['post_over_inference']['today']:.3f} "
                     f"({r['post_over_inference']['before']:.3f}) |")
    return "\n".join(lines) + "\n"


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("models", nargs="+", type=Path)
    parser.add_argument("--data", type=Path, required=True, help="a COCO-format folder (its images/val frames)")
    parser.add_argument("--reference", type=Path, default=FROZEN, help="another kapao_decode.py (default: %(default)s)")
    parser.add_argument("--frames", type=int, default=16)
    parser.add_argument("--rounds", type=int, default=12)
    parser.add_argument("--out", type=Path)
    parser.add_argument("--name", default="post_stage", help="file name of the record under --out")
    args = parser.parse_args(argv)
    paths = sorted((args.data / "images" / "val").glob("*.jpg"))[:args.frames]
    if not paths:
        parser.error(f"no val images under {args.data / 'images' / 'val'}")
    frames = [cv2.imread(str(p)) for p in paths]
    reference = load_module(args.reference)
    results = [measure(m, frames, args.rounds, reference) for m in args.models]
    machine = {"platform": platform.platform(), "cpu": cpu_model(), "cpus": os.cpu_count(),
               "python": platform.python_version(), "numpy": np.__version__, "onnxruntime": ort.__version__}
    record = {"date": datetime.now(timezone.utc).isoformat(timespec="seconds"), "machine": machine,
              "command": " ".join(["python benchmarks/bench_post_stage.py"] + sys.argv[1:]), "rounds": args.rounds,
              "reference": args.reference.name if args.reference == FROZEN else str(args.reference),
              "results": results}
    text = markdown(record)
    print(text)
    if args.out:
        atomic_write_json(args.out / f"{args.name}.json", record, indent=1)
        atomic_write_text(args.out / f"{args.name}.md", text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
