"""A tiny training task for the engine's tests (DDP, resume, checkpoints), also runnable as a script.

    python tests/toy_task.py RUN_DIR MODE [options]      (under torchrun too)

The model has BatchNorm, so synchronised statistics matter; the dataset draws every sample from
sample_rng(seed, epoch, index), as the engine asks for exact mid-epoch resume.
"""

from __future__ import annotations

import argparse
import os
import signal
import sys
from pathlib import Path

import torch
from torch import nn

from pose_edge.model_meta import InputSpec, ModelMeta
from pose_edge.models.preset import Preset
from pose_edge.data.sampling import sample_rng
from pose_edge.train.engine import TrainConfig, TrainTask, fit, seed_everything
from pose_edge.train.optim import OptimizerSpec, ScheduleSpec


class ToyDataset(torch.utils.data.Dataset):
    def __init__(self, n: int = 48, seed: int = 0):
        self.n, self.seed, self.epoch = n, seed, 0

    def __len__(self):
        return self.n

    def set_epoch(self, epoch):
        self.epoch = epoch

    def __getitem__(self, i):
        rng = sample_rng(self.seed, self.epoch, i)
        x = rng.normal(size=(3, 8, 8)).astype("float32")
        # An augmentation-like random flip, so that a wrong RNG stream changes the data.
        if rng.uniform() < 0.5:
            x = x[:, :, ::-1].copy()
        return {"x": torch.from_numpy(x), "y": torch.from_numpy(x.mean(0, keepdims=True) ** 2)}


def collate(samples):
    return {k: torch.stack([s[k] for s in samples]) for k in samples[0]}


def toy_model():
    return nn.Sequential(nn.Conv2d(3, 8, 3, padding=1), nn.BatchNorm2d(8), nn.ReLU(), nn.Conv2d(8, 1, 1))


def toy_task(n: int = 48, evaluate: bool = True) -> TrainTask:
    seed_everything(0)
    mse = nn.functional.mse_loss

    def loss_fn(out, batch):
        loss = mse(out, batch["y"])
        return loss, {"mse": loss.detach()}

    def evaluate_fn(model, device):
        with torch.no_grad():
            batch = collate([ToyDataset(16, seed=99)[i] for i in range(16)])
            return {"AP": 1.0 / (1.0 + mse(model(batch["x"].to(device)), batch["y"].to(device)).item())}

    return TrainTask(toy_model(), Preset("toy", "simple_baseline", (8, 8)),
                     ModelMeta("simple_baseline", "toy", InputSpec(8, 8)), ToyDataset(n), collate,
                     lambda b: b["x"], loss_fn, evaluate_fn if evaluate else None)


def toy_config(epochs: int = 3, batch: int = 8, optimizer: str = "adam", warmup: bool = True, **kw) -> TrainConfig:
    return TrainConfig(epochs=epochs, batch_size=batch, workers=0,
                       optimizer=OptimizerSpec(optimizer, lr=1e-2, momentum=0.9),
                       schedule=ScheduleSpec("one_cycle", lrf=0.1, warmup_epochs=1.0 if warmup else 0.0,
                                             warmup_momentum=0.8 if warmup else None),
                       **kw)


def main(argv=None):
    ap = argparse.ArgumentParser()
    ap.add_argument("run_dir", type=Path)
    ap.add_argument("--epochs", type=int, default=3)
    ap.add_argument("--batch", type=int, default=8)
    ap.add_argument("--samples", type=int, default=48)
    ap.add_argument("--optimizer", default="adam")
    ap.add_argument("--sync-bn", action="store_true")
    ap.add_argument("--no-warmup", action="store_true")
    ap.add_argument("--ema", action="store_true")
    ap.add_argument("--accumulate", type=int, default=1)
    ap.add_argument("--checkpoint-every", type=int, default=None)
    ap.add_argument("--kill-at", type=int, nargs=2, default=None, help="EPOCH ITERATION: SIGKILL ourselves there")
    ap.add_argument("--resume", action="store_true")
    ap.add_argument("--save-weights", type=Path, default=None, help="each rank saves its final weights here + .rankN")
    a = ap.parse_args(argv)

    from pose_edge.train import distributed as D

    dist = D.setup("cpu")
    try:
        def on_iteration(epoch, iteration):
            if a.kill_at and (epoch, iteration) == tuple(a.kill_at):
                os.kill(os.getpid(), signal.SIGKILL)  # no clean-up of any kind, as a power cut or OOM killer

        config = toy_config(a.epochs, a.batch, a.optimizer, warmup=not a.no_warmup, sync_bn=a.sync_bn, accumulate=a.accumulate,
                            ema_decay=0.9 if a.ema else None, ema_tau=5.0, checkpoint_every=a.checkpoint_every)
        task = toy_task(a.samples, evaluate=not a.sync_bn)
        fit(task, config, a.run_dir, dist=dist, resume=a.resume, progress=False, on_iteration=on_iteration,
            log=lambda _s: None)
        if a.save_weights:
            model = task.model
            torch.save({k: v.detach().clone() for k, v in model.state_dict().items()},
                       f"{a.save_weights}.rank{dist.rank}")
    finally:
        D.cleanup(dist)


if __name__ == "__main__":
    sys.exit(main())
