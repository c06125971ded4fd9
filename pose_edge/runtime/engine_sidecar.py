"""The JSON file beside every engine (`model.engine.json`): what it was built with, for, and from.

An engine is only valid for the TensorRT version that built it and the GPU (compute capability) it was built for, and
it goes stale when its ONNX changes. Loading checks all of that first (`check_sidecar`) and refuses a mismatch with
one line that gives the command to rebuild, instead of a crash or a wrong answer from deep inside TensorRT.
Torch-free; reading needs neither TensorRT nor a GPU.

Trust: the sidecar records the engine's own sha256, and `verify_engine` checks it against the bytes that will be
deserialised, so a sidecar swapped from another engine (or an engine replaced under its sidecar) is refused; this
holds when the source ONNX is not beside the engine, which is how engines are deployed (the ONNX hash is checked
where the ONNX is present). Nothing read from a sidecar is imported or executed: trt_module must be one of
TRT_MODULES before anything imports it, every field's type is checked on reading, and the recorded input and outputs
must agree with the recorded graph (GraphInfo.check_graph).

Fields: format, version; trt_module ("tensorrt" or "tensorrt_rtx") and trt_version; gpu_name (None when
TensorRT-RTX built it ahead of time without a GPU); compute_capabilities (["8.6", ...], what the engine runs on);
precision; input name, profile shapes min/opt/max and dtype; outputs (name, dtype, shape; -1 for a dynamic axis);
onnx_path and onnx_sha256; engine_sha256; graph (the GraphInfo of the source ONNX: model, input format, outputs);
workspace_bytes, build_seconds, built_at; rebuild (the `pose-edge export` command that makes it again).
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
VERSION = 2  # 2: engine_sha256 recorded and verified
TRT_MODULES = ("tensorrt", "tensorrt_rtx")  # the only modules an engine may name; checked before any import
_REBUILD = "rebuild the engine with `pose-edge export RUN --engine trt`"


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
    engine_sha256: str
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
        """The sidecar of `engine`, its fields type-checked and its input/outputs checked against its graph."""
        path = sidecar_path(engine)
        if not path.is_file():
            raise ArtifactError(f"{engine}: its metadata file {path.name} is missing, so the engine cannot be checked "
                                f"against this GPU and TensorRT; {_REBUILD}")
        try:
            d = json.loads(path.read_text())
            if not isinstance(d, dict):
                raise ValueError("not a JSON object")
            if d.pop("format", None) != FORMAT or d.pop("version", None) != VERSION:
                raise ValueError("not a pose-edge engine sidecar of a version this pose-edge reads")
            sidecar = cls(**d)
            sidecar._check_fields()
        except (OSError, ValueError, TypeError, RecursionError) as e:
            raise ArtifactError(f"{path}: engine metadata is unreadable or malformed ({str(e)[:200]}); "
                                f"{_REBUILD}") from None
        info = sidecar.graph_info
        per_image = [None if v == -1 else v for v in sidecar.profile["max"][1:]]
        info.check_graph([(sidecar.input_dtype, (None, *per_image))],
                         [(o["dtype"], tuple(None if v == -1 else v for v in o["shape"])) for o in sidecar.outputs],
                         str(path))
        return sidecar

    def _check_fields(self) -> None:
        """ValueError naming the first field of the wrong type or value."""
        def need(ok: bool, what: str):
            if not ok:
                raise ValueError(what)

        need(self.trt_module in TRT_MODULES, f"trt_module {str(self.trt_module)[:60]!r} is not one of "
                                              f"{', '.join(TRT_MODULES)}")
        for name in ("trt_version", "precision", "input_name", "input_dtype", "onnx_path", "rebuild"):
            need(isinstance(getattr(self, name), str), f"{name} is not a string")
        for name in ("onnx_sha256", "engine_sha256"):
            value = getattr(self, name)
            need(isinstance(value, str) and len(value) == 64 and all(c in "0123456789abcdef" for c in value),
                 f"{name} is not a sha256 hex digest")
        need(self.gpu_name is None or isinstance(self.gpu_name, str), "gpu_name is not a string")
        need(isinstance(self.compute_capabilities, list) and all(isinstance(c, str) for c in
                                                                   self.compute_capabilities),
             "compute_capabilities is not a list of strings")
        need(isinstance(self.profile, dict) and all(
            isinstance(self.profile.get(k), list) and len(self.profile[k]) == 4
            and all(isinstance(v, int) and not isinstance(v, bool) and v > 0 for v in self.profile[k])
            for k in ("min", "opt", "max")), "profile is not min/opt/max shapes of 4 positive integers")
        need(self.profile["min"][0] <= self.profile["opt"][0] <= self.profile["max"][0],
             "profile batch sizes are not min <= opt <= max")
        need(isinstance(self.outputs, list) and all(
            isinstance(o, dict) and isinstance(o.get("name"), str) and isinstance(o.get("dtype"), str)
            and isinstance(o.get("shape"), list) and all(isinstance(v, int) for v in o["shape"])
            for o in self.outputs), "outputs are not a list of {name, dtype, shape}")
        need(isinstance(self.graph, dict), "graph is not an object")
        need(isinstance(self.extra, dict), "extra is not an object")


def verify_engine(sidecar: EngineSidecar, engine: str | Path, data: bytes) -> None:
    """ArtifactError unless `data` (the engine file's bytes, the ones to deserialise) is the engine the sidecar
    describes: a sidecar copied from another engine, or an engine replaced or damaged after its build, is refused."""
    digest = hashlib.sha256(data).hexdigest()
    if digest != sidecar.engine_sha256:
        raise ArtifactError(f"{engine} is not the engine its metadata file {sidecar_path(engine).name} describes "
                            f"(sha256 {digest[:12]}..., the metadata records {sidecar.engine_sha256[:12]}...): the "
                            f"sidecar belongs to another engine or the engine changed; rebuild it with "
                            f"`{sidecar.rebuild}`")


def check_sidecar(sidecar: EngineSidecar, engine: str | Path, trt_module: str, trt_version: str,
                  gpu_name: str | None, compute_capability: str) -> None:
    """Raise ArtifactError (one line, with the rebuild command) unless the engine fits this TensorRT and this GPU and
    its source ONNX, where it is beside the engine, is the one it was built from. Where the ONNX is absent (a deployed
    engine) its hash cannot be checked; the engine's own hash (verify_engine) is what ties the sidecar to it then."""
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
