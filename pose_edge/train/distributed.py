"""One process or many: DistributedDataParallel under torchrun, gloo on the CPU and nccl on GPUs.

`setup(device)` reads torchrun's environment (RANK, WORLD_SIZE, LOCAL_RANK); without it the run is one process and
every helper here is a no-op, so the training loop has a single code path. Batches are split so that the global batch
is the concatenation of the ranks' batches in rank order (`pose_edge.train.engine.EpochBatchSampler`): with batch
statistics synchronised (`sync_batchnorm`), a step on N processes computes what one process computes on the whole
batch.
"""

from __future__ import annotations

import gc
import os
from dataclasses import dataclass
from datetime import timedelta

import torch
import torch.distributed as torch_dist
from torch import nn

from pose_edge.errors import PoseEdgeError


@dataclass(frozen=True)
class Dist:
    """Where this process stands: rank of world_size, and the device it trains on."""

    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")

    @property
    def enabled(self) -> bool:
        return self.world_size > 1

    @property
    def is_main(self) -> bool:
        return self.rank == 0


def resolve_device(device: str | None, local_rank: int = 0) -> torch.device:
    """'auto'/None: the GPU of this rank if CUDA works, else the CPU. 'cuda' picks this rank's GPU; 'cpu' the CPU."""
    device = (device or "auto").lower()
    if device == "auto":
        device = "cuda" if torch.cuda.is_available() else "cpu"
    if device.startswith("cuda"):
        if not torch.cuda.is_available():
            raise PoseEdgeError(f"--device {device}: CUDA is not available here; use --device cpu")
        if device == "cuda":
            return torch.device("cuda", local_rank)
        return torch.device(device)
    if device != "cpu":
        raise PoseEdgeError(f"unknown device {device!r}; expected auto, cpu, cuda or cuda:N")
    return torch.device("cpu")


def setup(device: str | None = None) -> Dist:
    """Initialise the process group when launched by torchrun (WORLD_SIZE > 1); return this process's Dist."""
    world_size = int(os.environ.get("WORLD_SIZE", "1"))
    rank = int(os.environ.get("RANK", "0"))
    local_rank = int(os.environ.get("LOCAL_RANK", "0"))
    dev = resolve_device(device, local_rank)
    if world_size > 1 and not torch_dist.is_initialized():
        if dev.type == "cuda":
            torch.cuda.set_device(dev)
        torch_dist.init_process_group(backend="nccl" if dev.type == "cuda" else "gloo")
    return Dist(rank=rank, world_size=world_size, local_rank=local_rank, device=dev)


def cleanup(dist: Dist) -> None:
    """Leave the process group together: wait (a minute at most, so a failed peer cannot hang us) until every rank
    is here, free what still holds the group, then destroy it. A DDP wrapper caught in a reference cycle would
    otherwise live until interpreter exit, where gloo's worker threads can abort the process (seen once in CI:
    "terminate called without an active exception" in rank 1 of a finished run)."""
    if not (dist.enabled and torch_dist.is_initialized()):
        return
    if torch_dist.get_backend() == "gloo":
        try:
            torch_dist.monitored_barrier(timeout=timedelta(seconds=60))
        except RuntimeError:
            pass  # a peer failed or left: its error is the one to report
    gc.collect()
    torch_dist.destroy_process_group()


def barrier(dist: Dist) -> None:
    if dist.enabled:
        torch_dist.barrier()


def all_reduce_sum(dist: Dist, values: torch.Tensor) -> torch.Tensor:
    """Sum a small tensor over ranks (in place and returned); identity in one process."""
    if dist.enabled:
        torch_dist.all_reduce(values, op=torch_dist.ReduceOp.SUM)
    return values


def broadcast_object(dist: Dist, obj):
    """rank 0's `obj` on every rank (a picklable Python object of our own making)."""
    if not dist.enabled:
        return obj
    box = [obj]
    torch_dist.broadcast_object_list(box, src=0)
    return box[0]


def broadcast_buffers(model: nn.Module, dist: Dist) -> None:
    """Copy rank 0's buffers (BatchNorm running statistics) to every rank. DDP broadcasts them before each forward,
    so after the last forward of an epoch each rank holds its own; this makes the ranks' models identical again."""
    if dist.enabled:
        for buffer in model.buffers():
            torch_dist.broadcast(buffer, src=0)


def wrap_model(model: nn.Module, dist: Dist) -> nn.Module:
    """DDP around `model` (already on dist.device) when there are several processes; the model itself otherwise."""
    if not dist.enabled:
        return model
    device_ids = [dist.device.index] if dist.device.type == "cuda" else None
    return nn.parallel.DistributedDataParallel(model, device_ids=device_ids)


class CpuSyncBatchNorm(nn.BatchNorm2d):
    """BatchNorm2d whose training statistics are taken over the whole global batch through the process group.

    torch's SyncBatchNorm runs only on GPUs; this one runs wherever the process group does (gloo on the CPU) and keeps
    the state-dict keys of BatchNorm2d. Training: mean and biased variance over (N, H, W) of all ranks, from one
    differentiable all-reduce of (sum, sum of squares, count), so gradients flow across ranks as in SyncBatchNorm;
    running statistics use the unbiased variance, as BatchNorm does.
    """

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        if not self.training or not torch_dist.is_initialized() or torch_dist.get_world_size() == 1:
            return super().forward(x)
        from torch.distributed.nn.functional import all_reduce

        c = x.shape[1]
        count = torch.full((1,), x.numel() / c, dtype=x.dtype, device=x.device)
        stats = torch.cat([x.sum(dim=(0, 2, 3)), (x * x).sum(dim=(0, 2, 3)), count])
        stats = all_reduce(stats)  # differentiable: its backward all-reduces the gradients
        total = stats[-1]
        mean = stats[:c] / total
        var = (stats[c:2 * c] / total - mean * mean).clamp_min(0)
        if self.track_running_stats:
            with torch.no_grad():
                self.num_batches_tracked += 1
                momentum = self.momentum if self.momentum is not None else 1.0 / float(self.num_batches_tracked)
                unbiased = var * total / (total - 1).clamp_min(1)
                self.running_mean.mul_(1 - momentum).add_(momentum * mean)
                self.running_var.mul_(1 - momentum).add_(momentum * unbiased)
        y = (x - mean[None, :, None, None]) * torch.rsqrt(var[None, :, None, None] + self.eps)
        if self.affine:
            y = y * self.weight[None, :, None, None] + self.bias[None, :, None, None]
        return y


def convert_sync_batchnorm(model: nn.Module, device: torch.device) -> nn.Module:
    """Replace every BatchNorm2d by a synchronised one: torch's SyncBatchNorm on GPUs, CpuSyncBatchNorm on the CPU.

    The parameters and buffers are moved over (the same Parameter objects), so an optimiser built before still works.
    """
    if device.type == "cuda":
        return nn.SyncBatchNorm.convert_sync_batchnorm(model)

    def convert(module: nn.Module) -> nn.Module:
        if isinstance(module, nn.BatchNorm2d) and not isinstance(module, CpuSyncBatchNorm):
            new = CpuSyncBatchNorm(module.num_features, module.eps, module.momentum, module.affine,
                                   module.track_running_stats)
            if module.affine:
                new.weight, new.bias = module.weight, module.bias
            if module.track_running_stats:
                new.running_mean, new.running_var = module.running_mean, module.running_var
                new.num_batches_tracked = module.num_batches_tracked
            new.train(module.training)
            return new
        for name, child in module.named_children():
            module.add_module(name, convert(child))
        return module

    return convert(model)
