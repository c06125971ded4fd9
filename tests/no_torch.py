"""`pose-edge` in a fresh process where `import torch` fails: what the base install (no PyTorch) gets."""

from __future__ import annotations

import subprocess
import sys

_CLI_WITHOUT_TORCH = """
import sys
class NoTorch:
    def find_spec(self, name, path=None, target=None):
        if name.split('.')[0] in ('torch', 'torchvision'):
            raise ImportError('torch is blocked in this test')
sys.meta_path.insert(0, NoTorch())
from pose_edge.cli import main
main(sys.argv[1:])
"""


def run_cli_without_torch(*args) -> subprocess.CompletedProcess:
    """`pose-edge ARGS...` with torch unimportable; stdout and stderr captured as text."""
    return subprocess.run([sys.executable, "-c", _CLI_WITHOUT_TORCH, *map(str, args)], capture_output=True, text=True)
