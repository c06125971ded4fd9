"""A scene: a background and up to six placed figures; rendering it, and reading COCO annotations off the drawing."""

from __future__ import annotations

from dataclasses import dataclass, field

import cv2
import numpy as np

from pose_edge.data.synth.body import forward_kinematics, sample_pose, sample_proportions
from pose_edge.data.synth.render import (
    NUM_PARTS,
    PlacedFigure,
    draw_figure,
    render_background,
    sample_appearance,
    visibility,
)
from pose_edge.keypoints import NUM_KEYPOINTS

MAX_FIGURES = 6
_FIGURE_COUNT_P = (0.05, 0.3, 0.25, 0.16, 0.11, 0.08, 0.05)
MIN_FIGURE_PX = 30


@dataclass
class Scene:
    width: int
    height: int
    background: np.ndarray
    figures: list[PlacedFigure]  # in drawing order: far to near
    finish: dict = field(default_factory=dict)  # photometric settings of finish_image


def figure_extent(fig: PlacedFigure) -> tuple[np.ndarray, np.ndarray]:
    """(min xy, max xy) in image pixels of a figure's joints, hands, feet and head."""
    sk = fig.skeleton
    head_top = sk.head_center + fig.props.head_r * sk.head_up
    pts = fig.to_image(np.concatenate([sk.keypoints, sk.hand_tips, sk.toes, head_top[None]]))
    return pts.min(axis=0), pts.max(axis=0)


def place_figure(rng, width, height, placed: list[PlacedFigure], pose=None) -> PlacedFigure:
    """Pose a random person and put them in the frame: size from 30 px to the whole frame, sometimes overlapping
    someone already placed, sometimes cut by the border."""
    props = sample_proportions(rng)
    skeleton = forward_kinematics(props, pose if pose is not None else sample_pose(rng))
    scale = float(np.exp(rng.uniform(np.log(MIN_FIGURE_PX), np.log(1.1 * height))))
    fig = PlacedFigure(skeleton, props, sample_appearance(rng), scale, (0.0, 0.0))
    lo, hi = figure_extent(fig)
    size = hi - lo
    r = rng.uniform()
    if placed and r < 0.35:  # next to someone: overlap and mutual occlusion
        other_lo, other_hi = figure_extent(placed[int(rng.integers(len(placed)))])
        other_size = other_hi - other_lo
        centre = (other_lo + other_hi) / 2 + rng.uniform(-0.6, 0.6, 2) * other_size * np.array([1.0, 0.4])
    elif r < 0.55:  # at a border: truncated
        centre = rng.uniform(0.1, 0.9, 2) * (width, height)
        axis = int(rng.integers(2))
        limit = (width, height)[axis]
        centre[axis] = (0.0 if rng.uniform() < 0.5 else limit) + rng.uniform(-0.3, 0.3) * size[axis]
    else:
        centre = rng.uniform(0.05, 0.95, 2) * (width, height)
    offset = centre - (lo + hi) / 2
    return PlacedFigure(skeleton, props, fig.appearance, scale, (float(offset[0]), float(offset[1])))


def sample_scene(rng: np.random.Generator, width: int, height: int, num_figures: int | None = None) -> Scene:
    background = render_background(rng, width, height)
    if num_figures is None:
        num_figures = int(rng.choice(len(_FIGURE_COUNT_P), p=_FIGURE_COUNT_P))
    figures: list[PlacedFigure] = []
    for _ in range(num_figures):
        figures.append(place_figure(rng, width, height, figures))
    # Smaller people are usually farther away; now and then the order is broken, as it is in crowds.
    figures.sort(key=lambda f: f.scale)
    for i in range(len(figures) - 1):
        if rng.uniform() < 0.2:
            figures[i], figures[i + 1] = figures[i + 1], figures[i]
    finish = {
        "gain": float(rng.uniform(0.8, 1.2)), "bias": float(rng.uniform(-20, 20)),
        "blur": float(rng.uniform(0.3, 1.0)) if rng.uniform() < 0.4 else 0.0,
        "noise": float(rng.uniform(0, 5)), "noise_seed": int(rng.integers(2**31)),
    }
    return Scene(width, height, background, figures, finish)


def render_scene(scene: Scene, skip: frozenset[int] = frozenset()) -> tuple[np.ndarray, np.ndarray]:
    """(clean image uint8 [H, W, 3] BGR, owner int32 [H, W]) with figures in `skip` left out.

    owner is -1 on the background, else figure_index * NUM_PARTS + part id (render.PARTS) of the part on top.
    """
    image = scene.background.copy()
    owner = np.full((scene.height, scene.width), -1, dtype=np.int32)
    for i, fig in enumerate(scene.figures):
        if i not in skip:
            draw_figure(image, owner, fig, i)
    return image, owner


def finish_image(clean: np.ndarray, scene: Scene) -> np.ndarray:
    """Camera-like photometrics: gain and bias, a little defocus, sensor noise."""
    f = scene.finish
    image = clean.astype(np.float32) * f["gain"] + f["bias"]
    if f["blur"] > 0:
        image = cv2.GaussianBlur(image, (0, 0), f["blur"])
    if f["noise"] > 0:
        image += np.random.default_rng(f["noise_seed"]).normal(0, f["noise"], image.shape).astype(np.float32)
    return np.clip(image, 0, 255).astype(np.uint8)


def _polygons(mask: np.ndarray) -> list[list[float]]:
    contours, _ = cv2.findContours(mask.astype(np.uint8), cv2.RETR_EXTERNAL, cv2.CHAIN_APPROX_SIMPLE)
    polys = [c.reshape(-1).astype(float).tolist() for c in contours if len(c) >= 3]
    if not polys:  # a sliver of one or two pixels: its bounding rectangle
        ys, xs = np.nonzero(mask)
        x0, y0, x1, y1 = xs.min(), ys.min(), xs.max() + 1, ys.max() + 1
        polys = [[float(x0), float(y0), float(x1), float(y0), float(x1), float(y1), float(x0), float(y1)]]
    return polys


def annotate(scene: Scene, owner: np.ndarray, image_id: int) -> list[dict]:
    """COCO person annotations of every figure with at least one visible pixel.

    bbox and area are those of the figure's visible pixels (COCO's segmentation area, used by OKS); keypoints carry
    visibility 0/1/2 as render.visibility decides, and (0, 0, 0) where not labelled.
    """
    anns = []
    figure_of_pixel = np.where(owner >= 0, owner // NUM_PARTS, -1)
    for i, fig in enumerate(scene.figures):
        mask = figure_of_pixel == i
        area = int(mask.sum())
        if area == 0:
            continue
        ys, xs = np.nonzero(mask)
        kp = np.round(fig.keypoints_image(), 2)  # as stored: visibility is read at the stored position
        v = visibility(fig, i, owner, kp)
        keypoints = []
        for k in range(NUM_KEYPOINTS):
            keypoints += [float(kp[k, 0]), float(kp[k, 1]), int(v[k])] if v[k] else [0, 0, 0]
        anns.append({
            "id": image_id * 10 + i,
            "image_id": image_id,
            "category_id": 1,
            "iscrowd": 0,
            "keypoints": keypoints,
            "num_keypoints": int((v > 0).sum()),
            "bbox": [float(xs.min()), float(ys.min()), float(xs.max() - xs.min() + 1), float(ys.max() - ys.min() + 1)],
            "area": float(area),
            "segmentation": _polygons(mask),
        })
    return anns
