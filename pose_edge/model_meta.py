"""What every artefact says about itself: the model (ModelMeta, in checkpoints, ONNX models and engines) and, for
exported graphs, their input format, outputs and precision (GraphInfo).

A runtime needs nothing but these records and the artefact itself to turn images into poses: the input spec says how
to prepare pixels, the head fields say how to decode the outputs. Torch-free and onnx-free; stored as JSON.

GraphInfo is written by pose_edge.export into the ONNX model's metadata (key `pose_edge`, one JSON object) and copied
into every engine's sidecar; ONNX Runtime hands the metadata over as a string map. Input formats:
    "uint8_nhwc_bgr"   uint8 [N, H, W, 3] in OpenCV's BGR order, exactly what Backend.run receives; the cast, the
                       channel flip, the transpose to NCHW and (x - mean) / std happen inside the graph.
    "float32_nchw"     float32 [N, 3, H, W] already normalised (pose_edge.runtime.backend.normalize does it on the host).
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass, field

from pose_edge import __version__
from pose_edge.errors import ArtifactError
from pose_edge.geometry import CONVENTIONS, DEFAULT_CONVENTION
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
    convention: the top-down geometry the weights were trained with (pose_edge.geometry.CONVENTIONS): how person
            boxes become crops and heatmap pixels map back, the flip handling and the DARK blur kernel. "pose_edge"
            for our own training (and for every single-stage model); imported weights carry their original's.
            Artefacts written before the field existed read as "pose_edge".
    """

    family: str
    preset: str
    input: InputSpec
    keypoints: tuple[str, ...] = NAMES
    heatmap_stride: int | None = None
    strides: tuple[int, ...] | None = None
    anchors: tuple[tuple[tuple[float, float], ...], ...] | None = None
    num_classes: int | None = None
    convention: str = DEFAULT_CONVENTION
    pose_edge_version: str = __version__
    extra: dict = field(default_factory=dict, compare=False)

    def __post_init__(self) -> None:
        if self.family not in FAMILIES:
            raise ArtifactError(f"unknown model family {self.family!r}; expected one of {', '.join(FAMILIES)}")
        if self.convention not in CONVENTIONS:
            raise ArtifactError(f"{self.preset}: unknown top-down convention {self.convention!r}; expected one of "
                                f"{', '.join(CONVENTIONS)} (a newer pose-edge wrote it?)")
        if self.convention != DEFAULT_CONVENTION and self.family != "simple_baseline":
            raise ArtifactError(f"{self.preset}: the {self.convention} convention is for top-down heatmap models, "
                                f"not the {self.family} family")

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


METADATA_KEY = "pose_edge"
FORMAT_VERSION = 1
INPUT_FORMATS = ("uint8_nhwc_bgr", "float32_nchw")
PRECISIONS = ("fp32", "fp16", "int8")


@dataclass(frozen=True)
class TensorInfo:
    """name; dtype ("uint8", "float32", "float16"); layout letters (glossary of pose_edge.keypoints, e.g. "NHWC");
    shape with None for a dynamic axis."""

    name: str
    dtype: str
    layout: str
    shape: tuple

    @classmethod
    def from_dict(cls, d: dict) -> "TensorInfo":
        return cls(d["name"], d["dtype"], d["layout"], tuple(d["shape"]))

    def to_dict(self) -> dict:
        return {"name": self.name, "dtype": self.dtype, "layout": self.layout, "shape": list(self.shape)}


@dataclass(frozen=True)
class GraphInfo:
    """Everything a runtime needs to know about an exported graph besides its weights.

    input_format: one of INPUT_FORMATS. outputs: in the order forward returns them (heatmaps [N, K, H/4, W/4] for the
    Simple Baseline; one raw grid [N, A*D, H/S, W/S] per stride for KAPAO and the person detector).
    dynamic_size: whether H and W of the input may differ from meta.input (multiples of the largest stride).
    details: how the precision was reached (FP16 ops kept in FP32, INT8 layers kept out, calibration), for humans.
    """

    meta: ModelMeta
    precision: str
    input_format: str
    input: TensorInfo
    outputs: tuple[TensorInfo, ...]
    dynamic_size: bool = False
    pose_edge_version: str = __version__
    details: dict = field(default_factory=dict, compare=False)

    def to_dict(self) -> dict:
        return {
            "format": FORMAT_VERSION,
            "model_meta": self.meta.to_dict(),
            "precision": self.precision,
            "input_format": self.input_format,
            "input": self.input.to_dict(),
            "outputs": [o.to_dict() for o in self.outputs],
            "dynamic_size": self.dynamic_size,
            "pose_edge_version": self.pose_edge_version,
            "details": self.details,
        }

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), sort_keys=True)

    @classmethod
    def from_dict(cls, d: dict, source: str = "model") -> "GraphInfo":
        try:
            if d.get("format") != FORMAT_VERSION:
                raise ValueError(f"metadata format {d.get('format')!r}, this pose-edge reads {FORMAT_VERSION}")
            info = cls(
                meta=ModelMeta.from_dict(d["model_meta"]),
                precision=d["precision"],
                input_format=d["input_format"],
                input=TensorInfo.from_dict(d["input"]),
                outputs=tuple(TensorInfo.from_dict(o) for o in d["outputs"]),
                dynamic_size=bool(d.get("dynamic_size", False)),
                pose_edge_version=d.get("pose_edge_version", "?"),
                details=d.get("details", {}),
            )
        except (KeyError, TypeError, ValueError) as e:
            raise ArtifactError(f"{source}: pose-edge metadata is malformed ({e}); re-export it with "
                                "`pose-edge export`") from None
        if info.precision not in PRECISIONS or info.input_format not in INPUT_FORMATS:
            raise ArtifactError(f"{source}: unknown precision {info.precision!r} or input format "
                                f"{info.input_format!r}; re-export it with this pose-edge")
        return info

    def check_graph(self, inputs: list[tuple[str, tuple]], outputs: list[tuple[str, tuple]],
                    source: str = "model") -> None:
        """ArtifactError (one line) unless the graph's real inputs and outputs, as (dtype name, shape) with None or
        a name for a dynamic axis, are what this metadata says: one input of the declared format whose fixed height
        and width are the model's input size, and one output per head with the channels its decoder reads
        (K heatmaps; A x (5 + classes + 2K) per KAPAO level). Metadata that disagrees with its graph would decode
        garbage or crash deep in a decoder."""
        def fail(what: str):
            raise ArtifactError(f"{source}: its pose-edge metadata disagrees with its graph ({what}); re-export it "
                                "with `pose-edge export`")

        meta = self.meta
        if len(inputs) != 1:
            fail(f"the graph has {len(inputs)} inputs, pose-edge models have one")
        dtype, shape = inputs[0]
        wanted = ("uint8",) if self.input_format == "uint8_nhwc_bgr" else ("float32", "float16")
        if dtype not in wanted:
            fail(f"input {self.input_format} but the graph takes {dtype}")
        if len(shape) != 4:
            fail(f"the graph's input has {len(shape)} dimensions, not 4")
        h, w, c = (shape[1], shape[2], shape[3]) if self.input_format == "uint8_nhwc_bgr" else (shape[2], shape[3],
                                                                                                  shape[1])
        if isinstance(c, int) and c != 3:
            fail(f"the graph's input has {c} channels, not 3")
        for name, got, want in (("height", h, meta.input.height), ("width", w, meta.input.width)):
            if isinstance(got, int) and got != want:
                fail(f"input {name} {want} in the metadata, {got} in the graph")
        heads = 1 if meta.family == "simple_baseline" else len(meta.strides or ())
        if len(outputs) != heads or len(self.outputs) != heads:
            fail(f"{meta.family} {meta.preset} has {heads} output(s); the graph has {len(outputs)}, the metadata "
                 f"lists {len(self.outputs)}")
        if meta.family == "simple_baseline":
            channels = [meta.num_keypoints]
        else:
            depth = 5 + (meta.num_classes or 0) + 2 * meta.num_keypoints
            channels = [len(level) * depth for level in (meta.anchors or ())]
        for i, ((_, out_shape), want) in enumerate(zip(outputs, channels)):
            got = out_shape[1] if len(out_shape) == 4 else None
            if len(out_shape) != 4 or (isinstance(got, int) and got != want):
                fail(f"output {i} should be [N, {want}, H, W] for {meta.num_keypoints} keypoints, the graph's is "
                     f"{list(out_shape)}")

    @classmethod
    def from_metadata_map(cls, props: dict, source: str = "model") -> "GraphInfo":
        """From ONNX metadata_props (ONNX Runtime's custom_metadata_map)."""
        text = props.get(METADATA_KEY)
        if text is None:
            raise ArtifactError(f"{source} has no pose-edge metadata: export it with `pose-edge export`, which "
                                "records the model, its input format and its outputs inside the file")
        try:
            return cls.from_dict(json.loads(text), source)
        except json.JSONDecodeError as e:
            raise ArtifactError(f"{source}: pose-edge metadata is not valid JSON ({e})") from None
