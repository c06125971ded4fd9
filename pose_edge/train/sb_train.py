"""The Simple Baseline family plugged into the training engine: its TrainTask, TrainConfig and evaluation.

Every family's training module exposes the same two builders, which pose_edge.train.run calls:
    build_config(preset, epochs=None, batch=None, workers=2, amp=None, sync_bn=False, seed=0) -> TrainConfig
    build_task(preset, data_dir, seed=0, backbone_weights=None, eval_max_images=None, strict=False) -> TrainTask
"""

from __future__ import annotations

from pathlib import Path

from pose_edge.models.preset import Preset
from pose_edge.train.engine import TrainConfig, TrainTask
from pose_edge.train.optim import OptimizerSpec, ScheduleSpec


def build_config(preset: Preset, epochs: int | None = None, batch: int | None = None, workers: int = 2,
                 amp: bool | None = None, sync_bn: bool = False, seed: int = 0, eval_every: int = 1) -> TrainConfig:
    """The preset's recipe (Adam, multistep), with the command line's overrides."""
    r = preset.train_args
    return TrainConfig(
        epochs=int(epochs or r["epochs"]),
        batch_size=int(batch or r["batch"]),
        optimizer=OptimizerSpec(r.get("optimizer", "adam"), lr=float(r.get("lr", 1e-3))),
        schedule=ScheduleSpec(r.get("schedule", "multistep"), milestones=tuple(r.get("milestones", ())),
                              gamma=float(r.get("gamma", 0.1))),
        workers=workers,
        amp=amp if amp is not None else (None if r.get("amp", True) else False),
        sync_bn=sync_bn,
        seed=seed,
        eval_every=eval_every,
        best_metric="AP",
    )


def build_task(preset: Preset, data_dir: str | Path, seed: int = 0, backbone_weights: str | None = None,
               eval_max_images: int | None = None, log=None, strict: bool = False) -> TrainTask:
    """Model (with ImageNet backbone weights if asked), training crops of the train split, and an evaluation on the
    val split with ground-truth boxes (pose_edge.evaluate.split: no flip, DARK decoding, pycocotools)."""
    from pose_edge.data.coco import CocoKeypoints
    from pose_edge.data.topdown_samples import TopDownDataset, collate
    from pose_edge.evaluate.split import evaluate_split
    from pose_edge.models.simple_baseline import build_model, load_backbone_weights, model_meta
    from pose_edge.models.torch_backend import TorchBackend, prepare_images
    from pose_edge.train.sb_loss import JointsMSELoss

    meta = model_meta(preset)
    model = build_model(preset)
    if backbone_weights:
        described = load_backbone_weights(model, backbone_weights)
        if log:
            log(f"backbone weights: {described}")
    train_data = CocoKeypoints(data_dir, "train", strict=strict, require_people=True)
    dataset = TopDownDataset(train_data, preset.input_size, meta.extra["sigma"], preset.train_args.get("augment",
                             "sb"), seed=seed, stride=meta.heatmap_stride)
    criterion = JointsMSELoss()

    def loss_fn(heatmaps, batch):
        loss = criterion(heatmaps, batch["heatmaps"], batch["weights"])
        return loss, {}

    val_data = CocoKeypoints(data_dir, "val", strict=strict)

    def evaluate_fn(model, device):  # the one evaluation path, on ground-truth boxes
        return evaluate_split(TorchBackend(model, meta, device), val_data, max_images=eval_max_images)

    return TrainTask(model=model, preset=preset, meta=meta, train_dataset=dataset, collate_fn=collate,
                     prepare_inputs=lambda batch: prepare_images(batch["images"], meta.input), loss_fn=loss_fn,
                     evaluate_fn=evaluate_fn)
