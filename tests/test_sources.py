"""Frame sources: what each spec opens, file sources never drop, live sources keep only the freshest frame, bad frames
are skipped and counted, missing sources are one-line DataErrors."""

from __future__ import annotations

import sys
import threading
import time
from pathlib import Path

import cv2
import numpy as np
import pytest

from pose_edge.errors import DataError, PoseEdgeError
from pose_edge.runtime.sources import LatestFrame, open_source

sys.path.insert(0, str(Path(__file__).parent))
from synthetic_poses import write_clip  # noqa: E402


def _image(value: int, size=(40, 30)) -> np.ndarray:
    return np.full((size[1], size[0], 3), value, np.uint8)


@pytest.fixture
def folder(tmp_path):
    """img1, img2, img10 (readable, brightness 10, 20, 100), bad.jpg (garbage bytes), empty.png (zero bytes), a text
    file that is not an image."""
    for n in (1, 2, 10):
        cv2.imwrite(str(tmp_path / f"img{n}.png"), _image(10 * n))
    (tmp_path / "bad.jpg").write_bytes(b"\xff\xd8 not really a jpeg")
    (tmp_path / "empty.png").write_bytes(b"")
    (tmp_path / "notes.txt").write_text("not an image")
    return tmp_path


def test_folder_skips_corrupt_images_counts_them_and_sorts_naturally(folder):
    with pytest.warns(UserWarning) as warned:
        with open_source(folder) as source:
            frames = list(source)
    assert sorted(str(w.message).split(": skipped ")[1].split(" ")[0] for w in warned) == ["bad.jpg", "empty.png"]
    assert (source.kind, source.live, source.dropped) == ("folder", False, 0)
    assert source.skipped == 2  # bad.jpg and empty.png; notes.txt is not an image file and never considered
    assert [f.name for f in frames] == ["img1.png", "img2.png", "img10.png"]
    assert [int(f.image[0, 0, 0]) for f in frames] == [10, 20, 100]
    assert [f.index for f in frames] == [0, 1, 2]
    assert all(f.image.dtype == np.uint8 and f.image.shape == (30, 40, 3) for f in frames)


def test_glob_and_single_image(folder):
    with open_source(str(folder / "img1*.png")) as source:
        assert source.kind == "glob"
        assert [f.name for f in source] == ["img1.png", "img10.png"]
    with open_source(folder / "img2.png") as source:
        frames = list(source)
    assert source.kind == "image" and len(frames) == 1 and int(frames[0].image[0, 0, 0]) == 20


def test_video_file_source_reads_every_frame_in_order_even_for_a_slow_consumer(tmp_path):
    clip = write_clip(tmp_path / "clip.mp4", 20, fps=25.0)
    with open_source(clip) as source:
        assert (source.kind, source.live, source.fps, source.length) == ("video", False, 25.0, 20)
        frames = []
        for frame in source:
            time.sleep(0.005)  # slower than nothing: a file source waits for its reader
            frames.append(frame)
    assert source.dropped == 0 and source.skipped == 0
    assert [f.index for f in frames] == list(range(20))
    assert [f.name for f in frames[:2]] == ["frame 000000", "frame 000001"]
    # mp4v is lossy; a flat grey survives within a few levels, so the order is readable.
    means = [f.image.mean() for f in frames]
    assert np.allclose(means, [12 * t for t in range(20)], atol=5) and np.all(np.diff(means) > 0)
    assert np.allclose([f.video_time for f in frames], [t / 25.0 for t in range(20)], atol=1e-3)
    assert all(b.timestamp >= a.timestamp for a, b in zip(frames, frames[1:]))


def test_live_generator_keeps_the_freshest_frame_and_counts_the_dropped():
    produced = []

    def camera():
        for t in range(60):
            time.sleep(0.002)
            produced.append(t)
            yield _image(t)

    with open_source(camera()) as source:
        assert source.live and source.kind == "iterable"
        frames = []
        for frame in source:
            time.sleep(0.02)  # a consumer ten times slower than the camera
            frames.append(frame)
    indices = [f.index for f in frames]
    assert indices == sorted(set(indices))                  # in capture order, no repeats
    assert indices[-1] == 59                                # the last frame is delivered, not stranded in the buffer
    assert [int(f.image[0, 0, 0]) for f in frames] == indices
    assert source.dropped > 30                              # most of the 60 frames had no taker
    assert len(frames) + source.dropped == len(produced) == 60  # every frame is either delivered or counted


def test_live_source_skips_and_counts_empty_and_misshaped_frames():
    items = [_image(1), np.zeros((0, 0, 3), np.uint8), _image(2).astype(np.float32), _image(3)[:, :, 0],
             _image(4, size=(20, 20)), _image(5)]

    def feed():
        for item in items:
            time.sleep(0.01)
            yield item

    with pytest.warns(UserWarning, match="skipped"):
        with open_source(feed()) as source:
            values = [int(f.image[0, 0, 0]) for f in source]
    assert values == [1, 5]
    assert source.skipped == 4 and source.dropped == 0


def test_list_is_read_on_demand_and_generator_can_be_told_not_live():
    frames = [_image(v) for v in range(5)]
    with open_source(frames) as source:
        assert not source.live and [int(f.image[0, 0, 0]) for f in source] == [0, 1, 2, 3, 4]
    with open_source(iter(frames), live=False) as source:
        delivered = []
        for frame in source:
            time.sleep(0.01)
            delivered.append(int(frame.image[0, 0, 0]))
    assert delivered == [0, 1, 2, 3, 4] and source.dropped == 0


def test_live_source_raises_the_feeds_error_in_the_consumer():
    def feed():
        yield _image(1)
        time.sleep(0.05)
        raise DataError("camera unplugged")

    with open_source(feed()) as source, pytest.raises(DataError, match="camera unplugged"):
        for _ in source:
            pass


def test_close_stops_the_capture_thread_and_runs_the_generators_finally():
    closed = threading.Event()

    def endless():
        try:
            while True:
                time.sleep(0.002)
                yield _image(0)
        finally:
            closed.set()

    source = open_source(endless())
    iterator = iter(source)
    next(iterator)
    source.close()
    assert closed.wait(2.0)
    assert not any(t.name.startswith("capture") and t.is_alive() for t in threading.enumerate())
    assert next(iterator, None) is None  # after close the source ends; it does not hang


def test_latest_frame_buffer_replaces_an_untaken_frame():
    from pose_edge.runtime.sources import Frame

    buffer = LatestFrame()
    for i in range(3):
        buffer.put(Frame(_image(i), i, float(i), f"frame {i}"))
    assert buffer.get().index == 2 and buffer.dropped == 2
    buffer.finish()
    assert buffer.get() is None


@pytest.mark.parametrize("spec, match", [
    ("/no/such/file.mp4", "/no/such/file.mp4: no such file"),
    ("/no/such/*.png", r"/no/such/\*.png: no image files match"),
    ("rtsp://127.0.0.1:9/stream", "rtsp://127.0.0.1:9/stream: cannot open"),
    (47, "camera 47: cannot open"),
    ("47", "camera 47: cannot open"),
])
def test_missing_sources_are_one_line_data_errors(spec, match):
    with pytest.raises(DataError, match=match) as info:
        open_source(spec)
    assert "\n" not in str(info.value)


def test_unreadable_files_are_data_errors_naming_them(tmp_path):
    (tmp_path / "broken.mp4").write_bytes(b"\x00" * 1000)
    (tmp_path / "broken.png").write_bytes(b"\x89PNG garbage")
    (tmp_path / "empty").mkdir()
    for path, match in ((tmp_path / "broken.mp4", "broken.mp4: "), (tmp_path / "broken.png", "broken.png: "),
                        (tmp_path / "empty", "no images in this folder")):
        with pytest.raises(DataError, match=match):
            open_source(path)
    with pytest.raises(PoseEdgeError, match="always live"):
        open_source(0, live=False)
    with pytest.raises(PoseEdgeError, match="uint8"):
        open_source(np.zeros((4, 4), np.float32))
