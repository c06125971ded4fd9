"""`pose-edge predict` as a library function: an Estimator over a source, with overlays and poses written to a folder.

    summary = predict(est, "video.mp4", "predictions/video")
    summary.frames, summary.stage_ms, summary.files

What it writes under `out`:
    image sets (an image, a folder, a glob)   overlays/<name>.jpg and results.json (COCO keypoint results, image ids
                                              from numeric file names as COCO's, else the frame index)
    videos, cameras, streams, iterables       overlay.mp4 and poses.jsonl (one JSON object per frame: index, name,
                                              capture timestamp, video time, poses with track ids)
Every file appears under its final name only when complete. Capture, inference and drawing overlap in threads
(pose_edge.runtime.stream); a live source drops stale frames and counts them rather than fall behind.
Torch-free (unless the Estimator runs a checkpoint).
"""

from __future__ import annotations

import contextlib
import dataclasses
from collections.abc import Callable
from pathlib import Path

from pose_edge.runtime.draw import draw_poses
from pose_edge.runtime.sources import open_source
from pose_edge.runtime.stream import StreamRunner, StreamStats
from pose_edge.runtime.writers import CocoResultsWriter, JsonLinesWriter, open_overlay_writer

IMAGE_SET_KINDS = ("image", "folder", "glob")


@dataclasses.dataclass
class PredictSummary:
    frames: int
    dropped: int
    skipped: int
    throughput_fps: float
    stage_ms: dict[str, float]  # mean per frame: preprocess, inference, postprocess, tracking, drawing
    capture_to_result_ms: float
    people: int  # poses written, over all frames
    files: dict[str, str]
    interrupted: bool

    def line(self) -> str:
        stages = ", ".join(f"{k} {v:.1f}" for k, v in self.stage_ms.items())
        return (f"{self.frames} frames ({self.throughput_fps:.1f} frames/s, {self.dropped} dropped, {self.skipped} "
                f"skipped), {self.people} poses; mean ms per frame: {stages}; capture to poses "
                f"{self.capture_to_result_ms:.1f} ms" + (" (interrupted)" if self.interrupted else ""))


def predict(estimator, source, out: str | Path, *, draw: bool = True, keypoint_threshold: float = 0.3,
            on_frame: Callable[[int, int | None, float], None] | None = None) -> PredictSummary:
    """Run `estimator` over `source` and write overlays and poses under `out` (see the module docstring).
    on_frame(done, total or None, frames per second) after every frame, e.g. for a progress bar."""
    out = Path(out)
    frames = open_source(source)
    image_set = frames.kind in IMAGE_SET_KINDS
    files = {"poses": str(out / ("results.json" if image_set else "poses.jsonl"))}
    if draw:
        files["overlays"] = str(out / ("overlays" if image_set else "overlay.mp4"))
    people = [0]
    estimator.timer.reset()
    with contextlib.ExitStack() as stack:  # writers first: a bad --out fails before any inference
        stack.callback(frames.close)
        poses_file = stack.enter_context(CocoResultsWriter(files["poses"]) if image_set
                                         else JsonLinesWriter(files["poses"]))
        overlay = stack.enter_context(open_overlay_writer(files["overlays"], fps=frames.fps)) if draw else None

        def render(frame, poses) -> None:
            if overlay is not None:
                overlay.write(draw_poses(frame.image, poses.keypoints, poses.boxes, poses.scores, poses.track_ids,
                                         keypoint_threshold=keypoint_threshold), frame.name, frame.index)
            poses_file.write(frame, poses)
            people[0] += len(poses)

        runner = StreamRunner(frames, estimator.infer_frame, render)
        stats: StreamStats = runner.run(
            None if on_frame is None else lambda _frame, _poses: on_frame(
                runner.stats.frames, frames.length, runner.stats.frames / max(runner.stats.elapsed_s, 1e-9)))
    stage_ms = dict(estimator.timer.mean_ms())
    stage_ms["drawing"] = stats.render.mean_ms() if stats.render.count else 0.0
    return PredictSummary(frames=stats.frames, dropped=stats.dropped, skipped=stats.skipped,
                          throughput_fps=stats.throughput_fps, stage_ms=stage_ms,
                          capture_to_result_ms=stats.latency.mean_ms(), people=people[0], files=files,
                          interrupted=stats.interrupted)
