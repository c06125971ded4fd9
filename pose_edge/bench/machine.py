"""What a benchmark ran on: CPU, cores and load, GPU, driver and CUDA, runtime versions, power mode. Figures mean
nothing without it. Everything is read without importing TensorRT or torch (versions come from package metadata),
and anything unreadable is left out rather than guessed."""

from __future__ import annotations

import ctypes
import importlib.metadata
import os
import platform
import shutil
import subprocess
import time
from pathlib import Path

from pose_edge.runtime.gpu import gpu_identity, gpu_status

PACKAGES = ("numpy", "opencv-python-headless", "onnxruntime", "onnxruntime-gpu", "tensorrt", "tensorrt-rtx",
            "cuda-bindings", "torch")


def _first_line(path: str, prefix: str = "") -> str | None:
    try:
        for line in Path(path).read_text(errors="replace").splitlines():
            if line.startswith(prefix):
                return line.split(":", 1)[1].strip() if prefix else line.strip()
    except OSError:
        return None
    return None


def cpu_model() -> str:
    """The CPU's model name (x86 "model name", Arm "Hardware" in /proc/cpuinfo), else what platform knows."""
    return (_first_line("/proc/cpuinfo", "model name") or _first_line("/proc/cpuinfo", "Hardware")
            or platform.processor() or platform.machine())


def _command(*argv: str) -> str | None:
    """The first line of a command's output, or None when it is missing or fails (a few seconds at most)."""
    if shutil.which(argv[0]) is None:
        return None
    try:
        out = subprocess.run(argv, capture_output=True, text=True, timeout=10, check=True).stdout.strip()
    except (OSError, subprocess.SubprocessError):
        return None
    return out or None


def versions() -> dict[str, str]:
    found = {}
    for name in PACKAGES:
        try:
            found[name] = importlib.metadata.version(name)
        except importlib.metadata.PackageNotFoundError:
            continue
    return found


def cuda_driver_version() -> str | None:
    """The CUDA version the driver supports ("13.0"), from libcuda directly."""
    try:
        lib = ctypes.CDLL("libcuda.so.1")
        v = ctypes.c_int()
        if lib.cuDriverGetVersion(ctypes.byref(v)) != 0:
            return None
    except OSError:
        return None
    return f"{v.value // 1000}.{v.value % 1000 // 10}"


def gpu() -> dict:
    ok, why = gpu_status()
    if not ok:
        return {"present": False, "why": why}
    name, cc = gpu_identity(0)
    out = {"present": True, "name": name, "compute_capability": cc, "cuda_driver_api": cuda_driver_version()}
    smi = _command("nvidia-smi", "--query-gpu=driver_version,power.limit,clocks.max.sm,memory.total",
                   "--format=csv,noheader")
    if smi:
        fields = [f.strip() for f in smi.split(",")]
        out.update(dict(zip(("driver", "power_limit", "max_sm_clock", "memory"), fields)))
    return out


def power_mode() -> dict:
    """Jetson nvpmodel mode and the CPU frequency governor, where readable."""
    out = {}
    mode = _command("nvpmodel", "-q")
    if mode:
        out["nvpmodel"] = mode
    jetson = _first_line("/etc/nv_tegra_release")
    if jetson:
        out["jetson_release"] = jetson
    governor = _first_line("/sys/devices/system/cpu/cpu0/cpufreq/scaling_governor")
    if governor:
        out["cpu_governor"] = governor
    return out


def describe_machine() -> dict:
    """The machine now: a dict of plain values (JSON-ready)."""
    try:
        usable = len(os.sched_getaffinity(0))
    except AttributeError:  # not on Linux
        usable = os.cpu_count()
    return {
        "date": time.strftime("%Y-%m-%d %H:%M:%S %Z"),
        "host": platform.node(),
        "platform": platform.platform(),
        "cpu": cpu_model(),
        "cores": os.cpu_count(),
        "cores_usable": usable,
        "load_average_1_5_15": [round(v, 2) for v in os.getloadavg()],
        "python": platform.python_version(),
        "versions": versions(),
        "gpu": gpu(),
        "power": power_mode(),
    }


def describe_short(machine: dict) -> str:
    """One line: CPU, cores, GPU, load."""
    g = machine["gpu"]
    gpu_text = f"{g['name']} (driver {g.get('driver', '?')}, CUDA {g.get('cuda_driver_api', '?')})" if g["present"] \
        else "no GPU"
    return (f"{machine['cpu']}, {machine['cores']} cores, {gpu_text}, load average "
            f"{machine['load_average_1_5_15'][0]}")
