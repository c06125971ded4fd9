"""Import the published checkpoints of the original Simple Baselines and KAPAO code as pose-edge run folders.

`import_checkpoint(file, preset, out)` reads a checkpoint laid out as the original training scripts save it, maps
every tensor to the pose-edge model of `preset`, checks every shape, and writes a run folder (best.pt, meta.json,
import.json) that eval, export, predict and bench accept. No code from the file runs (pose_edge.models.safe_unpickle).

Simple Baselines (microsoft/human-pose-estimation.pytorch, pose_estimation/train.py; DarkPose saves the same way)
    final_state.pth.tar    the model's state dict (saved from inside DataParallel: no prefix)
    model_best.pth.tar     the DataParallel state dict: every key prefixed "module."
    checkpoint.pth.tar     {"epoch", "model", "state_dict": DataParallel state dict, "perf", "optimizer"}
  PoseResNet's names are torchvision's for the backbone (conv1, bn1, layer1..4), then deconv_layers.{0,1,3,4,6,7}
  (transposed conv, BN; ReLUs have no tensors) and final_layer; ours put the backbone under "backbone." and call the
  other two "deconv." and "final.". Checkpoints of PyTorch 0.4.0 have no BN num_batches_tracked: those are set to 0
  (they only count training steps). The original feeds BGR images normalised with ImageNet's RGB mean and std in
  channel order (it reads with cv2 and never converts), so the imported meta says color "BGR" with those values.
  The "caffe"-style checkpoints (stride in the 1x1 conv) have the same tensors and cannot be told apart: do not
  import them.
  Geometry: the two repositories save identical files but trained with different conventions (pose_edge.geometry,
  pose_edge.heatmap_codec), so the file cannot say which it is: `convention` does ("simple_baselines", the default,
  for the Simple Baselines release such as pose_resnet_50_256x192.pth.tar; "darkpose" for DarkPose's ResNet
  weights). It goes into the run's meta (ModelMeta.convention), and from there into every ONNX model and engine
  exported from it, so decoding follows it everywhere; DarkPose's also records its blur kernel (3 at 128x96, 11
  otherwise) as meta.extra["dark_kernel"].

KAPAO (wmcnally/kapao, train.py; the YOLOv5 layout)
    {"epoch", "best_fitness", "model": Model, "ema": Model, "updates", "optimizer", "wandb_id"}, both models in half
    precision; strip_optimizer (run at the end of training) replaces "model" by the EMA and sets "ema" to None.
  The Model object's network is `model`, a Sequential built from models/yolov5{s,m,l}6.yaml: layer i's tensors are
  named model.{i}.*, and layer 33 is Detect (model.33.m.{level} = the output convs, plus the buffers anchors [L, A, 2]
  in grid cells and anchor_grid [L, 1, A, 1, 1, 2] in input pixels, and the attribute stride [L]). The EMA is taken
  when there is one; half-precision tensors become float32. The anchors the original decodes with (anchor_grid, else
  anchors x stride) are compared with the preset's and, when training changed them (AutoAnchor), carried into the
  run's preset and meta.
"""

from __future__ import annotations

import dataclasses
import hashlib
from collections import OrderedDict
from pathlib import Path

import torch

from pose_edge.errors import ArtifactError, PoseEdgeError
from pose_edge.fsutil import atomic_write_json
from pose_edge.heatmap_codec import dark_kernel_for
from pose_edge.models import build_model, get_preset, model_meta
from pose_edge.models.preset import Preset
from pose_edge.models.safe_unpickle import Placeholder, load_untrusted, module_state_dict

# ----------------------------------------------------------------------------------------- Simple Baselines names

SB_BACKBONE = ("conv1", "bn1", "layer1", "layer2", "layer3", "layer4")


def sb_to_ours(key: str) -> str | None:
    """A PoseResNet state-dict key (no "module." prefix) -> ours, or None if it has no counterpart."""
    head, _, rest = key.partition(".")
    if head in SB_BACKBONE:
        return f"backbone.{key}"
    return {"deconv_layers": f"deconv.{rest}", "final_layer": f"final.{rest}"}.get(head)


# --------------------------------------------------------------------------------------------------- KAPAO names

# Layer index of the original's Sequential (models/yolov5*6.yaml) -> our module. Layers 13, 14, 17, 18, 21, 22, 25,
# 28 and 31 are Upsample and Concat, which hold no tensors; layer 33 is Detect.
YOLO_LAYERS = {0: "stem", 1: "p2.0", 2: "p2.1", 3: "p3.0", 4: "p3.1", 5: "p4.0", 6: "p4.1", 7: "p5.0", 8: "p5.1",
               9: "p6.0", 10: "p6.1", 11: "p6.2", 12: "lat6", 15: "td5", 16: "lat5", 19: "td4", 20: "lat4",
               23: "out3", 24: "down3", 26: "out4", 27: "down4", 29: "out5", 30: "down5", 32: "out6"}
YOLO_DETECT = 33
# Tensors of the original that inference does not use: autobalance's learned loss weights (train.py).
YOLO_TRAINING_ONLY = ("loss_coeffs",)


def yolo_to_ours(key: str) -> str | None:
    """A YOLOv5-P6 Model state-dict key ("model.24.conv.weight") -> ours ("down3.conv.weight"), or None."""
    parts = key.split(".")
    if len(parts) < 3 or parts[0] != "model" or not parts[1].isdigit():
        return None
    index, rest = int(parts[1]), parts[2:]
    if index == YOLO_DETECT:
        return f"head.{'.'.join(rest[1:])}" if rest[0] == "m" else None
    if index in YOLO_LAYERS:
        # SPP's pools are `m` in the original and `pools` here; they hold no tensors, so only names with tensors map.
        return f"{YOLO_LAYERS[index]}.{'.'.join(rest)}"
    return None


# ------------------------------------------------------------------------------------------------------ reading


@dataclasses.dataclass
class Extracted:
    """What a checkpoint holds, in the original's names: tensors, where they came from, and notes for the report."""

    tensors: "OrderedDict[str, torch.Tensor]"
    layout: str
    anchors: list | None = None  # [L][A][2] input pixels (KAPAO)
    strides: list | None = None
    ignored: list = dataclasses.field(default_factory=list)


def _describe(obj) -> str:
    if isinstance(obj, Placeholder):
        return f"a pickled {obj.path}"
    if isinstance(obj, dict):
        return f"a dict with keys {', '.join(map(str, list(obj)[:6]))}"
    return f"a {type(obj).__name__}"


def _is_state_dict(obj) -> bool:
    return isinstance(obj, dict) and bool(obj) and all(isinstance(v, torch.Tensor) for v in obj.values())


def extract_simple_baseline(obj, path: Path) -> Extracted:
    layout = "state dict"
    if isinstance(obj, dict) and _is_state_dict(obj.get("state_dict")):
        obj, layout = obj["state_dict"], "dict with 'state_dict'"
    if not _is_state_dict(obj):
        hint = " (a KAPAO checkpoint? import it with a kapao preset)" if _find_yolo_model(obj) is not None else ""
        raise ArtifactError(f"{path}: not a Simple Baselines checkpoint: expected a state dict or a dict with "
                            f"'state_dict', found {_describe(obj)}{hint}")
    prefixed = [k.startswith("module.") for k in obj]
    if all(prefixed):
        obj, layout = OrderedDict((k[len("module."):], v) for k, v in obj.items()), f"{layout}, 'module.' prefix"
    elif any(prefixed):
        raise ArtifactError(f"{path}: some keys have the DataParallel 'module.' prefix and some do not")
    return Extracted(OrderedDict(obj), layout)


def _find_yolo_model(obj) -> tuple[Placeholder, str] | None:
    """(the Model placeholder to import, which entry) from a YOLOv5-style checkpoint dict or a pickled model."""
    if isinstance(obj, Placeholder):
        return obj, "model"
    if isinstance(obj, dict):
        for key in ("ema", "model"):  # the EMA is what the original evaluates and publishes
            if isinstance(obj.get(key), Placeholder):
                return obj[key], key
    return None


def extract_yolo(obj, path: Path) -> Extracted:
    found = _find_yolo_model(obj)
    if found is None:
        hint = " (a Simple Baselines checkpoint? import it with an sb preset)" if (
            _is_state_dict(obj) or isinstance(obj, dict) and _is_state_dict(obj.get("state_dict"))) else ""
        raise ArtifactError(f"{path}: not a KAPAO checkpoint: expected a pickled YOLOv5-style Model (alone or under "
                            f"'ema' / 'model'), found {_describe(obj)}{hint}")
    model, entry = found
    layers = (model.get("_modules") or {}).get("model")
    if not isinstance(layers, Placeholder) or not layers.get("_modules"):
        raise ArtifactError(f"{path}: the pickled {model.path} has no 'model' layer list (not a YOLOv5-style Model)")
    if len(layers.get("_modules")) != YOLO_DETECT + 1:
        raise ArtifactError(f"{path}: {model.path} has {len(layers.get('_modules'))} layers; the YOLOv5-P6 layout of "
                            f"KAPAO has {YOLO_DETECT + 1}")
    detect = list(layers.get("_modules").values())[-1]
    if not isinstance(detect, Placeholder) or not detect.path.endswith(".Detect"):
        raise ArtifactError(f"{path}: the last layer of {model.path} is {_describe(detect)}, not a Detect head")

    tensors = module_state_dict(model)
    detect_prefix = f"model.{YOLO_DETECT}."
    grid_cells = tensors.pop(detect_prefix + "anchors", None)
    anchor_grid = tensors.pop(detect_prefix + "anchor_grid", None)
    stride = detect.get("stride")
    if not isinstance(stride, torch.Tensor) or grid_cells is None:
        raise ArtifactError(f"{path}: the Detect head holds no anchors or strides")
    stride = stride.double()
    # What the original decodes with: anchor_grid (pixels) where it is a buffer, else anchors (cells) x stride.
    pixels = (anchor_grid.double().reshape(grid_cells.shape) if anchor_grid is not None
              else grid_cells.double() * stride.view(-1, 1, 1))
    ignored = [k for k in tensors if k in YOLO_TRAINING_ONLY]
    for k in ignored:
        del tensors[k]
    weights = "EMA" if entry == "ema" else "model (the EMA if strip_optimizer ran)"
    dtype = next(iter(tensors.values())).dtype if tensors else None
    layout = f"pickled {model.path} under '{entry}' ({weights}, {str(dtype).replace('torch.', '')})"
    return Extracted(tensors, layout, anchors=pixels.tolist(), strides=[float(s) for s in stride], ignored=ignored)


# ------------------------------------------------------------------------------------------------------ mapping


def map_tensors(extracted: Extracted, to_ours, target: "OrderedDict[str, torch.Tensor]", preset: Preset,
                path: Path) -> tuple["OrderedDict[str, torch.Tensor]", list[str]]:
    """The checkpoint's tensors renamed to ours, float32, every shape checked -> (state dict, names filled in).

    Refuses, naming tensors: the first whose shape differs from ours (a checkpoint of another model), any that have no
    counterpart here, any of ours the checkpoint lacks (except BN num_batches_tracked, set to 0)."""
    state: OrderedDict[str, torch.Tensor] = OrderedDict()
    unmapped = []
    for key, tensor in extracted.tensors.items():
        ours = to_ours(key)
        if ours is None or ours not in target:
            unmapped.append(key)
            continue
        if tuple(tensor.shape) != tuple(target[ours].shape):
            raise ArtifactError(f"{path}: tensor {key} {list(tensor.shape)} does not fit {preset.name}'s {ours} "
                                f"{list(target[ours].shape)}: the checkpoint is not a {preset.name} model")
        state[ours] = tensor.to(target[ours].dtype).clone()  # half -> float32; counters stay int64
    if unmapped:
        raise ArtifactError(f"{path}: {len(unmapped)} tensors have no counterpart in {preset.name}: "
                            f"{_names(unmapped)}")
    filled = []
    for name, tensor in target.items():
        if name not in state and name.endswith("num_batches_tracked"):
            state[name] = torch.zeros_like(tensor)
            filled.append(name)
    missing = [name for name in target if name not in state]
    if missing:
        raise ArtifactError(f"{path}: {len(missing)} tensors of {preset.name} are missing from the checkpoint: "
                            f"{_names(missing)}")
    return OrderedDict((name, state[name]) for name in target), filled


def _names(names: list[str], shown: int = 5) -> str:
    return ", ".join(names[:shown]) + (f" and {len(names) - shown} more" if len(names) > shown else "")


# ------------------------------------------------------------------------------------------------------ writing


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()


def _kapao_anchors(extracted: Extracted, preset: Preset, path: Path) -> tuple[tuple, bool]:
    """(the anchors to run with, whether they differ from the preset's); refuses strides of another network."""
    ours = tuple(tuple(tuple(float(v) for v in wh) for wh in level) for level in preset.model_args["anchors"])
    strides = tuple(int(s) for s in model_meta(preset).strides)
    if tuple(extracted.strides) != strides:
        raise ArtifactError(f"{path}: the Detect head's strides {extracted.strides} are not {preset.name}'s "
                            f"{list(strides)}")
    stored = extracted.anchors
    if [[len(a) for a in level] for level in stored] != [[len(a) for a in level] for level in ours]:
        raise ArtifactError(f"{path}: the stored anchors have the shape of another network ({len(stored)} levels)")
    stored = tuple(tuple((round(w, 4), round(h, 4)) for w, h in level) for level in stored)
    differ = any(abs(a - b) > 1e-3 for sl, ol in zip(stored, ours) for sa, oa in zip(sl, ol) for a, b in zip(sa, oa))
    return (stored if differ else ours), differ


TOPDOWN_CONVENTIONS = ("simple_baselines", "darkpose")  # what a Simple Baselines-layout checkpoint may have been


def _check_topdown_convention(convention: str) -> str:
    if convention not in TOPDOWN_CONVENTIONS:
        raise PoseEdgeError(f"unknown convention {convention!r} for a Simple Baselines checkpoint; expected one of "
                            f"{', '.join(TOPDOWN_CONVENTIONS)}")
    return convention


def with_convention(meta, convention: str):
    """The meta of a Simple Baselines-layout import trained with `convention`: that convention, BGR input (both
    originals feed cv2's BGR images normalised with ImageNet's RGB statistics in channel order, COLOR_RGB false in
    DarkPose's ResNet configs), and the DARK blur kernel of that convention."""
    _check_topdown_convention(convention)
    kernel = dark_kernel_for(convention, (meta.input.height, meta.input.width), meta.extra.get("sigma", 2.0))
    return dataclasses.replace(meta, convention=convention,
                               input=dataclasses.replace(meta.input, color="BGR"),
                               extra={**meta.extra, "dark_kernel": kernel})


def default_out(file: Path, preset: Preset) -> Path:
    return Path("runs") / f"{preset.name}-{file.name.split('.')[0]}"


def import_checkpoint(file: str | Path, preset: str | Preset, out: str | Path | None = None,
                      convention: str | None = None) -> Path:
    """Import the original-layout checkpoint `file` as a run of `preset`; return the run folder written.

    out: the run folder [default: runs/PRESET-FILESTEM]; it must not hold a run already. convention: for Simple
    Baselines-layout files, the geometry they were trained with, "simple_baselines" (default) or "darkpose" (module
    docstring); KAPAO checkpoints take none. The folder gets best.pt (a pose-edge checkpoint of kind "weights"),
    meta.json, and import.json (what was read and how it was mapped).
    Raises ArtifactError / UnsafePickleError with one line naming the file and, where it applies, the tensor."""
    from pose_edge.models.checkpoint import save_checkpoint

    file = Path(file)
    preset = get_preset(preset) if isinstance(preset, str) else preset
    if preset.family == "simple_baseline":
        kind, extract, to_ours = "simple_baselines", extract_simple_baseline, sb_to_ours
        convention = _check_topdown_convention(convention or "simple_baselines")
    elif preset.family in ("kapao", "person_detector"):
        kind, extract, to_ours = "kapao", extract_yolo, yolo_to_ours
        if convention is not None:
            raise PoseEdgeError(f"--convention is the top-down geometry of Simple Baselines checkpoints; "
                                f"{preset.name} is a {preset.family} model")
    else:
        raise PoseEdgeError(f"no importer for the {preset.family} family")
    run_dir = Path(out) if out is not None else default_out(file, preset)
    if run_dir.exists() and any(run_dir.iterdir()):
        raise PoseEdgeError(f"{run_dir} already exists and is not empty; choose another --out")

    extracted = extract(load_untrusted(file), file)
    target = build_model(preset).state_dict()
    state, filled = map_tensors(extracted, to_ours, target, preset, file)

    notes, anchors_differ = [], False
    if kind == "kapao":
        anchors, anchors_differ = _kapao_anchors(extracted, preset, file)
        if anchors_differ:
            preset = dataclasses.replace(preset, model_args={**preset.model_args, "anchors": anchors})
            notes.append("anchors differ from the preset's (changed in training): the checkpoint's are used")
    meta = model_meta(preset)
    if kind == "simple_baselines":
        meta = with_convention(meta, convention)
        notes.append("input colour order BGR, as the original was trained")
        notes.append(f"geometry convention {convention} (crops, heatmap mapping, flip, DARK blur kernel "
                     f"{meta.extra['dark_kernel']}), as the {'DarkPose' if convention == 'darkpose' else 'original'} "
                     "code decodes it")
    if filled:
        notes.append(f"{len(filled)} BatchNorm num_batches_tracked counters absent (PyTorch 0.4.0) and set to 0")
    if extracted.ignored:
        notes.append(f"training-only tensors not imported: {', '.join(extracted.ignored)}")
    source = {"file": file.name, "sha256": _sha256(file), "format": kind, "layout": extracted.layout}
    meta = dataclasses.replace(meta, extra={**meta.extra, "imported_from": source})

    model = build_model(preset)
    model.load_state_dict(state)  # strict: the mapping above is complete
    run_dir.mkdir(parents=True, exist_ok=True)
    save_checkpoint(run_dir / "best.pt", {
        "kind": "weights", "preset": dataclasses.asdict(preset), "meta": meta.to_json(), "model": model.state_dict(),
        "epoch": 0, "iteration": 0, "metrics": {}, "best": None, "config": {}, "imported_from": source})
    atomic_write_json(run_dir / "meta.json", meta.to_dict(), indent=2)
    report = {**source, "preset": preset.name, "run_dir": str(run_dir), "tensors": len(state),
              "anchors": [list(map(list, level)) for level in meta.anchors] if meta.anchors else None,
              "anchors_differ": anchors_differ, "filled": filled, "ignored": extracted.ignored,
              "convention": meta.convention, "notes": notes}
    atomic_write_json(run_dir / "import.json", report, indent=2)
    return run_dir
