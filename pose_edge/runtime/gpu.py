"""The GPU as the runtime sees it: is there one, which is it, and the one checker every CUDA driver call goes through.

Asked of the driver directly (ctypes on libcuda), so the answer needs neither torch nor TensorRT. Constructing a
TensorRT runtime without a GPU can crash the process, so everything GPU-side asks here first.
"""

from __future__ import annotations

import ctypes
import functools

from pose_edge.errors import PoseEdgeError


class CudaError(PoseEdgeError):
    """A CUDA driver call failed."""


@functools.lru_cache(maxsize=1)
def gpu_status() -> tuple[bool, str]:
    """(True, "<n> CUDA device(s)") or (False, why not)."""
    try:
        libcuda = ctypes.CDLL("libcuda.so.1")
    except OSError:
        return False, "no NVIDIA driver (libcuda.so.1 not found)"
    rc = libcuda.cuInit(0)
    if rc != 0:
        return False, f"the NVIDIA driver did not initialise (cuInit error {rc})"
    count = ctypes.c_int(0)
    rc = libcuda.cuDeviceGetCount(ctypes.byref(count))
    if rc != 0 or count.value == 0:
        return False, "the NVIDIA driver reports no CUDA device"
    return True, f"{count.value} CUDA device(s)"


def gpu_available() -> bool:
    return gpu_status()[0]


def gpu_identity(ordinal: int = 0) -> tuple[str, str]:
    """(GPU name, compute capability "major.minor") from the driver, without TensorRT or torch."""
    ok, why = gpu_status()
    if not ok:
        raise PoseEdgeError(f"no GPU: {why}")
    libcuda = ctypes.CDLL("libcuda.so.1")
    device = ctypes.c_int()
    name = ctypes.create_string_buffer(256)
    major, minor = ctypes.c_int(), ctypes.c_int()
    if (libcuda.cuDeviceGet(ctypes.byref(device), ordinal) or libcuda.cuDeviceGetName(name, 256, device)
            or libcuda.cuDeviceGetAttribute(ctypes.byref(major), 75, device)  # ..._COMPUTE_CAPABILITY_MAJOR
            or libcuda.cuDeviceGetAttribute(ctypes.byref(minor), 76, device)):  # ..._COMPUTE_CAPABILITY_MINOR
        raise PoseEdgeError(f"the CUDA driver cannot describe GPU {ordinal}")
    return name.value.decode(errors="replace"), f"{major.value}.{minor.value}"


def driver():
    """cuda-python's driver module (cuda-bindings), or a one-line error saying how to install it."""
    try:
        from cuda.bindings import driver as cuda_driver
    except ImportError:
        raise PoseEdgeError("GPU decoding and TensorRT engines need cuda-python: pip install 'pose-edge[trt]'"
                            ) from None
    return cuda_driver


def check(result, what: str):
    """Unwrap a cuda-python result tuple (err, *values), raising CudaError with the driver's name for err."""
    drv = driver()
    err = result[0] if isinstance(result, tuple) else result
    if err != drv.CUresult.CUDA_SUCCESS:
        name = drv.cuGetErrorName(err)
        label = name[1].decode() if name[0] == drv.CUresult.CUDA_SUCCESS else str(err)
        raise CudaError(f"{what} failed: {label}")
    if not isinstance(result, tuple) or len(result) == 1:
        return None
    return result[1] if len(result) == 2 else result[1:]
