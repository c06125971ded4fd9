"""Writers for what a run produces: overlay images (a folder of images or one video file), COCO keypoint results
(JSON, for image sets) and JSON Lines (one line per frame, for video and live sources).

Every file is written atomically (pose_edge.fsutil): it is written under a temporary name in the target folder and
renamed to its final name on close(); abort(), or leaving the `with` block by an exception, removes it. A reader, or
a run killed half-way, never sees a partial file under the final name. Constructing a writer checks the output
path (it creates the temporary file, and for video probes the codec), so an unwritable path is a one-line
PoseEdgeError before any work starts.

The writers take poses as any object with the attributes of pose_edge's result type:
    keypoints  float [P, 17, 3] (x, y, confidence) in frame pixels
    boxes      float [P, 4] x1, y1, x2, y2 in frame pixels
    scores     float [P]
    track_ids  int [P] or None
"""

from __future__ import annotations

import contextlib
import json
import math
import os
import tempfile
import warnings
from pathlib import Path

import cv2
import numpy as np

from pose_edge.errors import PoseEdgeError
from pose_edge.fsutil import atomic_open, atomic_path
from pose_edge.keypoints import NUM_KEYPOINTS

PERSON_CATEGORY_ID = 1
VIDEO_SUFFIXES = (".mp4", ".avi")
# Codecs tried in order, per container. mp4v (MPEG-4 part 2) is in every opencv-python wheel; avc1 (H.264) only in
# builds with an H.264 encoder, and probing it where there is none prints errors, so it comes second.
VIDEO_CODECS = {".mp4": ("mp4v", "avc1"), ".avi": ("MJPG", "XVID")}
IMAGE_WRITE_SUFFIXES = (".jpg", ".png")

_codec_cache: dict[str, str] = {}


class _Aborted(Exception):
    """Thrown into an fsutil context to make it remove its temporary file."""


def _finite(value: float, digits: int):
    value = float(value)
    return round(value, digits) if math.isfinite(value) else None


def pose_records(keypoints, boxes, scores, track_ids=None) -> list[dict]:
    """Poses as plain JSON-ready dicts, one per person: keypoints [[x, y, confidence] * 17], box [x1, y1, x2, y2],
    score, track_id (None untracked). Coordinates in frame pixels, rounded to 0.01; non-finite values become None."""
    keypoints = np.asarray(keypoints, dtype=np.float64)
    keypoints = keypoints.reshape(-1, keypoints.shape[-2] if keypoints.ndim == 3 else NUM_KEYPOINTS, 3)
    boxes = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if not len(keypoints) == len(boxes) == len(scores) or (track_ids is not None and len(track_ids) != len(scores)):
        raise PoseEdgeError(f"poses disagree on the number of people: keypoints {len(keypoints)}, boxes {len(boxes)}, "
                            f"scores {len(scores)}" + ("" if track_ids is None else f", track_ids {len(track_ids)}"))
    return [
        {"keypoints": [[_finite(x, 2), _finite(y, 2), _finite(c, 4)] for x, y, c in keypoints[p]],
         "box": [_finite(v, 2) for v in boxes[p]],
         "score": _finite(scores[p], 4),
         "track_id": None if track_ids is None else int(track_ids[p])}
        for p in range(len(scores))
    ]


def coco_results(image_id: int, keypoints, scores) -> list[dict]:
    """COCO keypoint results for one image: keypoints [P, 17, 3] (x, y, confidence in place of visibility, as COCO
    results carry it), scores [P]. People with a non-finite value are left out with a warning (COCO results cannot
    hold them)."""
    keypoints = np.asarray(keypoints, dtype=np.float64).reshape(-1, NUM_KEYPOINTS * 3)
    scores = np.asarray(scores, dtype=np.float64).reshape(-1)
    if len(keypoints) != len(scores):
        raise PoseEdgeError(f"image {image_id}: {len(keypoints)} keypoint sets for {len(scores)} scores")
    finite = np.isfinite(keypoints).all(axis=1) & np.isfinite(scores)
    if not finite.all():
        warnings.warn(f"image {image_id}: left {int((~finite).sum())} people with non-finite values out of the "
                      f"COCO results")
    return [{"image_id": int(image_id), "category_id": PERSON_CATEGORY_ID,
             "keypoints": [round(float(v), 3) for v in k], "score": round(float(s), 6)}
            for k, s, ok in zip(keypoints, scores, finite) if ok]


def coco_image_id(name: str, index: int) -> int:
    """The COCO image id of a frame: the number a COCO file name is ("000000397133.jpg" -> 397133), else the
    frame's index."""
    stem = Path(name).stem
    return int(stem) if stem.isdigit() else int(index)


class _Writer:
    """Holds one fsutil context open across a run: close() commits (renames to the final name), abort() or an
    exception leaving the `with` block removes the temporary file."""

    def __init__(self, path, make_context):
        self.path = Path(path)
        if self.path.is_dir():
            raise PoseEdgeError(f"{self.path}: is a folder; give a file name to write")
        self._stack = contextlib.ExitStack()
        try:
            self._target = self._stack.enter_context(make_context(self.path))
        except OSError as e:
            raise PoseEdgeError(f"{self.path}: cannot write here ({e.strerror or e})") from None
        self.closed = False

    def _finish(self) -> None:
        """Hook run before the commit (flush what is buffered)."""

    def close(self) -> None:
        if self.closed:
            return
        self.closed = True
        try:
            self._finish()
        except BaseException:
            self._stack.__exit__(_Aborted, _Aborted(), None)
            raise
        self._stack.close()

    def abort(self) -> None:
        if self.closed:
            return
        self.closed = True
        with contextlib.suppress(Exception):
            self._release()
        self._stack.__exit__(_Aborted, _Aborted(), None)

    def _release(self) -> None:
        """Hook run on abort before the temporary file is removed."""

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc_type is None:
            self.close()
        else:
            self.abort()


class JsonLinesWriter(_Writer):
    """One JSON object per frame and line: {"index", "name", "timestamp" (capture time, monotonic seconds),
    "video_time" (seconds into a video file, or null), "poses": [pose_records(...)]}."""

    def __init__(self, path):
        super().__init__(path, lambda p: atomic_open(p, "w"))
        self.frames = 0

    def write(self, frame, poses) -> None:
        record = {"index": int(frame.index), "name": frame.name, "timestamp": round(float(frame.timestamp), 6),
                  "video_time": None if frame.video_time is None else round(float(frame.video_time), 6),
                  "poses": pose_records(poses.keypoints, poses.boxes, poses.scores, poses.track_ids)}
        self._target.write(json.dumps(record, separators=(",", ":")) + "\n")
        self.frames += 1


class CocoResultsWriter(_Writer):
    """A COCO keypoint results file (a JSON list of {"image_id", "category_id", "keypoints", "score"}), streamed to
    its temporary file as frames come. The image id is coco_image_id(frame.name, frame.index) unless given."""

    def __init__(self, path):
        super().__init__(path, lambda p: atomic_open(p, "w"))
        self._target.write("[")
        self._count = 0
        self._names: dict[int, str] = {}

    def write(self, frame, poses, image_id: int | None = None) -> None:
        image_id = coco_image_id(frame.name, frame.index) if image_id is None else int(image_id)
        if self._names.setdefault(image_id, frame.name) != frame.name:
            raise PoseEdgeError(f"{frame.name} and {self._names[image_id]} both have COCO image id {image_id}; "
                                f"name the images by number or by nothing")
        for record in coco_results(image_id, poses.keypoints, poses.scores):
            self._target.write(("," if self._count else "") + "\n" + json.dumps(record, separators=(",", ":")))
            self._count += 1

    def _finish(self) -> None:
        self._target.write("\n]\n")


def _probe_codec(suffix: str, path: Path) -> str:
    """The first codec in VIDEO_CODECS[suffix] that this OpenCV build opens a writer with, tried on `path` (the
    writer's own temporary file, rewritten by the first frame); cached per container."""
    if suffix in _codec_cache:
        return _codec_cache[suffix]
    for codec in VIDEO_CODECS[suffix]:
        writer = cv2.VideoWriter(str(path), cv2.VideoWriter_fourcc(*codec), 10.0, (64, 48))
        opened = writer.isOpened()
        writer.release()
        if opened:
            _codec_cache[suffix] = codec
            return codec
    raise PoseEdgeError(f"this OpenCV build cannot write {suffix} video (tried {', '.join(VIDEO_CODECS[suffix])}); "
                        f"write overlays to a folder of images instead")


class VideoWriter(_Writer):
    """Overlay frames into one video file (.mp4 or .avi) at `fps`; the frame size is the first frame's, and a frame
    of another size is an error (cv2.VideoWriter would drop it silently)."""

    def __init__(self, path, fps: float = 30.0):
        path = Path(path)
        suffix = path.suffix.lower()
        if suffix not in VIDEO_CODECS:
            raise PoseEdgeError(f"{path}: a video must end in {' or '.join(VIDEO_SUFFIXES)}")
        if not (fps and math.isfinite(fps) and fps > 0):
            raise PoseEdgeError(f"{path}: the frame rate must be a positive number, not {fps}")
        super().__init__(path, lambda p: atomic_path(p, suffix=suffix))
        try:
            self.codec = _probe_codec(suffix, self._target)
        except BaseException:
            self.abort()
            raise
        self.fps = float(fps)
        self.size: tuple[int, int] | None = None
        self.frames = 0
        self._video: cv2.VideoWriter | None = None

    def write(self, image: np.ndarray, name: str = "", index: int | None = None) -> None:
        """image: uint8 [H, W, 3] BGR; name and index are ImageFolderWriter's and unused here."""
        if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
            raise PoseEdgeError(f"{self.path}: a video frame must be uint8 [H, W, 3]")
        size = (image.shape[1], image.shape[0])
        if self._video is None:
            self._video = cv2.VideoWriter(str(self._target), cv2.VideoWriter_fourcc(*self.codec), self.fps, size)
            if not self._video.isOpened():
                raise PoseEdgeError(f"{self.path}: OpenCV cannot write a {size[0]}x{size[1]} {self.codec} video")
            self.size = size
        elif size != self.size:
            raise PoseEdgeError(f"{self.path}: a {size[0]}x{size[1]} frame in a {self.size[0]}x{self.size[1]} video; "
                                f"write overlays of mixed sizes to a folder")
        self._video.write(image)
        self.frames += 1

    def _release(self) -> None:
        if self._video is not None:
            self._video.release()
            self._video = None

    def _finish(self) -> None:
        self._release()
        if self.frames == 0:
            raise PoseEdgeError(f"{self.path}: no frames were written, so there is no video")


class ImageFolderWriter:
    """Overlay images into a folder, one file per frame named after it ("frame 000012" -> frame_000012.jpg,
    "a.png" -> a.jpg), each written atomically; a name written twice gets the frame index appended."""

    def __init__(self, folder, suffix: str = ".jpg"):
        self.folder = Path(folder)
        if suffix not in IMAGE_WRITE_SUFFIXES:
            raise PoseEdgeError(f"overlay images are {' or '.join(IMAGE_WRITE_SUFFIXES)}, not {suffix}")
        self.suffix = suffix
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
            fd, probe = tempfile.mkstemp(prefix=".write-probe.", dir=self.folder)  # can a file be created here?
            os.close(fd)
            os.unlink(probe)
        except OSError as e:
            raise PoseEdgeError(f"{self.folder}: cannot write images here ({e.strerror or e})") from None
        self.written: list[Path] = []
        self._names: set[str] = set()

    def write(self, image: np.ndarray, name: str = "frame", index: int | None = None) -> Path:
        """image: uint8 [H, W, 3] BGR; name: the frame's name; index: appended when the name was written before."""
        stem = Path(name).stem.replace(" ", "_") or "frame"
        if stem in self._names:
            stem = f"{stem}_{index if index is not None else len(self.written)}"
        ok, data = cv2.imencode(self.suffix, image)
        if not ok:
            raise PoseEdgeError(f"{name}: OpenCV cannot encode this image as {self.suffix}")
        path = self.folder / f"{stem}{self.suffix}"
        with atomic_open(path, "wb") as f:
            f.write(data.tobytes())
        self._names.add(stem)
        self.written.append(path)
        return path

    def close(self) -> None:
        pass

    def abort(self) -> None:
        pass  # every image already written is complete; nothing is half-written

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()


def open_overlay_writer(path, fps: float | None = None) -> VideoWriter | ImageFolderWriter:
    """A VideoWriter for a path ending in .mp4 or .avi (at `fps`, 30 when None), else an ImageFolderWriter.
    Both take write(image, name, index) (a frame's name and index; the video ignores them) and close()."""
    path = Path(path)
    if path.suffix.lower() in VIDEO_CODECS:
        return VideoWriter(path, fps or 30.0)
    if path.suffix and not path.is_dir():
        raise PoseEdgeError(f"{path}: overlays go to a folder or a {' / '.join(VIDEO_SUFFIXES)} file")
    return ImageFolderWriter(path)
