"""INT8 for ONNX Runtime's CPU provider (export target "cpu"): a Q/DQ graph that runs on integer kernels.

The default INT8 graph (export/int8.py, target "tensorrt") is what TensorRT's explicit quantization wants: symmetric
INT8 Q/DQ on the inputs of each Conv only, on an FP16-typed graph. ONNX Runtime's CPU provider runs that graph in
float: it fuses DequantizeLinear -> Conv -> QuantizeLinear into an integer QLinearConv only when the Conv's output is
quantized too, only for uint8 activations on x86 (its QDQ selectors accept int8 activations on Arm builds only), and it
has no FP16 kernels for most ops, so it casts around each of them. The profiles that show it, and the speed and AP
of both targets, are in benchmarks/results/cpu_int8.md. This module writes the graph the CPU provider wants instead:

    - the FP32 graph's ConvTransposes become sub-pixel Convs + DepthToSpace (export/subpixel.py, an exact rewrite,
      checked against the original), because the CPU provider has no integer transposed convolution;
    - every tensor between ops that have integer kernels (Conv, Add, Mul, Sigmoid, Concat, MaxPool, Resize, ...) is
      quantized, so that integer tensors flow from one kernel to the next, through ONNX Runtime's own quantizer
      (onnxruntime.quantization.quantize_static, QDQ format), calibrated with its MinMax calibrator on the same
      calibration images as the TensorRT graph;
    - activations are asymmetric uint8 (a zero point from the calibrated range; post-ReLU tensors get all 256 levels)
      and weights symmetric int8 with one scale per output channel: the U8S8 form that MLAS's x86 kernels (AVX2,
      AVX512, and the VNNI dot-product instructions) and its Arm kernels take;
    - the heads (the nodes that write the graph's outputs) stay in float, so that heatmaps and logits reach the
      decoders at full resolution, as they do from the other precisions, and so does the in-graph preprocessing;
    - a DepthToSpace (which the quantizer leaves in float) is moved to the integer side of its DequantizeLinear.

Weights are 8-bit, what VNNI and Arm dot-product CPUs accumulate exactly. On an x86 CPU with AVX2 but no VNNI, MLAS
multiplies u8 x s8 pairs into saturating 16-bit sums; ONNX Runtime's documentation recommends 7-bit weights
(reduce_range) there, which this does not do.

The result carries details["target"] = "cpu"; the engine builder refuses it (require_tensorrt_target).
"""

from __future__ import annotations

import contextlib
import logging
import tempfile
import time
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path
from typing import Callable, Iterable

import numpy as np
import onnx

from pose_edge.errors import PoseEdgeError
from pose_edge.export.onnx_export import relative_error, run_onnx
from pose_edge.export.subpixel import rewrite_conv_transpose
from pose_edge.model_meta import GraphInfo
from pose_edge.model_meta import ModelMeta

TARGETS = ("tensorrt", "cpu")
REWRITE_PARITY_TOL = 1e-4  # max |rewritten - original| / max |original|; measured 6e-7 on sb-r50-256x192
# A calibration batch holds at most this many input pixels (8 crops of 256x256): the calibrating session holds a
# batch's activations while it runs (kapao-s at 1280: about 1.5 GB of float tensors per image). It keeps only each
# tensor's min and max per batch. (CalibMaxIntermediateOutputs is not used: onnxruntime 1.31.1's MinMax calibrator
# drops the collected batches without merging their ranges when that limit is reached.)
CALIB_PIXELS = 8 * 256 * 256


def require_tensorrt_target(info: GraphInfo, source: str = "this graph") -> None:
    """Raise one line if `info` describes a graph made for ONNX Runtime's CPU provider (no engine from it)."""
    if info.details.get("target", "tensorrt") != "tensorrt":
        raise PoseEdgeError(f"{source} is an INT8 graph for ONNX Runtime's CPU provider (target "
                            f"{info.details['target']!r}); export with --target tensorrt (the default) to build an "
                            "engine")


@dataclass
class CpuInt8Plan:
    """What the CPU-target quantization did, recorded in the model's metadata. quantized / kept_float: the Conv
    layers in INT8 / in float (the in-graph preprocessing is in float too and not listed)."""

    calibration_images: int
    rewritten: list[str]
    quantized: list[str]
    kept_float: list[str]
    kernels: dict[str, int] = field(default_factory=dict)
    seconds: float = 0.0

    def summary(self) -> dict:
        return {"target": "cpu", "int8_layers": len(self.quantized), "kept_float": self.kept_float,
                "calibration": f"minmax (onnxruntime), {self.calibration_images} images",
                "deconv_as_subpixel": self.rewritten, "cpu_kernels": self.kernels}


def _session(model: onnx.ModelProto | str, optimized: str | None = None):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    if optimized:
        options.optimized_model_filepath = optimized
    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else model
    return ort.InferenceSession(data, options, providers=["CPUExecutionProvider"])


def prepare_fp32(fp32: onnx.ModelProto, images: np.ndarray) -> tuple[onnx.ModelProto, list[str]]:
    """The FP32 graph with its ConvTransposes rewritten, checked against the original on `images` (uint8 NHWC)."""
    rewritten, names = rewrite_conv_transpose(fp32)
    if names:
        err = relative_error(run_onnx(fp32, images), run_onnx(rewritten, images))
        if err > REWRITE_PARITY_TOL:
            raise PoseEdgeError(f"the sub-pixel rewrite of {', '.join(names)} changed the FP32 outputs by {err:.1e} "
                                f"(more than {REWRITE_PARITY_TOL:.0e}); export with --target tensorrt")
    return rewritten, names


def float_nodes(model: onnx.ModelProto) -> list[str]:
    """Names of the nodes kept in float: the in-graph preprocessing (every node before the first Conv: cast, channel
    flip, normalisation, whose constants are exact in float) and the heads (the nodes that write the outputs)."""
    from pose_edge.export.int8 import QUANTIZED_OPS

    nodes = list(model.graph.node)
    first = next((i for i, n in enumerate(nodes) if n.op_type in QUANTIZED_OPS), len(nodes))
    outputs = {o.name for o in model.graph.output}
    return [n.name for n in nodes[:first]] + [n.name for n in nodes[first:] if outputs & set(n.output)]


@contextlib.contextmanager
def _quiet():
    """onnxruntime.quantization logs advice through the root logger; the export's own report says what was done."""
    previous = logging.root.manager.disable
    logging.disable(logging.WARNING)
    try:
        yield
    finally:
        logging.disable(previous)


def quantize_qdq(model: onnx.ModelProto, batches: Iterable[np.ndarray], exclude: Iterable[str], *,
                 signed_activations: bool = False, per_channel: bool = True,
                 on_batch: Callable[[int], None] | None = None) -> tuple[onnx.ModelProto, int]:
    """(QDQ graph of `model` calibrated with MinMax on `batches`, images seen): uint8 activations and per-channel
    int8 weights by default, the export's choice; the other forms exist for benchmarks/bench_cpu_int8.py."""
    from onnxruntime.quantization import CalibrationDataReader, CalibrationMethod, QuantFormat, QuantType, \
        quantize_static

    input_name = model.graph.input[0].name
    seen = 0

    class Reader(CalibrationDataReader):
        def __init__(self):
            self.batches = iter(batches)

        def get_next(self):
            nonlocal seen
            batch = next(self.batches, None)
            if batch is None:
                return None
            seen += len(batch)
            if on_batch:
                on_batch(len(batch))
            return {input_name: batch}

    with tempfile.TemporaryDirectory(prefix="pose-edge-int8cpu-") as tmp, _quiet():
        out, source = Path(tmp) / "qdq.onnx", Path(tmp) / "fp32.onnx"
        onnx.save(model, str(source))  # a path, not the proto: the quantizer rewrites a proto's weights as external
        activation = QuantType.QInt8 if signed_activations else QuantType.QUInt8
        quantize_static(str(source), str(out), Reader(), quant_format=QuantFormat.QDQ, activation_type=activation,
                        weight_type=QuantType.QInt8, per_channel=per_channel, reduce_range=False,
                        nodes_to_exclude=list(exclude), calibrate_method=CalibrationMethod.MinMax)
        quantized = onnx.load(str(out))
    if seen == 0:
        raise PoseEdgeError("no calibration images were read")
    return quantized, seen


def integer_depth_to_space(model: onnx.ModelProto) -> int:
    """DequantizeLinear -> DepthToSpace becomes DepthToSpace -> DequantizeLinear (in place; a per-tensor DQ read only
    by the DepthToSpace). Data movement commutes with an elementwise affine map; returns how many were moved."""
    g = model.graph
    readers = Counter(i for n in g.node for i in n.input)
    producer = {o: n for n in g.node for o in n.output}
    moved = 0
    for d2s in [n for n in g.node if n.op_type == "DepthToSpace"]:
        dq = producer.get(d2s.input[0])
        if dq is None or dq.op_type != "DequantizeLinear" or readers[dq.output[0]] != 1:
            continue
        if _is_per_channel(g, dq):
            continue
        quantized_in, float_out = dq.input[0], d2s.output[0]
        d2s.input[0], d2s.output[0] = quantized_in, f"{float_out}__int8"
        dq.input[0], dq.output[0] = d2s.output[0], float_out
        g.node.remove(dq)
        g.node.insert(list(g.node).index(d2s) + 1, dq)
        moved += 1
    return moved


def _is_per_channel(g: onnx.GraphProto, dq: onnx.NodeProto) -> bool:
    """Whether the DequantizeLinear's scale is not a scalar initialiser (then it is not moved)."""
    scale = next((t for t in g.initializer if t.name == dq.input[1]), None)
    return scale is None or len(scale.dims) > 0


def cpu_kernels(model: onnx.ModelProto) -> dict[str, int]:
    """Op types of the graph as ONNX Runtime's CPU provider runs it (after its optimisations), by count."""
    with tempfile.TemporaryDirectory(prefix="pose-edge-ortopt-") as tmp:
        path = str(Path(tmp) / "optimized.onnx")
        _session(model, optimized=path)
        optimized = onnx.load(path)
    return dict(Counter(n.op_type for n in optimized.graph.node).most_common())


def quantize_for_cpu(fp32: onnx.ModelProto, meta: ModelMeta, images: Iterable[np.ndarray], *, count: int = 300,
                     keep_float: Iterable[str] = (), progress: bool = True) -> tuple[onnx.ModelProto, CpuInt8Plan]:
    """FP32 graph + calibration images (uint8 [H, W, 3], prepared for the network) -> CPU-target QDQ graph, plan.

    The first calibration image also checks the sub-pixel rewrite. `keep_float` names FP32-graph nodes to leave out
    of INT8 besides float_nodes(). The distortion against FP32 is measured by the caller, as for every precision.
    """
    from pose_edge.export.calib_data import batches
    from pose_edge.export.int8 import QUANTIZED_OPS
    from pose_edge.progress import progress_bar

    start = time.perf_counter()
    stream = iter(images)
    first = next(stream, None)
    if first is None:
        raise PoseEdgeError("no calibration images were read")
    prepared, rewritten = prepare_fp32(fp32, first[None])
    exclude = list(dict.fromkeys([*float_nodes(prepared), *keep_float]))

    def all_images():
        yield first
        yield from stream

    with progress_bar(f"calibrating {meta.preset} for the CPU (minmax)", count, enabled=progress) as advance:
        per_batch = max(1, min(8, CALIB_PIXELS // (first.shape[0] * first.shape[1])))
        quantized, seen = quantize_qdq(prepared, batches(all_images(), per_batch), exclude, on_batch=advance)
    integer_depth_to_space(quantized)
    convs = [n.name for n in prepared.graph.node if n.op_type in QUANTIZED_OPS]
    plan = CpuInt8Plan(calibration_images=seen, rewritten=rewritten, quantized=[c for c in convs if c not in exclude],
                       kept_float=[c for c in convs if c in exclude], kernels=cpu_kernels(quantized),
                       seconds=time.perf_counter() - start)
    return quantized, plan
