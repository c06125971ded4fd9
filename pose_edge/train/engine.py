"""The training loop, written once for every model family: `fit(task, config, run_dir)`.

How a model family plugs in
---------------------------
A family builds a `TrainTask` and a `TrainConfig`, then calls `fit` (see pose_edge/train/sb_train.py for the Simple
Baseline; the KAPAO family does the same):

    model           nn.Module, freshly built (call `seed_everything(config.seed)` first, so every rank starts alike;
                    DDP also broadcasts rank 0's weights). Load pretrained weights before `fit`.
    preset, meta    the Preset and ModelMeta; both travel in every checkpoint, so `load_model` rebuilds the network.
    train_dataset   a map-style Dataset; its samples are merged by `collate_fn` into a dict whose tensors the engine
                    moves to the device. If the dataset has `set_epoch(epoch)`, the engine calls it before each epoch
                    (workers are re-created every epoch, so they see it). For exact resume from a mid-epoch checkpoint
                    (`checkpoint_every`) a dataset must draw its randomness from (seed, epoch, index), e.g.
                    `sample_rng(seed, epoch, index)`; end-of-epoch resume is exact either way.
    prepare_inputs  batch (on the device) -> the input tensor of model.forward, e.g. uint8 NHWC BGR -> float NCHW.
    loss_fn         (outputs, batch) -> (scalar loss tensor, {name: scalar tensor or float} of components to log).
                    The engine calls backward on the loss as returned; with `accumulate` > 1 it sums the gradients
                    of that many iterations before a step (YOLOv5's convention: no division).
    evaluate_fn     optional (model in eval mode on the device, device) -> {statistic: float}, run on rank 0 after
                    every `eval_every` epochs and the last one; `config.best_metric` (higher is better) picks best.pt.
                    The model it gets is the EMA model when EMA is on.

TrainConfig carries the optimiser (`OptimizerSpec`: name, lr, momentum/beta1, weight decay, Nesterov, param-group
scheme), the schedule (`ScheduleSpec`: constant / multistep / one-cycle cosine per epoch, plus per-iteration warm-up
of lr and momentum), EMA (decay, tau), AMP (on by default on CUDA), gradient clipping (max norm), accumulation,
SyncBatchNorm, the global batch size (split over ranks) and the seed.

What the engine does
--------------------
Per iteration: set lr/momentum from the schedule, forward under autocast (AMP), loss, stop on a non-finite loss
(PoseEdgeError on every rank, checkpoints untouched), backward through the GradScaler, unscale + clip, step, EMA
update. Per epoch: progress bar with loss and images/s (rank 0), evaluation, RUN/metrics.csv + metrics.png, last.pt
(everything to resume: weights, EMA, optimiser, scaler, epoch, iteration, RNG states, history, config) and best.pt
(weights for inference) written atomically by rank 0. `resume=True` continues from RUN/last.pt exactly where it
stopped. Under torchrun the model is wrapped in DistributedDataParallel (gloo on the CPU, nccl on GPUs).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
import random
import time
from collections.abc import Callable
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import torch
from torch import nn

from pose_edge.errors import PoseEdgeError
from pose_edge.fsutil import atomic_write_json
from pose_edge.models.checkpoint import load_checkpoint, save_checkpoint
from pose_edge.train import distributed as D
from pose_edge.train.metrics_log import write_metrics
from pose_edge.train.optim import ModelEMA, OptimizerSpec, ScheduleSpec, apply_schedule, build_optimizer, spec_from_dict
from pose_edge.progress import EpochProgress, console
from pose_edge.train.rng_state import capture_rng_state, restore_rng_state


@dataclass(frozen=True)
class TrainConfig:
    """How to train. batch_size is the global batch, split evenly over the ranks of a torchrun launch."""

    epochs: int
    batch_size: int
    optimizer: OptimizerSpec = field(default_factory=OptimizerSpec)
    schedule: ScheduleSpec = field(default_factory=ScheduleSpec)
    workers: int = 2
    amp: bool | None = None  # None: on for CUDA, off on the CPU
    clip_grad: float | None = None  # max gradient norm
    accumulate: int = 1
    ema_decay: float | None = None  # e.g. 0.9999 for KAPAO; None: no EMA
    ema_tau: float = 2000.0
    sync_bn: bool = False
    seed: int = 0
    eval_every: int = 1
    best_metric: str = "AP"
    checkpoint_every: int | None = None  # also save last.pt every this many iterations within an epoch

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, d: dict) -> "TrainConfig":
        d = dict(d)
        d["optimizer"] = spec_from_dict(OptimizerSpec, d.get("optimizer", {}))
        d["schedule"] = spec_from_dict(ScheduleSpec, d.get("schedule", {}))
        names = {f.name for f in dataclasses.fields(cls)}
        return cls(**{k: v for k, v in d.items() if k in names})


@dataclass
class TrainTask:
    """What a model family supplies to `fit` (see the module docstring)."""

    model: nn.Module
    preset: object  # pose_edge.models.preset.Preset
    meta: object  # pose_edge.model_meta.ModelMeta
    train_dataset: torch.utils.data.Dataset
    collate_fn: Callable
    prepare_inputs: Callable[[dict], torch.Tensor]
    loss_fn: Callable[[object, dict], tuple[torch.Tensor, dict]]
    evaluate_fn: Callable[[nn.Module, torch.device], dict] | None = None


def seed_everything(seed: int) -> None:
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)


class EpochBatchSampler(torch.utils.data.Sampler):
    """Batches of one rank: each epoch a permutation seeded by (seed, epoch) is cut into global batches of
    `batch_size` (the last partial one dropped), and rank r takes the r-th slice of each. `set_epoch(epoch,
    start_batch)` skips the batches a resumed run has already done."""

    def __init__(self, num_samples: int, batch_size: int, rank: int = 0, world_size: int = 1, seed: int = 0,
                 shuffle: bool = True):
        if batch_size % world_size:
            raise PoseEdgeError(f"batch size {batch_size} does not split over {world_size} processes; use a multiple")
        self.num_samples, self.batch_size, self.rank, self.world_size = num_samples, batch_size, rank, world_size
        self.seed, self.shuffle = seed, shuffle
        self.epoch, self.start_batch = 0, 0

    def set_epoch(self, epoch: int, start_batch: int = 0) -> None:
        self.epoch, self.start_batch = epoch, start_batch

    def batches_per_epoch(self) -> int:
        return self.num_samples // self.batch_size

    def __len__(self) -> int:
        return self.batches_per_epoch() - self.start_batch

    def __iter__(self):
        order = (np.random.default_rng([self.seed, self.epoch]).permutation(self.num_samples) if self.shuffle
                 else np.arange(self.num_samples))
        per_rank = self.batch_size // self.world_size
        for b in range(self.start_batch, self.batches_per_epoch()):
            start = b * self.batch_size + self.rank * per_rank
            yield order[start:start + per_rank].tolist()


def one_line_errors(loader):
    """Iterate `loader`, turning a PoseEdgeError raised inside a DataLoader worker (which torch re-raises with the
    worker's whole traceback in its message) back into its own one-line message, e.g. the image file that failed."""
    iterator = iter(loader)
    while True:
        try:
            batch = next(iterator)
        except StopIteration:
            return
        except PoseEdgeError as e:
            text = str(e)
            if "Original Traceback" not in text:
                raise
            last = text.strip().splitlines()[-1]
            prefix = f"{type(e).__module__}.{type(e).__qualname__}: "
            raise type(e)(last.removeprefix(prefix)) from None
        yield batch


@contextlib.contextmanager
def deterministic_algorithms(device: torch.device):
    """Deterministic kernels for the run on the CPU (restored afterwards). The KAPAO loss gathers predictions at
    matched (image, anchor, cell) positions, several targets often at one cell; the backward of that gather adds
    their gradients in an order that depends on how the threads split the work, so two runs with the same seed and
    thread count differed in the last bits from the first step. torch.use_deterministic_algorithms makes the accumulation ordered. On CUDA it is left as
    it is: it would need CUBLAS_WORKSPACE_CONFIG and slower kernels, and no GPU run here verified it."""
    if device.type != "cpu":
        yield
        return
    before, warn_only = torch.are_deterministic_algorithms_enabled(), torch.is_deterministic_algorithms_warn_only_enabled()
    torch.use_deterministic_algorithms(True, warn_only=True)
    try:
        yield
    finally:
        torch.use_deterministic_algorithms(before, warn_only=warn_only)


def to_device(batch, device: torch.device):
    """Tensors anywhere inside dicts/lists/tuples moved to `device`; everything else as it is."""
    if isinstance(batch, torch.Tensor):
        return batch.to(device, non_blocking=True)
    if isinstance(batch, dict):
        return {k: to_device(v, device) for k, v in batch.items()}
    if isinstance(batch, (list, tuple)):
        return type(batch)(to_device(v, device) for v in batch)
    return batch


@dataclass
class _State:
    """Everything that changes during a run and is saved in last.pt."""

    epoch: int = 0  # completed epochs
    iteration: int = 0  # iterations done in the current epoch
    best: float = -math.inf
    best_epoch: int = 0
    history: list = field(default_factory=list)
    epoch_sums: dict = field(default_factory=dict)  # running loss sums of a partly done epoch
    epoch_images: int = 0
    epoch_time: float = 0.0
    last_metrics: dict = field(default_factory=dict)


def fit(task: TrainTask, config: TrainConfig, run_dir: str | Path, *, dist: D.Dist | None = None,
        resume: bool = False, progress: bool = True,
        on_iteration: Callable[[int, int], None] | None = None, log: Callable[[str], None] | None = None) -> dict:
    """Train `task` by `config`, writing the run to `run_dir`; return a summary dict.

    dist: from distributed.setup() (one CPU process if None). resume: continue from run_dir/last.pt (the config
    stored there wins, except `epochs`, which may be raised; `task.model` must be built the same way). on_iteration(epoch, iteration) is called after every
    iteration (tests use it to interrupt a run). log prints a line (rank 0 only; default: stderr).

    Determinism: on the CPU, a run with the same seed, data, world size and torch thread count gives the same
    weights bit for bit, uninterrupted or killed and resumed (deterministic_algorithms); a different thread count
    changes the order of float sums and so the last bits.
    """
    dist = dist or D.Dist()
    with deterministic_algorithms(dist.device):
        return _fit(task, config, run_dir, dist, resume, progress, on_iteration, log)


def _fit(task, config, run_dir, dist, resume, progress, on_iteration, log) -> dict:
    device = dist.device
    run_dir = Path(run_dir)
    main = dist.is_main
    say = (log or console().print) if main else (lambda _msg: None)
    ckpt = None
    if resume:
        ckpt = load_checkpoint(run_dir / "last.pt")
        if ckpt.get("kind") != "full":
            raise PoseEdgeError(f"{run_dir / 'last.pt'}: holds weights only and cannot resume a run")
        config = dataclasses.replace(TrainConfig.from_dict(ckpt["config"]), epochs=config.epochs)
    amp = (device.type == "cuda") if config.amp is None else bool(config.amp)
    if amp and device.type != "cuda":
        raise PoseEdgeError("mixed precision (amp) needs a CUDA device; train on the CPU without it")

    model = task.model.to(device)
    if config.sync_bn and dist.enabled:
        model = D.convert_sync_batchnorm(model, device)
    optimizer = build_optimizer(model, config.optimizer)
    scaler = torch.amp.GradScaler(device.type, enabled=amp)
    ema = ModelEMA(model, config.ema_decay, config.ema_tau) if config.ema_decay else None
    state = _State()
    if ckpt is not None:
        state = _restore(ckpt, model, optimizer, scaler, ema)
        say(f"resuming {run_dir} after epoch {state.epoch}" +
            (f" and {state.iteration} iterations" if state.iteration else ""))
    else:
        seed_everything(config.seed)
    if main:
        run_dir.mkdir(parents=True, exist_ok=True)
        atomic_write_json(run_dir / "args.json", {"preset": task.preset.name, "config": config.to_dict(),
                                                  "world_size": dist.world_size, "device": str(device)}, indent=2)
        atomic_write_json(run_dir / "meta.json", task.meta.to_dict(), indent=2)

    sampler = EpochBatchSampler(len(task.train_dataset), config.batch_size, dist.rank, dist.world_size, config.seed)
    iters_per_epoch = sampler.batches_per_epoch()
    if iters_per_epoch == 0:
        raise PoseEdgeError(f"the training set has {len(task.train_dataset)} samples, fewer than one batch of "
                            f"{config.batch_size}; lower --batch")
    ddp_model = D.wrap_model(model, dist)
    started = time.perf_counter()

    def save(kind_best: bool = False) -> None:
        if not main:
            return
        eval_model = ema.module if ema else model
        common = {"preset": dataclasses.asdict(task.preset), "meta": task.meta.to_json(),
                  "model": eval_model.state_dict(), "epoch": state.epoch, "iteration": state.iteration,
                  "metrics": state.last_metrics, "best": state.best, "config": config.to_dict()}
        save_checkpoint(run_dir / "last.pt", {
            **common, "kind": "full", "train_model": model.state_dict(), "optimizer": optimizer.state_dict(),
            "scaler": scaler.state_dict(), "ema": ema.state_dict() if ema else None, "rng": capture_rng_state(),
            "history": state.history, "epoch_sums": state.epoch_sums, "epoch_images": state.epoch_images,
            "epoch_time": state.epoch_time, "best_epoch": state.best_epoch,
        })
        if kind_best:
            save_checkpoint(run_dir / "best.pt", {**common, "kind": "weights"})

    for epoch in range(state.epoch, config.epochs):
        sampler.set_epoch(epoch, state.iteration)
        if hasattr(task.train_dataset, "set_epoch"):
            task.train_dataset.set_epoch(epoch)
        loader = torch.utils.data.DataLoader(
            task.train_dataset, batch_sampler=sampler, num_workers=config.workers, collate_fn=task.collate_fn,
            pin_memory=device.type == "cuda",
            generator=torch.Generator().manual_seed(int(np.random.default_rng([config.seed, epoch, 7]).integers(2**62))),
        )
        _train_one_epoch(ddp_model, model, task, config, optimizer, scaler, ema, loader, state, epoch,
                         iters_per_epoch, dist, amp, progress and main, on_iteration, save)

        # End of epoch: evaluate, log, checkpoint.
        D.broadcast_buffers(model, dist)
        row = {"epoch": epoch + 1, "lr": optimizer.param_groups[0]["lr"]}
        row.update({f"train_{k}": v / max(state.epoch_images, 1) for k, v in state.epoch_sums.items()})
        row.update({"time_s": state.epoch_time, "images_per_s": state.epoch_images / max(state.epoch_time, 1e-9)})
        improved = False
        if task.evaluate_fn is not None and ((epoch + 1) % config.eval_every == 0 or epoch + 1 == config.epochs):
            if main:
                eval_model = ema.module if ema else model
                eval_model.eval()
                metrics = {k: float(v) for k, v in task.evaluate_fn(eval_model, device).items()}
                model.train()
                state.last_metrics = metrics
                row.update({f"val_{k}": v for k, v in metrics.items()})
                value = metrics.get(config.best_metric)
                if value is None:
                    raise PoseEdgeError(f"evaluation returned no {config.best_metric!r} "
                                        f"(it returned {', '.join(metrics)})")
                if value > state.best:
                    state.best, state.best_epoch, improved = value, epoch + 1, True
            D.barrier(dist)
        elif task.evaluate_fn is None and main:
            improved = True  # nothing to select by: best.pt follows the last epoch
        state.history.append(row)
        state.epoch, state.iteration = epoch + 1, 0
        state.epoch_sums, state.epoch_images, state.epoch_time = {}, 0, 0.0
        if main:
            write_metrics(run_dir, state.history)
            save(kind_best=improved)
            val = "".join(f"  {k[4:]} {v:.3f}" for k, v in row.items() if k in ("val_AP", "val_AP50", "val_AR"))
            say(f"epoch {epoch + 1}/{config.epochs}  loss {row.get('train_loss', math.nan):.4g}  "
                f"{row['images_per_s']:.1f} img/s{val}")
        D.barrier(dist)

    return {"run_dir": str(run_dir), "epochs": state.epoch, "best_metric": config.best_metric,
            "best": state.best if state.best > -math.inf else None, "best_epoch": state.best_epoch,
            "last_metrics": state.last_metrics, "time_s": time.perf_counter() - started,
            "history": state.history}


def _train_one_epoch(ddp_model, model, task, config, optimizer, scaler, ema, loader, state, epoch, iters_per_epoch,
                     dist, amp, show_progress, on_iteration, save) -> None:
    device = dist.device
    ddp_model.train()
    t_last = time.perf_counter()
    with EpochProgress(show_progress, iters_per_epoch, f"epoch {epoch + 1}/{config.epochs}",
                       completed=state.iteration) as bar:
        for batch in one_line_errors(loader):
            i = state.iteration
            global_iter = epoch * iters_per_epoch + i
            apply_schedule(optimizer, config.schedule, epoch, config.epochs, global_iter, iters_per_epoch)
            batch = to_device(batch, device)
            step_now = (i + 1) % config.accumulate == 0 or i + 1 == iters_per_epoch
            sync = ddp_model.no_sync() if (dist.enabled and not step_now) else contextlib.nullcontext()
            with sync:
                with torch.autocast(device_type=device.type, dtype=torch.float16, enabled=amp):
                    outputs = ddp_model(task.prepare_inputs(batch))
                    loss, parts = task.loss_fn(outputs, batch)
                # One all-reduce per iteration: the logged losses (mean over ranks) and the non-finite flag.
                names = ["loss", *parts]
                values = torch.stack([loss.detach().float().reshape(())] +
                                     [torch.as_tensor(v, dtype=torch.float32, device=device).detach().reshape(())
                                      for v in parts.values()])
                bad = (~torch.isfinite(values)).any().float().reshape(1)
                reduced = D.all_reduce_sum(dist, torch.cat([values, bad]))
                if reduced[-1].item() > 0:
                    raise PoseEdgeError(
                        f"training stopped: the loss is not finite at epoch {epoch + 1}, iteration {i + 1} "
                        f"(loss {loss.item():.4g}); last.pt keeps the last good state. Lower the learning rate or "
                        f"check the data")
                scaler.scale(loss).backward()
            if step_now:
                if config.clip_grad:
                    scaler.unscale_(optimizer)
                    nn.utils.clip_grad_norm_(model.parameters(), config.clip_grad)
                scaler.step(optimizer)
                scaler.update()
                optimizer.zero_grad(set_to_none=True)
                if ema is not None:
                    ema.update(model)

            mean = (reduced[:-1] / dist.world_size).tolist()
            for name, v in zip(names, mean):
                state.epoch_sums[name] = state.epoch_sums.get(name, 0.0) + v * config.batch_size
            state.epoch_images += config.batch_size
            now = time.perf_counter()
            state.epoch_time += now - t_last
            t_last = now
            state.iteration = i + 1
            bar.update(state.iteration, state.epoch_sums["loss"] / state.epoch_images,
                       state.epoch_images / max(state.epoch_time, 1e-9))
            if (config.checkpoint_every and state.iteration % config.checkpoint_every == 0 and step_now
                    and state.iteration < iters_per_epoch):
                save()
                D.barrier(dist)
            if on_iteration is not None:
                on_iteration(epoch, i)


def _restore(ckpt: dict, model, optimizer, scaler, ema) -> _State:
    model.load_state_dict(ckpt["train_model"])
    optimizer.load_state_dict(ckpt["optimizer"])
    scaler.load_state_dict(ckpt["scaler"])
    if ema is not None and ckpt.get("ema"):
        ema.load_state_dict(ckpt["ema"])
    restore_rng_state(ckpt["rng"])
    return _State(epoch=int(ckpt["epoch"]), iteration=int(ckpt["iteration"]), best=float(ckpt["best"]),
                  best_epoch=int(ckpt.get("best_epoch", 0)), history=list(ckpt.get("history", [])),
                  epoch_sums=dict(ckpt.get("epoch_sums", {})), epoch_images=int(ckpt.get("epoch_images", 0)),
                  epoch_time=float(ckpt.get("epoch_time", 0.0)), last_metrics=dict(ckpt.get("metrics", {})))
