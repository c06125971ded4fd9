"""Tiny but real pose-edge ONNX models for the bad-input catalogue: built with onnx.helper in milliseconds instead of
exporting a network (seconds each), with the same metadata `pose-edge export` writes, so every loader, check and
decoder treats them as it treats an exported model.

    kapao_onnx(path, meta=None)    KAPAO head outputs: one strided Conv per level, [N, A*(5+nc+2K), H/S, W/S]
    topdown_onnx(path)             Simple Baseline outputs: heatmaps [N, 17, H/4, W/4]

Both take uint8 [N, H, W, 3] BGR (the exported graphs' input format). `bias` fills every output with a constant
(e.g. NaN, to make a model that outputs garbage), or with one value per channel of an anchor (D values for KAPAO),
repeated over the anchors.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

from pose_edge.export.onnx_export import OPSET, describe_io, output_layout, set_graph_info
from pose_edge.model_meta import GraphInfo, ModelMeta


def kapao_meta(preset: str = "kapao-tiny") -> ModelMeta:
    from pose_edge.models import get_preset, model_meta

    return model_meta(get_preset(preset))


def topdown_meta(preset: str = "sb-r18-128x96") -> ModelMeta:
    return kapao_meta(preset)


def _front(dynamic: bool, meta: ModelMeta) -> tuple[list, list, object]:
    h, w = meta.input.height, meta.input.width
    shape = ["batch", "height", "width", 3] if dynamic else ["batch", h, w, 3]
    x = helper.make_tensor_value_info("images", TensorProto.UINT8, shape)
    scale = numpy_helper.from_array(np.full((1,), 1 / 255.0, np.float32), "inv255")
    nodes = [helper.make_node("Cast", ["images"], ["f"], to=TensorProto.FLOAT, name="/cast"),
             helper.make_node("Transpose", ["f"], ["nchw"], perm=[0, 3, 1, 2], name="/transpose"),
             helper.make_node("Mul", ["nchw", "inv255"], ["x"], name="/scale")]
    return nodes, [scale], x


def _conv(name: str, out_name: str, channels: int, stride: int, rng, bias) -> tuple[object, list]:
    weight = (rng.normal(0, 0.5, (channels, 3, stride, stride)) / stride).astype(np.float32)
    b = rng.normal(0, 1, channels).astype(np.float32) if bias is None else \
        np.resize(np.asarray(bias, np.float32), channels)  # a float, or one value per channel of an anchor, repeated
    inits = [numpy_helper.from_array(weight, f"{name}.w"), numpy_helper.from_array(b, f"{name}.b")]
    node = helper.make_node("Conv", ["x", f"{name}.w", f"{name}.b"], [out_name], kernel_shape=[stride, stride],
                            strides=[stride, stride], name=f"/{name}")
    return node, inits


def _finish(nodes, inits, x, outputs, meta: ModelMeta, path: Path, dynamic: bool) -> Path:
    graph = helper.make_graph(nodes, "tiny", [x], outputs, inits)
    proto = helper.make_model(graph, opset_imports=[helper.make_opsetid("", OPSET)])
    proto.ir_version = 9
    proto = onnx.shape_inference.infer_shapes(proto)
    inp, outs = describe_io(proto, meta, "uint8_nhwc_bgr")
    set_graph_info(proto, GraphInfo(meta=meta, precision="fp32", input_format="uint8_nhwc_bgr", input=inp,
                                    outputs=outs, dynamic_size=dynamic))
    onnx.checker.check_model(proto, full_check=True)
    path = Path(path)
    path.write_bytes(proto.SerializeToString())
    return path


def kapao_onnx(path: str | Path, meta: ModelMeta | None = None, bias=None, seed: int = 0) -> Path:
    """A single-stage (KAPAO or person detector) graph of `meta` (default kapao-tiny's) with dynamic H, W."""
    meta = meta or kapao_meta()
    rng = np.random.default_rng(seed)
    nodes, inits, x = _front(True, meta)
    depth = 5 + meta.num_classes + 2 * meta.num_keypoints
    outputs = []
    for stride, anchors in zip(meta.strides, meta.anchors):
        name = f"grid_s{stride}"
        node, w = _conv(name, name, len(anchors) * depth, stride, rng, bias)
        nodes.append(node)
        inits += w
        outputs.append(helper.make_tensor_value_info(name, TensorProto.FLOAT,
                                                     ["batch", len(anchors) * depth, None, None]))
    return _finish(nodes, inits, x, outputs, meta, path, True)


def topdown_onnx(path: str | Path, meta: ModelMeta | None = None, bias=None, seed: int = 0) -> Path:
    """A Simple Baseline graph of `meta` (default sb-r18-128x96's): heatmaps [N, K, H/4, W/4], fixed input size."""
    meta = meta or topdown_meta()
    assert output_layout(meta) == "NKHW"
    rng = np.random.default_rng(seed)
    nodes, inits, x = _front(False, meta)
    s = meta.heatmap_stride or 4
    node, w = _conv("head", "heatmaps", meta.num_keypoints, s, rng, bias)
    nodes.append(node)
    out = helper.make_tensor_value_info("heatmaps", TensorProto.FLOAT, ["batch", meta.num_keypoints,
                                                                       meta.input.height // s, meta.input.width // s])
    return _finish(nodes, inits + w, x, [out], meta, path, False)


def engine_with_sidecar(engine: str | Path, onnx_path: str | Path, info: GraphInfo, data: bytes = b"engine bytes",
                        **fields):
    """Write `data` as an engine file and a sidecar that describes it (hash included) as `pose-edge export --engine
    trt` would for `info`, for a full-TensorRT build for an Orin; `fields` override sidecar fields. The bytes are not
    a real engine: every check on loading happens before TensorRT deserialises anything, and without a GPU loading
    stops there. Returns the EngineSidecar."""
    import hashlib

    from pose_edge.runtime.engine_sidecar import EngineSidecar, file_sha256

    engine = Path(engine)
    engine.write_bytes(data)
    h, w = info.meta.input.height, info.meta.input.width
    outputs = [{"name": o.name, "dtype": o.dtype, "shape": [-1 if v is None else v for v in o.shape]}
               for o in info.outputs]
    values = dict(trt_module="tensorrt", trt_version="10.3.0", gpu_name="Orin", compute_capabilities=["8.7"],
                  precision=info.precision, input_name=info.input.name, input_dtype=info.input.dtype,
                  profile={k: [b, h, w, 3] for k, b in (("min", 1), ("opt", 1), ("max", 4))}, outputs=outputs,
                  onnx_path=str(onnx_path), onnx_sha256=file_sha256(onnx_path),
                  engine_sha256=hashlib.sha256(data).hexdigest(), graph=info.to_dict(),
                  rebuild=f"pose-edge export {onnx_path} --engine trt")
    values.update(fields)
    sidecar = EngineSidecar(**values)
    sidecar.write(engine)
    return sidecar
