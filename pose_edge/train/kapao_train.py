"""KAPAO and the person detector plugged into the training engine: their TrainConfig, TrainTask and evaluation.

The same two builders as every family's training module (pose_edge.train.run calls them):
    build_config(preset, epochs=None, batch=None, workers=2, amp=None, sync_bn=False, seed=0) -> TrainConfig
    build_task(preset, data_dir, seed=0, eval_max_images=None, strict=False) -> TrainTask
Evaluation on the val split through the one evaluation path (pose_edge.evaluate.split): KAPAO -> COCO keypoint AP
plus box_AP, box_AP50, box_R50 of its pose objects; person detector -> COCO box AP of the person class with R50.
"""

from __future__ import annotations

from pathlib import Path


from pose_edge.models.preset import Preset


def build_config(preset: Preset, epochs: int | None = None, batch: int | None = None, workers: int = 2,
                 amp: bool | None = None, sync_bn: bool = False, seed: int = 0, eval_every: int = 1):
    """The preset's recipe with the command line's overrides.

    Reference presets (reference §A.8): SGD Nesterov lr 0.01, momentum 0.937, YOLOv5's three parameter groups,
    gradients accumulated up to a nominal batch of 64 and weight decay 5e-4 x batch x accumulate / 64, one-cycle
    cosine to lrf 0.2, warm-up max(3 epochs, 1000 iterations) with bias lr from 0.1 and momentum from 0.8, EMA
    0.9999 (tau 2000), AMP on a GPU. The CPU presets carry their own recipe (see pose_edge.models.kapao).
    """
    from pose_edge.train.engine import TrainConfig
    from pose_edge.train.optim import OptimizerSpec, ScheduleSpec

    r = preset.train_args
    batch_size = int(batch or r["batch"])
    accumulate = max(round(r.get("nominal_batch", 64) / batch_size), 1)
    weight_decay = r.get("weight_decay", 0.0) * batch_size * accumulate / r.get("nominal_batch", 64)
    return TrainConfig(
        epochs=int(epochs or r["epochs"]),
        batch_size=batch_size,
        optimizer=OptimizerSpec(r["optimizer"], lr=float(r["lr"]), momentum=float(r["momentum"]),
                                weight_decay=weight_decay, nesterov=bool(r.get("nesterov", False)),
                                param_groups="yolo"),
        schedule=ScheduleSpec("one_cycle", lrf=float(r.get("lrf", 0.2)),
                              warmup_epochs=float(r.get("warmup_epochs", 0.0)),
                              warmup_min_iters=int(r.get("warmup_min_iters", 0)),
                              warmup_bias_lr=float(r.get("warmup_bias_lr", 0.0)),
                              warmup_momentum=r.get("warmup_momentum")),
        workers=workers,
        amp=amp if amp is not None else (None if r.get("amp", True) else False),
        accumulate=accumulate,
        ema_decay=0.9999 if r.get("ema", False) else None,
        ema_tau=2000.0,
        sync_bn=sync_bn,
        seed=seed,
        eval_every=eval_every,
        best_metric="AP",
    )


def build_task(preset: Preset, data_dir: str | Path, seed: int = 0, eval_max_images: int | None = None, log=None,
               strict: bool = False, **_unused):
    """Model, augmented training samples of the train split, the KAPAO loss, and an evaluation on the val split."""
    from pose_edge.data.coco import CocoKeypoints
    from pose_edge.data.kapao_samples import KapaoDataset, collate
    from pose_edge.evaluate.split import evaluate_split
    from pose_edge.models.kapao import build_model, model_meta
    from pose_edge.models.torch_backend import TorchBackend, prepare_images
    from pose_edge.train.engine import TrainTask
    from pose_edge.train.kapao_loss import build_loss

    meta = model_meta(preset)
    model = build_model(preset)
    r = preset.train_args
    train_data = CocoKeypoints(data_dir, "train", strict=strict, require_people=True)
    dataset = KapaoDataset(train_data, preset.input_size, r.get("augment", "kapao"),
                           meta.num_keypoints, r.get("kp_bbox", 0.05), seed=seed)
    criterion = build_loss(meta, r)

    def loss_fn(outputs, batch):
        loss, parts = criterion(outputs, batch["targets"])
        return loss, dict(zip(("box", "obj", "cls", "kp"), parts.tolist()))

    val_data = CocoKeypoints(data_dir, "val", strict=strict)

    def evaluate_fn(model, device):  # the one evaluation path
        return evaluate_split(TorchBackend(model, meta, device), val_data, max_images=eval_max_images)

    return TrainTask(model=model, preset=preset, meta=meta, train_dataset=dataset, collate_fn=collate,
                     prepare_inputs=lambda batch: prepare_images(batch["images"], meta.input), loss_fn=loss_fn,
                     evaluate_fn=evaluate_fn)
