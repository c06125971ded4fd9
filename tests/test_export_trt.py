"""TensorRT: every precision of every model family parses and builds with TensorRT-RTX (tier D, no GPU needed);
sidecars are checked before an engine is loaded; on a GPU (tests marked `gpu`) engines run and match ONNX Runtime.

TensorRT-RTX proves that a graph parses and builds in a TensorRT-family builder as a strongly typed network; it does
not prove a TensorRT 10/11 engine, nor anything about run time.
"""

from __future__ import annotations

import json
import time

import numpy as np
import pytest
from pose_edge.export import fp16, int8
from pose_edge.export.onnx_export import export_onnx, get_graph_info, sample_images, save_model, set_graph_info
from no_torch import run_cli_without_torch
from test_export_onnx import SMALL_PRESETS, preset_model

from pose_edge.errors import ArtifactError, PoseEdgeError
from pose_edge.model_meta import GraphInfo
from pose_edge.runtime.engine_sidecar import EngineSidecar, check_sidecar, sidecar_path

trt_rtx = pytest.importorskip("tensorrt_rtx", reason="TensorRT-RTX is not installed (pip install 'pose-edge[trt]')")

BUILD_TIMES: dict[str, float] = {}


# sb-r18-128x96's INT8 engine is built through the CLI by test_export_cli.test_export_int8_trt_with_val_table.
BUILT_ELSEWHERE = {("sb-r18-128x96", "int8")}


def _graphs(name: str, calib_dir):
    """FP32, FP16 and INT8 (Q/DQ on FP16) graphs of a small preset with random weights, calibrated on real images,
    less those another test builds (BUILT_ELSEWHERE)."""
    from pose_edge.export.calib_data import calibration_images

    model, meta = preset_model(name)
    fp32_graph = export_onnx(model, meta)
    info = get_graph_info(fp32_graph)
    graphs = {"fp32": fp32_graph, "fp16": fp16.convert_to_fp16(fp32_graph)}
    if (name, "int8") not in BUILT_ELSEWHERE:
        q, _ = int8.quantize(fp32_graph, meta, calibration_images(calib_dir, meta, 8), count=8, progress=False,
                             sensitivity=False)
        graphs["int8"] = fp16.convert_to_fp16(q)
    for precision, g in graphs.items():
        set_graph_info(g, GraphInfo(**{**info.__dict__, "precision": precision}))
    return graphs, info


@pytest.mark.slow
@pytest.mark.parametrize("name", SMALL_PRESETS)
def test_every_precision_builds_with_tensorrt_rtx(name, synth_data, tmp_path):
    from pose_edge.export.trt_build import build_engine

    graphs, info = _graphs(name, synth_data)
    for precision, graph in graphs.items():
        onnx_path = save_model(graph, tmp_path / f"{name}-{precision}.onnx")
        engine = tmp_path / f"{name}-{precision}.engine"
        start = time.perf_counter()
        sidecar = build_engine(onnx_path, engine, GraphInfo(**{**info.__dict__, "precision": precision}),
                               batch=(1, 2, 4), compute_capabilities=("8.6", "8.9"), module="tensorrt_rtx")
        BUILD_TIMES[f"{name} {precision}"] = time.perf_counter() - start
        assert engine.stat().st_size > 10_000
        on_disk = json.loads(sidecar_path(engine).read_text())
        assert on_disk == json.loads(json.dumps(sidecar.to_dict()))  # what the builder returned is what it wrote
        assert on_disk["trt_module"] == "tensorrt_rtx" and on_disk["trt_version"] == trt_rtx.__version__
        assert on_disk["compute_capabilities"] == ["8.6", "8.9"] and on_disk["precision"] == precision
        assert on_disk["profile"]["max"] == [4, info.meta.input.height, info.meta.input.width, 3]
        assert on_disk["input_dtype"] == "uint8"
        expected = "float32" if precision == "fp32" else "float16"
        assert {o["dtype"] for o in on_disk["outputs"]} == {expected}
        assert EngineSidecar.read(engine).graph_info.meta == info.meta
    print("TensorRT-RTX build seconds:", {k: round(v, 2) for k, v in BUILD_TIMES.items()})


@pytest.fixture(scope="module")
def built_engine(tmp_path_factory):
    """A small FP16 kapao-tiny engine built ahead of time for SM 8.6, with its ONNX beside it."""
    from pose_edge.export.trt_build import build_engine

    tmp = tmp_path_factory.mktemp("engine")
    model, meta = preset_model("kapao-tiny")
    graph = fp16.convert_to_fp16(export_onnx(model, meta))
    info = get_graph_info(graph)
    info = GraphInfo(**{**info.__dict__, "precision": "fp16"})
    set_graph_info(graph, info)
    onnx_path = save_model(graph, tmp / "kapao-tiny-fp16.onnx")
    engine = tmp / "kapao-tiny-fp16.engine"
    build_engine(onnx_path, engine, info, compute_capabilities=("8.6",), module="tensorrt_rtx",
                 rebuild="pose-edge export runs/k --engine trt --precision fp16")
    return engine


def _check(sidecar, engine, **over):
    here = dict(trt_module=sidecar.trt_module, trt_version=sidecar.trt_version, gpu_name="NVIDIA RTX A4000",
                compute_capability="8.6")
    here.update(over)
    check_sidecar(sidecar, engine, here["trt_module"], here["trt_version"], here["gpu_name"],
                  here["compute_capability"])


def test_sidecar_mismatches_give_one_line_errors_with_the_rebuild_command(built_engine):
    sidecar = EngineSidecar.read(built_engine)
    _check(sidecar, built_engine)  # the machine it was built for: accepted
    cases = {
        "trt_version": dict(trt_version="10.3.0"),
        "trt_module": dict(trt_module="tensorrt"),
        "compute capability": dict(compute_capability="8.7", gpu_name="Orin"),
    }
    for what, over in cases.items():
        with pytest.raises(ArtifactError) as e:
            _check(sidecar, built_engine, **over)
        message = str(e.value)
        assert "\n" not in message and "pose-edge export runs/k --engine trt --precision fp16" in message, what
    # full TensorRT engines are also tied to the GPU model that built them
    full = EngineSidecar(**{**sidecar.__dict__, "trt_module": "tensorrt", "gpu_name": "NVIDIA A10"})
    with pytest.raises(ArtifactError, match="built on a NVIDIA A10"):
        check_sidecar(full, built_engine, "tensorrt", full.trt_version, "NVIDIA RTX A4000", "8.6")


def test_stale_engine_is_refused(built_engine, tmp_path):
    import shutil

    engine = tmp_path / built_engine.name
    shutil.copy(built_engine, engine)
    shutil.copy(sidecar_path(built_engine), sidecar_path(engine))
    onnx_copy = tmp_path / "kapao-tiny-fp16.onnx"
    shutil.copy(built_engine.with_suffix(".onnx"), onnx_copy)
    sidecar = EngineSidecar.read(engine)
    _check(sidecar, engine)
    onnx_copy.write_bytes(onnx_copy.read_bytes() + b"\0")  # the ONNX changed after the build
    with pytest.raises(ArtifactError, match="stale"):
        _check(sidecar, engine)


def test_missing_or_malformed_sidecar_and_no_gpu(built_engine, tmp_path):
    from pose_edge.runtime.gpu import gpu_available
    from pose_edge.runtime.trt_backend import TrtBackend

    lone = tmp_path / "lone.engine"
    lone.write_bytes(built_engine.read_bytes())
    with pytest.raises(ArtifactError, match="metadata file lone.engine.json is missing"):
        TrtBackend(lone)
    sidecar_path(lone).write_text("{not json")
    with pytest.raises(ArtifactError, match="unreadable or malformed"):
        TrtBackend(lone)
    if not gpu_available():  # refused before any TensorRT runtime is constructed (it could crash without a GPU)
        with pytest.raises(ArtifactError, match="needs an NVIDIA GPU") as e:
            TrtBackend(built_engine)
        assert "\n" not in str(e.value)


def test_bad_batch_ranges_and_unknown_targets(tmp_path):
    from pose_edge.export.trt_build import build_engine, parse_batch

    assert parse_batch("1:8:32") == (1, 8, 32) and parse_batch("4") == (1, 4, 4)
    for bad in ("0:1:2", "8:4:16", "a:b:c", "1:2"):
        with pytest.raises(PoseEdgeError, match="MIN:OPT:MAX"):
            parse_batch(bad)
    model, meta = preset_model("det-tiny")
    graph = export_onnx(model, meta)
    onnx_path = save_model(graph, tmp_path / "det.onnx")
    with pytest.raises(PoseEdgeError, match="cannot target compute capability 9.0"):
        build_engine(onnx_path, tmp_path / "det.engine", get_graph_info(graph), compute_capabilities=("9.0",),
                     module="tensorrt_rtx")
    assert not (tmp_path / "det.engine").exists() and not sidecar_path(tmp_path / "det.engine").exists()


# ------------------------------------------------------------------------------------------------------ GPU (tier E)


@pytest.mark.gpu
@pytest.mark.parametrize("precision", ["fp32", "fp16", "int8"])
def test_engine_runs_and_matches_onnx_runtime(precision, synth_data, tmp_path):
    """On a GPU: build with the TensorRT found here, run it, compare with ONNX Runtime on the CPU."""
    from pose_edge.export.distortion import distortion
    from pose_edge.export.trt_build import build_engine, import_tensorrt

    from pose_edge.runtime.gpu import gpu_identity
    from pose_edge.runtime.ort_backend import OrtBackend
    from pose_edge.runtime.trt_backend import TrtBackend

    _, module = import_tensorrt()
    name, cc = gpu_identity()
    if module == "tensorrt_rtx" and cc not in ("7.5", "8.0", "8.6", "8.9", "12.0", "12.1"):
        pytest.skip(f"only TensorRT-RTX is installed and it cannot target this {name} (compute capability {cc})")
    graphs, info = _graphs("kapao-tiny", synth_data)
    info = GraphInfo(**{**info.__dict__, "precision": precision})
    onnx_path = save_model(graphs[precision], tmp_path / f"k-{precision}.onnx")
    engine = tmp_path / f"k-{precision}.engine"
    build_engine(onnx_path, engine, info, batch=(1, 2, 4))
    images = sample_images(info.meta, 3)
    reference = OrtBackend(onnx_path, providers=("CPUExecutionProvider",)).run(images)
    with TrtBackend(engine) as backend:
        got = backend.run(images)
        with pytest.raises(PoseEdgeError, match="batches of 1 to 4"):
            backend.run(sample_images(info.meta, 5))
    assert [g.shape for g in got] == [r.shape for r in reference]
    d = distortion(reference, got, info.meta)
    assert d.shift_px < (0.1 if precision != "int8" else 1.0) and d.conf_change < 0.01, d
    assert np.isfinite(np.concatenate([g.ravel() for g in got])).all()




def test_an_engine_builds_from_an_exported_onnx_without_torch(small_models, tmp_path):
    """On a Jetson the engine is built where it runs, from the exported .onnx, with no PyTorch installed."""
    pytest.importorskip("tensorrt_rtx")
    onnx_path = small_models["det-tiny"][1]
    engine = tmp_path / "det.engine"
    done = run_cli_without_torch("export", onnx_path, "--engine", "trt", "--sm", "8.6", "--out", engine)
    assert done.returncode == 0, done.stderr
    assert engine.is_file() and (tmp_path / "det.engine.json").is_file() and "fp32 engine" in done.stdout
