"""Optimisers, learning-rate schedules with warm-up, and the EMA of weights, as the two papers' recipes need them.

The schedule is a pure function of (epoch, global iteration): nothing to step and nothing to get out of sync, so a
resumed run sets exactly the learning rates the uninterrupted run set. `apply_schedule` writes lr (and momentum, or
Adam's beta1, during warm-up) into every param group before each iteration.

Recipes:
    Simple Baselines   OptimizerSpec("adam", lr=1e-3), ScheduleSpec("multistep", milestones=(90, 120), gamma=0.1)
    KAPAO (YOLOv5)     OptimizerSpec("sgd", lr=0.01, momentum=0.937, nesterov=True, weight_decay=5e-4 * bs * acc / 64,
                       param_groups="yolo"), ScheduleSpec("one_cycle", lrf=0.2, warmup_epochs=3, warmup_min_iters=1000,
                       warmup_bias_lr=0.1, warmup_momentum=0.8), EMA decay 0.9999, tau 2000
"""

from __future__ import annotations

import copy
import dataclasses
import math
from dataclasses import dataclass

import numpy as np
import torch
from torch import nn

from pose_edge.errors import PoseEdgeError

OPTIMIZERS = ("adam", "adamw", "sgd")
PARAM_GROUPS = ("single", "yolo")
SCHEDULES = ("constant", "multistep", "one_cycle")


@dataclass(frozen=True)
class OptimizerSpec:
    """name: adam | adamw | sgd. momentum is SGD's momentum or Adam's beta1 (beta2 stays 0.999).

    param_groups: "single" (every parameter, weight_decay on all) or "yolo" (YOLOv5's three groups, in this order:
    normalisation weights without decay, other weights with weight_decay, biases without decay; the bias group is the
    one warm-up treats specially).
    """

    name: str = "adam"
    lr: float = 1e-3
    momentum: float = 0.9
    weight_decay: float = 0.0
    nesterov: bool = False
    param_groups: str = "single"

    def __post_init__(self):
        if self.name not in OPTIMIZERS:
            raise PoseEdgeError(f"unknown optimiser {self.name!r}; expected one of {', '.join(OPTIMIZERS)}")
        if self.param_groups not in PARAM_GROUPS:
            raise PoseEdgeError(f"unknown param_groups {self.param_groups!r}; expected {', '.join(PARAM_GROUPS)}")


@dataclass(frozen=True)
class ScheduleSpec:
    """kind: constant | multistep (x gamma at each milestone epoch) | one_cycle (cosine from 1 to lrf over the run).

    The factor is per epoch (constant within an epoch), as both references step their schedulers once an epoch.
    Warm-up, per iteration, over max(round(warmup_epochs * iterations per epoch), warmup_min_iters) iterations
    (none if both are 0): lr rises linearly from 0 (from warmup_bias_lr for the bias group) to its scheduled value,
    and momentum/beta1 from warmup_momentum (if set) to its configured value.
    """

    kind: str = "constant"
    milestones: tuple[int, ...] = ()
    gamma: float = 0.1
    lrf: float = 1.0
    warmup_epochs: float = 0.0
    warmup_min_iters: int = 0
    warmup_bias_lr: float = 0.0
    warmup_momentum: float | None = None

    def __post_init__(self):
        if self.kind not in SCHEDULES:
            raise PoseEdgeError(f"unknown schedule {self.kind!r}; expected one of {', '.join(SCHEDULES)}")
        object.__setattr__(self, "milestones", tuple(int(m) for m in self.milestones))

    def factor(self, epoch: int, epochs: int) -> float:
        """Multiplier of the base learning rate during epoch `epoch` (0-based) of `epochs`."""
        if self.kind == "multistep":
            return self.gamma ** sum(epoch >= m for m in self.milestones)
        if self.kind == "one_cycle":
            return ((1 - math.cos(epoch * math.pi / epochs)) / 2) * (self.lrf - 1) + 1
        return 1.0

    def warmup_iters(self, iters_per_epoch: int) -> int:
        if self.warmup_epochs <= 0 and self.warmup_min_iters <= 0:
            return 0
        return max(round(self.warmup_epochs * iters_per_epoch), self.warmup_min_iters)


def spec_from_dict(cls, d: dict):
    """Rebuild an OptimizerSpec/ScheduleSpec from its asdict() form (as stored in checkpoints and args.json)."""
    names = {f.name for f in dataclasses.fields(cls)}
    unknown = set(d) - names
    if unknown:
        raise PoseEdgeError(f"unknown {cls.__name__} fields: {', '.join(sorted(unknown))}")
    return cls(**d)


def _is_norm(module: nn.Module) -> bool:
    return isinstance(module, (nn.modules.batchnorm._NormBase, nn.GroupNorm, nn.LayerNorm))


def param_groups(model: nn.Module, spec: OptimizerSpec) -> list[dict]:
    """Parameter groups for `spec`, each tagged with 'kind' ('all', 'norm', 'weight' or 'bias')."""
    params = [p for p in model.parameters() if p.requires_grad]
    if spec.param_groups == "single":
        return [{"params": params, "weight_decay": spec.weight_decay, "kind": "all"}]
    norm, weight, bias = [], [], []
    for module in model.modules():
        for name, p in module.named_parameters(recurse=False):
            if not p.requires_grad:
                continue
            if name == "bias":
                bias.append(p)
            elif _is_norm(module):
                norm.append(p)
            else:
                weight.append(p)
    return [
        {"params": norm, "weight_decay": 0.0, "kind": "norm"},
        {"params": weight, "weight_decay": spec.weight_decay, "kind": "weight"},
        {"params": bias, "weight_decay": 0.0, "kind": "bias"},
    ]


def build_optimizer(model: nn.Module, spec: OptimizerSpec) -> torch.optim.Optimizer:
    groups = param_groups(model, spec)
    if spec.name == "sgd":
        opt = torch.optim.SGD(groups, lr=spec.lr, momentum=spec.momentum, nesterov=spec.nesterov)
    elif spec.name == "adamw":
        opt = torch.optim.AdamW(groups, lr=spec.lr, betas=(spec.momentum, 0.999))
    else:
        opt = torch.optim.Adam(groups, lr=spec.lr, betas=(spec.momentum, 0.999))
    for g in opt.param_groups:
        g["initial_lr"] = spec.lr
        g["initial_momentum"] = spec.momentum
    return opt


def _set_momentum(group: dict, value: float) -> None:
    if "betas" in group:
        group["betas"] = (value, group["betas"][1])
    elif "momentum" in group:
        group["momentum"] = value


def apply_schedule(optimizer: torch.optim.Optimizer, schedule: ScheduleSpec, epoch: int, epochs: int,
                   global_iter: int, iters_per_epoch: int) -> float:
    """Set every group's lr (and momentum during warm-up) for this iteration; return group 0's lr."""
    factor = schedule.factor(epoch, epochs)
    warmup = schedule.warmup_iters(iters_per_epoch)
    for g in optimizer.param_groups:
        target = g["initial_lr"] * factor
        if global_iter < warmup:
            start = schedule.warmup_bias_lr if g.get("kind") == "bias" else 0.0
            g["lr"] = float(np.interp(global_iter, [0, warmup], [start, target]))
            if schedule.warmup_momentum is not None:
                _set_momentum(g, float(np.interp(global_iter, [0, warmup],
                                                 [schedule.warmup_momentum, g["initial_momentum"]])))
        else:
            g["lr"] = target
            if schedule.warmup_momentum is not None:
                _set_momentum(g, g["initial_momentum"])
    return optimizer.param_groups[0]["lr"]


class ModelEMA:
    """Exponential moving average of a model's floating-point parameters and buffers (YOLOv5's ModelEMA).

    decay ramps up as decay * (1 - exp(-updates / tau)), so early averages forget the random start quickly. Integer
    buffers (BatchNorm's num_batches_tracked) are copied. `module` is the averaged model, always in eval mode.
    """

    def __init__(self, model: nn.Module, decay: float = 0.9999, tau: float = 2000.0, updates: int = 0):
        self.module = copy.deepcopy(model).eval()
        for p in self.module.parameters():
            p.requires_grad_(False)
        self.decay, self.tau, self.updates = decay, tau, updates

    @torch.no_grad()
    def update(self, model: nn.Module) -> None:
        self.updates += 1
        d = self.decay * (1 - math.exp(-self.updates / self.tau))
        source = model.state_dict()
        for name, v in self.module.state_dict().items():
            if v.dtype.is_floating_point:
                v.mul_(d).add_(source[name].detach(), alpha=1 - d)
            else:
                v.copy_(source[name])

    def state_dict(self) -> dict:
        return {"module": self.module.state_dict(), "updates": self.updates}

    def load_state_dict(self, state: dict) -> None:
        self.module.load_state_dict(state["module"])
        self.updates = int(state["updates"])
