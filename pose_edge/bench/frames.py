"""The frames a benchmark times, each with the people in it.

    val_frames(data, 16)          the data set's first val images, with their annotated (non-crowd) person boxes
    people_frames(5, (320, 240))  synthetic scenes (pose_edge.data.synth) with exactly 5 people each

Frames are decoded into memory before any clock starts: reading files is the camera's business, not the model's.
A top-down model is given a frame's person boxes (so its crop count is the number of people in the frame, whatever
its detector finds); a single-stage model ignores them.
"""

from __future__ import annotations

import itertools
from dataclasses import dataclass

import numpy as np

from pose_edge.data.synth.scene import figure_extent, finish_image, render_scene, sample_scene

MIN_BOX_PX = 4  # pixels of width and height a person box keeps inside the frame


@dataclass
class BenchFrame:
    image: np.ndarray  # uint8 [H, W, 3] BGR
    boxes: np.ndarray  # float64 [P, 4] xyxy, frame pixels: the people in it

    @property
    def people(self) -> int:
        return len(self.boxes)


def val_frames(data, count: int) -> list[BenchFrame]:
    """The first `count` images of `data` (a pose_edge.data.coco.CocoKeypoints split) with their person boxes."""
    frames = []
    for image_id in data.image_ids[:count]:
        xywh = np.array([a["bbox"] for a in data.person_annotations(image_id)], np.float64).reshape(-1, 4)
        frames.append(BenchFrame(data.load_image(image_id), np.concatenate([xywh[:, :2], xywh[:, :2] + xywh[:, 2:]], 1)))
    return frames


def people_frames(people: int, size: tuple[int, int], count: int = 4, seed: int = 0) -> list[BenchFrame]:
    """`count` synthetic frames of size (width, height), each with exactly `people` figures in it. Boxes are the
    figures' extents clipped to the frame; a scene with a figure wholly (or all but MIN_BOX_PX) outside the frame is
    drawn again, so that every box is one a pipeline keeps. Occluded figures still count: a top-down model crops
    everyone its detector reports."""
    width, height = size
    frames = []
    for i in range(count):
        for attempt in itertools.count():
            scene = sample_scene(np.random.default_rng([seed, people, i, attempt]), width, height, num_figures=people)
            boxes = np.array([np.concatenate(figure_extent(f)) for f in scene.figures], np.float64).reshape(-1, 4)
            boxes[:, 0::2] = boxes[:, 0::2].clip(0, width)
            boxes[:, 1::2] = boxes[:, 1::2].clip(0, height)
            if (boxes[:, 2:] - boxes[:, :2]).min(initial=np.inf) >= MIN_BOX_PX:
                break
        clean, _ = render_scene(scene)
        frames.append(BenchFrame(finish_image(clean, scene), boxes))
    return frames
