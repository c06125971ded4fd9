"""INT8 for ONNX Runtime's CPU provider (export target "cpu"): the exact deconvolution rewrite, a graph that the CPU
provider really runs on integer kernels, the export verb with its parity and AP table, and the engine builder's
refusal. Small presets with random weights; the AP cost on trained models is in benchmarks/results/cpu_int8-*.md."""

from __future__ import annotations

import dataclasses
import json

import numpy as np
import onnx
import pytest
from click.testing import CliRunner
from onnx import TensorProto, helper, numpy_helper

from pose_edge.cli import main
from pose_edge.export import int8_cpu
from pose_edge.export.onnx_export import export_onnx, run_onnx, sample_images
from pose_edge.export.subpixel import rewrite_conv_transpose
from test_export_onnx import preset_model


def _deconv_graph(stride, kernel, pad, *, bn, relu, output_padding=0, seed=0):
    rng = np.random.default_rng(seed)
    w = rng.normal(size=(5, 6, kernel, kernel)).astype(np.float32)
    b = rng.normal(size=6).astype(np.float32)
    attrs = {"strides": [stride, stride], "pads": [pad] * 4, "kernel_shape": [kernel, kernel]}
    if output_padding:
        attrs["output_padding"] = [output_padding] * 2
    nodes = [helper.make_node("ConvTranspose", ["x", "w", "b"], ["y"], name="deconv", **attrs)]
    inits = [numpy_helper.from_array(w, "w"), numpy_helper.from_array(b, "b")]
    last = "y"
    if bn:
        for name, v in (("gamma", rng.uniform(0.5, 2, 6)), ("beta", rng.normal(size=6)),
                        ("mean", rng.normal(size=6)), ("var", rng.uniform(0.5, 2, 6))):
            inits.append(numpy_helper.from_array(v.astype(np.float32), name))
        nodes.append(helper.make_node("BatchNormalization", [last, "gamma", "beta", "mean", "var"], ["z"], name="bn"))
        last = "z"
    if relu:
        nodes.append(helper.make_node("Relu", [last], ["r"], name="relu"))
        last = "r"
    graph = helper.make_graph(nodes, "deconv", [helper.make_tensor_value_info("x", TensorProto.FLOAT, [2, 5, 7, 9])],
                              [helper.make_tensor_value_info(last, TensorProto.FLOAT, None)], inits)
    return helper.make_model(graph, opset_imports=[helper.make_opsetid("", 19)], ir_version=9)


def _run(model, x):
    import onnxruntime as ort

    return ort.InferenceSession(model.SerializeToString(), providers=["CPUExecutionProvider"]).run(None, {"x": x})[0]


@pytest.mark.parametrize("stride,kernel,pad", [(2, 4, 1), (2, 2, 0), (3, 5, 1), (4, 8, 2), (3, 3, 0), (1, 3, 1)])
@pytest.mark.parametrize("bn,relu", [(True, True), (False, False)])
def test_subpixel_rewrite_equals_conv_transpose(stride, kernel, pad, bn, relu):
    model = _deconv_graph(stride, kernel, pad, bn=bn, relu=relu)
    rewritten, names = rewrite_conv_transpose(model)
    ops = [n.op_type for n in rewritten.graph.node]
    assert names == ["deconv"] and "ConvTranspose" not in ops and ops.count("Conv") == stride * stride
    assert "BatchNormalization" not in ops  # folded into the phase weights
    assert ops.count("Relu") == (stride * stride if relu else 0)  # one per phase, where QLinearConv absorbs it
    x = np.random.default_rng(1).normal(size=(2, 5, 7, 9)).astype(np.float32)
    ref, got = _run(model, x), _run(rewritten, x)
    assert got.shape == ref.shape == (2, 6, 7 * stride, 9 * stride)
    np.testing.assert_allclose(got, ref, atol=2e-5 * np.abs(ref).max())


def test_subpixel_leaves_other_deconvolutions_alone():
    model = _deconv_graph(2, 3, 1, bn=True, relu=False, output_padding=1)  # output 2H but through output_padding
    rewritten, names = rewrite_conv_transpose(model)
    assert names == [] and [n.op_type for n in rewritten.graph.node] == ["ConvTranspose", "BatchNormalization"]


@pytest.fixture(scope="module")
def sb_cpu(synth_data):
    from pose_edge.export.calib_data import calibration_images

    model, meta = preset_model("sb-r18-128x96")
    fp32 = export_onnx(model, meta)
    q, plan = int8_cpu.quantize_for_cpu(fp32, meta, calibration_images(synth_data, meta, 16), count=16, progress=False)
    return fp32, q, plan, meta


def test_cpu_graph_runs_on_integer_kernels(sb_cpu):
    """What ONNX Runtime's CPU provider makes of the graph: every Conv but the head an integer QLinearConv, the
    deconvolutions too, integer tensors between them (no float Conv, ConvTranspose or DequantizeLinear in the body)."""
    fp32, q, plan, meta = sb_cpu
    onnx.checker.check_model(q, full_check=True)
    kernels = int8_cpu.cpu_kernels(q)
    convs = sum(n.op_type == "Conv" for n in fp32.graph.node)
    deconvs = sum(n.op_type == "ConvTranspose" for n in fp32.graph.node)
    assert deconvs == 3 and len(plan.rewritten) == 3
    assert kernels["QLinearConv"] == convs - 1 + 4 * deconvs  # four phase Convs per deconvolution, the head in float
    assert kernels.get("Conv", 0) == 1 and "ConvTranspose" not in kernels and "BatchNormalization" not in kernels
    assert kernels.get("DequantizeLinear", 0) <= 1  # only the head's input leaves the integer domain
    assert plan.kept_float == [n.name for n in fp32.graph.node if n.output[0] == "heatmaps"]
    assert len(plan.quantized) == convs - 1 + 4 * deconvs
    assert plan.summary()["cpu_kernels"] == kernels and plan.calibration_images == 16


def test_cpu_graph_is_u8s8_per_channel(sb_cpu):
    fp32, q, plan, meta = sb_cpu
    inits = {t.name: numpy_helper.to_array(t) for t in q.graph.initializer}
    acts = [n for n in q.graph.node if n.op_type == "QuantizeLinear"]
    assert acts and all(inits[n.input[2]].dtype == np.uint8 for n in acts)  # activations: uint8 with a zero point
    conv_weights = {n.input[1] for n in q.graph.node if n.op_type == "Conv"}
    weights = [n for n in q.graph.node if n.op_type == "DequantizeLinear" and n.output[0] in conv_weights]
    assert len(weights) == len(plan.quantized) and all(inits[n.input[0]].dtype == np.int8 and not inits[n.input[2]].any() for n in weights)
    assert all(inits[n.input[1]].shape == (inits[n.input[0]].shape[0],) for n in weights)  # one scale per channel
    assert q.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT


def test_cpu_graph_agrees_with_fp32(sb_cpu, synth_data):
    """Parity on held-out crops, measured the way the export measures every precision (export/distortion.py), against
    a yardstick: the TensorRT-target INT8 graph of the same model on the same calibration images. Random weights make
    flat heatmaps whose argmax jumps, so absolute keypoint shifts say little here (a trained sb-r18-128x96's AP cost
    is in benchmarks/results/cpu_int8-*.md); measured here: CPU graph cost 0.09 and output correlation 0.9991,
    TensorRT graph cost 0.55 and correlation 0.88."""
    from pose_edge.export import fp16, int8
    from pose_edge.export.calib_data import calibration_images
    from pose_edge.export.distortion import distortion

    fp32, q, plan, meta = sb_cpu
    trt, _ = int8.quantize(fp32, meta, calibration_images(synth_data, meta, 16), count=16, progress=False,
                           sensitivity=False)
    held_out = np.stack(list(calibration_images(synth_data, meta, 16, seed=7)))
    ref, got = run_onnx(fp32, held_out), run_onnx(q, held_out)
    yardstick = run_onnx(fp16.convert_to_fp16(trt), held_out)
    assert got[0].dtype == np.float32 and got[0].shape == ref[0].shape
    d, d_trt = distortion(ref, got, meta), distortion(ref, yardstick, meta)
    assert d.cost < 0.5 * d_trt.cost and d.shift_px < 0.5 * d_trt.shift_px, (d, d_trt)
    assert np.corrcoef(ref[0].ravel(), got[0].ravel())[0, 1] > 0.995


def test_cpu_graph_of_kapao_keeps_silu_and_concat_integer(synth_data):
    """KAPAO's SiLU (Sigmoid, Mul), Concat, Add and MaxPool run as integer kernels too; only the four heads in float."""
    from pose_edge.export.calib_data import calibration_images

    model, meta = preset_model("kapao-tiny")
    fp32 = export_onnx(model, meta)
    q, plan = int8_cpu.quantize_for_cpu(fp32, meta, calibration_images(synth_data, meta, 8), count=8, progress=False)
    kernels = plan.kernels
    count = lambda op: sum(n.op_type == op for n in fp32.graph.node)  # noqa: E731
    assert kernels["QLinearConv"] == count("Conv") - 4 and kernels.get("Conv", 0) == 4
    assert kernels["QLinearSigmoid"] == count("Sigmoid") and "Sigmoid" not in kernels and "QuickGelu" not in kernels
    # the stem's space-to-depth Concat reads the image before the first Conv: it stays with the float preprocessing
    assert kernels["QLinearConcat"] == count("Concat") - 1 and kernels["QLinearAdd"] == count("Add")
    assert kernels.get("DequantizeLinear", 0) == 4  # one per head input
    images = sample_images(meta, 2)
    assert [o.shape for o in run_onnx(q, images)] == [o.shape for o in run_onnx(fp32, images)]


@pytest.fixture(scope="module")
def run_dir(tmp_path_factory):
    """A run folder holding an (untrained) sb-r18-128x96 checkpoint in the training code's format."""
    from pose_edge.models import get_preset
    from pose_edge.models.checkpoint import save_checkpoint

    run = tmp_path_factory.mktemp("run")
    model, meta = preset_model("sb-r18-128x96")
    save_checkpoint(run / "best.pt", {"kind": "weights", "preset": dataclasses.asdict(get_preset("sb-r18-128x96")),
                                      "meta": meta.to_json(), "model": model.state_dict(), "epoch": 0,
                                      "iteration": 0, "metrics": {}, "config": {}})
    return run


def test_export_cli_cpu_target_with_val_table_and_engine_refusal(run_dir, synth_data, tmp_path):
    from pose_edge.runtime.ort_backend import OrtBackend

    runner = CliRunner()
    result = runner.invoke(main, ["export", str(run_dir), "--precision", "int8", "--target", "cpu", "--calib",
                                        str(synth_data), "--calib-count", "16", "--val", str(synth_data), "--json"])
    assert result.exit_code == 0, result.output
    report = json.loads(result.output)
    path = run_dir / "export" / "sb-r18-128x96-int8-cpu.onnx"  # beside, not over, the TensorRT INT8 graph
    assert report["onnx"] == str(path) and path.is_file()
    graph = report["graph"]
    assert graph["precision"] == "int8" and graph["details"]["target"] == "cpu"
    assert graph["outputs"][0]["dtype"] == "float32"
    assert set(graph["details"]["distortion"]) >= {"cost", "shift_px", "conf_change"}  # parity against FP32
    assert graph["details"]["cpu_kernels"]["QLinearConv"] > 20
    assert list(report["ap"]) == ["fp32", "fp16", "int8"] and all("AP" in r for r in report["ap"].values())
    backend = OrtBackend(path, providers=("CPUExecutionProvider",))
    assert backend.info.details["target"] == "cpu" and backend.providers == ("CPUExecutionProvider",)
    assert backend.run(sample_images(backend.meta, 2))[0].shape == (2, 17, 32, 24)
    from pose_edge.bench.configs import precision  # the bench's tables name it apart from the TensorRT-target graph

    assert precision(backend) == "int8-cpu"
    assert runner.invoke(main, ["export", str(run_dir), "--precision", "fp32"]).exit_code == 0
    assert precision(OrtBackend(run_dir / "export" / "sb-r18-128x96-fp32.onnx")) == "fp32"

    engine = tmp_path / "x.engine"
    refused = runner.invoke(main, ["export", str(path), "--engine", "trt", "--out", str(engine)])
    assert refused.exit_code == 1 and "ONNX Runtime's CPU provider" in refused.output, refused.output
    assert len(refused.output.strip().splitlines()) == 1 and not engine.exists()
    assert list(tmp_path.iterdir()) == []


def test_cpu_target_refusals_are_one_line(run_dir, synth_data, tmp_path):
    runner = CliRunner()
    out = tmp_path / "x.onnx"
    for args in (["--precision", "fp16", "--target", "cpu"],
                 ["--precision", "int8", "--target", "cpu", "--engine", "trt", "--calib", str(synth_data)]):
        result = runner.invoke(main, ["export", str(run_dir), "--out", str(out), *args])
        assert result.exit_code == 1 and "--target cpu" in result.output, result.output
        assert len(result.output.strip().splitlines()) == 1 and not out.exists()


def test_engine_builder_refuses_a_cpu_graph_without_any_tensorrt(sb_cpu, tmp_path):
    from pose_edge.errors import PoseEdgeError
    from pose_edge.export.onnx_export import get_graph_info, save_model, set_graph_info
    from pose_edge.export.trt_build import build_engine
    from pose_edge.model_meta import GraphInfo

    fp32, q, plan, meta = sb_cpu
    info = get_graph_info(fp32)
    info = GraphInfo(**{**info.__dict__, "precision": "int8", "details": plan.summary()})
    set_graph_info(q, info)
    path = save_model(q, tmp_path / "cpu.onnx")
    with pytest.raises(PoseEdgeError, match="target 'cpu'"):
        build_engine(path, tmp_path / "cpu.engine", info, module="no-such-tensorrt")  # refused before any import
    assert not (tmp_path / "cpu.engine").exists()
