"""The CPU emulation as a device: the kernel headers built by g++ (build.build_emulation), driven through ctypes.

`EmulatedDevice` has the same methods as `cuda_device.CudaDevice`, so the launch plans in launch.py run unchanged on
either; "device memory" here is host memory held by NumPy arrays, and a pointer is the array's address. Launches are
synchronous. Used by the tests (tier B: the same kernel source against the NumPy references) and by anyone who wants
to step through a kernel on a machine without a GPU.
"""

from __future__ import annotations

import ctypes
import os
from pathlib import Path

import numpy as np

from pose_edge.errors import PoseEdgeError

_LAUNCH_ERRORS = {
    1: "a launch configuration the GPU would refuse (block > 1024 threads, empty grid, or > 48 KiB dynamic shared)",
    -1: "no such kernel in the emulation library",
    -2: "the parameter block's size differs from the kernel's (params.py and params.h disagree)",
}


def _load_library(path: Path) -> ctypes.CDLL:
    lib = ctypes.CDLL(str(path))
    lib.pe_emu_launch.restype = ctypes.c_int
    lib.pe_emu_launch.argtypes = [ctypes.c_char_p] + [ctypes.c_uint] * 6 + [ctypes.c_ulonglong, ctypes.c_void_p,
                                                                           ctypes.c_ulonglong]
    lib.pe_emu_kernel_count.restype = ctypes.c_int
    lib.pe_emu_kernel_name.restype = ctypes.c_char_p
    lib.pe_emu_kernel_name.argtypes = [ctypes.c_int]
    lib.pe_emu_layout_count.restype = ctypes.c_int
    lib.pe_emu_layout_entry.restype = None
    lib.pe_emu_layout_entry.argtypes = [ctypes.c_int, ctypes.POINTER(ctypes.c_char_p), ctypes.POINTER(ctypes.c_char_p),
                                        ctypes.POINTER(ctypes.c_ulonglong), ctypes.POINTER(ctypes.c_ulonglong)]
    return lib


class EmulatedDevice:
    """Kernels on the CPU. library: a built libpe_emu*.so; default: $PE_EMU_LIBRARY, else build (cached)."""

    name = "CPU emulation"

    def __init__(self, library: str | os.PathLike | None = None):
        if library is None:
            library = os.environ.get("PE_EMU_LIBRARY")
        if library is None:
            from pose_edge.kernels.build import build_emulation

            library = build_emulation()
        self.library_path = Path(library)
        self._lib = _load_library(self.library_path)
        self._buffers: dict[int, np.ndarray] = {}
        self.launches: list[str] = []  # kernel names in launch order (what a test can check)
        self.to_host: list[int] = []  # bytes of every device-to-host copy

    # memory -------------------------------------------------------------------------------------------------
    def alloc(self, nbytes: int) -> int:
        """A zero-filled buffer of nbytes (at least 1); returns its address. Aligned to 256 like cuMemAlloc."""
        raw = np.zeros(int(nbytes) + 256, np.uint8)
        offset = (-raw.ctypes.data) % 256
        buf = raw[offset:offset + max(int(nbytes), 1)]
        ptr = buf.ctypes.data
        self._buffers[ptr] = raw
        return ptr

    def free(self, ptr: int) -> None:
        self._buffers.pop(ptr, None)

    def upload(self, array: np.ndarray) -> int:
        array = np.ascontiguousarray(array)
        ptr = self.alloc(array.nbytes)
        ctypes.memmove(ptr, array.ctypes.data, array.nbytes)
        return ptr

    def copy_to_device(self, ptr: int, array: np.ndarray) -> None:
        array = np.ascontiguousarray(array)
        ctypes.memmove(ptr, array.ctypes.data, array.nbytes)

    def copy_to_host(self, out: np.ndarray, ptr: int) -> np.ndarray:
        if not out.flags.c_contiguous:
            raise ValueError("copy_to_host needs a contiguous array")
        self.to_host.append(out.nbytes)
        ctypes.memmove(out.ctypes.data, ptr, out.nbytes)
        return out

    def memset(self, ptr: int, value: int, nbytes: int) -> None:
        ctypes.memset(ptr, value, nbytes)

    def synchronize(self) -> None:
        """Launches are synchronous here."""

    # kernels ------------------------------------------------------------------------------------------------
    def kernel_names(self) -> list[str]:
        return [self._lib.pe_emu_kernel_name(i).decode() for i in range(self._lib.pe_emu_kernel_count())]

    def launch(self, kernel: str, grid: tuple[int, int, int], block: tuple[int, int, int], shared_bytes: int,
               params: ctypes.Structure) -> None:
        self.launches.append(kernel)
        rc = self._lib.pe_emu_launch(kernel.encode(), *grid, *block, shared_bytes, ctypes.addressof(params),
                                     ctypes.sizeof(params))
        if rc != 0:
            raise PoseEdgeError(f"emulated launch of {kernel} grid={grid} block={block} shared={shared_bytes}: "
                                f"{_LAUNCH_ERRORS.get(rc, f'error {rc}')}")

    def c_layout(self) -> dict[str, dict[str, tuple[int, int]]]:
        """{struct: {field: (offset, size)}} as g++ lays out params.h ("" -> (0, sizeof))."""
        out: dict[str, dict[str, tuple[int, int]]] = {}
        s, f = ctypes.c_char_p(), ctypes.c_char_p()
        off, size = ctypes.c_ulonglong(), ctypes.c_ulonglong()
        for i in range(self._lib.pe_emu_layout_count()):
            self._lib.pe_emu_layout_entry(i, ctypes.byref(s), ctypes.byref(f), ctypes.byref(off), ctypes.byref(size))
            out.setdefault(s.value.decode(), {})[f.value.decode()] = (off.value, size.value)
        return out
