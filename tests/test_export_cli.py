"""`pose-edge export` end to end from a checkpoint: files, metadata, the engine, the AP table, and clean failures."""

from __future__ import annotations

import dataclasses
import json

import pytest
from click.testing import CliRunner
from test_export_onnx import preset_model

from pose_edge.cli import main
from pose_edge.errors import PoseEdgeError


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run folder holding an (untrained) sb-r18-128x96 checkpoint in the training code's format."""
    from pose_edge.models import get_preset
    from pose_edge.models.checkpoint import save_checkpoint

    run = tmp_path_factory.mktemp("run")
    model, meta = preset_model("sb-r18-128x96")
    preset = get_preset("sb-r18-128x96")
    save_checkpoint(run / "best.pt", {"kind": "weights", "preset": dataclasses.asdict(preset),
                                      "meta": meta.to_json(), "model": model.state_dict(), "epoch": 0,
                                      "iteration": 0, "metrics": {}, "config": {}})
    return run


def test_export_onnx_fp16_default_path_and_artifact_opener(run_dir):
    from pose_edge.export.onnx_export import sample_images

    from pose_edge.artifacts import open_artifact

    result = CliRunner().invoke(main, ["export", str(run_dir), "--precision", "fp16", "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    path = run_dir / "export" / "sb-r18-128x96-fp16.onnx"
    assert report["onnx"] == str(path) and path.is_file()
    assert report["graph"]["precision"] == "fp16" and report["graph"]["outputs"][0]["dtype"] == "float16"
    assert set(report["graph"]["details"]["distortion"]) >= {"cost", "shift_px", "conf_change"}
    backend = open_artifact(path)
    assert backend.meta.preset == "sb-r18-128x96" and open_artifact(run_dir).meta == backend.meta
    (heatmaps,) = backend.run(sample_images(backend.meta, 2))
    assert heatmaps.shape == (2, 17, 32, 24) and heatmaps.dtype.name == "float32"


@pytest.mark.slow
def test_export_int8_trt_with_val_table(run_dir, synth_data, tmp_path):
    out = tmp_path / "sb.engine"
    result = CliRunner().invoke(main, ["export", str(run_dir), "--engine", "trt", "--precision", "int8", "--calib",
                                       str(synth_data), "--calib-count", "16", "--val", str(synth_data), "--sm", "8.6",
                                       "--batch", "1:4:8", "--out", str(out)])
    assert result.exit_code == 0, result.output
    assert out.is_file() and (tmp_path / "sb.engine.json").is_file() and (tmp_path / "sb.onnx").is_file()
    sidecar = json.loads((tmp_path / "sb.engine.json").read_text())
    assert sidecar["precision"] == "int8" and sidecar["profile"]["opt"][0] == 4
    assert f"--calib {synth_data}" in sidecar["rebuild"]
    lines = result.output.splitlines()
    assert any(line.startswith("precision") and "dAP(pts)" in line for line in lines)
    assert [line.split()[0] for line in lines[-3:]] == ["fp32", "fp16", "int8"]
    from pose_edge.runtime.engine_sidecar import EngineSidecar

    assert EngineSidecar.read(out).graph_info.meta.preset == "sb-r18-128x96"  # readable without a GPU


def test_failed_exports_say_why_in_one_line_and_write_nothing(run_dir, tmp_path):
    runner = CliRunner()
    cases = [
        (["--precision", "int8"], "INT8 needs real images to calibrate on"),
        (["--precision", "int8", "--calib", str(tmp_path / "nowhere")], "no such calibration folder"),
        (["--engine", "trt", "--batch", "8:1:4"], "MIN:OPT:MAX"),
    ]
    for args, message in cases:
        out = tmp_path / "x.onnx"
        result = runner.invoke(main, ["export", str(run_dir), "--out", str(out), *args])
        assert result.exit_code == 1 and message in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1
        assert list(tmp_path.iterdir()) == []
    truncated = tmp_path / "bad.pt"
    truncated.write_bytes((run_dir / "best.pt").read_bytes()[:1000])
    result = runner.invoke(main, ["export", str(truncated), "--out", str(tmp_path / "y.onnx")])
    assert result.exit_code == 1 and "bad.pt" in result.output and not (tmp_path / "y.onnx").exists()


def test_interrupted_export_leaves_the_previous_file(run_dir, tmp_path, monkeypatch):
    """A failure while the file is written (here: fsync fails, as on a full disk) leaves the old file untouched and
    no temporary file behind."""
    import os

    from pose_edge.export import api

    out = tmp_path / "m.onnx"
    out.write_bytes(b"previous")

    def disk_full(_fd):
        raise OSError(28, "No space left on device")

    monkeypatch.setattr(os, "fsync", disk_full)
    with pytest.raises(PoseEdgeError, match="No space left"):
        api.export_artifact(run_dir, out=out, progress=False)
    assert out.read_bytes() == b"previous" and [p.name for p in tmp_path.iterdir()] == ["m.onnx"]
