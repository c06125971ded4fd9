"""FP32 ONNX graph -> FP16-typed graph, with chosen nodes kept in FP32.

TensorRT 11 and TensorRT-RTX build strongly typed networks only: a tensor's ONNX type is the precision its layer runs
in, so FP16 must be written into the graph. Every node runs in FP16 unless it is listed in `keep_fp32`; a Cast is put
where an FP32 node meets an FP16 one. Which inputs may change type comes from the ONNX operator schemas (Resize's
`scales`, for example, is float32 by definition and stays so). The uint8 image input is cast straight to FP16 by the
graph's first Cast; outputs are FP16 (what a GPU decoder reads most cheaply) unless `fp32_outputs`.
"""

from __future__ import annotations

import numpy as np
import onnx
from onnx import TensorProto, helper, numpy_helper

FLOAT, HALF = TensorProto.FLOAT, TensorProto.FLOAT16
FP16_MAX = 65504.0


def _opset(model: onnx.ModelProto) -> int:
    return next(o.version for o in model.opset_import if o.domain in ("", "ai.onnx"))


def _formal(schema, index: int, inputs: bool):
    params = schema.inputs if inputs else schema.outputs
    if index < len(params):
        return params[index]
    last = params[-1]
    return last if last.option == onnx.defs.OpSchema.FormalParameterOption.Variadic else None


def _may_be_half(schema, index: int, inputs: bool = True) -> bool:
    """Whether input/output `index` of this operator accepts tensor(float16)."""
    formal = _formal(schema, index, inputs)
    if formal is None:
        return False
    allowed = next((c.allowed_type_strs for c in schema.type_constraints if c.type_param_str == formal.type_str),
                   [formal.type_str])
    return "tensor(float16)" in allowed


def _to_half(array: np.ndarray) -> np.ndarray:
    return np.clip(array, -FP16_MAX, FP16_MAX).astype(np.float16)


def _tensor_types(model: onnx.ModelProto) -> dict[str, int]:
    inferred = onnx.shape_inference.infer_shapes(model)
    g = inferred.graph
    types = {v.name: v.type.tensor_type.elem_type for v in [*g.input, *g.value_info, *g.output]}
    types.update({t.name: t.data_type for t in g.initializer})
    return types


def convert_to_fp16(model: onnx.ModelProto, keep_fp32: set[str] | frozenset = frozenset(),
                    fp32_outputs: bool = False) -> onnx.ModelProto:
    """A copy of `model` with every float32 tensor of every node not named in `keep_fp32` in float16."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    g = model.graph
    if any(a.type == onnx.AttributeProto.GRAPH for n in g.node for a in n.attribute):
        raise ValueError("graphs with subgraphs (If, Loop, Scan) are not supported by the FP16 converter")
    opset = _opset(model)
    old_types = _tensor_types(model)
    new_types: dict[str, int] = {v.name: v.type.tensor_type.elem_type for v in g.input}
    initializers = {t.name: t for t in g.initializer}
    new_types.update({name: t.data_type for name, t in initializers.items()})
    half_inits: dict[str, str] = {}
    casts: dict[tuple[str, int], str] = {}
    nodes: list[onnx.NodeProto] = []

    def cast_of(name: str, to: int) -> str:
        """The name of `name` converted to type `to` (a converted initializer or the output of a shared Cast)."""
        if name in initializers and to == HALF:
            if name not in half_inits:
                arr = numpy_helper.to_array(initializers[name])
                half = numpy_helper.from_array(_to_half(arr), f"{name}__fp16")
                g.initializer.append(half)
                half_inits[name] = half.name
                new_types[half.name] = HALF
            return half_inits[name]
        key = (name, to)
        if key not in casts:
            out = f"{name}__{'fp16' if to == HALF else 'fp32'}"
            nodes.append(helper.make_node("Cast", [name], [out], name=f"{out}__cast", to=to))
            casts[key] = out
            new_types[out] = to
        return casts[key]

    for node in g.node:
        schema = onnx.defs.get_schema(node.op_type, opset, node.domain)
        half_node = node.name not in keep_fp32
        want = HALF if half_node else FLOAT
        for i, name in enumerate(node.input):
            if not name:
                continue
            have = new_types.get(name, old_types.get(name))
            if have not in (FLOAT, HALF):
                continue
            target = want if _may_be_half(schema, i) else FLOAT
            if have != target:
                node.input[i] = cast_of(name, target)
        if half_node:
            for attr in node.attribute:
                if node.op_type == "Cast" and attr.name == "to" and attr.i == FLOAT:
                    attr.i = HALF
                elif attr.type == onnx.AttributeProto.TENSOR and attr.t.data_type == FLOAT:
                    attr.t.CopyFrom(numpy_helper.from_array(_to_half(numpy_helper.to_array(attr.t)), attr.t.name))
        for i, name in enumerate(node.output):
            old = old_types.get(name)
            if old == FLOAT and half_node and (_may_be_half(schema, i, inputs=False) or node.op_type == "Cast"):
                new_types[name] = HALF
            elif old is not None:
                new_types[name] = old
        nodes.append(node)

    # Graph outputs keep their names; an output produced in the other type gets a final Cast under its own name.
    out_type = FLOAT if fp32_outputs else HALF
    for out in g.output:
        if new_types.get(out.name) in (FLOAT, HALF) and new_types[out.name] != out_type:
            inner = f"{out.name}__{'fp16' if new_types[out.name] == HALF else 'fp32'}"
            for n in nodes:
                n.output[:] = [inner if o == out.name else o for o in n.output]
                n.input[:] = [inner if i == out.name else i for i in n.input]
            nodes.append(helper.make_node("Cast", [inner], [out.name], name=f"{out.name}__cast", to=out_type))
            new_types[out.name] = out_type
        if out.type.tensor_type.elem_type in (FLOAT, HALF):
            out.type.tensor_type.elem_type = new_types[out.name]

    del g.node[:]
    g.node.extend(nodes)
    del g.value_info[:]
    used = {i for n in g.node for i in n.input}
    kept = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(kept)
    return onnx.shape_inference.infer_shapes(model, check_type=True, strict_mode=True)
