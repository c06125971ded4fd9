"""TensorRT backend: a `.engine` built by `pose-edge export --engine trt` as a Backend.

Before anything of TensorRT is touched: the sidecar (`.engine.json`) must exist, be well formed and name an allowed
TensorRT module, and record the sha256 of the very bytes that will be deserialised (a sidecar swapped from another
engine is refused); gpu_status() must report a GPU (constructing a TensorRT runtime without one can crash the
process); and the sidecar must match this machine's TensorRT (module and version), this GPU's compute capability (and,
for full TensorRT, its name) and the source ONNX's hash where the ONNX is present
(pose_edge.runtime.engine_sidecar). A mismatch is one ArtifactError line with the command that rebuilds the engine.

Device memory and the stream are owned by the backend and released by close() (or `with TrtBackend(...) as b:`);
every CUDA driver call goes through pose_edge.runtime.gpu.check. Outputs come back as float32 numpy arrays
(FP16 engines output FP16; the GPU decode stages read those buffers where they lie, through `run_device`).

Nothing in this file has run on a GPU on the machine it was written on (no GPU there): tests marked `gpu` cover it.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np

from pose_edge.errors import ArtifactError, PoseEdgeError
from pose_edge.runtime.backend import prepare_input
from pose_edge.runtime.engine_sidecar import TRT_MODULES, EngineSidecar, check_sidecar, verify_engine
from pose_edge.runtime.gpu import check, gpu_identity, gpu_status
from pose_edge.runtime.gpu import driver as cuda_driver

_NP_DTYPES = {"float32": np.float32, "float16": np.float16, "uint8": np.uint8, "int8": np.int8, "int32": np.int32,
              "int64": np.int64, "bool": np.bool_}


def _import(module: str):
    if module not in TRT_MODULES:  # EngineSidecar.read refuses it already; never import a name read from a file
        raise ArtifactError(f"unknown TensorRT module {module!r}; expected one of {', '.join(TRT_MODULES)}")
    try:
        if module == "tensorrt":
            import tensorrt
            return tensorrt
        import tensorrt_rtx
        return tensorrt_rtx
    except (ImportError, OSError) as e:
        raise ArtifactError(f"this engine needs the Python module {module!r}, which does not import here ({e})"
                            ) from None


class TrtBackend:
    """run(uint8 [N, H, W, 3] BGR) -> float32 outputs, batch-first. meta, info (GraphInfo), sidecar."""

    def __init__(self, engine_path: str | Path, device: int = 0):
        self.path = Path(engine_path)
        if not self.path.is_file():
            raise ArtifactError(f"{self.path}: no such engine")
        self.sidecar = EngineSidecar.read(self.path)
        self.info = self.sidecar.graph_info
        self.meta = self.info.meta
        self.dynamic_size = False  # the build fixes H and W at the model's input size (export/trt_build.py)
        try:
            engine_bytes = self.path.read_bytes()
        except OSError as e:
            raise ArtifactError(f"{self.path}: cannot read the engine ({e.strerror})") from None
        verify_engine(self.sidecar, self.path, engine_bytes)
        ok, why = gpu_status()
        if not ok:
            raise ArtifactError(f"{self.path}: a TensorRT engine needs an NVIDIA GPU ({why}); run the ONNX model "
                                f"{self.sidecar.onnx_path} with ONNX Runtime instead")
        trt = _import(self.sidecar.trt_module)
        gpu_name, cc = gpu_identity(device)
        check_sidecar(self.sidecar, self.path, self.sidecar.trt_module, trt.__version__, gpu_name, cc)

        driver = cuda_driver()
        self._drv, self._check = driver, check
        self._buffers: dict[str, tuple[int, int]] = {}  # name -> (device pointer, bytes)
        self._ctx = None
        self.stream = None
        check(driver.cuInit(0), "cuInit")
        self._dev = check(driver.cuDeviceGet(device), "cuDeviceGet")
        self._ctx = check(driver.cuDevicePrimaryCtxRetain(self._dev), "cuDevicePrimaryCtxRetain")
        check(driver.cuCtxSetCurrent(self._ctx), "cuCtxSetCurrent")
        self.stream = check(driver.cuStreamCreate(driver.CUstream_flags.CU_STREAM_NON_BLOCKING), "cuStreamCreate")

        self._logger = trt.Logger(trt.Logger.ERROR)
        self._runtime = trt.Runtime(self._logger)
        self.engine = self._runtime.deserialize_cuda_engine(engine_bytes)
        if self.engine is None:
            self.close()
            raise ArtifactError(f"{self.path}: TensorRT cannot deserialise it (truncated or corrupt); rebuild it with "
                                f"`{self.sidecar.rebuild}`")
        self.context = self.engine.create_execution_context()
        self.input_name = self.sidecar.input_name
        self.output_names = [o["name"] for o in self.sidecar.outputs]
        self._trt = trt
        self.device_outputs: dict[str, tuple[int, tuple, np.dtype]] = {}  # name -> (pointer, shape, dtype)

    # memory -------------------------------------------------------------------------------------------------
    def _buffer(self, name: str, nbytes: int) -> int:
        ptr, size = self._buffers.get(name, (0, 0))
        if size < nbytes:
            if ptr:
                self._check(self._drv.cuMemFree(self._drv.CUdeviceptr(ptr)), "cuMemFree")
            ptr = int(self._check(self._drv.cuMemAlloc(max(nbytes, 1)), f"cuMemAlloc({nbytes})"))
            self._buffers[name] = (ptr, nbytes)
        return ptr

    def close(self) -> None:
        drv = self._drv
        for ptr, _ in self._buffers.values():
            self._check(drv.cuMemFree(drv.CUdeviceptr(ptr)), "cuMemFree")
        self._buffers = {}
        if self.stream is not None:
            self._check(drv.cuStreamDestroy(self.stream), "cuStreamDestroy")
            self.stream = None
        if self._ctx is not None:
            self._check(drv.cuDevicePrimaryCtxRelease(self._dev), "cuDevicePrimaryCtxRelease")
            self._ctx = None

    def __enter__(self) -> "TrtBackend":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # inference ----------------------------------------------------------------------------------------------
    def run_device(self, images: np.ndarray) -> list[tuple[int, tuple, np.dtype]]:
        """Copy the batch to the GPU and run the engine on self.stream; the outputs stay on the device, returned as
        (pointer, shape, dtype) in forward's order, valid until the next call. A GPU decode stage sharing the stream
        (CudaDevice(stream=int(backend.stream))) reads them where they lie."""
        x = np.ascontiguousarray(prepare_input(images, self.info))
        lo, hi = self.sidecar.profile["min"][0], self.sidecar.profile["max"][0]
        if not lo <= len(x) <= hi:
            raise PoseEdgeError(f"{self.path.name} was built for batches of {lo} to {hi}, got {len(x)}; rebuild it "
                                f"with --batch")
        drv, check = self._drv, self._check
        self.context.set_input_shape(self.input_name, x.shape)
        ptr = self._buffer(self.input_name, x.nbytes)
        check(drv.cuMemcpyHtoDAsync(drv.CUdeviceptr(ptr), x.ctypes.data, x.nbytes, self.stream), "cuMemcpyHtoDAsync")
        self.context.set_tensor_address(self.input_name, ptr)
        self.device_outputs = {}
        for name in self.output_names:
            shape = tuple(self.context.get_tensor_shape(name))
            dtype = np.dtype(self._trt.nptype(self.engine.get_tensor_dtype(name)))
            nbytes = int(np.prod(shape)) * dtype.itemsize
            out = self._buffer(name, nbytes)
            self.context.set_tensor_address(name, out)
            self.device_outputs[name] = (out, shape, dtype)
        if not self.context.execute_async_v3(int(self.stream)):
            raise PoseEdgeError(f"{self.path.name}: TensorRT failed to enqueue the batch")
        check(drv.cuStreamSynchronize(self.stream), "cuStreamSynchronize")  # the host input may go after this
        return [self.device_outputs[name] for name in self.output_names]

    def run(self, images: np.ndarray) -> list[np.ndarray]:
        """images: uint8 [N, H, W, 3] BGR -> the network's raw outputs as float32, batch-first."""
        drv, check = self._drv, self._check
        outs = []
        for ptr, shape, dtype in self.run_device(images):
            host = np.empty(shape, dtype)
            check(drv.cuMemcpyDtoHAsync(host.ctypes.data, drv.CUdeviceptr(ptr), host.nbytes, self.stream),
                  "cuMemcpyDtoHAsync")
            outs.append(host)
        check(drv.cuStreamSynchronize(self.stream), "cuStreamSynchronize")
        return [o if o.dtype == np.float32 else o.astype(np.float32) for o in outs]

    def __repr__(self) -> str:
        return f"TrtBackend({self.path.name}, {self.info.precision}, {self.sidecar.trt_module} {self.sidecar.trt_version})"
