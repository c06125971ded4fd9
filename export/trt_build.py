"""ONNX -> TensorRT engine + sidecar, with one code path for TensorRT 10.x, 11.x and TensorRT-RTX.

The network is always strongly typed: the precision is the ONNX graph's (FP32, FP16-typed, or INT8 Q/DQ on FP16), which
is what TensorRT 11 and TensorRT-RTX require and what TensorRT 10 (JetPack 6) supports; no FP16/INT8 builder flags and
no calibrator are used anywhere. The build gets an optimisation profile over the batch range (height and width fixed at
the model's input size), a workspace limit, and, where the TensorRT has one, a timing cache kept between builds.

Which TensorRT: full `tensorrt` where it imports (NVIDIA's index, JetPack), else `tensorrt_rtx` (PyPI). Full TensorRT
builds for the GPU it runs on and so needs one; TensorRT-RTX builds ahead of time for the compute capabilities asked
for (SM75/80/86/89/120/121), with or without a GPU. Set POSE_EDGE_TRT=tensorrt or tensorrt_rtx to choose.
"""

from __future__ import annotations

import contextlib
import datetime
import hashlib
import os
import time
import warnings
from pathlib import Path

from pose_edge.errors import PoseEdgeError
from pose_edge.fsutil import atomic_write_bytes
from pose_edge.model_meta import GraphInfo
from pose_edge.runtime.engine_sidecar import EngineSidecar, file_sha256

MODULES = ("tensorrt", "tensorrt_rtx")
DEFAULT_WORKSPACE = 2 << 30  # bytes; enough for every preset at batch 32, small enough for an 8 GB Orin
# TensorRT-RTX ahead-of-time targets when no GPU says which: Turing to Blackwell consumer/workstation parts.
RTX_DEFAULT_TARGETS = ("7.5", "8.0", "8.6", "8.9", "12.0")
_DTYPE_NAMES = {"FLOAT": "float32", "HALF": "float16", "UINT8": "uint8", "INT8": "int8", "INT32": "int32",
                "INT64": "int64", "BOOL": "bool", "BF16": "bfloat16"}


def import_tensorrt(prefer: str | None = None):
    """(module, its name): full TensorRT first, TensorRT-RTX second, unless `prefer` or $POSE_EDGE_TRT says which."""
    prefer = prefer or os.environ.get("POSE_EDGE_TRT")
    names = [prefer] if prefer else list(MODULES)
    errors = []
    for name in names:
        if name not in MODULES:
            raise PoseEdgeError(f"unknown TensorRT module {name!r}; expected one of {', '.join(MODULES)}")
        try:
            with warnings.catch_warnings():
                warnings.simplefilter("ignore")
                module = __import__(name)
            module.Builder  # noqa: B018 (the bindings wheel without its libraries imports but is unusable)
            return module, name
        except (ImportError, OSError, AttributeError) as e:
            errors.append(f"{name}: {str(e).splitlines()[0] if str(e) else type(e).__name__}")
    raise PoseEdgeError("no TensorRT to build engines with (" + "; ".join(errors) + "); install TensorRT from "
                        "NVIDIA, or `pip install tensorrt-rtx` to build TensorRT-RTX engines")


def _logger(trt):
    class Collect(trt.ILogger):
        """Keeps errors for the one-line message; prints nothing (TensorRT-RTX logs a CUDA error without a GPU)."""

        def __init__(self):
            trt.ILogger.__init__(self)
            self.errors: list[str] = []

        def log(self, severity, msg):
            if severity in (trt.ILogger.Severity.INTERNAL_ERROR, trt.ILogger.Severity.ERROR):
                self.errors.append(msg.strip().splitlines()[0] if msg.strip() else "")

    return Collect()


def _capability(trt, cc: str):
    name = "SM" + cc.replace(".", "")
    if not hasattr(trt.ComputeCapability, name):
        known = [n[2:-1] + "." + n[-1] for n in dir(trt.ComputeCapability) if n.startswith("SM")]
        raise PoseEdgeError(f"TensorRT-RTX cannot target compute capability {cc}; it targets {', '.join(known)}")
    return getattr(trt.ComputeCapability, name)


def _dtype(dt) -> str:
    return _DTYPE_NAMES.get(str(dt).split(".")[-1], str(dt).split(".")[-1].lower())


def parse_batch(text: str | None, default=(1, 1, 8)) -> tuple[int, int, int]:
    """'MIN:OPT:MAX' (or one number N for 1:N:N) -> (min, opt, max) with 1 <= min <= opt <= max."""
    if text is None:
        return default
    try:
        parts = [int(p) for p in str(text).split(":")]
        lo, opt, hi = (1, parts[0], parts[0]) if len(parts) == 1 else parts
        if not 1 <= lo <= opt <= hi:
            raise ValueError
    except ValueError:
        raise PoseEdgeError(f"--batch expects MIN:OPT:MAX with 1 <= MIN <= OPT <= MAX (e.g. 1:8:32), got {text!r}"
                            ) from None
    return lo, opt, hi


def build_engine(onnx_path: str | Path, engine_path: str | Path, info: GraphInfo, *, batch=(1, 1, 8),
                 workspace: int = DEFAULT_WORKSPACE, timing_cache: str | Path | None = None,
                 compute_capabilities: tuple[str, ...] | None = None, rebuild: str = "pose-edge export RUN --engine trt",
                 module: str | None = None) -> EngineSidecar:
    """Build `onnx_path` into `engine_path` (+ sidecar) and return the sidecar. Nothing is written if it fails."""
    from pose_edge.runtime.gpu import gpu_status

    trt, trt_name = import_tensorrt(module)
    has_gpu, why = gpu_status()
    gpu_name = None
    if trt_name == "tensorrt" and not has_gpu:
        raise PoseEdgeError(f"TensorRT builds engines on the GPU they are for, and there is none here ({why}); "
                            "TensorRT-RTX (`pip install tensorrt-rtx`, POSE_EDGE_TRT=tensorrt_rtx) builds without one")
    if has_gpu:
        from pose_edge.runtime.gpu import gpu_identity

        gpu_name, current_cc = gpu_identity()
    if trt_name == "tensorrt":
        targets = [current_cc]
    else:
        targets = list(compute_capabilities or ([current_cc] if has_gpu else RTX_DEFAULT_TARGETS))

    start = time.perf_counter()
    logger = _logger(trt)
    builder = trt.Builder(logger)
    flag = getattr(trt.NetworkDefinitionCreationFlag, "STRONGLY_TYPED", None)
    network = builder.create_network(0 if flag is None else 1 << int(flag))
    parser = trt.OnnxParser(network, logger)
    if not parser.parse_from_file(str(onnx_path)):
        errs = [str(parser.get_error(i)).strip().splitlines()[0] for i in range(parser.num_errors)]
        raise PoseEdgeError(f"{trt_name} cannot parse {onnx_path}: {errs[0] if errs else 'unknown error'}")

    config = builder.create_builder_config()
    config.set_memory_pool_limit(trt.MemoryPoolType.WORKSPACE, int(workspace))
    if trt_name == "tensorrt_rtx":
        config.num_compute_capabilities = len(targets)
        for i, cc in enumerate(targets):
            config.set_compute_capability(_capability(trt, cc), i)
    cache = None
    if trt_name == "tensorrt":  # TensorRT-RTX tunes at run time; its timing-cache calls are documented no-ops
        data = Path(timing_cache).read_bytes() if timing_cache and Path(timing_cache).is_file() else b""
        cache = config.create_timing_cache(data)
        config.set_timing_cache(cache, ignore_mismatch=False)

    inp = network.get_input(0)
    h, w = info.meta.input.height, info.meta.input.width
    per_image = (h, w, 3) if info.input_format == "uint8_nhwc_bgr" else (3, h, w)
    profile = builder.create_optimization_profile()
    shapes = {k: (b, *per_image) for k, b in zip(("min", "opt", "max"), batch)}
    profile.set_shape(inp.name, shapes["min"], shapes["opt"], shapes["max"])
    config.add_optimization_profile(profile)

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        serialized = builder.build_serialized_network(network, config)
    if serialized is None:
        raise PoseEdgeError(f"{trt_name} could not build an engine from {onnx_path}: "
                            f"{logger.errors[-1] if logger.errors else 'no reason given'}")
    seconds = time.perf_counter() - start

    outputs = [{"name": network.get_output(i).name, "dtype": _dtype(network.get_output(i).dtype),
                "shape": list(network.get_output(i).shape)} for i in range(network.num_outputs)]
    serialized = bytes(serialized)
    onnx_path, engine_path = Path(onnx_path), Path(engine_path)
    rel_onnx = os.path.relpath(onnx_path.resolve(), engine_path.resolve().parent)
    sidecar = EngineSidecar(
        trt_module=trt_name, trt_version=trt.__version__, gpu_name=gpu_name, compute_capabilities=targets,
        precision=info.precision, input_name=inp.name, input_dtype=_dtype(inp.dtype),
        profile={k: list(v) for k, v in shapes.items()}, outputs=outputs, onnx_path=rel_onnx,
        onnx_sha256=file_sha256(onnx_path), engine_sha256=hashlib.sha256(serialized).hexdigest(), graph=info.to_dict(),
        rebuild=rebuild, workspace_bytes=int(workspace),
        build_seconds=round(seconds, 2), built_at=datetime.datetime.now().isoformat(timespec="seconds"),
        extra={"strongly_typed": True, "timing_cache": str(timing_cache) if cache is not None else None})
    # Engine first, then its sidecar: a kill in between leaves an engine whose old (or missing) sidecar does not
    # record its hash, which loading refuses with the rebuild command.
    atomic_write_bytes(engine_path, serialized)
    try:
        sidecar.write(engine_path)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            engine_path.unlink()  # an engine without its sidecar would only be refused later
        raise
    if cache is not None and timing_cache:
        atomic_write_bytes(timing_cache, bytes(cache.serialize()))
    return sidecar
