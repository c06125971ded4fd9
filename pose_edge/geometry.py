"""How an image reaches a network's input, and how coordinates come back. Torch-free; shared by the training samples
(pose_edge.data) and the runtime, so that a model is decoded with exactly the geometry it was trained with.

Letterbox (single-stage models): the image is resized so that it fits the input (its longer relative side fills
it), then centred on a grey canvas (114, as the reference). Coordinates use the pixel-corner convention that
cv2.resize samples with, so a point maps by x_in = x * scale_x + pad_x exactly (scale per axis, because the resized
size is rounded to whole pixels).

Person crops (top-down models), every coordinate in pixels with the centre of the top-left pixel at (0, 0),
cv2.warpAffine's convention. A top-down model is decoded with the geometry it was trained with, its convention
(ModelMeta.convention), one of CONVENTIONS. With a box [x, y, w, h], S = (S_w, S_h) the padded, aspect-fixed size
in image pixels (the shorter side grown so that S_w / S_h = W_in / H_in, both sides times `padding`, 1.25) and c its
centre, the image -> input affine is x_in = k * R(rot) (x_img - c) + o:

  convention         centre c            scale k                 o (where c lands)          trained by
  "pose_edge"        (x + w/2, y + h/2)  W_in / S_w              ((W_in-1)/2, (H_in-1)/2)   pose-edge (ours)
  "simple_baselines" (x + w/2, y + h/2)  W_in / S_w              (W_in/2, H_in/2)           microsoft/human-pose-
                                                                                            estimation.pytorch
  "darkpose"         (x + (w-1)/2, ...)  (W_in-1) / (S_w-1)      ((W_in-1)/2, (H_in-1)/2)   ilovepose/DarkPose

The scale is one number for both axes (the originals build the affine from three points of a similarity). Where a
convention differs from ours, it is the original's get_affine_transform (lib/utils/transforms.py) and _xywh2cs
(lib/dataset/coco.py) restated; sizes stay in pixels (the originals' scale = size / 200 is not needed). The heatmap
side of each convention is pose_edge.heatmap_codec's.
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from pose_edge.errors import DataError

PAD_VALUE = 114
BOX_PADDING = 1.25  # person boxes grow by this factor before cropping (Simple Baselines)
CONVENTIONS = ("pose_edge", "simple_baselines", "darkpose")  # top-down geometry conventions (module docstring)
DEFAULT_CONVENTION = "pose_edge"


def check_convention(convention: str) -> str:
    """The convention, or a one-line DataError naming the ones there are."""
    if convention not in CONVENTIONS:
        raise DataError(f"unknown top-down convention {convention!r}; expected one of {', '.join(CONVENTIONS)}")
    return convention


@dataclass(frozen=True)
class Letterbox:
    """How one image was placed on the input canvas. image_size and input_size are (height, width)."""

    image_size: tuple[int, int]
    input_size: tuple[int, int]
    scale: tuple[float, float]  # (x, y): resized / original
    pad: tuple[int, int]  # (left, top) in input pixels

    def to_input(self, points: np.ndarray) -> np.ndarray:
        """[..., 2] (x, y) image pixels -> input pixels, float32."""
        points = np.asarray(points, np.float32)
        return points * np.asarray(self.scale, np.float32) + np.asarray(self.pad, np.float32)

    def to_image(self, points: np.ndarray) -> np.ndarray:
        """[..., 2] (x, y) input pixels -> image pixels, float32 (the inverse of to_input)."""
        points = np.asarray(points, np.float32)
        return (points - np.asarray(self.pad, np.float32)) / np.asarray(self.scale, np.float32)


def fit(image_size: tuple[int, int], input_size: tuple[int, int]) -> Letterbox:
    """The letterbox of an image of image_size (h, w) into input_size (h, w), without resampling anything."""
    h, w = image_size
    in_h, in_w = input_size
    if h <= 0 or w <= 0:
        raise DataError(f"cannot letterbox an empty image of {w}x{h} pixels")
    ratio = min(in_h / h, in_w / w)
    new_w, new_h = min(in_w, max(1, round(w * ratio))), min(in_h, max(1, round(h * ratio)))
    left, top = (in_w - new_w) // 2, (in_h - new_h) // 2
    return Letterbox((h, w), (in_h, in_w), (new_w / w, new_h / h), (left, top))


def letterbox(image: np.ndarray, input_size: tuple[int, int], pad_value: int = PAD_VALUE) -> tuple[np.ndarray, Letterbox]:
    """uint8 [H, W, 3] -> (uint8 [in_h, in_w, 3] canvas, Letterbox). INTER_AREA to shrink, INTER_LINEAR to enlarge."""
    if not isinstance(image, np.ndarray) or image.ndim != 3 or image.shape[2] != 3 or image.dtype != np.uint8:
        shape = getattr(image, "shape", None)
        raise DataError(f"expected a uint8 [H, W, 3] image, got {getattr(image, 'dtype', type(image))} {shape}")
    box = fit(image.shape[:2], input_size)
    (in_h, in_w), (left, top) = box.input_size, box.pad
    new_w, new_h = round(box.scale[0] * image.shape[1]), round(box.scale[1] * image.shape[0])
    if (new_h, new_w) != image.shape[:2]:
        shrink = new_w < image.shape[1]
        image = cv2.resize(image, (new_w, new_h), interpolation=cv2.INTER_AREA if shrink else cv2.INTER_LINEAR)
    canvas = np.full((in_h, in_w, 3), pad_value, np.uint8)
    canvas[top:top + new_h, left:left + new_w] = image
    return canvas, box


def rect_input_size(image_size: tuple[int, int], input_size: tuple[int, int], multiple: int = 64) -> tuple[int, int]:
    """The rectangular letterbox's input (h, w) for an image of image_size (h, w): the image fitted into input_size
    as `fit` does, and the other side padded only up to the next multiple of `multiple` (KAPAO's val.py --rect, with
    the largest stride as the multiple), so a 640x427 image at 1280 runs at 1280x896, not 1280x1280. The ceiling is
    taken in exact integers."""
    h, w = image_size
    in_h, in_w = input_size
    if h <= 0 or w <= 0:
        raise DataError(f"cannot letterbox an empty image of {w}x{h} pixels")
    if h * in_w <= w * in_h:  # the width fills the input
        return min(in_h, -(-h * in_w // (w * multiple)) * multiple), in_w
    return in_h, min(in_w, -(-w * in_h // (h * multiple)) * multiple)


# ----------------------------------------------------------------------------------------------- person crops


def box_to_center_size(boxes: np.ndarray, aspect_ratio: float, padding: float = BOX_PADDING,
                       convention: str = DEFAULT_CONVENTION) -> tuple[np.ndarray, np.ndarray]:
    """boxes [P, 4] (x, y, w, h) -> (centre float64 [P, 2], size float64 [P, 2] = padded, aspect-fixed (w, h)).

    aspect_ratio = W_in / H_in of the model input. The centre follows the convention (module docstring): DarkPose
    counts a box of width w as spanning pixels x .. x + w - 1, the others take its geometric middle.
    """
    boxes = np.asarray(boxes, np.float64).reshape(-1, 4)
    span = boxes[:, 2:] - 1 if check_convention(convention) == "darkpose" else boxes[:, 2:]
    center = boxes[:, :2] + span / 2
    w, h = boxes[:, 2].copy(), boxes[:, 3].copy()
    wide = w > aspect_ratio * h
    h = np.where(wide, w / aspect_ratio, h)
    w = np.where(~wide, h * aspect_ratio, w)
    return center, np.stack([w, h], 1) * padding


def crop_affine(center: np.ndarray, size: np.ndarray, input_size: tuple[int, int], rotation: np.ndarray | None = None,
                flip: np.ndarray | None = None, convention: str = DEFAULT_CONVENTION) -> np.ndarray:
    """Image -> input affines float64 [P, 2, 3] of the crops (centre [P, 2], size [P, 2] in image pixels), by the
    convention's scale and centre (module docstring).

    rotation [P] degrees (the crop's content turns counter-clockwise on screen by that angle); flip [P] bool mirrors
    the crop left-right (x_in -> W_in - 1 - x_in).
    """
    center = np.asarray(center, np.float64).reshape(-1, 2)
    size = np.asarray(size, np.float64).reshape(-1, 2)
    p = len(center)
    h_in, w_in = input_size
    convention = check_convention(convention)
    if convention == "darkpose":  # pixel centres at both ends of the width map onto each other
        k = (w_in - 1) / (size[:, 0] - 1)
    else:  # pixel edges at both ends of the width map onto each other
        k = w_in / size[:, 0]
    target = np.array([w_in / 2, h_in / 2] if convention == "simple_baselines" else [(w_in - 1) / 2, (h_in - 1) / 2])
    if rotation is None:  # what the angle 0 gives, without the trigonometry (a frame's crops are unrotated)
        cos, sin = k, np.zeros(p)
    else:
        theta = np.deg2rad(np.asarray(rotation, np.float64))
        cos, sin = np.cos(theta) * k, np.sin(theta) * k
    m = np.zeros((p, 2, 3))
    # y points down, so this rotation matrix turns the content counter-clockwise as seen on screen.
    m[:, 0, 0], m[:, 0, 1], m[:, 1, 0], m[:, 1, 1] = cos, sin, -sin, cos
    m[:, :, 2] = target - np.einsum("pij,pj->pi", m[:, :, :2], center)
    if flip is not None:
        f = np.asarray(flip, bool)
        m[f, 0, :] *= -1
        m[f, 0, 2] += w_in - 1
    return m


def invert_affine(m: np.ndarray) -> np.ndarray:
    """[P, 2, 3] -> [P, 2, 3] inverses."""
    m = np.asarray(m, np.float64)
    full = np.concatenate([m, np.tile([[[0.0, 0.0, 1.0]]], (len(m), 1, 1))], 1)
    return np.linalg.inv(full)[:, :2]


def apply_affine(m: np.ndarray, xy: np.ndarray) -> np.ndarray:
    """m [P, 2, 3], xy [P, K, 2] -> [P, K, 2]."""
    return np.einsum("pij,pkj->pki", m[:, :, :2], xy) + m[:, None, :, 2]


def warp_crops(image: np.ndarray, image_to_input: np.ndarray, input_size: tuple[int, int]) -> np.ndarray:
    """uint8 [H, W, 3] -> uint8 [P, H_in, W_in, 3]: each crop by cv2.warpAffine (bilinear, black outside)."""
    h_in, w_in = input_size
    out = np.empty((len(image_to_input), h_in, w_in, 3), np.uint8)
    for i, m in enumerate(image_to_input):
        out[i] = cv2.warpAffine(image, m, (w_in, h_in), flags=cv2.INTER_LINEAR, borderMode=cv2.BORDER_CONSTANT,
                                borderValue=(0, 0, 0))
    return out
