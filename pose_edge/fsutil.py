"""Atomic file writes: a reader sees the old file or the new one, never half of one.

Rules every writer of an artefact follows here:
- The new content goes to a temporary file in the target's own folder (a rename across file systems is not atomic),
  named `.<name>.<host>.<pid>.<random><suffix>`; it is fsynced and renamed over the target only when complete.
- Every exit path Python sees (an exception, Ctrl-C, SystemExit; SIGTERM too where the CLI turns it into SystemExit)
  removes the temporary file. A kill -9 or a power cut cannot be seen, so the next write of the same target removes
  the temporaries of that target left by processes of this host that no longer run (`remove_stale_temporaries`).
- The file gets the mode an ordinary open() would give it: 0666 minus the umask, or the mode of the file it replaces
  (mkstemp alone makes every file 0600, so an engine built by one user could not be read by the service running it).
"""

from __future__ import annotations

import contextlib
import json
import os
import re
import socket
import stat
import tempfile
from pathlib import Path
from typing import IO, Iterator

from pose_edge.errors import PoseEdgeError


def current_umask() -> int:
    """The process umask, read without changing it where Linux reports it (/proc/self/status), else by setting and
    restoring it (which briefly races with other threads creating files)."""
    with contextlib.suppress(OSError, ValueError):
        for line in Path("/proc/self/status").read_text().splitlines():
            if line.startswith("Umask:"):
                return int(line.split()[1], 8)
    mask = os.umask(0o022)
    os.umask(mask)
    return mask


def _host() -> str:
    return re.sub(r"[^A-Za-z0-9_-]", "_", socket.gethostname())[:32] or "host"


def _temp_prefix(path: Path) -> str:
    return f".{path.name}.{_host()}."


def remove_stale_temporaries(path: str | os.PathLike) -> list[Path]:
    """Remove the temporaries of `path` left by killed processes of this host (their pid no longer runs); return
    what was removed. Temporaries of live processes, and of other hosts sharing the folder, are left alone."""
    path = Path(path)
    prefix = _temp_prefix(path)
    removed = []
    try:
        entries = list(path.parent.iterdir())
    except OSError:
        return removed
    for entry in entries:
        name = entry.name
        if not name.startswith(prefix):
            continue
        pid_text = name[len(prefix):].split(".", 1)[0]
        if not pid_text.isdigit() or _pid_alive(int(pid_text)):
            continue
        with contextlib.suppress(OSError):
            entry.unlink()
            removed.append(entry)
    return removed


def _pid_alive(pid: int) -> bool:
    if pid == os.getpid():
        return True
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:  # another user's process: alive
        return True
    return True


def check_writable(path: str | os.PathLike, what: str = "output") -> Path:
    """PoseEdgeError (one line) unless a file could be written at `path`: it is not a folder, and a file can be
    created in its nearest existing ancestor (tried, not inferred from permission bits, which say nothing for root or
    a read-only mount). Call it before long work, so that a bad --out fails first."""
    path = Path(path)
    if path.is_dir():
        raise PoseEdgeError(f"{what} {path} is a folder; give a file name")
    parent = path.parent
    while not parent.exists() and parent.parent != parent:
        parent = parent.parent
    if not parent.is_dir():
        raise PoseEdgeError(f"cannot write {what} {path}: {parent} is not a folder")
    try:
        fd, probe = tempfile.mkstemp(prefix=".write-probe.", dir=parent)
    except OSError as e:
        raise PoseEdgeError(f"cannot write {what} {path}: cannot create files in {parent} ({e.strerror})") from None
    os.close(fd)
    os.unlink(probe)
    return path


def _new_file_mode(path: Path) -> int:
    with contextlib.suppress(OSError):
        return stat.S_IMODE(path.stat().st_mode)
    return 0o666 & ~current_umask()


@contextlib.contextmanager
def atomic_path(path: str | os.PathLike, suffix: str = ".tmp") -> Iterator[Path]:
    """A temporary path beside `path`, for writers that open files by name (cv2.VideoWriter picks its container
    from the suffix); on success it is fsynced and renamed over `path`, on any exception it is removed (an OSError
    while writing, e.g. a full disk, becomes a one-line PoseEdgeError)."""
    path = Path(path)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as e:
        raise PoseEdgeError(f"{path}: cannot write here, its folder cannot be created ({e.strerror})") from None
    remove_stale_temporaries(path)
    try:
        fd, tmp = tempfile.mkstemp(prefix=f"{_temp_prefix(path)}{os.getpid()}.", suffix=suffix, dir=path.parent)
    except OSError as e:
        raise PoseEdgeError(f"{path}: cannot write here ({e.strerror})") from None
    try:
        os.fchmod(fd, _new_file_mode(path))
    finally:
        os.close(fd)
    try:
        yield Path(tmp)
        with open(tmp, "rb+") as f:
            os.fsync(f.fileno())
        os.replace(tmp, path)
    except BaseException as e:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(tmp)
        if isinstance(e, OSError) and e.errno is not None:  # a full disk, a lost mount: one line, not a traceback
            raise PoseEdgeError(f"{path}: cannot write it ({e.strerror or e}); the previous file, if any, is "
                                "unchanged") from None
        raise


@contextlib.contextmanager
def atomic_open(path: str | os.PathLike, mode: str = "wb") -> Iterator[IO]:
    """Open a temporary file beside `path`; on success fsync it and rename it over `path`.

    On an exception the temporary file is removed and `path` is left as it was.
    """
    if mode not in ("w", "wb"):
        raise ValueError(f"atomic_open writes whole files; mode must be 'w' or 'wb', not {mode!r}")
    with atomic_path(path) as tmp, open(tmp, mode) as f:
        yield f


def atomic_write_bytes(path: str | os.PathLike, data: bytes) -> None:
    with atomic_open(path, "wb") as f:
        f.write(data)


def atomic_write_text(path: str | os.PathLike, text: str) -> None:
    with atomic_open(path, "w") as f:
        f.write(text)


def atomic_write_json(path: str | os.PathLike, obj, indent: int | None = None) -> None:
    atomic_write_text(path, json.dumps(obj, indent=indent))


@contextlib.contextmanager
def temporary_folder(prefix: str) -> Iterator[Path]:
    """A scratch folder in the system's temporary directory, named `<prefix><host>.<pid>.<random>`, removed with its
    contents on every exit path Python sees. Folders of the same prefix left by killed processes of this host (an
    ONNX export's scratch copy can be tens of megabytes) are removed when the next one is made."""
    import shutil

    base = Path(tempfile.gettempdir())
    stem = f"{prefix}{_host()}."
    with contextlib.suppress(OSError):
        for entry in base.iterdir():
            pid_text = entry.name[len(stem):].split(".", 1)[0] if entry.name.startswith(stem) else ""
            if pid_text.isdigit() and not _pid_alive(int(pid_text)) and entry.is_dir():
                shutil.rmtree(entry, ignore_errors=True)
    folder = Path(tempfile.mkdtemp(prefix=f"{stem}{os.getpid()}.", dir=base))
    try:
        yield folder
    finally:
        shutil.rmtree(folder, ignore_errors=True)
