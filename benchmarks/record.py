"""What every benchmark record shares: the CPU it ran on, and writing it as JSON + Markdown beside each other.

Imported by the benchmark scripts in this folder (run as `python benchmarks/<script>.py`, which puts this folder on
sys.path).
"""

from __future__ import annotations

import socket
from pathlib import Path
from typing import Callable


def cpu_model_and_flags() -> tuple[str, set[str]]:
    """(CPU model name, its feature flags from /proc/cpuinfo; an empty set where there is none)."""
    from pose_edge.bench.machine import cpu_model

    flags = set()
    try:
        for line in open("/proc/cpuinfo"):
            if line.split(":", 1)[0].strip() in ("flags", "Features"):  # x86, Arm
                flags |= set(line.split(":", 1)[1].split())
    except OSError:
        pass
    return cpu_model(), flags


def default_path(name: str) -> Path:
    """benchmarks/results/<name>-<host>.json: results mean nothing without the machine."""
    return Path(__file__).parent / "results" / f"{name}-{socket.gethostname()}.json"


def save(record: dict, out: str | Path, to_markdown: Callable[[dict], str]) -> None:
    """Write `record` to `out` (.json) and its Markdown beside it (.md), atomically; print the Markdown."""
    from pose_edge.fsutil import atomic_write_json, atomic_write_text

    out = Path(out)
    atomic_write_json(out, record, indent=2)
    atomic_write_text(out.with_suffix(".md"), to_markdown(record) + "\n")
    print(to_markdown(record))
