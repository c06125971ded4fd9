"""The model description that travels with every checkpoint, ONNX model and engine.

A runtime needs nothing but this record and the artefact itself to turn images into poses: the input spec says how to
prepare pixels, the head fields say how to decode the outputs. Torch-free; stored as JSON.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

from pose_edge import __version__
from pose_edge.errors import ArtifactError
from pose_edge.keypoints import NAMES

FAMILIES = ("simple_baseline", "kapao", "person_detector")


@dataclass(frozen=True)
class InputSpec:
    """How pixels enter the network: x = (pixel - mean) / std on RGB values in 0..255, NCHW float."""

    height: int
    width: int
    mean: tuple[float, float, float] = (0.0, 0.0, 0.0)
    std: tuple[float, float, float] = (255.0, 255.0, 255.0)
    color: str = "RGB"


@dataclass(frozen=True)
class ModelMeta:
    """What a model is and how to read its outputs.

    family: "simple_baseline" (outputs heatmaps [N, K, H/heatmap_stride, W/heatmap_stride]),
            "kapao" or "person_detector" (outputs one raw grid [N, A*(5+num_classes+2K), H/S, W/S] per stride S,
            channel = a*(5+num_classes+2K) + c, anchors in input pixels).
    """

    family: str
    preset: str
    input: InputSpec
    keypoints: tuple[str, ...] = NAMES
    heatmap_stride: int | None = None
    strides: tuple[int, ...] | None = None
    anchors: tuple[tuple[tuple[float, float], ...], ...] | None = None
    num_classes: int | None = None
    pose_edge_version: str = __version__
    extra: dict = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ArtifactError(f"unknown model family {self.family!r}; expected one of {', '.join(FAMILIES)}")

    @property
    def num_keypoints(self) -> int:
        return len(self.keypoints)

    def to_dict(self) -> dict:
        return dataclasses.asdict(self)

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict) -> "ModelMeta":
        try:
            d = dict(d)
            d["input"] = InputSpec(**{k: tuple(v) if isinstance(v, list) else v for k, v in d["input"].items()})
            d["keypoints"] = tuple(d.get("keypoints", NAMES))
            if d.get("strides") is not None:
                d["strides"] = tuple(d["strides"])
            if d.get("anchors") is not None:
                d["anchors"] = tuple(tuple(tuple(a) for a in level) for level in d["anchors"])
            return cls(**d)
        except (KeyError, TypeError, ValueError) as e:
            raise ArtifactError(f"model metadata is malformed ({e}); re-export the model with this pose-edge") from None

    @classmethod
    def from_json(cls, text: str) -> "ModelMeta":
        try:
            return cls.from_dict(json.loads(text))
        except json.JSONDecodeError as e:
            raise ArtifactError(f"model metadata is not valid JSON ({e})") from None
