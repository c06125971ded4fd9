"""Run folders with random weights, for latency benchmarks of presets nobody has trained here (the paper presets).

    python benchmarks/random_runs.py sb-r50-256x192 kapao-s det-s --out /tmp/paper-runs [--seed 0]

Each OUT/<preset>/best.pt is a weights checkpoint every verb accepts (`pose-edge export`, `eval`, `bench`). Random
weights give latency, never accuracy: decode work that depends on the scores (candidates above the thresholds) is
that of an untrained network, which is confident of nobody at the deployment thresholds.
"""

from __future__ import annotations

import argparse
import dataclasses
import sys
from pathlib import Path

import torch

from pose_edge.models import build_model, get_preset, model_meta
from pose_edge.models.checkpoint import save_checkpoint


def random_run(name: str, out: Path, seed: int = 0) -> Path:
    torch.manual_seed(seed)
    preset = get_preset(name)
    run = out / name
    save_checkpoint(run / "best.pt", {"kind": "weights", "preset": dataclasses.asdict(preset),
                                      "meta": model_meta(preset).to_json(), "model": build_model(preset).state_dict(),
                                      "epoch": 0, "iteration": 0, "metrics": {}, "config": {"random_weights": seed}})
    return run


def main(argv=None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("presets", nargs="+")
    parser.add_argument("--out", type=Path, required=True)
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args(argv)
    for name in args.presets:
        print(random_run(name, args.out, args.seed))
    return 0


if __name__ == "__main__":
    sys.exit(main())
