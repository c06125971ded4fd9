"""The GPU as a device for the launch plans: cuda-python's driver API, one context, one stream, one module.

Every driver call goes through `check`, and every launch is checked when it is queued (and, with
POSE_EDGE_SYNC_LAUNCHES=1, synchronised and checked again, so that a fault names the kernel that caused it).

Which GPU code is loaded (`load_module`), first that works:
  1. a fatbin shipped in the package (kernels/pose_kernels.fatbin, with a .json naming the sources' hash) or built
     into the cache by `python -m pose_edge.kernels.build`, if its hash matches the sources installed here; the
     driver picks the SASS for this GPU or JIT-compiles the compute_120 PTX on a newer one;
  2. NVRTC (the nvidia-cuda-nvrtc wheel) compiles the same source for this GPU's sm_XX (cached cubin);
  3. NVRTC PTX for the newest arch it knows, JIT-compiled by the driver.
Nothing here has run on a GPU on the machine this was written on (it has none): tests marked `gpu` exercise it.
"""

from __future__ import annotations

import ctypes
import json
import os
from pathlib import Path

import numpy as np
from pose_edge.kernels import build

from pose_edge.errors import PoseEdgeError
from pose_edge.runtime.gpu import check, gpu_status
from pose_edge.runtime.gpu import driver as _driver


def _load_image(driver, image: bytes, ptx: bool = False):
    """cuModuleLoadData on an in-memory cubin/fatbin (or PTX text) -> (module or None, error name or None)."""
    buf = np.frombuffer(image + b"\0" if ptx else image, np.uint8)  # PTX is read as a NUL-terminated string
    err, module = driver.cuModuleLoadData(buf.ctypes.data)
    if err != driver.CUresult.CUDA_SUCCESS:
        return None, str(err)
    return module, None


def fatbin_candidates() -> list[Path]:
    """Fatbins built from exactly these sources: shipped beside them, then in the cache."""
    key = build.fatbin_hash()
    found = []
    shipped = build.KERNEL_DIR / build.FATBIN_NAME
    sidecar = shipped.with_name(build.FATBIN_NAME + ".json")
    if shipped.exists() and sidecar.exists():
        try:
            if json.loads(sidecar.read_text()).get("hash") == key:
                found.append(shipped)
        except (OSError, ValueError):
            pass
    cached = build.cache_root() / f"fatbin-{key}" / build.FATBIN_NAME
    if cached.exists():
        found.append(cached)
    return found


def load_module(driver, arch: int):
    """-> (CUmodule, where it came from). Raises PoseEdgeError listing every attempt when nothing loads."""
    tried = []
    for path in fatbin_candidates():
        module, err = _load_image(driver, path.read_bytes())
        if module is not None:
            return module, f"fatbin {path}"
        tried.append(f"{path}: {err}")
    try:
        cubin = build.cached_nvrtc_cubin(arch)
        module, err = _load_image(driver, cubin.read_bytes())
        if module is not None:
            return module, f"NVRTC sm_{arch} ({cubin})"
        tried.append(f"NVRTC sm_{arch}: {err}")
    except PoseEdgeError as e:
        tried.append(f"NVRTC sm_{arch}: {e}")
    try:
        from cuda.bindings import nvrtc

        archs = check(nvrtc.nvrtcGetSupportedArchs(), "nvrtcGetSupportedArchs")
        newest = max(a for a in archs if a <= arch) if any(a <= arch for a in archs) else min(archs)
        ptx = build.cached_nvrtc_cubin(newest, ptx=True)
        module, err = _load_image(driver, ptx.read_bytes(), ptx=True)
        if module is not None:
            return module, f"NVRTC compute_{newest} PTX, JIT-compiled ({ptx})"
        tried.append(f"NVRTC compute_{newest} PTX: {err}")
    except (PoseEdgeError, ImportError) as e:
        tried.append(f"NVRTC PTX: {e}")
    raise PoseEdgeError(f"no GPU code for sm_{arch} could be loaded: " + "; ".join(tried))


class CudaDevice:
    """One GPU: primary context, a stream (its own, or a handle you pass), the kernels module. A context manager.

    Methods match emulator.EmulatedDevice: alloc/free/upload/copy_to_device/copy_to_host/memset/launch/synchronize.
    Copies from/to host arrays are queued on the stream; call synchronize() before reading a host result.
    """

    def __init__(self, ordinal: int = 0, stream: int | None = None):
        ok, why = gpu_status()
        if not ok:
            raise PoseEdgeError(f"the GPU decoders need an NVIDIA GPU: {why}")
        driver = self._drv = _driver()
        check(driver.cuInit(0), "cuInit")
        self._dev = check(driver.cuDeviceGet(ordinal), "cuDeviceGet")
        self._ctx = check(driver.cuDevicePrimaryCtxRetain(self._dev), "cuDevicePrimaryCtxRetain")
        check(driver.cuCtxSetCurrent(self._ctx), "cuCtxSetCurrent")
        attr = driver.CUdevice_attribute
        major = check(driver.cuDeviceGetAttribute(attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MAJOR, self._dev), "cc")
        minor = check(driver.cuDeviceGetAttribute(attr.CU_DEVICE_ATTRIBUTE_COMPUTE_CAPABILITY_MINOR, self._dev), "cc")
        self.arch = 10 * major + minor
        raw_name = check(driver.cuDeviceGetName(256, self._dev), "cuDeviceGetName")
        self.name = raw_name.split(b"\0")[0].decode(errors="replace")
        self._own_stream = stream is None
        if stream is None:
            self.stream = check(driver.cuStreamCreate(driver.CUstream_flags.CU_STREAM_NON_BLOCKING), "cuStreamCreate")
        else:
            self.stream = driver.CUstream(stream)
        self.module, self.module_origin = load_module(driver, self.arch)
        self._functions: dict[str, object] = {}
        self._sync_launches = os.environ.get("POSE_EDGE_SYNC_LAUNCHES") == "1"

    # lifetime -----------------------------------------------------------------------------------------------
    def close(self) -> None:
        drv = self._drv
        if getattr(self, "module", None) is not None:
            check(drv.cuModuleUnload(self.module), "cuModuleUnload")
            self.module = None
        if getattr(self, "_own_stream", False) and self.stream is not None:
            check(drv.cuStreamDestroy(self.stream), "cuStreamDestroy")
            self.stream = None
        if getattr(self, "_ctx", None) is not None:
            check(drv.cuDevicePrimaryCtxRelease(self._dev), "cuDevicePrimaryCtxRelease")
            self._ctx = None

    def __enter__(self) -> "CudaDevice":
        return self

    def __exit__(self, *exc) -> None:
        self.close()

    # memory -------------------------------------------------------------------------------------------------
    def alloc(self, nbytes: int) -> int:
        return int(check(self._drv.cuMemAlloc(max(int(nbytes), 1)), f"cuMemAlloc({nbytes})"))

    def free(self, ptr: int) -> None:
        check(self._drv.cuMemFree(self._drv.CUdeviceptr(ptr)), "cuMemFree")

    def upload(self, array: np.ndarray) -> int:
        array = np.ascontiguousarray(array)
        ptr = self.alloc(array.nbytes)
        self.copy_to_device(ptr, array)
        return ptr

    def copy_to_device(self, ptr: int, array: np.ndarray) -> None:
        array = np.ascontiguousarray(array)
        check(self._drv.cuMemcpyHtoDAsync(self._drv.CUdeviceptr(ptr), array.ctypes.data, array.nbytes, self.stream),
              "cuMemcpyHtoDAsync")
        self.synchronize()  # pageable source memory: do not let the array go before the copy has read it

    def copy_to_host(self, out: np.ndarray, ptr: int) -> np.ndarray:
        if not out.flags.c_contiguous:
            raise ValueError("copy_to_host needs a contiguous array")
        check(self._drv.cuMemcpyDtoHAsync(out.ctypes.data, self._drv.CUdeviceptr(ptr), out.nbytes, self.stream),
              "cuMemcpyDtoHAsync")
        return out

    def memset(self, ptr: int, value: int, nbytes: int) -> None:
        check(self._drv.cuMemsetD8Async(self._drv.CUdeviceptr(ptr), value, nbytes, self.stream), "cuMemsetD8Async")

    def synchronize(self) -> None:
        check(self._drv.cuStreamSynchronize(self.stream), "cuStreamSynchronize")

    # kernels ------------------------------------------------------------------------------------------------
    def _function(self, kernel: str):
        if kernel not in self._functions:
            self._functions[kernel] = check(self._drv.cuModuleGetFunction(self.module, kernel.encode()),
                                            f"cuModuleGetFunction({kernel})")
        return self._functions[kernel]

    def launch(self, kernel: str, grid: tuple[int, int, int], block: tuple[int, int, int], shared_bytes: int,
               params: ctypes.Structure) -> None:
        """Queue kernel(params) on the stream; the one argument is the parameter block, passed by value."""
        args = (ctypes.c_void_p * 1)(ctypes.addressof(params))
        what = f"launch of {kernel} grid={grid} block={block} shared={shared_bytes}"
        check(self._drv.cuLaunchKernel(self._function(kernel), *grid, *block, shared_bytes, self.stream,
                                       ctypes.addressof(args), 0), what)
        if self._sync_launches:
            check(self._drv.cuStreamSynchronize(self.stream), what + " (synchronised)")
