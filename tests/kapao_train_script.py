"""Train a KAPAO-family preset for a few iterations through the engine, also under torchrun; used by
tests/test_kapao_training.py for DDP. Saves each rank's final weights to SAVE.rankR.

    python tests/kapao_train_script.py PRESET DATA RUN_DIR SAVE [--epochs E] [--batch B] [--checkpoint-every N]
                                       [--kill-at EPOCH ITERATION] [--resume]
"""

from __future__ import annotations

import argparse
import dataclasses
import os
import signal
import sys
from pathlib import Path

import torch


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("preset")
    ap.add_argument("data", type=Path)
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("save", type=Path)
    ap.add_argument("--epochs", type=int, default=1)
    ap.add_argument("--batch", type=int, default=4)
    ap.add_argument("--checkpoint-every", type=int, default=None)
    ap.add_argument("--kill-at", type=int, nargs=2, default=None, help="EPOCH ITERATION: SIGKILL ourselves there")
    ap.add_argument("--resume", action="store_true")
    args = ap.parse_args(argv)

    from pose_edge.models import get_preset
    from pose_edge.train import distributed as D
    from pose_edge.train.engine import fit, seed_everything
    from pose_edge.train.kapao_train import build_config, build_task

    torch.set_num_threads(1)
    dist = D.setup("cpu")
    preset = get_preset(args.preset)
    seed_everything(0)
    task = build_task(preset, args.data, eval_max_images=4)
    config = build_config(preset, epochs=args.epochs, batch=args.batch, workers=0)
    config = dataclasses.replace(config, checkpoint_every=args.checkpoint_every)

    def on_iteration(epoch, iteration):
        if args.kill_at and (epoch, iteration) == tuple(args.kill_at):
            os.kill(os.getpid(), signal.SIGKILL)  # no clean-up of any kind

    fit(task, config, args.run_dir, dist=dist, resume=args.resume, progress=False, on_iteration=on_iteration,
        log=lambda _s: None)
    torch.save(task.model.state_dict(), f"{args.save}.rank{dist.rank}")
    D.cleanup(dist)
    return 0


if __name__ == "__main__":
    sys.exit(main())
