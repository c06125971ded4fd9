"""ONNX Runtime backend: an exported .onnx (FP32, FP16 or INT8 Q/DQ) as a Backend.

Reads the pose-edge metadata inside the model (pose_edge.model_meta), feeds the graph the input format it
declares and returns the outputs as float32 numpy arrays, batch-first, in forward's order. FP16 graphs return FP16
outputs (what a GPU decoder reads most cheaply); they are widened here because the NumPy decoders work in float32.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pose_edge.errors import ArtifactError
from pose_edge.model_meta import GraphInfo
from pose_edge.runtime.backend import prepare_input
from pose_edge.runtime.gpu import gpu_available, gpu_status

# Providers in the order we prefer them; ONNX Runtime silently falls back to the CPU, so `providers` (what the session
# really got) is what to report, never what was asked for.
PREFERRED_PROVIDERS = ("CUDAExecutionProvider", "CPUExecutionProvider")


def _one_line(e: Exception) -> str:
    text = str(e).strip().splitlines()
    return text[0] if text else type(e).__name__


_ORT_TYPES = {"tensor(uint8)": "uint8", "tensor(float)": "float32", "tensor(float16)": "float16"}


def _io(arg) -> tuple[str, tuple]:
    """An ONNX Runtime NodeArg as (dtype name, shape with None or a name for dynamic axes)."""
    return _ORT_TYPES.get(arg.type, arg.type), tuple(arg.shape)


class OrtBackend:
    """run(uint8 [N, H, W, 3] BGR) -> list of float32 outputs. meta: ModelMeta; info: GraphInfo; providers: used."""

    def __init__(self, path: str | Path, providers: tuple[str, ...] | None = None, threads: int | None = None,
                 device_id: int = 0):
        import onnxruntime as ort

        self.path = Path(path)
        if not self.path.is_file():
            raise ArtifactError(f"{self.path}: no such ONNX model")
        options = ort.SessionOptions()
        options.log_severity_level = 3  # errors only; the warnings about unused initialisers are noise here
        if threads:
            options.intra_op_num_threads = threads
        # No spinning between runs: a top-down frame runs two sessions back to back (detector, then pose model), and
        # the first one's idle threads spun on the cores the second needed. Measured once on the 2-core build
        # machine, CPU, sb-r18-128x96 + det-tiny FP32 end to end: 29.4 -> 19.6 ms (1 person), 94.7 -> 54.4 ms (5);
        # kapao-tiny and kapao-s (one session) unchanged within the noise of that run.
        options.add_session_config_entry("session.intra_op.allow_spinning", "0")
        available = set(ort.get_available_providers())
        if not gpu_available():  # the GPU build lists CUDA even without a driver, then logs a page of errors
            available -= {"CUDAExecutionProvider", "TensorrtExecutionProvider"}
        requested = tuple(providers or PREFERRED_PROVIDERS)
        wanted = [p for p in requested if p in available] or ["CPUExecutionProvider"]
        provider_options = [{"device_id": device_id} if p == "CUDAExecutionProvider" else {} for p in wanted]
        try:
            self.session = ort.InferenceSession(str(self.path), options, providers=wanted,
                                                provider_options=provider_options)
        except Exception as e:  # ORT raises its own exception types (InvalidProtobuf, Fail, ...) with long messages
            raise ArtifactError(f"{self.path}: ONNX Runtime cannot load it, the file is corrupt, truncated or not an "
                                f"ONNX model ({_one_line(e)}); re-export it with `pose-edge export`") from None
        self.providers = tuple(self.session.get_providers())
        if providers is not None and "CPUExecutionProvider" not in requested and self.providers[0] not in requested:
            ok, why = gpu_status()
            why = "the CUDA provider did not load: its CUDA and cuDNN libraries are missing" if ok else why
            raise ArtifactError(f"{self.path}: asked for {', '.join(requested)}, but ONNX Runtime would run it on "
                                f"{self.providers[0]} ({why}); use device='cpu'")
        self.info = GraphInfo.from_metadata_map(self.session.get_modelmeta().custom_metadata_map, str(self.path))
        self.info.check_graph([_io(i) for i in self.session.get_inputs()],
                              [_io(o) for o in self.session.get_outputs()], str(self.path))
        self.meta = self.info.meta
        self.dynamic_size = self.info.dynamic_size  # H, W other than meta.input: multiples of the largest stride
        self.input_name = self.session.get_inputs()[0].name
        self.output_names = [o.name for o in self.session.get_outputs()]

    def run(self, images: np.ndarray) -> list[np.ndarray]:
        """images: uint8 [N, H, W, 3] BGR at meta.input size -> the network's raw outputs as float32, batch-first."""
        feed = {self.input_name: prepare_input(images, self.info)}
        outputs = self.session.run(self.output_names, feed)
        return [o if o.dtype == np.float32 else o.astype(np.float32) for o in outputs]

    def __repr__(self) -> str:
        return f"OrtBackend({self.path.name}, {self.info.precision}, {','.join(self.providers)})"
