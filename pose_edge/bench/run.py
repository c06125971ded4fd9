"""`pose-edge bench` as a library function: every configuration's accuracy and latency, then the record and its
files.

    record = run_bench(["kapao-tiny.onnx", "sb.onnx+det.onnx"], "data/", out="bench", options=BenchOptions())

For each ARTIFACT (configs.py says what one can be), in order:
    1. accuracy: COCO AP/AR on DIR's val split through pose_edge.evaluate.split.evaluate_split with its defaults,
       the call `pose-edge eval` makes (COCO evaluation settings); a top-down pair is scored on its detector's boxes,
       and also on the ground-truth boxes;
    2. latency at each batch on DIR's first val images, through pose_edge.load with the chosen post-processing
       settings (deploy: what a robot runs), per stage, end to end and the model alone (latency.py), and at batch 1
       on frames of 1, 5, 20 ... people (frames.people_frames): all of them measured in interleaved rounds, so that
       the machine's load falls on each alike (timing.measure);
    3. where a GPU is present, the CUDA decode kernels against the NumPy decoders on the same outputs (decoders.py).
A batch a backend refuses (an engine built for smaller batches) is recorded as skipped with the reason.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

from pose_edge import __version__
from pose_edge.bench.configs import Configuration, parse_spec, runtime_name
from pose_edge.bench.decoders import compare_decoders
from pose_edge.bench.frames import BenchFrame, people_frames, val_frames
from pose_edge.bench.latency import TimedPipeline, figures, frame_step
from pose_edge.bench.machine import describe_machine
from pose_edge.bench.timing import HostClock, measure
from pose_edge.data.coco import CocoKeypoints
from pose_edge.errors import PoseEdgeError
from pose_edge.estimator import resolve_settings
from pose_edge.evaluate.split import evaluate_split
from pose_edge.progress import progress_bar
from pose_edge.runtime.gpu import gpu_status


@dataclasses.dataclass(frozen=True)
class BenchOptions:
    batches: tuple[int, ...] = (1,)
    people: tuple[int, ...] = (1, 5, 20)
    warmup: int = 5  # calls per measurement before the clock counts
    iters: int = 30  # timed calls per measurement
    settings: str = "deploy"  # post-processing while timed ("deploy" or "coco"); AP always uses COCO evaluation's
    device: str | None = None  # as pose_edge.load takes it: None (a GPU where usable), "cpu", "cuda:N"
    decode: str = "auto"  # "auto", "numpy" or "cuda", as pose_edge.load takes it
    accuracy: bool = True  # False: latency only (random weights have no AP worth the time)
    frames: int = 16  # val images the latency cycles through
    decoder_repeat: int = 20

    def check(self) -> None:
        if not self.batches or min(self.batches) < 1:
            raise PoseEdgeError(f"batch sizes must be >= 1, got {list(self.batches)}")
        if self.people and min(self.people) < 1:
            raise PoseEdgeError(f"people per frame must be >= 1, got {list(self.people)}")
        if self.warmup < 0 or self.iters < 1 or self.frames < 1:
            raise PoseEdgeError(f"need warmup >= 0, iters >= 1 and frames >= 1 (got {self.warmup}, {self.iters}, "
                                f"{self.frames})")
        resolve_settings(self.settings)


def accuracy(config: Configuration, data, progress=None) -> dict:
    """COCO statistics exactly as `pose-edge eval ARTIFACT [--boxes DET]` computes them, and how many predictions
    were scored (what `pose-edge eval --results FILE` would write)."""
    boxes = config.detector if config.detector is not None else "gt"
    scored: list[dict] = []
    out = {"stats": evaluate_split(config.backend, data, boxes=boxes, progress=progress, results=scored),
           "predictions": len(scored),
           "boxes": ("detector" if config.detector is not None else "gt") if config.paradigm == "top_down" else None}
    if config.detector is not None:
        out["stats_gt_boxes"] = evaluate_split(config.backend, data, boxes="gt", progress=progress)
    return out


def decoder_comparison(config: Configuration, options: BenchOptions, frame: BenchFrame) -> dict:
    """compare_decoders for the model and its detector on the GPU, or why not."""
    ok, why = gpu_status()
    if not ok:
        return {"skipped": f"no GPU: {why}"}
    from pose_edge.kernels.cuda_device import CudaDevice

    settings = resolve_settings(options.settings)
    out = {}
    for part, backend in (("model", config.backend), ("detector", config.detector)):
        if backend is None:
            continue
        stream = getattr(backend, "stream", None)  # share an engine's stream (and context)
        try:
            with CudaDevice(stream=int(stream) if stream is not None else None) as device:
                out[part] = compare_decoders(backend, settings, frame, device, options.decoder_repeat)
        except PoseEdgeError as e:
            out[part] = {"skipped": str(e)}
    return out


def bench_configuration(config: Configuration, data, frames: list[BenchFrame], people: dict[int, list[BenchFrame]],
                        options: BenchOptions, advance=lambda note: None) -> dict:
    out = {"label": config.label, "paradigm": config.paradigm, "runtime": runtime_name(config.backend),
           "artifact": config.spec.model, "detector_artifact": config.spec.detector}
    if options.accuracy:
        out["accuracy"] = accuracy(config, data)
    advance("accuracy")
    pipeline = TimedPipeline(config, options.settings, options.decode)
    out["latency"], out["people"] = [], []
    try:
        out.update(pipeline.describe())
        steps = {}  # every batch on the val frames and every people count, measured in interleaved rounds
        for batch in options.batches:
            try:
                pipeline.step([frames[i % len(frames)] for i in range(batch)])  # a batch is refused here or never
                steps[("batch", batch)] = frame_step(pipeline, frames, batch)
            except PoseEdgeError as e:
                out["latency"].append({"batch": batch, "skipped": str(e)})
        for count, scene in people.items():
            steps[("people", count)] = frame_step(pipeline, scene, 1)
        for (kind, value), samples in measure(steps, options.warmup, options.iters).items():
            if kind == "batch":
                out["latency"].append(figures(samples, value, options.warmup))
            else:
                out["people"].append({"people": value, **figures(samples, 1, options.warmup)})
        out["latency"].sort(key=lambda e: e["batch"])
    finally:
        pipeline.close()
    advance("latency")
    crowd = people[max(people)][0] if people else frames[0]
    out["decoders"] = decoder_comparison(config, options, crowd)
    advance("decoders")
    return out


def run_bench(artifacts, data_dir, out: str | Path | None = None, options: BenchOptions = BenchOptions(),
              progress: bool = True) -> dict:
    """Benchmark every ARTIFACT on the data set in data_dir; write bench.json, bench.md and the plots under `out`
    (if given) and return the record."""
    options.check()
    specs = [parse_spec(str(a)) for a in artifacts]
    if not specs:
        raise PoseEdgeError("nothing to benchmark: give one or more ARTIFACTs (a model, or POSE+DET)")
    data = CocoKeypoints(data_dir, "val")
    if not data.image_ids:
        raise PoseEdgeError(f"{data_dir}: the val split has no images to time")
    machine = describe_machine()
    frames = val_frames(data, options.frames)
    size = (frames[0].image.shape[1], frames[0].image.shape[0])
    people = {p: people_frames(p, size) for p in options.people}
    configs = [Configuration.open(s, options.device) for s in specs]  # every artefact opens before hours are spent
    results = []
    steps = 3
    done = 0
    try:
        with progress_bar("bench", len(configs) * steps, enabled=progress) as bar:
            for config in configs:
                def advance(note, label=config.label):
                    nonlocal done
                    done += 1
                    bar.update(done, len(configs) * steps, f"{label}: {note}")

                results.append(bench_configuration(config, data, frames, people, options, advance))
    finally:
        for config in configs:
            config.close()
    record = {
        "tool": f"pose-edge {__version__} bench",
        "machine": machine,
        "load_average_at_end": [round(v, 2) for v in os.getloadavg()],
        "data": {"dir": str(data_dir), "split": "val", "images": len(data.image_ids), "frame_size": list(size),
                 "latency_frames": len(frames)},
        "options": {**dataclasses.asdict(options), "batches": list(options.batches), "people": list(options.people)},
        "clock": {"stages_and_end_to_end": HostClock.name,
                  "model_only": "per configuration: its model_clock (CUDA events for TensorRT engines)"},
        "configurations": results,
    }
    if out is not None:
        from pose_edge.bench.report import write_outputs

        record["files"] = {k: str(v) for k, v in write_outputs(record, out).items()}
    return record
