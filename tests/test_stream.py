"""The pipelined runner: live sources stay live (no backlog, dropped frames counted), file sources drop nothing,
stages overlap, results come in frame order, a stage's exception stops the run and names the stage, stop() and
Ctrl-C end a run cleanly, and a failing or killed run leaves no partial file under a final name."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import textwrap
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from pose_edge.errors import DataError
from pose_edge.runtime.stream import StageError, StreamRunner
from pose_edge.runtime.writers import JsonLinesWriter, VideoWriter

sys.path.insert(0, str(Path(__file__).parent))
from synthetic_poses import poses_of, standing_person, write_clip  # noqa: E402

REPO = Path(__file__).parents[1]
INFER_S = 0.05


def _numbered(t: int, size=(64, 48)) -> np.ndarray:
    """A frame that carries its number t in its first pixel (t < 65536)."""
    image = np.zeros((size[1], size[0], 3), np.uint8)
    image[0, 0, :2] = t % 256, t // 256
    return image


def _number(image: np.ndarray) -> int:
    return int(image[0, 0, 0]) + 256 * int(image[0, 0, 1])


def _runner_threads_alive() -> list[str]:
    """Names of the runner's and the live sources' threads still running."""
    return [t.name for t in threading.enumerate() if t.name.split(" ")[0] in ("capture", "inference", "render")]


def test_a_live_source_faster_than_inference_builds_no_backlog():
    made = [0]

    def camera():  # 150 frames at about 250 frames/s, five times faster than inference
        for t in range(150):
            time.sleep(0.004)
            made[0] = t + 1
            yield _numbered(t)

    behind = []

    def infer(frame):
        image = frame.image
        behind.append(made[0] - 1 - _number(image))  # frames captured since this one: 0 means the newest
        time.sleep(INFER_S)
        return _number(image)

    runner = StreamRunner(camera(), infer)
    delivered = list(runner)
    stats = runner.stats
    numbers = [frame.index for frame, _ in delivered]
    assert numbers == sorted(set(numbers)) and numbers[-1] == 149          # in order, to the last frame
    assert all(result == frame.index for frame, result in delivered)       # each result belongs to its frame
    assert max(behind) <= 2, f"inference worked on stale frames: {behind}"  # a backlog would grow without bound
    waited = np.subtract(stats.latency.samples, stats.inference.samples)   # capture -> start of inference
    assert waited.max() < INFER_S, f"frames waited {waited.max() * 1000:.0f} ms before inference"
    assert stats.dropped > 100 and stats.frames + stats.dropped == 150     # every frame delivered or counted
    assert stats.frames == len(delivered) and stats.skipped == 0
    assert not _runner_threads_alive()


def test_a_video_file_through_a_slow_runner_drops_nothing(tmp_path):
    clip = write_clip(tmp_path / "clip.mp4", 20)
    rendered = []

    def infer(frame):
        time.sleep(0.01)
        return float(frame.image.mean())

    def render(frame, result):
        time.sleep(0.005)
        rendered.append(frame.index)

    runner = StreamRunner(clip, infer, render)
    delivered = list(runner)
    assert [f.index for f, _ in delivered] == list(range(20)) == rendered
    assert all(result == pytest.approx(frame.image.mean()) for frame, result in delivered)
    assert runner.stats.dropped == 0 and runner.stats.frames == 20
    assert runner.stats.inference.count == runner.stats.render.count == 20


def test_stages_overlap_and_results_keep_frame_order():
    calls = []  # (stage, frame number, start, end)

    def infer(frame):
        start = time.monotonic()
        time.sleep(0.02)
        calls.append(("infer", _number(frame.image), start, time.monotonic()))
        return _number(frame.image)

    def render(frame, result):
        start = time.monotonic()
        time.sleep(0.02)
        calls.append(("render", result, start, time.monotonic()))

    runner = StreamRunner([_numbered(t) for t in range(12)], infer, render)
    assert [result for _, result in runner] == list(range(12))
    infers = {n: (s, e) for stage, n, s, e in calls if stage == "infer"}
    renders = {n: (s, e) for stage, n, s, e in calls if stage == "render"}
    # Frame n+1's inference runs while frame n is rendered: the stages are pipelined, not serial.
    overlapping = sum(infers[n + 1][0] < renders[n][1] and renders[n][0] < infers[n + 1][1] for n in range(11))
    assert overlapping >= 6
    assert runner.stats.summary().startswith("12 frames in ")


def _failing_at(n: int, error: BaseException):
    count = [0]

    def fail(*_):
        count[0] += 1
        if count[0] == n:
            raise error
        return 0

    return fail


def _frames(n: int = 30):
    for t in range(n):
        time.sleep(0.002)
        yield _numbered(t)


@pytest.mark.parametrize("stage", ["capture", "inference", "render"])
@pytest.mark.parametrize("live", [True, False])
def test_a_stage_exception_stops_the_run_and_names_the_stage(stage, live):
    def broken_feed():
        yield from _frames(3)
        raise ValueError("boom")

    source = broken_feed() if stage == "capture" else _frames()
    infer = _failing_at(3, ValueError("boom")) if stage == "inference" else (lambda frame: 0)
    render = _failing_at(3, ValueError("boom")) if stage == "render" else None
    from pose_edge.runtime.sources import open_source

    runner = StreamRunner(open_source(source, live=live), infer, render)
    with pytest.raises(StageError, match=f"{stage} stage failed: ValueError: boom") as info:
        for _ in runner:
            pass
    assert info.value.stage == stage and isinstance(info.value.__cause__, ValueError)
    assert not _runner_threads_alive()


def test_a_pose_edge_error_keeps_its_type_with_the_stage_named():
    def feed():
        yield _numbered(0)
        raise DataError("camera 0: unplugged")

    with pytest.raises(DataError, match="capture stage: camera 0: unplugged"):
        StreamRunner(feed(), lambda frame: 0).run()


def test_stop_from_a_callback_ends_an_endless_live_run():
    closed = threading.Event()

    def endless():
        try:
            t = 0
            while True:
                time.sleep(0.002)
                yield _numbered(t)
                t += 1
        finally:
            closed.set()

    runner = StreamRunner(endless(), lambda frame: time.sleep(0.005))
    stats = runner.run(lambda frame, result: runner.stats.frames >= 5 and runner.stop())
    assert 5 <= stats.frames <= 8 and not stats.interrupted
    assert closed.wait(2.0) and not _runner_threads_alive()


def test_a_failing_run_leaves_no_partial_files(tmp_path):
    with pytest.raises(StageError, match="inference stage failed"):
        with VideoWriter(tmp_path / "overlay.mp4", fps=25) as video, \
                JsonLinesWriter(tmp_path / "poses.jsonl") as jsonl:
            poses = poses_of(standing_person(10, 5, 30, 40)[None])

            def render(frame, result):
                video.write(frame.image)
                jsonl.write(frame, result)

            fail = _failing_at(8, RuntimeError("engine lost"))
            StreamRunner([_numbered(t) for t in range(20)], lambda frame: fail() or poses, render).run()
    assert sorted(os.listdir(tmp_path)) == []


# A run in its own process: an endless live camera, overlays and JSON Lines written from the render stage.
_SCRIPT = textwrap.dedent("""
    import json, signal, sys, time
    import numpy as np
    # Ctrl-C as in a terminal, even when the suite runs as a background job (which starts with SIGINT ignored).
    signal.signal(signal.SIGINT, signal.default_int_handler)
    sys.path.insert(0, {tests!r})
    from synthetic_poses import poses_of, standing_person
    from pose_edge.runtime.draw import draw_poses
    from pose_edge.runtime.stream import StreamRunner
    from pose_edge.runtime.writers import JsonLinesWriter, VideoWriter

    def camera():
        t = 0
        while True:
            time.sleep(0.005)
            yield np.full((48, 64, 3), t % 256, np.uint8)
            t += 1

    def infer(frame):
        time.sleep(0.02)
        return poses_of(standing_person(10, 5, 30, 40)[None], track_ids=[1])

    with VideoWriter(sys.argv[1] + "/overlay.mp4", fps=25) as video, \\
            JsonLinesWriter(sys.argv[1] + "/poses.jsonl") as jsonl:
        def render(frame, poses):
            video.write(draw_poses(frame.image, poses.keypoints, poses.boxes, poses.scores, poses.track_ids))
            jsonl.write(frame, poses)

        def progress(frame, poses):
            if runner.stats.frames == 5:
                print("running", flush=True)

        runner = StreamRunner(camera(), infer, render)
        stats = runner.run(progress)
    print(json.dumps({{"frames": stats.frames, "interrupted": stats.interrupted, "video": video.frames,
                      "dropped": stats.dropped}}), flush=True)
""")


def _start_run(tmp_path) -> subprocess.Popen:
    script = tmp_path / "run.py"
    script.write_text(_SCRIPT.format(tests=str(Path(__file__).parent)))
    out = tmp_path / "out"
    out.mkdir()
    proc = subprocess.Popen([sys.executable, str(script), str(out)], stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, env={**os.environ, "PYTHONPATH": str(REPO)})
    assert proc.stdout.readline().strip() == "running", proc.stderr.read()
    return proc


def test_a_killed_run_leaves_nothing_under_the_final_names(tmp_path):
    proc = _start_run(tmp_path)
    proc.send_signal(signal.SIGKILL)
    proc.communicate(timeout=30)
    assert proc.returncode == -signal.SIGKILL
    names = os.listdir(tmp_path / "out")
    assert "overlay.mp4" not in names and "poses.jsonl" not in names
    assert any(n.startswith(".overlay.mp4.") for n in names)  # it was writing, under a temporary name


def test_ctrl_c_ends_a_live_run_cleanly_and_keeps_what_was_written(tmp_path):
    proc = _start_run(tmp_path)
    time.sleep(0.2)
    proc.send_signal(signal.SIGINT)
    stdout, stderr = proc.communicate(timeout=30)
    assert proc.returncode == 0, stderr
    report = json.loads(stdout.strip().splitlines()[-1])
    assert report["interrupted"] and report["frames"] >= 5 and report["dropped"] > 0
    out = tmp_path / "out"
    assert sorted(os.listdir(out)) == ["overlay.mp4", "poses.jsonl"]
    lines = (out / "poses.jsonl").read_text().splitlines()
    # Every frame rendered is in both files; the caller may have seen one frame fewer than render did.
    assert report["video"] == len(lines) and report["frames"] <= len(lines) <= report["frames"] + 4
    assert all(json.loads(line)["poses"][0]["track_id"] == 1 for line in lines)
    cap = cv2.VideoCapture(str(out / "overlay.mp4"))
    assert int(cap.get(cv2.CAP_PROP_FRAME_COUNT)) == len(lines)
    cap.release()
