"""Letterbox: fit an image into the network's input without distortion, and map coordinates back. Torch-free.

The image is resized so that it fits the input (its longer relative side fills it), then centred on a grey canvas
(114, as the reference). Coordinates use the pixel-corner convention that cv2.resize samples with, so a point maps
by x_in = x * scale_x + pad_x exactly (scale per axis, because the resized size is rounded to whole pixels).
"""

from __future__ import annotations

from dataclasses import dataclass

import cv2
import numpy as np

from pose_edge.errors import DataError

PAD_VALUE = 114


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
