"""FP16 graphs and INT8 Q/DQ graphs: structure, calibration rules, sensitivity search, and agreement with FP32.

Tolerances stated (ONNX Runtime CPU, against the FP32 graph on the same images):
    FP16   raw outputs within 2e-3 of the output range; decoded keypoints move < 0.05 input px on average
           (confidence-weighted) and confidences by < 1e-3.
    INT8   on untrained stand-ins only the structure is checked here; accuracy (AP) is measured on a trained model in
           test_export_cli.py and benchmarks/.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
from onnx import TensorProto, numpy_helper
from pose_edge.export import fp16, int8
from pose_edge.export.distortion import distortion
from pose_edge.export.onnx_export import export_onnx, relative_error, run_onnx, sample_images
from test_export_onnx import TINY_META, preset_model, tiny_heatmap_net


@pytest.fixture(scope="module")
def tiny_fp32():
    return export_onnx(tiny_heatmap_net(), TINY_META)


@pytest.fixture(scope="module")
def kapao_fp32():
    model, meta = preset_model("kapao-tiny")
    return export_onnx(model, meta), meta


def _types(model):
    inferred = onnx.shape_inference.infer_shapes(model)
    return {v.name: v.type.tensor_type.elem_type for v in [*inferred.graph.value_info, *inferred.graph.output]}


def test_fp16_graph_is_fp16_typed_and_close(tiny_fp32):
    half = fp16.convert_to_fp16(tiny_fp32)
    onnx.checker.check_model(half, full_check=True)
    convs = [n for n in half.graph.node if n.op_type in ("Conv", "ConvTranspose")]
    inits = {t.name: t for t in half.graph.initializer}
    assert convs and all(inits[n.input[1]].data_type == TensorProto.FLOAT16 for n in convs)
    assert half.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT16
    assert half.graph.input[0].type.tensor_type.elem_type == TensorProto.UINT8
    images = sample_images(TINY_META, 4, seed=2)
    ref, got = run_onnx(tiny_fp32, images), run_onnx(half, images)
    assert relative_error(ref, got) < 2e-3
    d = distortion(ref, got, TINY_META)
    assert d.shift_px < 0.05 and d.conf_change < 1e-3


def test_fp16_keeps_listed_nodes_in_fp32(tiny_fp32):
    head = next(n.name for n in tiny_fp32.graph.node if n.op_type == "Conv" and n.output[0] == "heatmaps")
    half = fp16.convert_to_fp16(tiny_fp32, keep_fp32={head}, fp32_outputs=True)
    onnx.checker.check_model(half, full_check=True)
    types = _types(half)
    node = next(n for n in half.graph.node if n.name == head)
    inits = {t.name: t for t in half.graph.initializer}
    assert inits[node.input[1]].data_type == TensorProto.FLOAT
    assert types[node.input[0]] == TensorProto.FLOAT  # a Cast brings the FP16 activation back to FP32
    assert half.graph.output[0].type.tensor_type.elem_type == TensorProto.FLOAT
    images = sample_images(TINY_META, 2)
    assert relative_error(run_onnx(tiny_fp32, images), run_onnx(half, images)) < 2e-3


def test_fp16_kapao_keeps_resize_scales_fp32(kapao_fp32):
    fp32_graph, meta = kapao_fp32
    half = fp16.convert_to_fp16(fp32_graph)
    onnx.checker.check_model(half, full_check=True)
    images = sample_images(meta, 2)
    ref, got = run_onnx(fp32_graph, images), run_onnx(half, images)
    d = distortion(ref, got, meta)
    assert d.shift_px < 0.05 and d.conf_change < 1e-3, d


# ------------------------------------------------------------------------------------------------------ INT8


def test_histogram_thresholds():
    rng = np.random.default_rng(0)
    h = int8.AbsHistogram()
    x = rng.normal(0, 1, 200_000).astype(np.float32)
    for part in np.split(x, 4):
        h.add(part)
    h.add(np.array([50.0], np.float32))  # one outlier: doubles the range several times
    assert h.threshold("max") == pytest.approx(50.0)
    assert h.threshold("percentile") == pytest.approx(np.percentile(np.abs(x), 99.99), rel=0.05)
    assert np.percentile(np.abs(x), 99.99) < h.threshold("mse") < 0.6 * 50.0  # trades the outlier for resolution
    assert int(h.counts.sum()) == 200_001
    gaussian = int8.AbsHistogram()
    gaussian.add(x)
    assert 2.5 < gaussian.threshold("mse") < 4.5  # the known optimum for 8 bits is near 3-4 sigma


def test_qdq_graph_follows_tensorrt_rules(tiny_fp32):
    layers = [n.name for n in int8.quantizable_nodes(tiny_fp32)]
    amax = {n.input[0]: 4.0 for n in int8.quantizable_nodes(tiny_fp32)}
    q, names = int8.insert_qdq(tiny_fp32, amax, layers)
    onnx.checker.check_model(q, full_check=True)
    assert names == layers
    inits = {t.name: numpy_helper.to_array(t) for t in q.graph.initializer}
    dq = [n for n in q.graph.node if n.op_type == "DequantizeLinear"]
    qn = [n for n in q.graph.node if n.op_type == "QuantizeLinear"]
    assert all(inits[n.input[2]].dtype == np.int8 and not inits[n.input[2]].any() for n in dq + qn)  # symmetric
    for node in (n for n in q.graph.node if n.op_type in ("Conv", "ConvTranspose")):
        w_dq = next(n for n in dq if n.output[0] == node.input[1])
        axis = next(a.i for a in w_dq.attribute if a.name == "axis")
        w = inits[w_dq.input[0]]
        assert w.dtype == np.int8 and np.abs(w).max() <= 127
        assert axis == (1 if node.op_type == "ConvTranspose" else 0)
        assert inits[w_dq.input[1]].shape == (w.shape[axis],)  # one scale per output channel
        if len(node.input) > 2:
            assert inits[node.input[2]].dtype == np.float32  # bias left in float
    images = sample_images(TINY_META, 2)
    assert relative_error(run_onnx(tiny_fp32, images), run_onnx(q, images)) < 0.2


def test_sensitivity_keeps_the_layer_that_costs_accuracy(tiny_fp32):
    """Sabotage one layer's calibration range (as an outlier-dominated range would): the search must measure that
    layer as the most sensitive and keep it out of INT8 first."""
    images = sample_images(TINY_META, 16, seed=3)
    hists, seen = int8.collect_histograms(tiny_fp32, [images[:8], images[8:]])
    assert seen == 16
    layers = [n.name for n in int8.quantizable_nodes(tiny_fp32)]
    amax = {k: h.threshold("max") for k, h in hists.items()}
    victim = int8.quantizable_nodes(tiny_fp32)[2]
    amax[victim.input[0]] *= 300.0  # almost every activation of this layer rounds to zero
    plan = int8.Int8Plan("max", 16, amax, layers)
    int8.measure_sensitivity(tiny_fp32, plan, images, TINY_META, tolerance=0.01, max_excluded=0.5)
    assert max(plan.sensitivity, key=plan.sensitivity.get) == victim.name
    assert plan.excluded[0] == victim.name
    assert plan.cost_final < 0.5 * plan.cost_all_int8


def test_int8_on_fp16_graph_builds_a_typed_qdq_graph(kapao_fp32, synth_data):
    from pose_edge.export.calib_data import calibration_images

    fp32_graph, meta = kapao_fp32
    q, plan = int8.quantize(fp32_graph, meta, calibration_images(synth_data, meta, 8), count=8, progress=False,
                            sensitivity=False)
    assert plan.calibration_images == 8 and len(plan.layers) == len(int8.quantizable_nodes(fp32_graph))
    half = fp16.convert_to_fp16(q)
    onnx.checker.check_model(half, full_check=True)
    dq_scales = {n.input[1] for n in half.graph.node if n.op_type == "DequantizeLinear"}
    inits = {t.name: t for t in half.graph.initializer}
    assert all(inits[s].data_type == TensorProto.FLOAT16 for s in dq_scales)
    assert all(numpy_helper.to_array(inits[s]).min() > 0 for s in dq_scales)  # no scale underflows to 0
    images = sample_images(meta, 2)
    assert np.isfinite(np.concatenate([o.ravel() for o in run_onnx(half, images)])).all()
