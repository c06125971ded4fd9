"""Checkpoints: written atomically, read with torch.load(weights_only=True), never executing pickled code.

A checkpoint is a dict of tensors and plain Python values (no numpy arrays, no classes):

    format            "pose-edge-checkpoint", version 1
    kind              "full" (last.pt: everything to resume) or "weights" (best.pt: what inference needs)
    preset            the Preset as a dict (name, family, input_size, model_args, train_args, description)
    meta              ModelMeta as JSON text
    model             state dict of the model to run (the EMA weights when EMA is on)
    epoch, iteration  where the run stands: `epoch` epochs are complete, plus `iteration` optimiser-loop iterations of
                      the next one (0 at an epoch boundary)
    metrics           the last evaluation's statistics; best: the best value of the selection metric so far
    config            the training arguments as a dict (what the run was started with)
  full only:
    train_model       the raw (non-EMA) weights being optimised
    optimizer, scaler, ema (state dicts), ema_updates, rng (see capture_rng_state), history (metrics rows)

A RUN folder holds last.pt and best.pt; anything that takes a checkpoint also takes the folder (best.pt first).
"""

from __future__ import annotations

from pathlib import Path

import torch

from pose_edge.errors import ArtifactError
from pose_edge.fsutil import atomic_open
from pose_edge.model_meta import ModelMeta

FORMAT = "pose-edge-checkpoint"
VERSION = 1


def save_checkpoint(path: str | Path, state: dict) -> None:
    """Write `state` to `path` atomically: a reader sees the previous file or the new one, never a partial one."""
    state = {"format": FORMAT, "version": VERSION, **state}
    with atomic_open(path, "wb") as f:
        torch.save(state, f)


def _first_line(e: BaseException) -> str:
    text = str(e).strip().splitlines()
    return text[0][:200] if text else type(e).__name__


def load_checkpoint(path: str | Path) -> dict:
    """The checkpoint dict at `path` (tensors on the CPU); ArtifactError naming the file if it is missing, truncated,
    corrupt, not ours, or would need to execute code to load."""
    path = Path(path)
    if not path.is_file():
        raise ArtifactError(f"{path}: no such checkpoint file")
    try:
        state = torch.load(path, map_location="cpu", weights_only=True)
    except Exception as e:  # torch raises RuntimeError, UnpicklingError, EOFError, ... depending on the damage
        raise ArtifactError(f"{path}: cannot load checkpoint, the file is truncated, corrupt or not a pose-edge "
                            f"checkpoint ({_first_line(e)})") from None
    if not isinstance(state, dict) or state.get("format") != FORMAT:
        raise ArtifactError(f"{path}: not a pose-edge checkpoint (no '{FORMAT}' marker)")
    if state.get("version") != VERSION:
        raise ArtifactError(f"{path}: checkpoint version {state.get('version')!r} is not supported (expected "
                            f"{VERSION}); use the pose-edge version that wrote it")
    for key in ("preset", "meta", "model"):
        if key not in state:
            raise ArtifactError(f"{path}: checkpoint has no '{key}' entry")
    return state


def resolve_checkpoint(artifact: str | Path, prefer: str = "best") -> Path:
    """A checkpoint file, or a RUN folder's best.pt (prefer="best") / last.pt (prefer="last"), whichever exists."""
    artifact = Path(artifact)
    if artifact.is_dir():
        order = ("best.pt", "last.pt") if prefer == "best" else ("last.pt", "best.pt")
        for name in order:
            if (artifact / name).is_file():
                return artifact / name
        raise ArtifactError(f"{artifact}: run folder has neither best.pt nor last.pt")
    if not artifact.exists():
        raise ArtifactError(f"{artifact}: no such checkpoint or run folder")
    return artifact


def meta_of(state: dict) -> ModelMeta:
    return ModelMeta.from_json(state["meta"])


def preset_of(state: dict):
    from pose_edge.models.preset import Preset

    d = dict(state["preset"])
    try:
        d["input_size"] = tuple(d["input_size"])
        return Preset(**d)
    except (KeyError, TypeError) as e:
        raise ArtifactError(f"checkpoint preset record is malformed ({e})") from None


def load_model(artifact: str | Path, prefer: str = "best"):
    """(model in eval mode on the CPU, ModelMeta, checkpoint path) from a checkpoint file or RUN folder."""
    from pose_edge.models import family_module

    path = resolve_checkpoint(artifact, prefer)
    state = load_checkpoint(path)
    preset = preset_of(state)
    model = family_module(preset).build_model(preset)
    try:
        model.load_state_dict(state["model"])
    except RuntimeError as e:
        raise ArtifactError(f"{path}: weights do not fit preset {preset.name!r} ({_first_line(e)})") from None
    return model.eval(), meta_of(state), path
