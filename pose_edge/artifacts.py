"""Open any model artefact as a Backend: a run folder or checkpoint (PyTorch), an .onnx (ONNX Runtime), an engine
(TensorRT). The backend's `meta` is the ModelMeta; `pose-edge eval`, `predict` and `bench` all start here.

    backend = open_artifact("runs/sb-r18-128x96/export/sb-r18-128x96-int8.onnx")
    backend.meta.family, backend.run(images)

Importing this module imports neither torch nor TensorRT; only opening a checkpoint needs torch.
"""

from __future__ import annotations

from pathlib import Path

from pose_edge.errors import ArtifactError

ENGINE_SUFFIXES = (".engine", ".plan", ".trt")
CHECKPOINT_SUFFIXES = (".pt", ".pth")


def artifact_kind(artifact: str | Path) -> str:
    """"checkpoint" (a run folder or .pt), "onnx" or "engine"; ArtifactError for anything else."""
    path = Path(artifact)
    if path.is_dir() or path.suffix in CHECKPOINT_SUFFIXES:
        return "checkpoint"
    if path.suffix == ".onnx":
        return "onnx"
    if path.suffix in ENGINE_SUFFIXES:
        return "engine"
    raise ArtifactError(f"{artifact}: not a model artefact; expected a run folder, a checkpoint (.pt), an ONNX model "
                        f"(.onnx) or an engine ({', '.join(ENGINE_SUFFIXES)})")


def open_artifact(artifact: str | Path, device: str | None = None):
    """A Backend for `artifact`. device: for checkpoints, a torch device ("cpu", "cuda:0"; default the CPU); for
    engines, a CUDA ordinal ("0"); ONNX models run on the GPU through ONNX Runtime where one is usable."""
    kind = artifact_kind(artifact)
    if not Path(artifact).exists():
        raise ArtifactError(f"{artifact}: no such file or run folder")
    if kind == "checkpoint":
        from pose_edge.models.torch_backend import TorchBackend

        return TorchBackend.from_checkpoint(artifact, device or "cpu")
    if kind == "onnx":
        from pose_edge.runtime.ort_backend import OrtBackend

        providers = ("CPUExecutionProvider",) if device == "cpu" else None
        return OrtBackend(artifact, providers=providers)
    from pose_edge.runtime.trt_backend import TrtBackend

    return TrtBackend(artifact, int(device or 0))


def artifact_meta(artifact: str | Path):
    """The ModelMeta of `artifact` without running anything (no session, no GPU)."""
    kind = artifact_kind(artifact)
    if kind == "engine":
        from pose_edge.runtime.engine_sidecar import EngineSidecar

        return EngineSidecar.read(artifact).graph_info.meta
    if kind == "onnx":
        from pose_edge.runtime.ort_backend import OrtBackend

        return OrtBackend(artifact, providers=("CPUExecutionProvider",)).meta
    from pose_edge.models.checkpoint import load_checkpoint, meta_of, resolve_checkpoint

    return meta_of(load_checkpoint(resolve_checkpoint(artifact)))
