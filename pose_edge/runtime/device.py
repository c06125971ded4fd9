"""Is there a usable NVIDIA GPU? Asked of the driver directly, so that the answer needs neither torch nor TensorRT.

Constructing a TensorRT runtime without a GPU can crash the process, so everything GPU-side asks here first.
"""

from __future__ import annotations

import ctypes
import functools


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
