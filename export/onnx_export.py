"""PyTorch model -> FP32 ONNX with pose-edge metadata inside, checked against PyTorch before it is written.

The graph takes uint8 [N, H, W, 3] BGR images (export/graph_input.py) with a dynamic batch axis, and for KAPAO and the
person detector a dynamic height and width (multiples of 64; the network is fully convolutional, so it costs nothing
and lets the KAPAO pipeline run its test-time scales). Outputs are forward's raw tensors, float32, named:
    simple_baseline          heatmaps [N, K, H/4, W/4]
    kapao, person_detector   grid_s8, grid_s16, grid_s32, grid_s64: [N, A*D, H/S, W/S]

The TorchScript-based exporter is used by default: on this machine it exports kapao-tiny in 1.6 s against 18 s for the
dynamo exporter, writes one self-contained file and gives the same graph after onnxscript's optimiser. The dynamo
exporter is the fallback where the TorchScript one is gone.
"""

from __future__ import annotations

import contextlib
import io
import warnings
from pathlib import Path

import numpy as np
import onnx
import torch
from pose_edge.export.graph_input import InGraphPreprocess

from pose_edge import __version__
from pose_edge.errors import PoseEdgeError
from pose_edge.fsutil import atomic_write_bytes, temporary_folder
from pose_edge.model_meta import METADATA_KEY, GraphInfo, ModelMeta, TensorInfo

OPSET = 19  # DequantizeLinear-19 takes float16 scales (INT8 on an FP16 graph); TensorRT 10+ and TRT-RTX parse it
FP32_PARITY_TOL = 1e-4  # max |onnx - torch| / max |torch| per output; measured 1e-7 (tiny nets) .. 7e-5 (ResNet-50)


def output_names(meta: ModelMeta) -> list[str]:
    if meta.family == "simple_baseline":
        return ["heatmaps"]
    return [f"grid_s{s}" for s in meta.strides]


def output_layout(meta: ModelMeta) -> str:
    return "NKHW" if meta.family == "simple_baseline" else "NCHW"


def default_dynamic_size(meta: ModelMeta) -> bool:
    return meta.family != "simple_baseline"


def sample_images(meta: ModelMeta, n: int = 2, seed: int = 0, height: int | None = None,
                  width: int | None = None) -> np.ndarray:
    """Deterministic uint8 [n, H, W, 3] test images: smooth colour gradients plus noise, so that activations are not
    those of pure noise."""
    rng = np.random.default_rng(seed)
    h, w = height or meta.input.height, width or meta.input.width
    yy, xx = np.mgrid[0:h, 0:w].astype(np.float32)
    images = []
    for _ in range(n):
        a, b, c = rng.uniform(0.5, 3.0, 3)
        base = np.stack([np.sin(xx / w * a * np.pi + c), np.cos(yy / h * b * np.pi), np.sin((xx + yy) / (h + w) * c)],
                        -1)
        img = 127.5 + 90 * base + rng.normal(0, 25, (h, w, 3))
        images.append(np.clip(img, 0, 255).astype(np.uint8))
    return np.stack(images)


def set_graph_info(model: onnx.ModelProto, info: GraphInfo) -> None:
    """Write `info` into the model's metadata (replacing any earlier pose-edge entry)."""
    props = {p.key: p.value for p in model.metadata_props}
    props[METADATA_KEY] = info.to_json()
    props["pose_edge.preset"] = info.meta.preset
    props["pose_edge.precision"] = info.precision
    del model.metadata_props[:]
    for key, value in sorted(props.items()):
        model.metadata_props.add(key=key, value=value)
    model.producer_name = "pose-edge"
    model.producer_version = __version__
    model.doc_string = (f"{info.meta.preset} ({info.meta.family}), {info.precision}; input {info.input.name} "
                        f"{info.input.dtype} {info.input.layout} BGR; outputs " +
                        ", ".join(f"{o.name} {o.dtype} {o.layout}" for o in info.outputs))


def get_graph_info(model: onnx.ModelProto, source: str = "model") -> GraphInfo:
    return GraphInfo.from_metadata_map({p.key: p.value for p in model.metadata_props}, source)


def _dims(value_info) -> tuple:
    return tuple(d.dim_value if d.HasField("dim_value") else None for d in value_info.type.tensor_type.shape.dim)


_DTYPES = {onnx.TensorProto.FLOAT: "float32", onnx.TensorProto.FLOAT16: "float16", onnx.TensorProto.UINT8: "uint8"}


def describe_io(model: onnx.ModelProto, meta: ModelMeta, input_format: str) -> tuple[TensorInfo, tuple[TensorInfo]]:
    inp = model.graph.input[0]
    layout = "NHWC" if input_format == "uint8_nhwc_bgr" else "NCHW"
    input_info = TensorInfo(inp.name, _DTYPES[inp.type.tensor_type.elem_type], layout, _dims(inp))
    outputs = tuple(TensorInfo(o.name, _DTYPES[o.type.tensor_type.elem_type], output_layout(meta), _dims(o))
                    for o in model.graph.output)
    return input_info, outputs


def run_torch(wrapper: torch.nn.Module, images: np.ndarray) -> list[np.ndarray]:
    with torch.no_grad():
        return [o.float().numpy() for o in wrapper(torch.from_numpy(np.ascontiguousarray(images)))]


def run_onnx(model: onnx.ModelProto | bytes | str | Path, images: np.ndarray) -> list[np.ndarray]:
    """Run a graph that takes the images as they are (uint8 NHWC BGR) in ONNX Runtime on the CPU; float32 outputs."""
    import onnxruntime as ort

    data = model.SerializeToString() if isinstance(model, onnx.ModelProto) else model
    options = ort.SessionOptions()
    options.log_severity_level = 3
    session = ort.InferenceSession(data if isinstance(data, bytes) else str(data), options,
                                   providers=["CPUExecutionProvider"])
    name = session.get_inputs()[0].name
    return [o.astype(np.float32) for o in session.run(None, {name: images})]


def relative_error(reference: list[np.ndarray], candidate: list[np.ndarray]) -> float:
    """max over outputs of max |candidate - reference| / max |reference|."""
    return max(float(np.abs(c - r).max() / max(float(np.abs(r).max()), 1e-12)) for r, c in zip(reference, candidate))


def _torch_to_onnx(wrapper, images: torch.Tensor, path: Path, names: list[str], dynamic_axes: dict,
                   exporter: str) -> None:
    with warnings.catch_warnings(), contextlib.redirect_stdout(io.StringIO()):
        warnings.simplefilter("ignore")
        if exporter == "torchscript":
            torch.onnx.export(wrapper, (images,), str(path), input_names=["images"], output_names=names,
                              dynamic_axes=dynamic_axes, opset_version=OPSET, dynamo=False, do_constant_folding=True)
        else:
            dims = {axis: torch.export.Dim(f"{name}", min=1, max=4096) for axis, name in dynamic_axes["images"].items()}
            torch.onnx.export(wrapper, (images,), str(path), input_names=["images"], output_names=names,
                              dynamic_shapes={"images": dims}, opset_version=OPSET, dynamo=True,
                              external_data=False, optimize=True, verify=False)


def export_onnx(model: torch.nn.Module, meta: ModelMeta, out: str | Path | None = None, *,
                dynamic_size: bool | None = None, input_format: str = "uint8_nhwc_bgr", exporter: str = "auto",
                check_images: np.ndarray | None = None) -> onnx.ModelProto:
    """Export `model` (forward: float32 [N, 3, H, W] -> raw outputs) as an FP32 ONNX graph and return it.

    The graph is checked by onnx.checker and run in ONNX Runtime against PyTorch on `check_images` (uint8
    [N, H, W, 3] BGR; default two synthetic images); a mismatch above FP32_PARITY_TOL raises PoseEdgeError and writes
    nothing. With `out`, the model is written there atomically.
    """
    model = model.eval().float()
    dynamic_size = default_dynamic_size(meta) if dynamic_size is None else dynamic_size
    wrapper = InGraphPreprocess(model, meta.input, input_format).eval()
    names = output_names(meta)
    axes = {0: "batch", 1: "height", 2: "width"} if dynamic_size else {0: "batch"}
    if input_format != "uint8_nhwc_bgr":
        axes = {0: "batch", 2: "height", 3: "width"} if dynamic_size else {0: "batch"}
    dynamic_axes = {"images": axes, **{n: {0: "batch"} for n in names}}
    h, w = meta.input.height, meta.input.width
    example = torch.zeros((2, h, w, 3), dtype=torch.uint8) if input_format == "uint8_nhwc_bgr" else \
        torch.zeros((2, 3, h, w), dtype=torch.float32)

    exporters = ["torchscript", "dynamo"] if exporter == "auto" else [exporter]
    errors = []
    with temporary_folder("pose-edge-export-") as tmp:
        path = Path(tmp) / "model.onnx"
        for name in exporters:
            try:
                _torch_to_onnx(wrapper, example, path, names, dynamic_axes, name)
                break
            except Exception as e:  # the exporters raise many types; keep the first line of each
                errors.append(f"{name}: {str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__}")
        else:
            raise PoseEdgeError(f"ONNX export of {meta.preset} failed ({'; '.join(errors)})")
        proto = onnx.load(str(path))  # pulls in external data, if the exporter wrote any
    proto = optimize(proto)

    input_info, output_infos = describe_io(proto, meta, input_format)
    info = GraphInfo(meta=meta, precision="fp32", input_format=input_format, input=input_info, outputs=output_infos,
                     dynamic_size=dynamic_size)
    set_graph_info(proto, info)
    check_model(proto, meta.preset)

    images = sample_images(meta) if check_images is None else check_images
    feed = images if input_format == "uint8_nhwc_bgr" else _normalized(images, meta)
    err = relative_error(run_torch(wrapper, feed), run_onnx(proto, feed))
    if not err <= FP32_PARITY_TOL:
        raise PoseEdgeError(f"the exported ONNX of {meta.preset} does not match PyTorch (relative error {err:.2e} > "
                            f"{FP32_PARITY_TOL:.0e}); nothing was written")
    set_graph_info(proto, GraphInfo(**{**info.__dict__, "details": {"fp32_parity_rel_error": float(f"{err:.3g}")}}))
    if out is not None:
        save_model(proto, out)
    return proto


def _normalized(images: np.ndarray, meta: ModelMeta) -> np.ndarray:
    from pose_edge.runtime.backend import normalize

    return normalize(images, meta.input)


def optimize(proto: onnx.ModelProto) -> onnx.ModelProto:
    """Constant nodes become initialisers, Identity nodes are bypassed, unused initialisers go; node names (which
    say where in the model a layer sits, and name the layers the INT8 report keeps in float) are kept."""
    from onnx import numpy_helper

    g = proto.graph
    outputs = {o.name for o in g.output}
    rename: dict[str, str] = {}
    nodes = []
    for node in g.node:
        node.input[:] = [rename.get(i, i) for i in node.input]
        if node.op_type == "Constant" and len(node.attribute) == 1 and node.attribute[0].name == "value":
            g.initializer.append(numpy_helper.from_array(numpy_helper.to_array(node.attribute[0].t), node.output[0]))
            continue
        if node.op_type == "Identity" and node.output[0] not in outputs:
            rename[node.output[0]] = node.input[0]
            continue
        nodes.append(node)
    for i, node in enumerate(nodes):
        if not node.name:
            node.name = f"/{node.op_type}_{i}"
    del g.node[:]
    g.node.extend(nodes)
    used = {i for n in g.node for i in n.input} | outputs
    kept = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(kept)
    # value_info of removed tensors would only confuse later passes
    names = used | {o for n in g.node for o in n.output}
    kept_vi = [v for v in g.value_info if v.name in names]
    del g.value_info[:]
    g.value_info.extend(kept_vi)
    return proto


def check_model(proto: onnx.ModelProto, what: str) -> None:
    try:
        onnx.checker.check_model(proto, full_check=True)
    except (onnx.checker.ValidationError, onnx.shape_inference.InferenceError) as e:
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise PoseEdgeError(f"the ONNX graph of {what} fails onnx.checker ({first}); nothing was written") from None


def save_model(proto: onnx.ModelProto, out: str | Path) -> Path:
    """Write the model as one file, atomically (a reader sees the old file or the new one, never half of one)."""
    out = Path(out)
    atomic_write_bytes(out, proto.SerializeToString())
    return out


def load_model(path: str | Path) -> onnx.ModelProto:
    """onnx.load with a one-line ArtifactError for a missing, truncated or corrupt file."""
    from pose_edge.errors import ArtifactError

    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: no such ONNX model")
    try:
        proto = onnx.load(str(path))
        onnx.checker.check_model(proto)
    except Exception as e:  # protobuf DecodeError, ValidationError, missing external data ...
        first = str(e).strip().splitlines()[0] if str(e).strip() else type(e).__name__
        raise ArtifactError(f"{path}: not a valid ONNX model, the file is corrupt or truncated ({first}); "
                            "re-export it with `pose-edge export`") from None
    return proto
