"""Builds the kernels: the GPU fatbin (nvcc), a cubin for one GPU (NVRTC), and the CPU emulation library (g++).

Everything lands in a cache keyed by a hash of the kernel sources and the flags, so a build runs once per change:
    $POSE_EDGE_KERNEL_CACHE, else $XDG_CACHE_HOME/pose-edge/kernels, else ~/.cache/pose-edge/kernels.

How the GPU code is built and shipped (see also loader.py):
  * `python -m pose_edge.kernels.build` runs one nvcc call for every target arch (sm_75 ... sm_120 as SASS, plus
    compute_120 PTX that newer GPUs JIT-compile), with `ptxas -v`, failing on spills or local memory, and caches
    pose_kernels.fatbin. `--out DIR` also writes the fatbin beside its sources' hash (e.g. into kernels/ before
    building a wheel; package data picks up *.fatbin). No binary is committed to git.
  * at run time the loader takes a shipped or cached fatbin whose hash matches the sources; otherwise NVRTC (the
    nvidia-cuda-nvrtc wheel) compiles the same source for the GPU at hand in well under a second, and that cubin is
    cached too. So a machine without nvcc still runs the kernels.
Compiler flags: --fmad=false on the GPU and -ffp-contract=off on the CPU, so that a*b+c rounds twice everywhere, as
NumPy does; no fast math.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

from pose_edge.errors import PoseEdgeError
from pose_edge.fsutil import atomic_write_bytes, atomic_write_text

KERNEL_DIR = Path(__file__).resolve().parent
GPU_SOURCE = "pose_kernels.cu"
EMULATION_SOURCE = "emulated_kernels.cpp"
HEADERS = ("pe_cuda.h", "params.h", "heatmap_decode.cuh", "kapao_decode.cuh")
EMULATION_HEADERS = ("emulation.h",)
FATBIN_NAME = "pose_kernels.fatbin"
RESOURCES_FILE = KERNEL_DIR / "ptxas_resources.json"

# SASS for each of these; PTX for the last one, which the driver JIT-compiles on newer GPUs.
ARCHS = (75, 80, 86, 87, 89, 90, 100, 110, 120)
PTX_ARCH = 120
COMMON_GPU_FLAGS = ("--fmad=false", "-std=c++17")
PTXAS_CHECKS = ("-v", "-warn-spills", "-warn-lmem-usage", "-Werror")
EMULATION_FLAGS = ("-std=c++20", "-O2", "-ffp-contract=off", "-fno-fast-math", "-fPIC", "-shared", "-pthread")
TSAN_FLAGS = ("-std=c++20", "-O1", "-g", "-ffp-contract=off", "-fPIC", "-shared", "-pthread", "-fsanitize=thread")


def cache_root() -> Path:
    if os.environ.get("POSE_EDGE_KERNEL_CACHE"):
        return Path(os.environ["POSE_EDGE_KERNEL_CACHE"])
    base = Path(os.environ.get("XDG_CACHE_HOME") or Path.home() / ".cache")
    return base / "pose-edge" / "kernels"


def source_hash(source_dir: Path = KERNEL_DIR, names=(GPU_SOURCE, *HEADERS), extra: tuple[str, ...] = ()) -> str:
    """A short hash of the named sources and anything else that changes the binary (flags, compiler version)."""
    digest = hashlib.sha256()
    for name in names:
        digest.update(name.encode())
        digest.update((Path(source_dir) / name).read_bytes())
    for item in extra:
        digest.update(item.encode())
    return digest.hexdigest()[:20]


def _run(cmd: list[str], what: str) -> subprocess.CompletedProcess:
    try:
        proc = subprocess.run(cmd, capture_output=True, text=True)
    except FileNotFoundError as e:
        raise PoseEdgeError(f"{what}: {cmd[0]} not found ({e}); install it or put it on PATH") from e
    if proc.returncode != 0:
        tail = (proc.stderr or proc.stdout).strip().splitlines()[-15:]
        raise PoseEdgeError(f"{what} failed (exit {proc.returncode}):\n" + "\n".join(tail))
    return proc


def _tool_version(cmd: list[str]) -> str:
    try:
        return subprocess.run(cmd, capture_output=True, text=True).stdout.strip().splitlines()[-1]
    except (FileNotFoundError, IndexError):
        return "missing"


# --------------------------------------------------------------------------------------------------------------
# GPU: nvcc fatbin with ptxas figures

def nvcc_arch_flags(archs=ARCHS, ptx_arch: int | None = PTX_ARCH) -> list[str]:
    flags = []
    for arch in archs:
        flags += ["-gencode", f"arch=compute_{arch},code=sm_{arch}"]
    if ptx_arch is not None:
        flags += ["-gencode", f"arch=compute_{ptx_arch},code=compute_{ptx_arch}"]
    return flags


_ENTRY = re.compile(r"Compiling entry function '(\w+)' for '(sm_\d+\w*)'")
_FRAME = re.compile(r"(\d+) bytes stack frame, (\d+) bytes spill stores, (\d+) bytes spill loads")
_USED = re.compile(r"Used (\d+) registers")
_SMEM = re.compile(r"(\d+) bytes smem")


def parse_ptxas(text: str) -> list[dict]:
    """`ptxas -v` output -> [{kernel, arch, registers, smem, stack, spill_stores, spill_loads}] in output order."""
    rows, current = [], None
    for line in text.splitlines():
        if m := _ENTRY.search(line):
            current = {"kernel": m.group(1), "arch": m.group(2), "registers": 0, "smem": 0, "stack": 0,
                       "spill_stores": 0, "spill_loads": 0}
            rows.append(current)
        elif current is not None and (m := _FRAME.search(line)):
            current["stack"], current["spill_stores"], current["spill_loads"] = map(int, m.groups())
        elif current is not None and (m := _USED.search(line)):
            current["registers"] = int(m.group(1))
            current["smem"] = int(s.group(1)) if (s := _SMEM.search(line)) else 0
    return rows


def nvcc_version() -> str:
    return _tool_version(["nvcc", "--version"])


def compile_fatbin(out: Path, source_dir: Path = KERNEL_DIR, archs=ARCHS, ptx_arch: int | None = PTX_ARCH,
                   threads: int = 2) -> list[dict]:
    """One nvcc call for all archs; raises PoseEdgeError on any error, spill or local-memory use. -> ptxas rows."""
    cmd = ["nvcc", "-fatbin", "-o", str(out), f"-I{source_dir}", *COMMON_GPU_FLAGS, "-O3", "--threads", str(threads),
           "-Xptxas", ",".join(PTXAS_CHECKS), *nvcc_arch_flags(archs, ptx_arch), str(Path(source_dir) / GPU_SOURCE)]
    proc = _run(cmd, "nvcc")
    rows = parse_ptxas(proc.stdout + proc.stderr)
    bad = [r for r in rows if r["spill_stores"] or r["spill_loads"] or r["stack"]]
    if bad:
        raise PoseEdgeError(f"kernels use local memory or spill: {bad}")
    return rows


def fatbin_hash(archs=ARCHS, ptx_arch: int | None = PTX_ARCH) -> str:
    """Names a fatbin by its sources, flags and targets (not the nvcc version, so that a machine without nvcc can
    check that a shipped fatbin matches the sources it has)."""
    return source_hash(extra=(*COMMON_GPU_FLAGS, *nvcc_arch_flags(archs, ptx_arch)))


def build_fatbin(archs=ARCHS, ptx_arch: int | None = PTX_ARCH, force: bool = False) -> tuple[Path, dict]:
    """The cached fatbin for the current sources (built if missing) and its figures {"nvcc", "rows"} (parse_ptxas)."""
    key = fatbin_hash(archs, ptx_arch)
    folder = cache_root() / f"fatbin-{key}"
    fatbin, figures = folder / FATBIN_NAME, folder / "ptxas.json"
    if force or not (fatbin.exists() and figures.exists()):
        folder.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryDirectory(dir=folder) as tmp:
            tmp_out = Path(tmp) / FATBIN_NAME
            rows = compile_fatbin(tmp_out, archs=archs, ptx_arch=ptx_arch)
            atomic_write_text(figures, json.dumps({"nvcc": nvcc_version(), "rows": rows}, indent=1))
            atomic_write_bytes(fatbin, tmp_out.read_bytes())
            atomic_write_text(folder / (FATBIN_NAME + ".json"), json.dumps({"hash": key}))
    return fatbin, json.loads(figures.read_text())


def resources_record(figures: dict) -> dict:
    """What kernels/ptxas_resources.json holds: the toolchain and, per kernel and arch, registers and static smem."""
    table: dict[str, dict[str, dict]] = {}
    for r in figures["rows"]:
        table.setdefault(r["kernel"], {})[r["arch"]] = {"registers": r["registers"], "smem": r["smem"],
                                                         "stack": r["stack"]}
    return {"nvcc": figures["nvcc"], "flags": list(COMMON_GPU_FLAGS) + ["-O3"], "kernels": table}


def resources_markdown(record: dict) -> str:
    archs = sorted({a for per in record["kernels"].values() for a in per}, key=lambda a: int(a[3:]))
    lines = ["| kernel | " + " | ".join(archs) + " |", "| --- |" + " --- |" * len(archs)]
    for name, per in sorted(record["kernels"].items()):
        cells = [f"{per[a]['registers']} r, {per[a]['smem']} B" if a in per else "" for a in archs]
        lines.append(f"| {name} | " + " | ".join(cells) + " |")
    return "\n".join(lines)


# --------------------------------------------------------------------------------------------------------------
# GPU: NVRTC for the GPU at hand (the fallback when no fatbin fits)

def nvrtc_compile(arch: int, source_dir: Path = KERNEL_DIR, ptx: bool = False, with_log: bool = False):
    """The GPU source compiled by NVRTC for sm_<arch> (cubin) or compute_<arch> (PTX). Needs no GPU.

    with_log: return (image, the compiler's log); cubins are then built with `ptxas -v` and spill warnings, so
    parse_ptxas reads the same figures from the log as from nvcc's output."""
    try:
        from cuda.bindings import nvrtc
    except ImportError as e:  # pragma: no cover - depends on the install
        raise PoseEdgeError("NVRTC needs cuda-python: pip install 'pose-edge[trt]' (cuda-bindings, "
                            "nvidia-cuda-nvrtc)") from e

    def check(result, what):
        err = result[0]
        if err != nvrtc.nvrtcResult.NVRTC_SUCCESS:
            raise PoseEdgeError(f"NVRTC {what} failed: {err}")
        return result[1:] if len(result) > 2 else (result[1] if len(result) == 2 else None)

    source = (Path(source_dir) / GPU_SOURCE).read_bytes()
    program = check(nvrtc.nvrtcCreateProgram(source, GPU_SOURCE.encode(), 0, [], []), "create")
    try:
        target = f"compute_{arch}" if ptx else f"sm_{arch}"
        opts = [f"--gpu-architecture={target}".encode(), f"-I{source_dir}".encode(),
                *(f.encode() for f in COMMON_GPU_FLAGS)]
        if with_log and not ptx:
            opts += [b"--ptxas-options=-v", b"--ptxas-options=--warn-on-spills",
                     b"--ptxas-options=--warn-on-local-memory-usage"]
        result = nvrtc.nvrtcCompileProgram(program, len(opts), opts)
        size = check(nvrtc.nvrtcGetProgramLogSize(program), "log size")
        # NVRTC writes into the buffer it is given: always a fresh bytearray. (`b" " * size` is the immutable,
        # interned b" " when size is 1, and writing into it corrupts that constant for the whole process.)
        log = bytearray(size)
        check(nvrtc.nvrtcGetProgramLog(program, log), "log")
        log = bytes(log).rstrip(b"\0 ").decode(errors="replace")
        if result[0] != nvrtc.nvrtcResult.NVRTC_SUCCESS:
            raise PoseEdgeError(f"NVRTC could not compile the kernels for {target}: {log}")
        if ptx:
            size = check(nvrtc.nvrtcGetPTXSize(program), "PTX size")
            out = bytearray(size)
            check(nvrtc.nvrtcGetPTX(program, out), "PTX")
        else:
            size = check(nvrtc.nvrtcGetCUBINSize(program), "cubin size")
            out = bytearray(size)
            check(nvrtc.nvrtcGetCUBIN(program, out), "cubin")
        return (bytes(out), log) if with_log else bytes(out)
    finally:
        nvrtc.nvrtcDestroyProgram(program)


def nvrtc_version() -> str:
    from cuda.bindings import nvrtc

    _, major, minor = nvrtc.nvrtcVersion()
    return f"{major}.{minor}"


def cached_nvrtc_cubin(arch: int, ptx: bool = False) -> Path:
    key = source_hash(extra=("nvrtc", nvrtc_version(), str(arch), str(ptx), *COMMON_GPU_FLAGS))
    path = cache_root() / key / (f"pose_kernels.compute_{arch}.ptx" if ptx else f"pose_kernels.sm_{arch}.cubin")
    if not path.exists():
        atomic_write_bytes(path, nvrtc_compile(arch, ptx=ptx))
    return path


# --------------------------------------------------------------------------------------------------------------
# CPU: the emulation library

def gxx_version() -> str:
    return subprocess.run(["g++", "-dumpfullversion"], capture_output=True, text=True).stdout.strip()


def build_emulation(tsan: bool = False, source_dir: Path | None = None) -> Path:
    """libpe_emu.so (or the ThreadSanitizer build) from the kernel headers in source_dir; cached by hash."""
    if shutil.which("g++") is None:
        raise PoseEdgeError("the kernel emulation needs g++ (C++20); install it (apt-get install g++)")
    source_dir = Path(source_dir or KERNEL_DIR)
    flags = TSAN_FLAGS if tsan else EMULATION_FLAGS
    names = (EMULATION_SOURCE, *HEADERS, *EMULATION_HEADERS)
    key = source_hash(source_dir, names, extra=("g++", gxx_version(), *flags))
    out = cache_root() / key / ("libpe_emu_tsan.so" if tsan else "libpe_emu.so")
    if not out.exists():
        out.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=".libpe_emu.", suffix=".so", dir=out.parent)
        os.close(fd)
        try:
            _run(["g++", *flags, f"-I{source_dir}", "-o", tmp, str(source_dir / EMULATION_SOURCE)],
                 "g++ (kernel emulation)")
            os.replace(tmp, out)
        finally:
            if os.path.exists(tmp):
                os.unlink(tmp)
    return out


def tsan_runtime() -> Path:
    """The ThreadSanitizer runtime to LD_PRELOAD into a Python that loads the TSan build."""
    path = subprocess.run(["g++", "-print-file-name=libtsan.so"], capture_output=True, text=True).stdout.strip()
    if not path or not os.path.isabs(path) or not os.path.exists(path):
        raise PoseEdgeError("ThreadSanitizer runtime (libtsan.so) not found; install libtsan for g++")
    return Path(path)


# --------------------------------------------------------------------------------------------------------------

def main(argv=None) -> int:
    parser = argparse.ArgumentParser(prog="python -m pose_edge.kernels.build",
                                     description="Build the pose-edge CUDA kernels into the cache.")
    parser.add_argument("--out", type=Path, help="also copy the fatbin (and its hash) into this folder")
    parser.add_argument("--record", action="store_true",
                        help=f"write the ptxas figures to {RESOURCES_FILE.name} beside the sources")
    parser.add_argument("--force", action="store_true", help="rebuild even if the cache holds this build")
    parser.add_argument("--emulation", action="store_true", help="build the CPU emulation library instead")
    args = parser.parse_args(argv)
    try:
        if args.emulation:
            print(build_emulation())
            return 0
        fatbin, figures = build_fatbin(force=args.force)
        record = resources_record(figures)
        print(f"{fatbin} ({fatbin.stat().st_size / 1024:.0f} KiB, {len(ARCHS)} archs + compute_{PTX_ARCH} PTX, "
              f"{record['nvcc']})")
        print(resources_markdown(record))
        if args.record:
            atomic_write_text(RESOURCES_FILE, json.dumps(record, indent=1, sort_keys=True) + "\n")
            print(f"recorded {RESOURCES_FILE}")
        if args.out:
            args.out.mkdir(parents=True, exist_ok=True)
            atomic_write_bytes(args.out / FATBIN_NAME, fatbin.read_bytes())
            atomic_write_text(args.out / (FATBIN_NAME + ".json"), json.dumps({"hash": fatbin_hash()}))
            print(f"copied to {args.out / FATBIN_NAME}")
    except PoseEdgeError as e:
        print(f"error: {e}", file=sys.stderr)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
