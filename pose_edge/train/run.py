"""`pose-edge train`: one function from a preset name and a data folder to a finished run folder.

Works in one process (CPU or one GPU) and under `torchrun --nproc_per_node N -m pose_edge.cli train ...` (DDP). The
family's training module (trainer_for) supplies build_config and build_task; pose_edge.train.engine.fit does the
rest. A run folder holds last.pt, best.pt, metrics.csv, metrics.png, meta.json and args.json.
"""

from __future__ import annotations

import time
from pathlib import Path

from pose_edge.errors import PoseEdgeError
from pose_edge.fsutil import check_writable

def trainer_for(family: str):
    """The training module of a model family (its build_config and build_task), imported when needed."""
    if family == "simple_baseline":
        from pose_edge.train import sb_train

        return sb_train
    if family in ("kapao", "person_detector"):
        from pose_edge.train import kapao_train

        return kapao_train
    raise PoseEdgeError(f"no trainer for the {family} family")


def default_run_dir(preset_name: str) -> Path:
    return Path("runs") / f"{preset_name}-{time.strftime('%Y%m%d-%H%M%S')}"


def _resume_dir(resume: str | Path) -> Path:
    path = Path(resume)
    if path.is_file():  # RUN/last.pt given instead of RUN
        path = path.parent
    if not (path / "last.pt").is_file():
        raise PoseEdgeError(f"--resume {resume}: no last.pt there to resume from")
    return path


def train(preset_name: str, data_dir: str | Path, *, out: str | Path | None = None, epochs: int | None = None,
          batch: int | None = None, device: str | None = None, resume: str | Path | None = None, workers: int = 2,
          seed: int = 0, backbone_weights: str | None = None, sync_bn: bool = False, amp: bool | None = None,
          eval_every: int = 1, eval_max_images: int | None = None, strict: bool = False, progress: bool = True,
          log=None) -> dict:
    """Train `preset_name` on the data set at `data_dir`; return fit's summary (run_dir, best AP, history, ...) on
    rank 0 and None on the other ranks of a torchrun launch. strict: refuse a data set with any bad record instead of
    leaving those records out with a warning (pose_edge.data.validate)."""
    from pose_edge.models import get_preset
    from pose_edge.models.checkpoint import load_checkpoint
    from pose_edge.train import distributed as D
    from pose_edge.train.engine import fit, seed_everything

    preset = get_preset(preset_name)
    module = trainer_for(preset.family)
    dist = D.setup(device)
    try:
        if resume is not None:
            run_dir = _resume_dir(resume)
            saved = load_checkpoint(run_dir / "last.pt")["preset"]["name"]
            if saved != preset.name:
                raise PoseEdgeError(f"{run_dir} is a run of {saved}, not {preset.name}")
        else:
            run_dir = Path(out) if out is not None else default_run_dir(preset.name)
            if (run_dir / "last.pt").exists():
                raise PoseEdgeError(f"{run_dir} already holds a run; continue it with --resume {run_dir} or choose "
                                    f"another --out")
        check_writable(run_dir / "last.pt", "checkpoint")  # before the data is loaded, not after an epoch
        run_dir = D.broadcast_object(dist, run_dir)  # every rank writes nothing but agrees on the folder
        config = module.build_config(preset, epochs=epochs, batch=batch, workers=workers, amp=amp, sync_bn=sync_bn,
                                     seed=seed, eval_every=eval_every)
        seed_everything(seed)  # the same initial weights on every rank (DDP broadcasts rank 0's anyway)
        kwargs = {"backbone_weights": backbone_weights} if backbone_weights else {}
        task = module.build_task(preset, data_dir, seed=seed, eval_max_images=eval_max_images,
                                 log=log if dist.is_main else None, strict=strict, **kwargs)
        summary = fit(task, config, run_dir, dist=dist, resume=resume is not None, progress=progress, log=log)
        return summary if dist.is_main else None
    finally:
        D.cleanup(dist)
