"""The one method every inference backend has, the pixel preparation they share, and opening one from a file.

Backends (ONNX Runtime, TensorRT; PyTorch for checkpoints, pose_edge.models.torch_backend) all take the same input:
uint8 images [N, H, W, 3] in OpenCV's BGR order, already warped or letterboxed to the model's input size. Each turns
them into what its network wants (its GraphInfo's input format), so pipelines and decoders never care which runs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

import numpy as np

from pose_edge.errors import ArtifactError, PoseEdgeError
from pose_edge.model_meta import GraphInfo, InputSpec, ModelMeta

ENGINE_SUFFIXES = (".engine", ".plan", ".trt")
CHECKPOINT_SUFFIXES = (".pt", ".pth")


class Backend(Protocol):
    meta: ModelMeta

    def run(self, images: np.ndarray) -> list[np.ndarray]:
        """images: uint8 [N, H, W, 3] BGR at meta.input size -> the network's raw outputs, batch-first."""
        ...


def takes_other_sizes(backend) -> bool:
    """Whether backend.run also takes images of other sizes than meta.input (multiples of the largest stride): an
    ONNX model exported with a dynamic height and width, in ONNX Runtime. A backend says so by `dynamic_size`;
    engines (built for one size) and PyTorch backends (the preset's size) do not."""
    return bool(getattr(backend, "dynamic_size", False))


def normalize(images: np.ndarray, spec: InputSpec) -> np.ndarray:
    """uint8 [N, H, W, 3] BGR -> float32 [N, 3, H, W] in the network's colour order, (x - mean) / std."""
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3:
        raise ValueError(f"expected uint8 images [N, H, W, 3], got {images.dtype} {images.shape}")
    x = images[..., ::-1] if spec.color == "RGB" else images
    x = x.transpose(0, 3, 1, 2).astype(np.float32)
    mean = np.asarray(spec.mean, np.float32).reshape(1, 3, 1, 1)
    std = np.asarray(spec.std, np.float32).reshape(1, 3, 1, 1)
    return (x - mean) / std


def prepare_input(images, info: GraphInfo) -> np.ndarray:
    """uint8 [N, H, W, 3] BGR (Backend.run's input) -> the array the graph takes, per info.input_format.

    H, W must equal the model's input size unless the graph has a dynamic size (then multiples of the largest stride).
    """
    images = np.asarray(images)
    if images.dtype != np.uint8 or images.ndim != 4 or images.shape[-1] != 3 or images.shape[0] == 0:
        raise PoseEdgeError(f"expected a non-empty batch of uint8 BGR images [N, H, W, 3], got {images.dtype} "
                            f"{images.shape}")
    spec = info.meta.input
    h, w = images.shape[1:3]
    if (h, w) != (spec.height, spec.width):
        multiple = max(info.meta.strides or (1,))
        if not info.dynamic_size or h % multiple or w % multiple:
            what = (f"or multiples of {multiple}" if info.dynamic_size else "(this graph has a fixed size)")
            raise PoseEdgeError(f"{info.meta.preset} takes {spec.height}x{spec.width} images {what}, got {h}x{w}")
    if info.input_format == "uint8_nhwc_bgr":
        return np.ascontiguousarray(images)
    return normalize(images, spec)


def artifact_kind(artifact: str | Path) -> str:
    """"checkpoint" (a run folder or .pt), "onnx" or "engine"; ArtifactError for anything else."""
    path = Path(artifact)
    if path.is_dir() or path.suffix in CHECKPOINT_SUFFIXES:
        return "checkpoint"
    if path.suffix == ".onnx":
        return "onnx"
    if path.suffix in ENGINE_SUFFIXES:
        return "engine"
    raise ArtifactError(f"{artifact}: not a model artefact; expected an ONNX model (.onnx), an engine "
                        f"({', '.join(ENGINE_SUFFIXES)}), a run folder or a checkpoint (.pt)")


def open_backend(artifact: str | Path, device: str | None = None):
    """A Backend for an exported model: .onnx -> ONNX Runtime, engine -> TensorRT.

    device: None (the GPU where one is usable), "cpu" (ONNX Runtime's CPU provider only), "cuda" / "cuda:N" / "N"
    (that GPU). Checkpoints need PyTorch, which the runtime never imports: pose_edge.artifacts.open_artifact opens them.
    """
    kind = artifact_kind(artifact)
    if kind == "checkpoint":
        raise ArtifactError(f"{artifact} is a PyTorch checkpoint; the runtime runs exported models: "
                            f"`pose-edge export {artifact}` makes an .onnx (or open it with "
                            "pose_edge.artifacts.open_artifact where PyTorch is installed)")
    if not Path(artifact).is_file():
        raise ArtifactError(f"{artifact}: no such file")
    if kind == "onnx":
        from pose_edge.runtime.ort_backend import OrtBackend

        if device == "cpu":
            return OrtBackend(artifact, providers=("CPUExecutionProvider",))
        if device is not None:
            return OrtBackend(artifact, providers=("CUDAExecutionProvider",), device_id=cuda_ordinal(device))
        return OrtBackend(artifact)
    if device == "cpu":
        raise ArtifactError(f"{artifact} is a TensorRT engine, which runs on a GPU only; run its ONNX model on the "
                            "CPU instead")
    from pose_edge.runtime.trt_backend import TrtBackend

    return TrtBackend(artifact, cuda_ordinal(device))


def cuda_ordinal(device: str | None) -> int:
    """"cuda" / "cuda:1" / "1" / None -> the GPU ordinal."""
    if device in (None, "cuda", "gpu"):
        return 0
    text = str(device).removeprefix("cuda:")
    if not text.isdigit():
        raise PoseEdgeError(f"unknown device {device!r}; expected cpu, cuda, cuda:N or a GPU ordinal")
    return int(text)
