"""A pipelined runner: capture, inference and rendering overlap in threads joined by bounded queues.

    source ──► [capture] ──► infer(frame) ──► render(frame, result) ──► the caller, in frame order
               live: the source's own capture thread and its buffer of one (the freshest frame wins)
               file: a reader thread that decodes ahead into a bounded queue (nothing dropped)

A live source never builds a backlog: the inference thread takes the newest frame from the source's buffer of one,
so the frame it works on was captured at most one capture interval before it started, and capture-to-result latency
stays near one inference time however slow inference is; the frames it had no time for are counted as dropped.
A file source blocks its reader when the queue is full, so every frame is processed.

One inference thread and FIFO queues keep results in frame order. An exception in any stage stops the run, and
the caller's loop raises it with the stage named (StageError, or the stage's own PoseEdgeError with the stage
prefixed). stop() ends a run from any thread; Ctrl-C in the caller stops the threads and closes the source.
"""

from __future__ import annotations

import dataclasses
import queue
import threading
import time
from typing import Any, Callable, Iterator

import numpy as np

from pose_edge.errors import PoseEdgeError
from pose_edge.runtime.sources import Frame, Source, open_source

_END = object()  # end of stream, passed down the queues
_POLL_S = 0.1    # how often a blocked stage looks at the stop flag


class StageError(RuntimeError):
    """An exception in one stage of a stream; `stage` names it and __cause__ is the original exception."""

    def __init__(self, stage: str, error: BaseException):
        super().__init__(f"{stage} stage failed: {type(error).__name__}: {error}")
        self.stage = stage


@dataclasses.dataclass
class Timing:
    """Durations of one kind, in seconds."""

    samples: list[float] = dataclasses.field(default_factory=list)

    def add(self, seconds: float) -> None:
        self.samples.append(seconds)

    @property
    def count(self) -> int:
        return len(self.samples)

    def mean_ms(self) -> float:
        return 1000.0 * float(np.mean(self.samples)) if self.samples else float("nan")

    def percentile_ms(self, q: float) -> float:
        return 1000.0 * float(np.percentile(self.samples, q)) if self.samples else float("nan")

    def max_ms(self) -> float:
        return 1000.0 * max(self.samples) if self.samples else float("nan")


@dataclasses.dataclass
class StreamStats:
    """What a run measured.

    frames:        results delivered to the caller.
    dropped:       frames a live source replaced by fresher ones before inference took them.
    skipped:       frames the source could not use (corrupt, empty, mis-shaped).
    capture_wait:  per frame, how long the inference thread waited for it (near zero when inference is the
                   bottleneck, one capture interval when the camera is).
    inference:     per frame, the infer() call.
    render:        per frame, the render() call.
    latency:       per frame, from the frame's capture timestamp to the end of its inference (capture-to-result;
                   for a file source this includes the wait in the read-ahead queue).
    elapsed_s:     from the start of the run to its last result.
    interrupted:   the run ended by Ctrl-C (run() only; iterating re-raises KeyboardInterrupt).
    """

    frames: int = 0
    dropped: int = 0
    skipped: int = 0
    capture_wait: Timing = dataclasses.field(default_factory=Timing)
    inference: Timing = dataclasses.field(default_factory=Timing)
    render: Timing = dataclasses.field(default_factory=Timing)
    latency: Timing = dataclasses.field(default_factory=Timing)
    elapsed_s: float = 0.0
    interrupted: bool = False

    @property
    def throughput_fps(self) -> float:
        return self.frames / self.elapsed_s if self.elapsed_s > 0 else float("nan")

    def summary(self) -> str:
        """One line: counts, throughput, mean per-stage times and capture-to-result latency."""
        def ms(value: float) -> str:
            return f"{value:.1f}" if value == value else "-"  # NaN: the stage never ran

        return (f"{self.frames} frames in {self.elapsed_s:.1f} s ({self.throughput_fps:.1f} frames/s), "
                f"{self.dropped} dropped, {self.skipped} skipped; mean ms: capture wait "
                f"{ms(self.capture_wait.mean_ms())}, inference {ms(self.inference.mean_ms())}, render "
                f"{ms(self.render.mean_ms())}; capture-to-result {ms(self.latency.mean_ms())} "
                f"(p95 {ms(self.latency.percentile_ms(95))})" + (" (interrupted)" if self.interrupted else ""))


class StreamRunner:
    """Runs `infer` (and `render`) over a source with the stages overlapped.

    source:     anything open_source() takes, or a Source; the runner closes it when the run ends.
    infer:      Frame (image uint8 [H, W, 3] BGR, capture timestamp, ...) -> result, e.g. an Estimator's
                poses; called from one thread, in order.
    render:     (frame, result) -> None, e.g. draw and write; called from one thread, in order. Optional.
    queue_size: frames a file source decodes ahead, and results waiting for render and for the caller.

    Iterate for (Frame, result) pairs in frame order, or call run(). One run per runner.
    """

    def __init__(self, source, infer: Callable[[Frame], Any],
                 render: Callable[[Frame, Any], None] | None = None, *, queue_size: int = 2):
        if queue_size < 1:
            raise ValueError("queue_size must be at least 1")
        self.source: Source = open_source(source)
        self._infer = infer
        self._render = render
        self._queue_size = queue_size
        self.stats = StreamStats()
        self._stop = threading.Event()
        self._error: tuple[str, BaseException] | None = None
        self._error_lock = threading.Lock()
        self._threads: list[threading.Thread] = []
        self._started = False

    # -- control

    def stop(self) -> None:
        """End the run from any thread (a render callback, a signal handler); the caller's loop ends normally."""
        self._stop.set()
        if self.source.live:
            self.source.close()  # wakes an inference thread waiting in the source's buffer

    def _fail(self, stage: str, error: BaseException) -> None:
        with self._error_lock:
            if self._error is None:
                self._error = (stage, error)
        self.stop()

    def _raise_error(self) -> None:
        stage, error = self._error
        if isinstance(error, PoseEdgeError):
            try:
                raise type(error)(f"{stage} stage: {error}") from error
            except TypeError:  # a subclass with another constructor
                pass
        raise StageError(stage, error) from error

    # -- queues that never block past a stop

    def _put(self, q: queue.Queue, item) -> bool:
        while not self._stop.is_set():
            try:
                q.put(item, timeout=_POLL_S)
                return True
            except queue.Full:
                pass
        return False

    def _get(self, q: queue.Queue):
        while not self._stop.is_set():
            try:
                return q.get(timeout=_POLL_S)
            except queue.Empty:
                pass
        return _END

    # -- stages

    def _read_ahead(self, frames: queue.Queue) -> None:
        """File sources: decode ahead into a bounded queue; a full queue blocks (nothing is dropped)."""
        try:
            for frame in self.source:
                if not self._put(frames, frame):
                    return
            self._put(frames, _END)
        except BaseException as e:
            self._fail("capture", e)

    def _run_inference(self, next_frame: Callable[[], Frame | None], results: queue.Queue) -> None:
        try:
            while not self._stop.is_set():
                t0 = time.monotonic()
                try:
                    frame = next_frame()
                except BaseException as e:
                    self._fail("capture", e)
                    return
                if frame is None:
                    break
                t1 = time.monotonic()
                result = self._infer(frame)
                t2 = time.monotonic()
                self.stats.capture_wait.add(t1 - t0)
                self.stats.inference.add(t2 - t1)
                self.stats.latency.add(t2 - frame.timestamp)
                if not self._put(results, (frame, result)):
                    return
            self._put(results, _END)
        except BaseException as e:
            self._fail("inference", e)

    def _run_render(self, results: queue.Queue, out: queue.Queue) -> None:
        try:
            while (item := self._get(results)) is not _END:
                if self._render is not None:
                    t0 = time.monotonic()
                    self._render(*item)
                    self.stats.render.add(time.monotonic() - t0)
                if not self._put(out, item):
                    return
            self._put(out, _END)
        except BaseException as e:
            self._fail("render", e)

    def _start(self) -> queue.Queue:
        if self._started:
            raise PoseEdgeError("a StreamRunner runs once; make a new one for another run")
        self._started = True
        results: queue.Queue = queue.Queue(self._queue_size)
        out: queue.Queue = queue.Queue(self._queue_size)
        if self.source.live:
            iterator = iter(self.source)
            next_frame = lambda: next(iterator, None)  # noqa: E731  the source's buffer of one
        else:
            frames: queue.Queue = queue.Queue(self._queue_size)
            self._threads.append(threading.Thread(target=self._read_ahead, args=(frames,), name="capture",
                                                  daemon=True))

            def next_frame():
                item = self._get(frames)
                return None if item is _END else item
        self._threads += [
            threading.Thread(target=self._run_inference, args=(next_frame, results), name="inference", daemon=True),
            threading.Thread(target=self._run_render, args=(results, out), name="render", daemon=True),
        ]
        self._t_start = time.monotonic()
        for thread in self._threads:
            thread.start()
        return out

    def _shutdown(self) -> None:
        self._stop.set()
        if self.source.live:
            self.source.close()
        for thread in self._threads:
            thread.join(timeout=5.0)
        # A file source is closed only once its reader thread has left it (closing under a read can crash OpenCV).
        if not any(t.is_alive() for t in self._threads):
            self.source.close()
        self.stats.dropped = self.source.dropped
        self.stats.skipped = self.source.skipped

    # -- the caller's side

    def __iter__(self) -> Iterator[tuple[Frame, Any]]:
        out = self._start()
        try:
            while True:
                item = self._get(out)
                if self._error is not None:
                    self._raise_error()
                if item is _END:
                    return
                self.stats.frames += 1
                self.stats.elapsed_s = time.monotonic() - self._t_start
                self.stats.dropped, self.stats.skipped = self.source.dropped, self.source.skipped
                yield item
        finally:
            self._shutdown()

    def run(self, on_result: Callable[[Frame, Any], None] | None = None) -> StreamStats:
        """Run to the end (or stop(), or Ctrl-C, which ends the run cleanly with stats.interrupted set); call
        on_result(frame, result) for each result in order; return the stats. A stage's exception is raised."""
        try:
            for frame, result in self:
                if on_result is not None:
                    on_result(frame, result)
        except KeyboardInterrupt:
            self.stats.interrupted = True
        return self.stats

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.stop()
        if not self._started:
            self.source.close()
