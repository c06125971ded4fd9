"""INT8 as a Q/DQ ONNX graph: calibration on real images, per-layer sensitivity, and the layers kept out of INT8.

What TensorRT's explicit quantization wants, and what this writes:
    - QuantizeLinear -> DequantizeLinear on the activation input of every quantized Conv / ConvTranspose, one pair per
      tensor (shared by every quantized consumer); symmetric INT8, zero point 0, one scale per tensor;
    - weights stored as INT8 initialisers with a DequantizeLinear, symmetric, one scale per output channel (axis 0
      for Conv, axis 1 for ConvTranspose, whose weight is [C_in, C_out/g, kh, kw]);
    - biases left in float (TensorRT's parsers reject Int32 biases; ONNX Runtime's QuantizeBias=False).
Everything else (SiLU's Sigmoid and Mul, Add, Concat, Resize, pooling, the in-graph preprocessing) stays in float;
TensorRT moves Q/DQ across the data-movement layers itself. The float type of the rest of the graph is FP16 by
default (`base="fp16"`): in a strongly typed network a float32 tensor would force FP32 kernels on the layers kept out
of INT8.

Calibration: each quantized activation's |x| is histogrammed over the calibration images (2048 bins whose range doubles
when needed), and its clipping threshold chosen by `method`:
    "max"         the largest |x| seen;
    "percentile"  the 99.99th percentile of |x|;
    "mse"         the threshold that minimises the expected squared error of clipping plus rounding (default).

Sensitivity: a measuring graph holds every Q/DQ behind a switch (Where on one element of a boolean input), so one
ONNX Runtime session measures any subset of layers in INT8. Each layer is quantized alone and the distortion of the
decoded outputs against FP32 is measured (export/distortion.py); then the most sensitive layers are kept in float,
one at a time, until the whole graph's distortion is within `tolerance` or `max_excluded` layers are out.
"""

from __future__ import annotations

import time
from dataclasses import dataclass, field
from typing import Callable, Iterable

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper
from pose_edge.export.distortion import distortion

from pose_edge.errors import PoseEdgeError
from pose_edge.model_meta import ModelMeta

QUANTIZED_OPS = ("Conv", "ConvTranspose")
METHODS = ("max", "percentile", "mse")
BINS = 2048
PERCENTILE = 99.99
DEFAULT_TOLERANCE = 0.02  # distortion cost (export/distortion.py): keypoints at OKS ~0.98 against FP32
DEFAULT_MAX_EXCLUDED = 0.2  # fraction of the quantizable layers that may be kept in float
SWITCH_INPUT = "int8_switches"
# Scales stay at or above FP16's smallest normal number, so that the FP16-based graph holds them exactly (a scale
# that underflows to 0 is rejected by TensorRT); only nearly dead channels and tensors (|x| < 0.008) are affected.
MIN_SCALE = 2.0 ** -14


# ------------------------------------------------------------------------------------------------ calibration


class AbsHistogram:
    """A histogram of |x| over [0, top) with BINS bins; `top` doubles (pairs of bins merge) when a larger value comes."""

    def __init__(self) -> None:
        self.counts = np.zeros(BINS, np.int64)
        self.top = 0.0
        self.max = 0.0

    def add(self, x: np.ndarray) -> None:
        a = np.abs(np.asarray(x, np.float32).ravel())
        a = a[np.isfinite(a)]
        if a.size == 0:
            return
        amax = float(a.max())
        self.max = max(self.max, amax)
        if self.top == 0.0:
            self.top = amax if amax > 0 else 1e-8
        while amax >= self.top:
            self.counts = np.concatenate([self.counts.reshape(BINS // 2, 2).sum(1), np.zeros(BINS // 2, np.int64)])
            self.top *= 2.0
        idx = np.minimum((a * (BINS / self.top)).astype(np.int64), BINS - 1)
        self.counts += np.bincount(idx, minlength=BINS)

    def threshold(self, method: str) -> float:
        if self.max == 0.0:
            return 1e-8
        if method == "max":
            return self.max
        edges = np.arange(1, BINS + 1) * (self.top / BINS)  # upper edge of each bin
        if method == "percentile":
            cdf = np.cumsum(self.counts) / self.counts.sum()
            return float(min(edges[np.searchsorted(cdf, PERCENTILE / 100.0)], self.max))
        if method == "mse":
            centres = edges - self.top / BINS / 2
            n, nc, nc2 = self.counts, self.counts * centres, self.counts * centres ** 2
            # suffix sums: what lies above threshold t = edges[i] is clipped to t
            s_n, s_c, s_c2 = (np.cumsum(v[::-1])[::-1] for v in (n, nc, nc2))
            above = lambda s: np.append(s[1:], 0)  # noqa: E731 (sums over bins strictly above bin i)
            t = edges
            clip = above(s_c2) - 2 * t * above(s_c) + t ** 2 * above(s_n)
            below = n.sum() - above(s_n)
            rounding = below * (t / 127.0) ** 2 / 12.0
            err = clip + rounding
            start = BINS // 16  # never clip below 1/16 of the range seen
            return float(min(t[start + int(np.argmin(err[start:]))], self.max))
        raise PoseEdgeError(f"unknown calibration method {method!r}; expected one of {', '.join(METHODS)}")


def quantizable_nodes(model: onnx.ModelProto) -> list[onnx.NodeProto]:
    """Conv / ConvTranspose nodes whose weight is a constant float initialiser, in graph order."""
    inits = {t.name: t for t in model.graph.initializer}
    return [n for n in model.graph.node if n.op_type in QUANTIZED_OPS and n.input[1] in inits
            and inits[n.input[1]].data_type == TensorProto.FLOAT]


def _session(model: onnx.ModelProto):
    import onnxruntime as ort

    options = ort.SessionOptions()
    options.log_severity_level = 3
    return ort.InferenceSession(model.SerializeToString(), options, providers=["CPUExecutionProvider"])


def collect_histograms(model: onnx.ModelProto, batches: Iterable[np.ndarray],
                       on_batch: Callable[[int], None] | None = None) -> tuple[dict[str, AbsHistogram], int]:
    """(histograms of every quantizable layer's activation input over the calibration batches, images seen)."""
    tensors = list(dict.fromkeys(n.input[0] for n in quantizable_nodes(model)))
    augmented = onnx.ModelProto.FromString(model.SerializeToString())
    existing = {o.name for o in augmented.graph.output}
    for name in tensors:
        if name not in existing:
            augmented.graph.output.append(helper.make_tensor_value_info(name, TensorProto.FLOAT, None))
    session = _session(augmented)
    input_name = session.get_inputs()[0].name
    hists = {name: AbsHistogram() for name in tensors}
    seen = 0
    for batch in batches:
        values = session.run(tensors, {input_name: batch})
        for name, value in zip(tensors, values):
            hists[name].add(value)
        seen += len(batch)
        if on_batch:
            on_batch(len(batch))
    if seen == 0:
        raise PoseEdgeError("no calibration images were read")
    return hists, seen


# ------------------------------------------------------------------------------------------------ Q/DQ insertion


def _weight_axis(node: onnx.NodeProto) -> int:
    return 1 if node.op_type == "ConvTranspose" else 0


def quantize_weight(w: np.ndarray, axis: int) -> tuple[np.ndarray, np.ndarray]:
    """Symmetric per-channel INT8: (int8 weights, float32 scales [C]) with w ~ q * scale along `axis`."""
    moved = np.moveaxis(w, axis, 0).reshape(w.shape[axis], -1)
    scale = np.maximum(np.abs(moved).max(1) / 127.0, MIN_SCALE).astype(np.float32)
    shape = [1] * w.ndim
    shape[axis] = -1
    q = np.clip(np.round(w / scale.reshape(shape)), -127, 127).astype(np.int8)
    return q, scale


def insert_qdq(model: onnx.ModelProto, amax: dict[str, float], nodes: Iterable[str],
               switches: bool = False) -> tuple[onnx.ModelProto, list[str]]:
    """A copy of the FP32 `model` with Q/DQ on the activation and weight of every node named in `nodes`.

    switches=True builds the measuring graph: each node's Q/DQ sits behind Where(int8_switches[i], dq, float), with
    int8_switches a bool [L] graph input, i the node's position in the returned list.
    Returns (model, names of the quantized nodes in switch order).
    """
    model = onnx.ModelProto.FromString(model.SerializeToString())
    g = model.graph
    wanted = set(nodes)
    targets = [n for n in quantizable_nodes(model) if n.name in wanted]
    inits = {t.name: t for t in g.initializer}
    new_nodes: dict[int, list[onnx.NodeProto]] = {}  # nodes to insert before graph position i
    position = {id(n): i for i, n in enumerate(g.node)}
    act_dq: dict[str, str] = {}
    producer_pos = {o: i for i, n in enumerate(g.node) for o in n.output}
    if switches:
        g.input.append(helper.make_tensor_value_info(SWITCH_INPUT, TensorProto.BOOL, [len(targets)]))

    def emit(before: int, node: onnx.NodeProto) -> None:
        new_nodes.setdefault(before, []).append(node)

    for index, node in enumerate(targets):
        here = position[id(node)]
        x = node.input[0]
        if x not in act_dq:
            scale = max(float(amax[x]) / 127.0, MIN_SCALE)
            base = x.strip("/").replace("/", "_")
            s_name, z_name = f"{base}__act_scale", f"{base}__act_zero"
            g.initializer.extend([numpy_helper.from_array(np.array(scale, np.float32), s_name),
                                  numpy_helper.from_array(np.array(0, np.int8), z_name)])
            # right after the producer (or first), so that every consumer sees it
            at = producer_pos.get(x, -1) + 1
            emit(at, helper.make_node("QuantizeLinear", [x, s_name, z_name], [f"{base}__q"], name=f"{base}__Q"))
            emit(at, helper.make_node("DequantizeLinear", [f"{base}__q", s_name, z_name], [f"{base}__dq"],
                                      name=f"{base}__DQ"))
            act_dq[x] = f"{base}__dq"
        w_name = node.input[1]
        w = numpy_helper.to_array(inits[w_name])
        axis = _weight_axis(node)
        q, scale = quantize_weight(w, axis)
        base = node.name.strip("/").replace("/", "_")
        g.initializer.extend([numpy_helper.from_array(q, f"{base}__w_int8"),
                              numpy_helper.from_array(scale, f"{base}__w_scale"),
                              numpy_helper.from_array(np.zeros(scale.shape, np.int8), f"{base}__w_zero")])
        emit(here, helper.make_node("DequantizeLinear", [f"{base}__w_int8", f"{base}__w_scale", f"{base}__w_zero"],
                                    [f"{base}__w_dq"], name=f"{base}__w_DQ", axis=axis))
        x_in, w_in = act_dq[x], f"{base}__w_dq"
        if switches:
            g.initializer.append(numpy_helper.from_array(np.array(index, np.int64), f"{base}__sw_index"))
            emit(here, helper.make_node("Gather", [SWITCH_INPUT, f"{base}__sw_index"], [f"{base}__sw"],
                                        name=f"{base}__sw_Gather", axis=0))
            emit(here, helper.make_node("Where", [f"{base}__sw", x_in, x], [f"{base}__x_sel"], name=f"{base}__x_Where"))
            emit(here, helper.make_node("Where", [f"{base}__sw", w_in, w_name], [f"{base}__w_sel"],
                                        name=f"{base}__w_Where"))
            x_in, w_in = f"{base}__x_sel", f"{base}__w_sel"
        node.input[0], node.input[1] = x_in, w_in

    ordered = []
    for i, node in enumerate(g.node):
        ordered.extend(new_nodes.get(i, []))
        ordered.append(node)
    ordered.extend(new_nodes.get(len(g.node), []))
    del g.node[:]
    g.node.extend(ordered)
    if not switches:  # weights now live as INT8; drop the float copies nobody reads any more
        used = {i for n in g.node for i in n.input}
        kept = [t for t in g.initializer if t.name in used]
        del g.initializer[:]
        g.initializer.extend(kept)
    return model, [n.name for n in targets]


# ------------------------------------------------------------------------------------------------ sensitivity


@dataclass
class Int8Plan:
    """What calibration and the sensitivity search decided, recorded in the model's metadata."""

    method: str
    calibration_images: int
    amax: dict[str, float]
    layers: list[str]
    excluded: list[str] = field(default_factory=list)
    sensitivity: dict[str, float] = field(default_factory=dict)
    cost_all_int8: float | None = None
    cost_final: float | None = None
    tolerance: float = DEFAULT_TOLERANCE
    seconds: float = 0.0

    def summary(self) -> dict:
        top = sorted(self.sensitivity.items(), key=lambda kv: -kv[1])[:10]
        return {"int8_layers": len(self.layers) - len(self.excluded), "kept_float": self.excluded,
                "calibration": f"{self.method}, {self.calibration_images} images",
                "distortion_all_int8": self.cost_all_int8, "distortion": self.cost_final,
                "tolerance": self.tolerance, "most_sensitive": {k: round(v, 5) for k, v in top}}


def measure_sensitivity(fp32: onnx.ModelProto, plan: Int8Plan, images: np.ndarray, meta: ModelMeta,
                        tolerance: float = DEFAULT_TOLERANCE, max_excluded: float = DEFAULT_MAX_EXCLUDED,
                        on_step: Callable[[], None] | None = None) -> Int8Plan:
    """Fill plan.sensitivity (each layer alone in INT8), plan.excluded, plan.cost_all_int8 and plan.cost_final."""
    measuring, names = insert_qdq(fp32, plan.amax, plan.layers, switches=True)
    session = _session(measuring)
    input_name = session.get_inputs()[0].name
    output_names = [o.name for o in fp32.graph.output]
    n = len(names)
    batch = 8

    def run(flags: np.ndarray) -> list[np.ndarray]:
        parts = [session.run(output_names, {input_name: images[i:i + batch], SWITCH_INPUT: flags})
                 for i in range(0, len(images), batch)]
        return [np.concatenate([p[k] for p in parts]) for k in range(len(output_names))]

    reference = run(np.zeros(n, bool))

    def cost(flags: np.ndarray) -> float:
        return distortion(reference, run(flags), meta).cost

    plan.tolerance = tolerance
    plan.cost_all_int8 = cost(np.ones(n, bool))
    if on_step:
        on_step()
    for i, name in enumerate(names):
        flags = np.zeros(n, bool)
        flags[i] = True
        plan.sensitivity[name] = cost(flags)
        if on_step:
            on_step()
    current = plan.cost_all_int8
    order = sorted(names, key=lambda k: -plan.sensitivity[k])
    limit = int(max_excluded * n)
    excluded: list[str] = []
    best = (current, [])
    while current > tolerance and len(excluded) < limit:
        excluded.append(order[len(excluded)])
        flags = np.array([k not in excluded for k in names])
        current = cost(flags)
        if current < best[0]:
            best = (current, list(excluded))
        if on_step:
            on_step()
    # keep the fewest layers out that reached the best distortion seen
    plan.cost_final, plan.excluded = best
    return plan


def quantize(fp32: onnx.ModelProto, meta: ModelMeta, images: Iterable[np.ndarray], *, method: str = "mse",
             count: int = 300, sensitivity_images: int = 32, tolerance: float = DEFAULT_TOLERANCE,
             max_excluded: float = DEFAULT_MAX_EXCLUDED, keep_float: Iterable[str] = (), progress: bool = True,
             sensitivity: bool = True) -> tuple[onnx.ModelProto, Int8Plan]:
    """FP32 graph + calibration images (uint8 [H, W, 3], prepared for the network) -> FP32-based Q/DQ graph, plan.

    `keep_float` forces layers out of INT8 in addition to what the sensitivity search keeps out; sensitivity=False
    skips the search (every layer in INT8 but those), e.g. for speed benchmarks.
    Convert the result with export.fp16.convert_to_fp16 for the FP16-based graph TensorRT should build.
    """
    from pose_edge.export.calib_data import batches
    from pose_edge.progress import progress_bar

    if method not in METHODS:
        raise PoseEdgeError(f"unknown calibration method {method!r}; expected one of {', '.join(METHODS)}")
    start = time.perf_counter()
    kept: list[np.ndarray] = []

    def keep_some(it):
        for image in it:
            if len(kept) < sensitivity_images:
                kept.append(image)
            yield image

    with progress_bar(f"calibrating {meta.preset} ({method})", count, enabled=progress) as advance:
        hists, seen = collect_histograms(fp32, batches(keep_some(images), 8), on_batch=advance)
    layers = [n.name for n in quantizable_nodes(fp32)]
    amax = {name: h.threshold(method) for name, h in hists.items()}
    plan = Int8Plan(method, seen, amax, layers)
    steps = 1 + len(layers) + int(max_excluded * len(layers))
    if sensitivity:
        with progress_bar(f"INT8 sensitivity of {len(layers)} layers", steps, enabled=progress) as advance:
            measure_sensitivity(fp32, plan, np.stack(kept), meta, tolerance, max_excluded,
                                on_step=lambda: advance(1))
    plan.excluded = list(dict.fromkeys([*plan.excluded, *keep_float]))
    quantized, _ = insert_qdq(fp32, amax, [k for k in layers if k not in plan.excluded])
    plan.seconds = time.perf_counter() - start
    return quantized, plan
