"""ConvTranspose -> sub-pixel Convs + DepthToSpace, an exact rewrite of an FP32 graph for integer CPU kernels.

ONNX Runtime's CPU provider has integer kernels for Conv (QLinearConv) but none for ConvTranspose, so in a Q/DQ graph
a transposed convolution runs in float between a DequantizeLinear and a QuantizeLinear. In the Simple Baseline that
is the whole deconvolution head, a third of the FP32 model's time. A transposed convolution with stride s whose output
is exactly s times its input (kernel K = s + 2p, symmetric padding p, no output padding, no dilation, one group) is
the same as s*s ordinary convolutions, one per output phase, whose outputs are interleaved:

    y[s*i + a] = sum_m x[i + d0_a + m] * w[r_a + s*(M_a - 1 - m)]     (one spatial axis, phase a in [0, s))
    c_a = a + p,  r_a = c_a mod s,  M_a = ceil((K - r_a) / s) taps,  d0_a = c_a // s - (M_a - 1)

so phase a is a Conv with an M_a-tap kernel, padding -d0_a before and d0_a + M_a - 1 after. The phases (row phase
major, column phase minor) are concatenated on the channel axis and DepthToSpace(s, "DCR") interleaves them:
out[n, c, s*h + a, s*w + b] = cat[n, (a*s + b)*C + c, h, w]. The multiply-adds are those of the ConvTranspose.

A BatchNormalization that reads only the ConvTranspose's output is folded into its weights first (per output channel,
axis 1 of the [C_in, C_out, kh, kw] weight), so that no float per-channel op is left between integer kernels; a Relu
that then reads only that output is applied to each phase instead (it commutes with Concat and DepthToSpace), where
ONNX Runtime fuses it into the phase's integer Conv.
Other ConvTransposes (output padding, groups, dilation, asymmetric padding) are left as they are.
"""

from __future__ import annotations

import math

import numpy as np
import onnx
from onnx import helper, numpy_helper


def _attrs(node: onnx.NodeProto) -> dict:
    return {a.name: helper.get_attribute_value(a) for a in node.attribute}


def phase_taps(stride: int, kernel: int, pad: int) -> list[tuple[list[int], int, int]] | None:
    """Per output phase a of one axis: (kernel indices of its taps in correlation order, pad before, pad after).

    None when this axis cannot be rewritten (output not exactly stride x input, or a phase would need negative
    padding)."""
    if kernel - 2 * pad != stride or stride < 1:
        return None
    phases = []
    for a in range(stride):
        c = a + pad
        r = c % stride
        taps = math.ceil((kernel - r) / stride)
        d0 = c // stride - (taps - 1)
        before, after = -d0, d0 + taps - 1
        if before < 0 or after < 0:
            return None
        phases.append(([r + stride * (taps - 1 - m) for m in range(taps)], before, after))
    return phases


def _rewritable(node: onnx.NodeProto, inits: dict) -> bool:
    if node.op_type != "ConvTranspose" or node.input[1] not in inits:
        return False
    w = inits[node.input[1]]
    if len(w.dims) != 4 or (len(node.input) > 2 and node.input[2] and node.input[2] not in inits):
        return False
    a = _attrs(node)
    if a.get("group", 1) != 1 or any(d != 1 for d in a.get("dilations", [1, 1])):
        return False
    if any(o != 0 for o in a.get("output_padding", [0, 0])) or "output_shape" in a:
        return False
    if a.get("auto_pad", b"NOTSET") not in (b"NOTSET", "NOTSET"):
        return False
    kernel = a.get("kernel_shape", list(w.dims[2:]))
    strides, pads = a.get("strides", [1, 1]), a.get("pads", [0, 0, 0, 0])
    if pads[0] != pads[2] or pads[1] != pads[3] or strides[0] != strides[1]:  # DepthToSpace has one block size
        return False
    return all(phase_taps(strides[i], kernel[i], pads[i]) is not None for i in range(2))


def _only_reader(g: onnx.GraphProto, name: str, op_type: str) -> onnx.NodeProto | None:
    """The node of `op_type` that is the single reader of tensor `name` (not a graph output), or None."""
    readers = [n for n in g.node if name in n.input]
    if name in {o.name for o in g.output} or len(readers) != 1 or readers[0].op_type != op_type:
        return None
    return readers[0]


def _fold_batchnorm(g: onnx.GraphProto, node: onnx.NodeProto, inits: dict) -> tuple[np.ndarray, np.ndarray, str]:
    """(weight [C_in, C_out, kh, kw], bias [C_out], output name) with a following BatchNormalization folded in."""
    w = numpy_helper.to_array(inits[node.input[1]]).astype(np.float32)
    bias = (numpy_helper.to_array(inits[node.input[2]]).astype(np.float32) if len(node.input) > 2 and node.input[2]
            else np.zeros(w.shape[1], np.float32))
    out = node.output[0]
    bn = _only_reader(g, out, "BatchNormalization")
    if (bn is not None and len(bn.output) == 1 and all(i in inits for i in bn.input[1:5])
            and not _attrs(bn).get("training_mode", 0)):
        gamma, beta, mean, var = (numpy_helper.to_array(inits[i]).astype(np.float64) for i in bn.input[1:5])
        factor = gamma / np.sqrt(var + _attrs(bn).get("epsilon", 1e-5))
        w = (w * factor[None, :, None, None]).astype(np.float32)
        bias = ((bias - mean) * factor + beta).astype(np.float32)
        g.node.remove(bn)
        out = bn.output[0]
    return w, bias, out


def rewrite_conv_transpose(model: onnx.ModelProto) -> tuple[onnx.ModelProto, list[str]]:
    """A copy of `model` with every rewritable ConvTranspose replaced; returns (model, names of those replaced).

    The phase Convs are named <ConvTranspose name>/phase<a><b>."""
    model = onnx.ModelProto.FromString(model.SerializeToString())
    g = model.graph
    inits = {t.name: t for t in g.initializer}
    replaced = []
    for node in [n for n in g.node if _rewritable(n, inits)]:
        a = _attrs(node)
        w, bias, out = _fold_batchnorm(g, node, inits)
        relu = _only_reader(g, out, "Relu")
        if relu is not None:
            g.node.remove(relu)
            out = relu.output[0]
        kernel = a.get("kernel_shape", list(w.shape[2:]))
        strides, pads = a.get("strides", [1, 1]), a.get("pads", [0, 0, 0, 0])
        rows = phase_taps(strides[0], kernel[0], pads[0])
        cols = phase_taps(strides[1], kernel[1], pads[1])
        base = node.name or node.output[0]
        new_nodes, phase_outputs = [], []
        for pa, (row_taps, top, bottom) in enumerate(rows):
            for pb, (col_taps, left, right) in enumerate(cols):
                name = f"{base}/phase{pa}{pb}"
                # [C_in, C_out, kh, kw] taps -> a Conv weight [C_out, C_in, th, tw]
                k = w[:, :, row_taps][:, :, :, col_taps].transpose(1, 0, 2, 3).copy()
                g.initializer.extend([numpy_helper.from_array(k, f"{name}.weight"),
                                      numpy_helper.from_array(bias, f"{name}.bias")])
                phase_outputs.append(f"{name}_output_0")
                conv_out = f"{name}_conv_output_0" if relu is not None else phase_outputs[-1]
                new_nodes.append(helper.make_node(
                    "Conv", [node.input[0], f"{name}.weight", f"{name}.bias"], [conv_out], name=name,
                    kernel_shape=[len(row_taps), len(col_taps)], pads=[top, left, bottom, right], strides=[1, 1]))
                if relu is not None:
                    new_nodes.append(helper.make_node("Relu", [conv_out], [phase_outputs[-1]], name=f"{name}/Relu"))
        new_nodes.append(helper.make_node("Concat", phase_outputs, [f"{base}/phases"], name=f"{base}/Concat",
                                          axis=1))
        new_nodes.append(helper.make_node("DepthToSpace", [f"{base}/phases"], [out], name=f"{base}/DepthToSpace",
                                          blocksize=strides[0], mode="DCR"))
        at = list(g.node).index(node)
        g.node.remove(node)
        for i, n in enumerate(new_nodes):
            g.node.insert(at + i, n)
        replaced.append(base)
    used = {i for n in g.node for i in n.input}
    kept = [t for t in g.initializer if t.name in used]
    del g.initializer[:]
    g.initializer.extend(kept)
    return model, replaced
