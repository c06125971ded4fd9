"""FP32 ONNX export: metadata, input format, dynamic axes, parity with PyTorch, one-line errors for bad models.

Stand-in networks (a tiny heatmap net with a deconvolution head, and the real small presets) exported and run in
ONNX Runtime on the CPU. Helpers here are imported by the other test_export_* files.
"""

from __future__ import annotations

import numpy as np
import onnx
import pytest
import torch
from pose_edge.export.graph_input import InGraphPreprocess
from pose_edge.export.onnx_export import export_onnx, get_graph_info, relative_error, run_torch, sample_images
from torch import nn

from pose_edge.errors import ArtifactError, PoseEdgeError
from pose_edge.model_meta import InputSpec, ModelMeta
from pose_edge.runtime.ort_backend import OrtBackend

SMALL_PRESETS = ("sb-r18-128x96", "kapao-tiny", "det-tiny")
IMAGENET = InputSpec(64, 48, (123.675, 116.28, 103.53), (58.395, 57.12, 57.375), "RGB")


class TinyHeatmapNet(nn.Module):
    """A Simple-Baseline-shaped stand-in: strided convs, one deconvolution, a 1x1 head to 17 heatmaps at stride 4."""

    def __init__(self):
        super().__init__()
        self.body = nn.Sequential(nn.Conv2d(3, 16, 3, 2, 1), nn.BatchNorm2d(16), nn.ReLU(),
                                  nn.Conv2d(16, 32, 3, 2, 1), nn.BatchNorm2d(32), nn.ReLU(),
                                  nn.Conv2d(32, 32, 3, 2, 1), nn.ReLU())
        self.up = nn.Sequential(nn.ConvTranspose2d(32, 32, 4, 2, 1, bias=False), nn.BatchNorm2d(32), nn.ReLU())
        self.head = nn.Conv2d(32, 17, 1)

    def forward(self, x):
        return self.head(self.up(self.body(x)))


TINY_META = ModelMeta("simple_baseline", "stand-in-heatmaps", IMAGENET, heatmap_stride=4)


def tiny_heatmap_net(seed: int = 0) -> nn.Module:
    torch.manual_seed(seed)
    model = TinyHeatmapNet()
    with torch.no_grad():  # BN statistics that are not the identity, so that folding them is exercised
        for m in model.modules():
            if isinstance(m, nn.BatchNorm2d):
                m.running_mean.uniform_(-0.5, 0.5)
                m.running_var.uniform_(0.5, 2.0)
    return model.eval()


def preset_model(name: str, seed: int = 0):
    from pose_edge.models import build_model, model_meta

    torch.manual_seed(seed)
    return build_model(name).eval(), model_meta(name)


@pytest.fixture(scope="module")
def tiny_onnx(tmp_path_factory):
    path = tmp_path_factory.mktemp("onnx") / "tiny.onnx"
    export_onnx(tiny_heatmap_net(), TINY_META, path)
    return path


def test_metadata_and_input_format(tiny_onnx):
    proto = onnx.load(str(tiny_onnx))
    onnx.checker.check_model(proto, full_check=True)
    info = get_graph_info(proto)
    assert info.meta == TINY_META and info.precision == "fp32"
    assert info.input_format == "uint8_nhwc_bgr" and info.input.dtype == "uint8" and info.input.layout == "NHWC"
    assert info.input.shape == (None, 64, 48, 3)  # dynamic batch, fixed size for a top-down model
    assert [(o.name, o.dtype, o.shape) for o in info.outputs] == [("heatmaps", "float32", (None, 17, 16, 12))]
    assert info.details["fp32_parity_rel_error"] < 1e-5
    graph_input = proto.graph.input[0].type.tensor_type
    assert graph_input.elem_type == onnx.TensorProto.UINT8


def test_ort_matches_torch_with_host_normalisation_reference(tiny_onnx):
    """The graph's in-graph preprocessing equals runtime.backend.normalize + the model, for any batch size."""
    from pose_edge.runtime.backend import normalize

    backend = OrtBackend(tiny_onnx)
    assert backend.providers == ("CPUExecutionProvider",)
    model = tiny_heatmap_net()
    for n in (1, 5):
        images = sample_images(TINY_META, n, seed=n)
        with torch.no_grad():
            expected = model(torch.from_numpy(normalize(images, TINY_META.input))).numpy()
        (got,) = backend.run(images)
        assert got.shape == (n, 17, 16, 12) and got.dtype == np.float32
        assert np.abs(got - expected).max() <= 1e-5 * np.abs(expected).max()


@pytest.mark.parametrize("name", SMALL_PRESETS)
def test_small_presets_match_pytorch(name, tmp_path):
    """FP32: raw outputs within 1e-4 of PyTorch (relative to the output's range) and identical decoded keypoints."""
    from pose_edge.export.distortion import distortion

    model, meta = preset_model(name)
    path = tmp_path / f"{name}.onnx"
    export_onnx(model, meta, path)
    backend = OrtBackend(path)
    images = sample_images(meta, 3, seed=5)
    expected = run_torch(InGraphPreprocess(model, meta.input).eval(), images)
    got = backend.run(images)
    assert relative_error(expected, got) < 1e-4
    d = distortion(expected, got, meta)
    assert d.shift_px < 1e-3 and d.conf_change < 1e-5
    if meta.family != "simple_baseline":  # fully convolutional: other sizes (multiples of 64) run too
        assert backend.info.dynamic_size
        (first, *_) = backend.run(sample_images(meta, 2, height=meta.input.height + 64, width=meta.input.width))
        assert first.shape[2:] == ((meta.input.height + 64) // 8, meta.input.width // 8)


def test_bad_input_shapes_are_refused(tiny_onnx):
    backend = OrtBackend(tiny_onnx)
    with pytest.raises(PoseEdgeError, match="takes 64x48 images"):
        backend.run(np.zeros((1, 32, 48, 3), np.uint8))
    with pytest.raises(PoseEdgeError, match="uint8 BGR"):
        backend.run(np.zeros((1, 64, 48, 3), np.float32))


def test_truncated_and_corrupt_onnx_give_one_line_errors(tiny_onnx, tmp_path):
    data = tiny_onnx.read_bytes()
    truncated = tmp_path / "truncated.onnx"
    truncated.write_bytes(data[: len(data) // 3])
    corrupt = tmp_path / "corrupt.onnx"
    corrupt.write_bytes(b"\x08\x07garbage" * 100)
    for path in (truncated, corrupt):
        with pytest.raises(ArtifactError) as e:
            OrtBackend(path)
        assert str(path) in str(e.value) and "\n" not in str(e.value)
    with pytest.raises(ArtifactError, match="no such ONNX model"):
        OrtBackend(tmp_path / "missing.onnx")


def test_onnx_without_pose_edge_metadata_is_refused(tiny_onnx, tmp_path):
    proto = onnx.load(str(tiny_onnx))
    del proto.metadata_props[:]
    path = tmp_path / "plain.onnx"
    onnx.save(proto, str(path))
    with pytest.raises(ArtifactError, match="no pose-edge metadata"):
        OrtBackend(path)


class TracesWrong(nn.Module):
    """Data-dependent Python control flow: tracing freezes the branch taken on the all-zero example input."""

    def forward(self, x):
        if float(x.mean()) > -1.0:
            return x[:, :1, ::4, ::4].repeat(1, 17, 1, 1) * 0.0
        return x[:, :1, ::4, ::4].repeat(1, 17, 1, 1)


def test_parity_failure_raises_and_writes_nothing(tmp_path):
    out = tmp_path / "bad.onnx"
    with pytest.raises(PoseEdgeError, match="does not match PyTorch"):
        export_onnx(TracesWrong(), TINY_META, out)
    assert list(tmp_path.iterdir()) == []


def test_host_normalised_input_format_is_honoured(tiny_onnx, tmp_path):
    """A graph exported for float32 NCHW input (normalisation on the host) gives the same outputs through the
    backend, which normalises for it; the metadata says which format a graph takes."""
    path = tmp_path / "nchw.onnx"
    export_onnx(tiny_heatmap_net(), TINY_META, path, input_format="float32_nchw")
    nchw = OrtBackend(path)
    assert nchw.info.input_format == "float32_nchw" and nchw.info.input.shape == (None, 3, 64, 48)
    images = sample_images(TINY_META, 3, seed=9)
    (a,), (b,) = nchw.run(images), OrtBackend(tiny_onnx).run(images)
    assert np.abs(a - b).max() <= 1e-5 * np.abs(b).max()
