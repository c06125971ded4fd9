"""Frame sources: images, folders, globs, video files, cameras, stream URLs and Python iterables behind one iterator.

`open_source(spec)` returns a Source that yields `Frame`s (uint8 [H, W, 3] BGR images). Two kinds of source behave
differently on purpose:

- File sources (an image, a folder, a glob, a video file) are read on demand: the consumer sets the pace and no frame
  is ever dropped.
- Live sources (a camera, a stream URL, an iterable unless told otherwise) are read by a capture thread into a buffer
  of one frame. A new frame replaces one not yet taken (the freshest frame wins and `dropped` counts the replaced
  ones), so a consumer slower than the camera always gets a recent frame and never builds a backlog.

Frames that cannot be used (a corrupt image in a folder, an empty or mis-shaped camera frame) are skipped with a
warning and counted in `skipped`; a source that cannot be opened at all raises a one-line DataError naming it.
"""

from __future__ import annotations

import dataclasses
import glob as globlib
import os
import re
import threading
import time
import warnings
from pathlib import Path
from typing import Callable, Iterable, Iterator, Sequence

import cv2
import numpy as np

from pose_edge.data.coco import read_image
from pose_edge.errors import DataError, PoseEdgeError

IMAGE_SUFFIXES = frozenset({".jpg", ".jpeg", ".png", ".bmp", ".tif", ".tiff", ".webp"})
URL_PATTERN = re.compile(r"^[a-zA-Z][a-zA-Z0-9+.-]*://")
# A stream that stops delivering for this many reads in a row has ended (unplugged camera, closed stream).
MAX_FAILED_READS = 10


@dataclasses.dataclass(frozen=True)
class Frame:
    """One captured frame.

    image:      uint8 [H, W, 3], BGR, C-contiguous.
    index:      sequence number of the frame in its source, in capture order; frames skipped as unusable take no
                number, frames dropped by a live source do (a gap in the indices is a drop).
    timestamp:  capture time in seconds on time.monotonic()'s clock (when the frame was read or grabbed).
    name:       the file name for images, "frame 000123" for video and live frames.
    video_time: seconds from the start of a video file (its presentation time); None for other sources.
    """

    image: np.ndarray
    index: int
    timestamp: float
    name: str
    video_time: float | None = None


def usable_image(image) -> np.ndarray | None:
    """The image as uint8 [H, W, 3] C-contiguous, or None when it is empty or has another dtype or shape."""
    if not isinstance(image, np.ndarray) or image.dtype != np.uint8 or image.ndim != 3 or image.shape[2] != 3:
        return None
    if image.shape[0] == 0 or image.shape[1] == 0:
        return None
    return np.ascontiguousarray(image)


class Source:
    """An iterable of Frames; close it (or use it as a context manager) to release files, devices and threads.

    kind:    "image", "folder", "glob", "video", "camera", "stream", "iterable" or "array".
    live:    True for sources read by a capture thread (frames may be dropped), False for sources read on demand.
    fps:     the source's frame rate where it says (video files, most cameras), else None.
    length:  the number of frames where known in advance (images, video files), else None.
    dropped: frames replaced by a fresher one before the consumer took them (live sources only).
    skipped: frames that could not be used (corrupt image, failed read, empty or mis-shaped frame).
    """

    kind: str = ""
    live: bool = False
    fps: float | None = None
    length: int | None = None

    def __init__(self, description: str):
        self.description = description
        self.skipped = 0

    @property
    def dropped(self) -> int:
        return 0

    def __iter__(self) -> Iterator[Frame]:
        raise NotImplementedError

    def close(self) -> None:
        pass

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def __repr__(self) -> str:
        return f"<{type(self).__name__} {self.description}>"

    def _skip(self, what: str) -> None:
        self.skipped += 1
        warnings.warn(f"{self.description}: skipped {what}", stacklevel=3)


def _natural_key(path: Path) -> list:
    """Sort key that orders frame2 before frame10."""
    return [int(part) if part.isdigit() else part.lower() for part in re.split(r"(\d+)", str(path))]


class ImageFiles(Source):
    """Image files in the given order, read on demand; unreadable ones are skipped and counted."""

    def __init__(self, paths: list[Path], kind: str, description: str):
        super().__init__(description)
        self.kind = kind
        self.paths = paths
        self.length = len(paths)

    def __iter__(self) -> Iterator[Frame]:
        index = 0
        for path in self.paths:
            try:
                image = read_image(path)
            except DataError as e:
                self._skip(f"{path.name} ({e})")
                continue
            yield Frame(image, index, time.monotonic(), path.name)
            index += 1


class VideoFile(Source):
    """A video file (or a URL the caller says is not live) decoded frame by frame on demand; never drops a frame."""

    def __init__(self, path: Path | str, kind: str = "video"):
        super().__init__(str(path))
        self.kind = kind
        self._cap = cv2.VideoCapture(str(path))
        if not self._cap.isOpened():
            what = "not a readable image or video" if kind == "video" else "cannot connect, or not a video stream"
            raise DataError(f"{path}: {what} (OpenCV cannot open it)")
        fps = self._cap.get(cv2.CAP_PROP_FPS)
        self.fps = float(fps) if fps and np.isfinite(fps) and fps > 0 else None
        count = int(self._cap.get(cv2.CAP_PROP_FRAME_COUNT))
        self.length = count if count > 0 else None
        # Read the first frame now, so that a file OpenCV opens but cannot decode fails here, before any work.
        self._first = self._read()
        if self._first is None:
            self._cap.release()
            raise DataError(f"{path}: no decodable frame in this video")

    def _read(self) -> tuple[np.ndarray, float | None] | None:
        ok, image = self._cap.read()
        if not ok:
            return None
        msec = self._cap.get(cv2.CAP_PROP_POS_MSEC)
        return image, (float(msec) / 1000.0 if msec is not None and np.isfinite(msec) and msec >= 0 else None)

    def __iter__(self) -> Iterator[Frame]:
        if not self._cap.isOpened():
            raise PoseEdgeError(f"{self.description}: the source is closed")
        index = 0
        item, self._first = self._first, None
        while item is not None:
            image, video_time = item
            if video_time is None and self.fps:
                video_time = index / self.fps
            checked = usable_image(image)
            if checked is None:
                self._skip(f"frame {index:06d} (not a uint8 [H, W, 3] image)")
            else:
                yield Frame(checked, index, time.monotonic(), f"frame {index:06d}", video_time)
                index += 1
            item = self._read()

    def close(self) -> None:
        self._first = None
        self._cap.release()


class ArrayFrames(Source):
    """Frames from a Python iterable read on demand by the consumer (live=False): nothing dropped."""

    def __init__(self, frames: Iterable, description: str, fps: float | None = None, kind: str = "iterable"):
        super().__init__(description)
        self.kind = kind
        self.fps = fps
        self._frames = frames
        self.length = len(frames) if hasattr(frames, "__len__") else None

    def __iter__(self) -> Iterator[Frame]:
        index = 0
        for image in self._frames:
            checked = usable_image(image)
            if checked is None:
                self._skip(f"an item that is not a uint8 [H, W, 3] image ({_describe(image)})")
                continue
            yield Frame(checked, index, time.monotonic(), f"frame {index:06d}")
            index += 1


def _describe(image) -> str:
    if isinstance(image, np.ndarray):
        return f"{image.dtype} {list(image.shape)}"
    return type(image).__name__


class LatestFrame:
    """A buffer of one frame between a capture thread and a consumer: a put replaces an untaken frame (counted in
    `dropped`), a get blocks for a new frame and returns None once the producer has finished and the buffer is
    empty; an error the producer finished with is raised in the consumer."""

    def __init__(self):
        self._cond = threading.Condition()
        self._frame: Frame | None = None
        self._finished = False
        self._error: BaseException | None = None
        self.dropped = 0

    def put(self, frame: Frame) -> None:
        with self._cond:
            if self._finished:  # a closed source takes no more frames
                return
            if self._frame is not None:
                self.dropped += 1
            self._frame = frame
            self._cond.notify()

    def finish(self, error: BaseException | None = None, discard: bool = False) -> None:
        """The producer has ended (with `error`, raised in the consumer); discard=True also drops an untaken frame,
        so that a consumer of a closed source ends at once."""
        with self._cond:
            self._finished = True
            if discard:
                self._frame = None
            self._error = self._error or error
            self._cond.notify_all()

    def get(self) -> Frame | None:
        with self._cond:
            # Wait in slices: a plain wait() would not let the main thread see Ctrl-C on every platform.
            while self._frame is None and not self._finished:
                self._cond.wait(0.1)
            frame, self._frame = self._frame, None
            if frame is None and self._error is not None:
                raise self._error
            return frame


class LiveSource(Source):
    """A capture thread calls `read()` as fast as the device delivers and keeps the newest frame in a LatestFrame
    buffer; iterating takes frames from it.

    read() returns an image, or None for a failed read, and raises StopIteration at the end of the stream. Failed
    reads, and images that are empty, not uint8 [H, W, 3] or of another size than the first frame, are skipped and
    counted; MAX_FAILED_READS failed reads in a row end the stream (an unplugged camera, a closed stream).
    """

    live = True

    def __init__(self, read: Callable[[], np.ndarray | None], description: str, kind: str,
                 release: Callable[[], None] = lambda: None, fps: float | None = None):
        super().__init__(description)
        self.kind = kind
        self.fps = fps
        self._read = read
        self._release = release
        self._buffer = LatestFrame()
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._released = False

    @property
    def dropped(self) -> int:
        return self._buffer.dropped

    def __iter__(self) -> Iterator[Frame]:
        if self._thread is not None or self._released:
            raise PoseEdgeError(f"{self.description}: a live source can be iterated once")
        self._thread = threading.Thread(target=self._capture, name=f"capture {self.description}", daemon=True)
        self._thread.start()
        while (frame := self._buffer.get()) is not None:
            yield frame

    def _capture(self) -> None:
        error = None
        try:
            index, failures, shape = 0, 0, None
            while not self._stop.is_set():
                try:
                    image = self._read()
                except StopIteration:
                    break
                timestamp = time.monotonic()
                if image is None:
                    self.skipped += 1
                    failures += 1
                    if failures >= MAX_FAILED_READS:
                        warnings.warn(f"{self.description}: no frame in {failures} reads in a row, the stream ended")
                        break
                    time.sleep(0.01 * failures)
                    continue
                failures = 0
                checked = usable_image(image)
                if checked is None:
                    self._skip(f"a frame that is not a uint8 [H, W, 3] image ({_describe(image)})")
                elif shape is not None and checked.shape != shape:
                    self._skip(f"a {checked.shape[1]}x{checked.shape[0]} frame in a {shape[1]}x{shape[0]} stream")
                else:
                    shape = checked.shape
                    self._buffer.put(Frame(checked, index, timestamp, f"frame {index:06d}"))
                    index += 1
        except BaseException as e:  # handed to the consumer, which raises it
            error = e
        finally:
            try:
                self._release_once()
            finally:
                self._buffer.finish(error)

    def _release_once(self) -> None:
        if not self._released:
            self._released = True
            self._release()

    def close(self) -> None:
        self._stop.set()
        self._buffer.finish(discard=True)
        if self._thread is None:
            self._release_once()
        else:
            # The capture thread releases the device itself, never while it is reading; a read blocked in a dead
            # device may not return, and the daemon thread then releases it when it does.
            self._thread.join(timeout=2.0)


def _open_capture(target: int | str, description: str, kind: str) -> LiveSource:
    cap = cv2.VideoCapture(target) if kind == "camera" else cv2.VideoCapture(target, cv2.CAP_FFMPEG)
    if not cap.isOpened():
        cap.release()
        what = "no such camera, or it is in use" if kind == "camera" else "cannot connect, or not a video stream"
        raise DataError(f"{description}: cannot open ({what})")
    if kind == "camera":
        cap.set(cv2.CAP_PROP_BUFFERSIZE, 1)  # where the driver honours it, its own queue adds no latency
    fps = cap.get(cv2.CAP_PROP_FPS)
    fps = float(fps) if fps and np.isfinite(fps) and fps > 0 else None

    def read() -> np.ndarray | None:
        ok, image = cap.read()
        return image if ok else None

    return LiveSource(read, description, kind, release=cap.release, fps=fps)


def _iterable_reader(frames: Iterable) -> tuple[Callable[[], np.ndarray], Callable[[], None]]:
    iterator = iter(frames)

    def release():
        close = getattr(iterator, "close", None)  # runs a generator's finally blocks
        if close is not None:
            close()

    return iterator.__next__, release


def open_source(spec, *, live: bool | None = None, fps: float | None = None) -> Source:
    """Open a frame source.

    spec: an image file; a folder (its images, in natural sort order); a glob pattern ("clips/*.png"); a video file;
          a camera index (int or "0"); a stream URL ("rtsp://...", "http://..."); a uint8 [H, W, 3] array (one
          frame); any other iterable or generator of uint8 [H, W, 3] BGR arrays; or a Source (returned as is).
    live: whether the source is read by a capture thread that drops stale frames. Cameras always are; stream URLs,
          generators and iterators are unless live=False (a URL then reads like a video file, an iterator on
          demand); lists and tuples are not unless live=True; file sources never are.
    fps:  the frame rate of an iterable, where the caller knows it.
    An iterable must yield a new array for each frame (or one it no longer writes to): frames are not copied.

    Raises DataError (one line, naming the source) when it is missing or cannot be read.
    """
    if isinstance(spec, Source):
        return spec
    if isinstance(spec, np.ndarray):
        if usable_image(spec) is None:
            raise DataError(f"a frame must be a uint8 [H, W, 3] BGR image, not {_describe(spec)}")
        return ArrayFrames([spec], "an image array", kind="array")
    if isinstance(spec, int) and not isinstance(spec, bool):
        return _open_camera(spec, live)
    if isinstance(spec, (str, os.PathLike)):
        return _open_path(os.fspath(spec), live)
    if isinstance(spec, Iterable) and not isinstance(spec, (bytes, dict)):
        # A generator or iterator is a feed that runs on its own (live); a list or tuple is a recording (not live).
        if live is False or (live is None and isinstance(spec, Sequence)):
            return ArrayFrames(spec, "an iterable of frames", fps=fps)
        read, release = _iterable_reader(spec)
        return LiveSource(read, "an iterable of frames", "iterable", release=release, fps=fps)
    raise PoseEdgeError(f"cannot read frames from a {type(spec).__name__}: give a path, a camera index, a URL "
                        f"or an iterable of uint8 [H, W, 3] images")


def _open_camera(index: int, live: bool | None) -> LiveSource:
    if live is False:
        raise PoseEdgeError(f"camera {index}: a camera is always live (its driver drops frames nobody reads)")
    return _open_capture(index, f"camera {index}", "camera")


def _open_path(text: str, live: bool | None) -> Source:
    if text.strip().isdigit():
        return _open_camera(int(text), live)
    if URL_PATTERN.match(text):
        return VideoFile(text, kind="stream") if live is False else _open_capture(text, text, "stream")
    path = Path(text).expanduser()
    if live:
        raise PoseEdgeError(f"{text}: files are read frame by frame, not live; only cameras, streams and iterables "
                            f"can be live")
    if path.is_dir():
        images = sorted((p for p in path.iterdir() if p.suffix.lower() in IMAGE_SUFFIXES and p.is_file()),
                        key=_natural_key)
        if not images:
            raise DataError(f"{path}: no images in this folder ({', '.join(sorted(IMAGE_SUFFIXES))})")
        return ImageFiles(images, "folder", str(path))
    if path.is_file():
        if path.suffix.lower() in IMAGE_SUFFIXES:
            read_image(path)  # fail now, with the file named, rather than yield nothing
            return ImageFiles([path], "image", str(path))
        if not os.access(path, os.R_OK):
            raise DataError(f"{path}: cannot read this file (permission denied)")
        return VideoFile(path)
    if globlib.has_magic(text):
        images = sorted((Path(p) for p in globlib.glob(os.path.expanduser(text))
                         if Path(p).suffix.lower() in IMAGE_SUFFIXES and Path(p).is_file()), key=_natural_key)
        if not images:
            raise DataError(f"{text}: no image files match this pattern")
        return ImageFiles(images, "glob", text)
    raise DataError(f"{text}: no such file or folder (nor a camera index or stream URL)")
