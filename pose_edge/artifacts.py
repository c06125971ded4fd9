"""Open any model artefact as a runtime Backend, checkpoints included: a run folder or checkpoint (PyTorch), an
.onnx (ONNX Runtime), an engine (TensorRT). `pose-edge eval`, `predict` and `bench` start here.

    backend = open_artifact("runs/sb-r18-128x96")                          # PyTorch, on the CPU by default
    backend = open_artifact("runs/sb-r18-128x96/export/sb-r18-128x96-int8.onnx")
    backend.meta.family, backend.run(images)

The torch-free runtime opens exported models itself (pose_edge.runtime.backend.open_backend); this module sits
above it and the models, so it can also bring up a checkpoint through PyTorch, imported only when one is opened
(a base install without PyTorch gets a one-line error saying what to install).
"""

from __future__ import annotations

from pathlib import Path

from pose_edge.errors import ArtifactError
from pose_edge.runtime.backend import artifact_kind, open_backend


def open_artifact(artifact: str | Path, device: str | None = None):
    """A Backend for `artifact`. device: for checkpoints a torch device ("cpu", "cuda:0"; default the CPU); for
    exported models as pose_edge.runtime.backend.open_backend takes it."""
    if artifact_kind(artifact) != "checkpoint":
        return open_backend(artifact, device)
    if not Path(artifact).exists():
        raise ArtifactError(f"{artifact}: no such checkpoint or run folder")
    try:
        import torch  # noqa: F401
    except ImportError:
        raise ArtifactError(f"{artifact} is a PyTorch checkpoint and PyTorch is not installed here: export it "
                            "(`pose-edge export RUN`) and run the .onnx, or pip install 'pose-edge[train]'") from None
    from pose_edge.models.torch_backend import TorchBackend

    return TorchBackend.from_checkpoint(artifact, device or "cpu")
