"""Run a script or module and SIGKILL the whole process inside its Nth atomic write: the temporary file is complete
but not yet renamed to its final name (pose_edge.fsutil.atomic_path calls os.replace last). A kill -9 there, as an
OOM killer or a power cut would, is the worst moment for a writer.

    python tests/kill_in_write.py N path/to/script.py ARGS...
    python tests/kill_in_write.py N -m pose_edge.cli ARGS...
"""

from __future__ import annotations

import os
import runpy
import signal
import sys


def main() -> None:
    target = int(sys.argv[1])
    calls = [0]
    real_replace = os.replace

    def replace(src, dst):
        calls[0] += 1
        if calls[0] == target:
            os.kill(os.getpid(), signal.SIGKILL)
        return real_replace(src, dst)

    os.replace = replace
    if sys.argv[2] == "-m":
        sys.argv = [sys.argv[3], *sys.argv[4:]]
        runpy.run_module(sys.argv[0], run_name="__main__", alter_sys=True)
    else:
        sys.argv = sys.argv[2:]
        runpy.run_path(sys.argv[0], run_name="__main__")


if __name__ == "__main__":
    main()
