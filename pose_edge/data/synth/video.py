"""A short clip of people walking across and waving in front of a static camera, annotated frame by frame.

Each person keeps a track_id over the clip; joint angles and positions are smooth functions of time, so consecutive
frames differ by small motions, as a tracker or a temporal filter expects.
"""

from __future__ import annotations

import dataclasses
import os
from pathlib import Path

import cv2
import numpy as np

from pose_edge.data.synth.body import Pose, forward_kinematics, sample_pose, sample_proportions, walking_angles
from pose_edge.data.synth.render import PlacedFigure, render_background, sample_appearance
from pose_edge.data.synth.scene import Scene, annotate, finish_image, render_scene
from pose_edge.fsutil import atomic_write_bytes, atomic_write_json

FPS = 15


@dataclasses.dataclass(frozen=True)
class Actor:
    """One person's motion: a walk (phase advancing, moving along the facing direction) or a wave in place."""

    props: object
    appearance: object
    base: Pose
    scale: float
    start: tuple[float, float]
    velocity: tuple[float, float]  # pixels per frame
    walking: bool
    period: float  # frames per gait or wave cycle
    phase: float

    def pose_at(self, t: int) -> Pose:
        phase = self.phase + 2 * np.pi * t / self.period
        if self.walking:
            return dataclasses.replace(self.base, **walking_angles(phase, np.radians(28), np.radians(25)))
        lift = 0.5 * (1 - np.cos(phase))  # 0 -> 1 -> 0: the arm goes up and comes back down
        return dataclasses.replace(self.base, r_shoulder_abd=np.radians(15 + 140 * lift), r_elbow=np.radians(30 * lift))

    def figure_at(self, t: int) -> PlacedFigure:
        offset = (self.start[0] + self.velocity[0] * t, self.start[1] + self.velocity[1] * t)
        return PlacedFigure(forward_kinematics(self.props, self.pose_at(t)), self.props, self.appearance,
                            self.scale, offset)


def sample_actor(rng: np.random.Generator, width: int, height: int, frames: int) -> Actor:
    walking = rng.uniform() < 0.7
    scale = float(rng.uniform(0.3, 0.8) * height)
    base = sample_pose(rng, "standing")
    if walking:  # seen from the side, walking the way they face
        direction = float(rng.choice([-1.0, 1.0]))
        base = dataclasses.replace(base, yaw=np.radians(90) * -direction, head_yaw=0.0)
        speed = rng.uniform(0.6, 1.0) * width / max(frames, 1)
        start_x = width / 2 - direction * speed * frames / 2 + rng.uniform(-0.2, 0.2) * width
        velocity = (direction * speed, 0.0)
    else:
        base = dataclasses.replace(base, yaw=float(np.radians(rng.normal(0, 20))))
        start_x = rng.uniform(0.15, 0.85) * width
        velocity = (0.0, 0.0)
    start_y = height * rng.uniform(0.45, 0.7)
    return Actor(sample_proportions(rng), sample_appearance(rng), base, scale, (start_x, start_y), velocity,
                 walking, float(rng.uniform(14, 24)), float(rng.uniform(0, 2 * np.pi)))


def write_video(out: str | Path, frames: int, seed: int, size: tuple[int, int]) -> dict:
    """Frames to OUT/images/video/, annotations (with track_id) to OUT/annotations/person_keypoints_video.json and
    the clip to OUT/video.mp4. Returns the clip's statistics."""
    from pose_edge.data.synth import coco_file, encode_jpeg, image_id, split_stats

    out = Path(out)
    width, height = size
    rng = np.random.default_rng([seed, 3])
    background = render_background(rng, width, height)
    actors = sorted((sample_actor(rng, width, height, frames) for _ in range(int(rng.integers(1, 5)))),
                    key=lambda a: a.scale)
    finish = {"gain": 1.0, "bias": 0.0, "blur": 0.0, "noise": 2.0}
    image_dir = out / "images" / "video"
    image_dir.mkdir(parents=True, exist_ok=True)
    tmp_video = out / ".video.tmp.mp4"  # the extension tells OpenCV the container
    writer = cv2.VideoWriter(str(tmp_video), cv2.VideoWriter_fourcc(*"mp4v"), FPS, (width, height))
    if not writer.isOpened():
        raise RuntimeError("this OpenCV build cannot write MP4 video (no mp4v encoder)")
    images, annotations = [], []
    try:
        for t in range(frames):
            scene = Scene(width, height, background, [a.figure_at(t) for a in actors],
                          dict(finish, noise_seed=seed * 100003 + t))
            clean, owner = render_scene(scene)
            frame = finish_image(clean, scene)
            iid = image_id("video", t)
            file_name = f"{iid:012d}.jpg"
            atomic_write_bytes(image_dir / file_name, encode_jpeg(frame))
            images.append({"id": iid, "file_name": file_name, "width": width, "height": height,
                           "video_id": 1, "frame_id": t})
            for ann in annotate(scene, owner, iid):
                ann["track_id"] = int(ann["id"] - iid * 10)  # the figure's index: stable over the clip
                annotations.append(ann)
            writer.write(frame)
    finally:
        writer.release()
    os.replace(tmp_video, out / "video.mp4")
    atomic_write_json(out / "annotations" / "person_keypoints_video.json",
                      coco_file(images, annotations, f"pose-edge synthetic clip, seed {seed}, {FPS} fps"))
    return split_stats(images, annotations)
