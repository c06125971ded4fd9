"""`pose-edge bench`: outputs, accuracy through the one evaluation path, the Pareto frontier, the measurement loop,
the people-per-frame ordering from the recorded CPU benchmark, the GPU decode comparison (on the emulated kernels),
and the one-command GPU check's dry run.

Models are the small presets with random weights (conftest.small_models); data is conftest.synth_data (20 val images)
or, where every image is evaluated several times, six val images of the built-in set (few_images).
No assertion here is about a time: only about counts, sums of the same clock's readings, and recorded orderings.
"""

from __future__ import annotations

import json
import os
import subprocess
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner

from pose_edge.bench import BenchOptions, run_bench
from pose_edge.bench.configs import Configuration, Spec, parse_spec
from pose_edge.bench.frames import people_frames, val_frames
from pose_edge.bench.latency import STAGES, TimedPipeline, figures
from pose_edge.bench.pareto import pareto_front
from pose_edge.bench.timing import HostClock, measure, model_clock
from pose_edge.cli import main
from pose_edge.data.coco import CocoKeypoints
from pose_edge.errors import PoseEdgeError
from pose_edge.runtime.ort_backend import OrtBackend
from pose_edge.runtime.settings import Settings, Thresholds

ROOT = Path(__file__).resolve().parents[1]
RECORDED = ROOT / "benchmarks" / "results" / "bench-cpu-small.json"
PNG = b"\x89PNG\r\n\x1a\n"

# Loose enough that random weights find people, so that post-processing has work to do and poses to compare.
LOOSE = Settings(single_stage=Thresholds(conf_thres=0.0, max_det=30, max_nms=4096),
                 detector=Thresholds(conf_thres=0.0, max_det=6, max_nms=4096, use_kp_dets=False))


@pytest.fixture(scope="module")
def few_images(tmp_path_factory):
    """Six val images (320x240): each evaluation below crops up to 100 detector boxes an image."""
    from pose_edge.data import synth

    out = tmp_path_factory.mktemp("few")
    synth.write_dataset(out, num_train=0, num_val=6, seed=1, size=(320, 240), progress=False)
    return out


def onnx(small_models, name):
    return str(small_models[name][1])


def eval_json(*args, results: Path) -> tuple[dict, int]:
    """`pose-edge eval ... --json --results FILE`: (its statistics, how many predictions it scored)."""
    result = CliRunner().invoke(main, ["eval", *args, "--json", "--device", "cpu", "--results", str(results)])
    assert result.exit_code == 0, result.output
    return json.loads(result.output), len(json.loads(results.read_text()))


def test_bench_writes_every_output_and_its_ap_is_pose_edge_eval(small_models, few_images, tmp_path):
    """Small ONNX models (KAPAO; a Simple Baseline with its detector; the detector alone): bench.json, bench.md and
    both PNGs, and each configuration's COCO statistics are exactly what `pose-edge eval` prints for the same artefact
    and data."""
    kapao, sb, det = onnx(small_models, "kapao-tiny"), onnx(small_models, "sb-r18-128x96"), onnx(small_models, "det-tiny")
    options = BenchOptions(batches=(1, 2), people=(1, 5), warmup=1, iters=3, frames=4, device="cpu")
    record = run_bench([kapao, f"{sb}+{det}", det], few_images, tmp_path / "out", options, progress=False)

    files = {k: Path(v) for k, v in record["files"].items()}
    assert set(files) == {"json", "markdown", "ap_vs_latency", "latency_vs_people"}
    assert json.loads(files["json"].read_text())["configurations"][1]["label"] == record["configurations"][1]["label"]
    for png in (files["ap_vs_latency"], files["latency_vs_people"]):
        assert png.read_bytes()[:8] == PNG and png.stat().st_size > 10_000
    table = files["markdown"].read_text()
    assert "| kapao-tiny fp32 ORT-CPU | 1 |" in table and "| sb-r18-128x96 fp32 + det-tiny fp32 ORT-CPU | 2 |" in table
    assert "| det-tiny fp32 ORT-CPU | 1 | box " in table

    # Random weights: KAPAO is confident of nobody (no prediction, AP 0), but the random detector's 100 boxes an
    # image give a small non-zero box AP, and the pose model on them a prediction count that differs with the
    # settings and the boxes' source: the comparisons can fail.
    first, pair, alone = record["configurations"]
    stats, count = eval_json(kapao, "--data", str(few_images), results=tmp_path / "k.json")
    assert first["accuracy"]["stats"] == stats and first["accuracy"]["predictions"] == count
    stats, count = eval_json(sb, "--data", str(few_images), "--boxes", det, results=tmp_path / "sd.json")
    assert pair["accuracy"]["stats"] == stats and pair["accuracy"]["predictions"] == count > 0
    stats, _ = eval_json(sb, "--data", str(few_images), results=tmp_path / "sg.json")
    assert pair["accuracy"]["stats_gt_boxes"] == stats and pair["accuracy"]["boxes"] == "detector"
    stats, count = eval_json(det, "--data", str(few_images), results=tmp_path / "d.json")
    assert alone["accuracy"]["stats"] == stats and stats["AP"] > 0 and alone["accuracy"]["predictions"] == count

    assert [e["batch"] for e in first["latency"]] == [1, 2] and [e["people"] for e in pair["people"]] == [1, 5]
    assert pair["people"][1]["people_per_frame"] == 5 and pair["latency"][0]["iters"] == 3
    m = record["machine"]
    assert m["cores"] >= 1 and m["cpu"] and len(m["load_average_1_5_15"]) == 3 and "onnxruntime-gpu" in m["versions"]
    if not m["gpu"]["present"]:
        assert first["decoders"]["skipped"].startswith("no GPU")


def test_pareto_front_on_hand_made_points():
    points = [(10.0, 0.50),  # 0 front: the fastest
              (20.0, 0.60),  # 1 front
              (25.0, 0.55),  # 2 dominated by 1 (slower and less accurate)
              (20.0, 0.58),  # 3 dominated by 1 (same latency, less accurate)
              (30.0, 0.60),  # 4 dominated by 1 (same accuracy, slower)
              (40.0, 0.70),  # 5 front: the most accurate
              (40.0, 0.70),  # 6 identical to 5: neither dominates, both kept
              (5.0, 0.10)]   # 7 front: fastest of all
    assert pareto_front(points) == [7, 0, 1, 5, 6]
    assert pareto_front([]) == [] and pareto_front([(1.0, 0.0)]) == [0]


def test_labels_of_points_at_nearly_the_same_ap_alternate_above_and_below():
    from pose_edge.bench.plots import _alternate_in_bands

    # three points on one AP level (labels would share a line), taken by AP: 0.10 above, 0.1005 below, 0.101 above
    assert _alternate_in_bands([0.30, 0.10, 0.101, 0.50, 0.1005]) == [False, False, False, False, True]
    assert _alternate_in_bands([0.2, 0.2, 0.2]) == [False, True, False]
    assert _alternate_in_bands([0.1, 0.5]) == [False, False]


def test_measure_runs_in_rounds_and_discards_the_warm_up_rounds():
    calls = []

    def step(name):
        def call():
            calls.append(name)
            return {"call": len(calls) - 1}
        return call

    samples = measure({"a": step("a"), "b": step("b")}, warmup=3, iters=4)
    assert calls == ["a", "b"] * 7  # interleaved: a load change falls on both alike
    assert [s["call"] for s in samples["a"]] == [6, 8, 10, 12] and [s["call"] for s in samples["b"]] == [7, 9, 11, 13]
    with pytest.raises(ValueError):
        measure({"a": step("a")}, warmup=0, iters=0)


class CountingBackend:
    """A real ONNX Runtime backend that counts its runs."""

    def __init__(self, inner):
        self.inner, self.meta, self.info, self.runs = inner, inner.meta, inner.info, 0

    def run(self, images):
        self.runs += 1
        return self.inner.run(images)


@pytest.mark.parametrize("pair", [False, True], ids=["kapao", "top-down pair"])
def test_stage_times_add_up_and_warm_up_is_not_counted(small_models, synth_data, pair):
    """Through the real pipeline: every call runs the model twice (the pipeline, then the model alone on the same
    batch), warm-up calls included, but only the timed calls are in the figures; per call the three stages sum to
    at most the end-to-end time of the same clock, and what they leave out (frame checks, result assembly, the
    timer) is a small part of it."""
    def counted(name):
        return CountingBackend(OrtBackend(onnx(small_models, name), providers=("CPUExecutionProvider",)))

    model = counted("sb-r18-128x96" if pair else "kapao-tiny")
    det = counted("det-tiny") if pair else None
    config = Configuration(Spec("model.onnx", "det.onnx" if pair else None), model, det)
    pipeline = TimedPipeline(config, LOOSE)
    frames = val_frames(CocoKeypoints(synth_data, "val"), 4)
    frames = [f for f in frames if f.people] if pair else frames
    samples = measure({"one frame": lambda: pipeline.step(frames[:1])}, warmup=2, iters=9)["one frame"]
    per_call = (len(frames[0].boxes) + 63) // 64  # crops per pose-model call (max_batch 64)
    assert model.runs == (2 + 9) * 2 * per_call
    if pair:
        assert det.runs == (2 + 9) * 2
    gaps = []
    for s in samples:
        stages = sum(s[k] for k in STAGES)
        assert all(s[k] > 0 for k in STAGES) and 0 < stages <= s["end_to_end"]
        gaps.append((s["end_to_end"] - stages) / s["end_to_end"])
    assert np.median(gaps) < 0.1
    summary = figures(samples, 1, 2)
    assert summary["iters"] == summary["end_to_end"]["n"] == 9 and summary["warmup"] == 2
    assert summary["end_to_end"]["p50"] <= summary["end_to_end"]["p90"] <= summary["end_to_end"]["p99"]


def test_top_down_latency_rises_with_people_and_kapao_does_not_in_the_recorded_cpu_benchmark():
    """From the recorded CPU benchmark (benchmarks/results), as an ordering with a wide margin, not a time."""
    record = json.loads(RECORDED.read_text())
    growth = {}
    for c in record["configurations"]:
        by_people = {e["people"]: e["end_to_end"]["p50"] for e in c.get("people", [])}
        if 1 in by_people and 20 in by_people:
            growth[c["label"]] = by_people[20] / by_people[1]
    top_down = [g for label, g in growth.items() if label.startswith("sb-") and "+ det-" in label]
    kapao = [g for label, g in growth.items() if label.startswith("kapao-")]
    assert top_down and kapao, sorted(growth)
    assert min(top_down) > 2.0  # 20 crops cost well over twice one crop
    assert max(kapao) < 1.5  # one forward pass whatever the crowd
    assert min(top_down) > 2 * max(kapao)


def test_gpu_decode_comparison_runs_on_the_emulated_kernels(small_models):
    """The comparison the bench makes on a GPU, here with the kernels' CPU emulation as the device: the CUDA stage
    decodes the NumPy stage's very inputs and agrees with it (a different stage would not)."""
    from pose_edge.bench.decoders import compare_decoders
    from pose_edge.kernels.emulator import EmulatedDevice

    device = EmulatedDevice()
    frame = people_frames(3, (320, 240), count=1)[0]
    for name in ("kapao-tiny", "sb-r18-128x96"):
        backend = OrtBackend(onnx(small_models, name), providers=("CPUExecutionProvider",))
        out = compare_decoders(backend, LOOSE, frame, device, repeat=1)
        assert out["agree"], out
        assert out["gpu_from_host"]["same_people"] and out["gpu_from_host"]["n"] == 1
        assert "gpu_on_device" not in out  # ONNX Runtime leaves no buffers on a device


def test_clocks_and_artifact_strings():
    backend_like = type("B", (), {"run": lambda self, x: x})()
    assert isinstance(model_clock(backend_like), HostClock)
    from pose_edge.runtime.gpu import driver

    drv = driver()  # the CUDA event calls CudaEventClock makes exist in this cuda-python (they cannot run here)
    for name in ("cuEventCreate", "cuEventRecord", "cuEventSynchronize", "cuEventElapsedTime", "cuEventDestroy"):
        assert hasattr(drv, name)
    assert int(drv.CUevent_flags.CU_EVENT_DEFAULT) == 0
    assert parse_spec("sb.onnx+det.onnx") == Spec("sb.onnx", "det.onnx") and parse_spec("k.onnx") == Spec("k.onnx")
    for bad in ("a+b+c", "+det.onnx", "sb.onnx+"):
        with pytest.raises(PoseEdgeError, match="POSE\\+DET"):
            parse_spec(bad)


def test_bench_refuses_bad_input_with_one_line(small_models, synth_data, tmp_path):
    kapao, det = onnx(small_models, "kapao-tiny"), onnx(small_models, "det-tiny")
    runner = CliRunner()
    for args, message in ((["--batch", "0"], "at least 1"), (["--batch", "x"], "comma-separated"),
                          ([f"{kapao}+{det}"], "needs no detector"), ([str(tmp_path / "none.onnx")], "no such file")):
        argv = ["bench", *(args if not args[0].startswith("--") else [kapao, *args]), "--data", str(synth_data),
                "--out", str(tmp_path / "o")]
        result = runner.invoke(main, argv)
        assert result.exit_code != 0 and message in result.output, result.output
    assert not (tmp_path / "o").exists()


def test_gpu_check_dry_run(tmp_path):
    """scripts/gpu_check.sh --dry-run: parses its arguments, lays out OUTDIR, lists every step, runs none, and says
    why each GPU step would be skipped on this machine."""
    script = ROOT / "scripts" / "gpu_check.sh"
    out = tmp_path / "check"
    env = {**os.environ, "PATH": f"{ROOT / '.venv' / 'bin'}:{os.environ['PATH']}"}
    done = subprocess.run(["bash", str(script), str(out), "--dry-run"], capture_output=True, text=True, env=env,
                          timeout=120)
    assert done.returncode == 0, done.stderr
    for sub in ("logs", "runs", "engines", "bench"):
        assert (out / sub).is_dir()
    text = done.stdout
    for step in ("pip install", "pytest -m gpu", "selftest --gpu", "--engine trt", "pose-edge' bench"):
        assert step in text, text
    assert "would run" in text and "skip" in text.lower() and "no GPU" in text
    assert not any((out / "logs").iterdir())  # nothing ran
    for argv in ([], ["--dry-run"], [str(out), "--bogus"]):
        bad = subprocess.run(["bash", str(script), *argv], capture_output=True, text=True, env=env, timeout=60)
        assert bad.returncode == 2 and "usage" in bad.stderr.lower()


# ------------------------------------------------------------------------------------------------------ GPU (tier E)


@pytest.mark.gpu
def test_bench_on_engines_times_with_cuda_events_and_compares_the_decode_kernels(small_models, few_images, tmp_path):
    """On a GPU: engines of both paradigms built here, benchmarked; the model alone is timed with CUDA events on the
    engine's stream, the CUDA decode stage runs on the engine's buffers, and the GPU kernels agree with the NumPy
    decoders on the same outputs (host arrays and device buffers)."""
    from pose_edge.export.trt_build import build_engine, import_tensorrt
    from pose_edge.runtime.gpu import gpu_identity

    _, module = import_tensorrt()
    name, cc = gpu_identity()
    if module == "tensorrt_rtx" and cc not in ("7.5", "8.0", "8.6", "8.9", "12.0", "12.1"):
        pytest.skip(f"only TensorRT-RTX is installed and it cannot target this {name} (compute capability {cc})")
    engines = {}
    for preset in ("kapao-tiny", "sb-r18-128x96", "det-tiny"):
        backend = OrtBackend(onnx(small_models, preset), providers=("CPUExecutionProvider",))
        engines[preset] = tmp_path / f"{preset}.engine"
        build_engine(onnx(small_models, preset), engines[preset], backend.info, batch=(1, 2, 8))
    options = BenchOptions(batches=(1, 2), people=(1, 5), warmup=2, iters=5, frames=4)
    record = run_bench([engines["kapao-tiny"], f"{engines['sb-r18-128x96']}+{engines['det-tiny']}"], few_images,
                       tmp_path / "out", options, progress=False)
    for c in record["configurations"]:
        assert c["runtime"] in ("TRT", "TRT-RTX") and "CUDA events" in c["model_clock"]
        assert c["model"]["decoder"] == "cuda (GPU)"
        for e in c["latency"] + c["people"]:
            assert 0 < e["model_only"]["p50"] and e["stages"]["inference"]["p50"] > 0
        assert all("skipped" not in d for d in c["decoders"].values()), c["decoders"]
    # The decoders compared where random weights leave them work to do (LOOSE keeps candidates within the kernels'
    # capacity), on the engines' own buffers.
    from pose_edge.bench.decoders import compare_decoders
    from pose_edge.kernels.cuda_device import CudaDevice
    from pose_edge.runtime.trt_backend import TrtBackend

    frame = people_frames(3, (320, 240), count=1)[0]
    for preset in ("kapao-tiny", "sb-r18-128x96"):
        with TrtBackend(engines[preset]) as backend, CudaDevice(stream=int(backend.stream)) as device:
            d = compare_decoders(backend, LOOSE, frame, device, repeat=3)
        assert d["agree"] and "gpu_on_device" in d, d
