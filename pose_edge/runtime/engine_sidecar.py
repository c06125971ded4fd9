"""The JSON file beside every engine (`model.engine.json`): what it was built with, for, and from.

An engine is only valid for the TensorRT version that built it and the GPU (compute capability) it was built for, and
it goes stale when its ONNX changes. Loading checks all of that first (`check_sidecar`) and refuses a mismatch with
one line that gives the command to rebuild, instead of a crash or a wrong answer from deep inside TensorRT.
Torch-free; reading needs neither TensorRT nor a GPU.

Fields: format; trt_module ("tensorrt" or "tensorrt_rtx") and trt_version; gpu_name (None when TensorRT-RTX built it
ahead of time without a GPU); compute_capabilities (["8.6", ...], what the engine runs on); precision; input name,
profile shapes min/opt/max and dtype; outputs (name, dtype, shape); onnx_path and onnx_sha256; graph (the
GraphInfo of the source ONNX: model, input format, outputs); workspace_bytes, build_seconds, built_at;
rebuild (the `pose-edge export` command that makes it again).
"""

from __future__ import annotations

import hashlib
import json
from dataclasses import dataclass, field
from pathlib import Path

from pose_edge.errors import ArtifactError
from pose_edge.fsutil import atomic_write_json
from pose_edge.model_meta import GraphInfo

FORMAT = "pose-edge-engine"
VERSION = 1


def sidecar_path(engine: str | Path) -> Path:
    engine = Path(engine)
    return engine.with_name(engine.name + ".json")


def file_sha256(path: str | Path) -> str:
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for chunk in iter(lambda: f.read(1 << 20), b""):
            h.update(chunk)
    return h.hexdigest()


@dataclass
class EngineSidecar:
    trt_module: str
    trt_version: str
    gpu_name: str | None
    compute_capabilities: list[str]
    precision: str
    input_name: str
    input_dtype: str
    profile: dict  # {"min": [N, H, W, 3], "opt": [...], "max": [...]}
    outputs: list[dict]
    onnx_path: str
    onnx_sha256: str
    graph: dict
    rebuild: str
    workspace_bytes: int = 0
    build_seconds: float = 0.0
    built_at: str = ""
    extra: dict = field(default_factory=dict)

    @property
    def graph_info(self) -> GraphInfo:
        return GraphInfo.from_dict(self.graph, "engine sidecar")

    def to_dict(self) -> dict:
        return {"format": FORMAT, "version": VERSION, **self.__dict__}

    def write(self, engine: str | Path) -> Path:
        path = sidecar_path(engine)
        atomic_write_json(path, self.to_dict(), indent=2)
        return path

    @classmethod
    def read(cls, engine: str | Path) -> "EngineSidecar":
        path = sidecar_path(engine)
        if not path.is_file():
            raise ArtifactError(f"{engine}: its metadata file {path.name} is missing, so the engine cannot be checked "
                                "against this GPU and TensorRT; rebuild it with `pose-edge export RUN --engine trt`")
        try:
            d = json.loads(path.read_text())
            if d.pop("format", None) != FORMAT or d.pop("version", None) != VERSION:
                raise ValueError("not a pose-edge engine sidecar of a version this pose-edge reads")
            return cls(**d)
        except (OSError, ValueError, TypeError) as e:
            raise ArtifactError(f"{path}: engine metadata is unreadable or malformed ({e}); rebuild the engine with "
                                "`pose-edge export RUN --engine trt`") from None


def check_sidecar(sidecar: EngineSidecar, engine: str | Path, trt_module: str, trt_version: str,
                  gpu_name: str | None, compute_capability: str) -> None:
    """Raise ArtifactError (one line, with the rebuild command) unless the engine fits this TensorRT and this GPU and
    its source ONNX, where it still exists, is the one it was built from."""
    fix = f"rebuild it here with `{sidecar.rebuild}`"
    if sidecar.trt_module != trt_module or sidecar.trt_version != trt_version:
        raise ArtifactError(f"{engine} was built by {sidecar.trt_module} {sidecar.trt_version}, this machine has "
                            f"{trt_module} {trt_version}; {fix}")
    if compute_capability not in sidecar.compute_capabilities:
        raise ArtifactError(f"{engine} was built for compute capability {', '.join(sidecar.compute_capabilities)}"
                            f"{f' ({sidecar.gpu_name})' if sidecar.gpu_name else ''}, this GPU is {gpu_name} "
                            f"({compute_capability}); {fix}")
    if sidecar.trt_module == "tensorrt" and sidecar.gpu_name and gpu_name and sidecar.gpu_name != gpu_name:
        raise ArtifactError(f"{engine} was built on a {sidecar.gpu_name}, this GPU is a {gpu_name} (TensorRT engines "
                            f"are tuned for the GPU model that built them); {fix}")
    onnx = Path(sidecar.onnx_path)
    if not onnx.is_absolute():
        onnx = Path(engine).parent / onnx
    if onnx.is_file() and file_sha256(onnx) != sidecar.onnx_sha256:
        raise ArtifactError(f"{engine} is stale: {onnx.name} changed since the engine was built from it; {fix}")
