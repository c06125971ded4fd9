"""Run a test script in a fresh process, or under torchrun, for the training tests (DDP, kill and resume).

Every launch gets its own process group, so a timeout kills torchrun and all its workers together, and torchrun runs
with --standalone: a rendezvous on a free local port (a fixed or zero --master_port can hang or collide).
"""

from __future__ import annotations

import os
import signal
import subprocess
import sys
from pathlib import Path

import torch

REPO = Path(__file__).parents[1]


def run_script(script: Path, *args, torchrun: int = 0, timeout: int = 240) -> subprocess.CompletedProcess:
    env = {**os.environ, "OMP_NUM_THREADS": "1", "PYTHONPATH": str(REPO)}
    launcher = ([sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node", str(torchrun)]
                if torchrun else [sys.executable])
    proc = subprocess.Popen([*launcher, str(script), *map(str, args)], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, env=env, start_new_session=True)
    try:
        out, err = proc.communicate(timeout=timeout)
    except subprocess.TimeoutExpired:
        os.killpg(proc.pid, signal.SIGKILL)
        proc.communicate()
        raise
    return subprocess.CompletedProcess(proc.args, proc.returncode, out, err)


def same_weights(a: dict, b: dict) -> bool:
    return a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
