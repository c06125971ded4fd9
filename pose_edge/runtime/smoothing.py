"""Temporal smoothing of tracked keypoints: the One Euro filter (Casiez, Roussel and Vogel, CHI 2012), per track.

    smoother = KeypointSmoother()
    smoothed = smoother.update(track_ids, keypoints, timestamp)   # float32 [P, K, 3]

A One Euro filter is a low-pass filter whose cutoff rises with speed: a keypoint at rest is smoothed hard (cutoff
min_cutoff), one that moves fast is followed closely (cutoff min_cutoff + beta * speed), so jitter drops without the
lag a fixed low-pass filter puts on fast motion. Per keypoint, with the time step dt from the timestamps:

    alpha(fc) = 1 / (1 + 1 / (2 pi fc dt))
    velocity  = lowpass((x - x_prev_filtered) / dt, alpha(d_cutoff))      pixels per second, 2-D
    x_filtered = lowpass(x, alpha(min_cutoff + beta * |velocity|))

Units: min_cutoff and d_cutoff in hertz, beta in hertz per (pixel per second), i.e. per pixel; coordinates in frame
pixels, timestamps in seconds. beta depends on the image scale: at twice the resolution, half the beta does the same.
The defaults (min_cutoff 3 Hz, beta 0.03 per pixel, d_cutoff 1 Hz) were chosen on the synthetic tuning clips at
320x240, 15 fps, people 50-200 px tall (benchmarks/bench_tracking.py): the least error against the true keypoint
trajectory over a grid, so smoothing cannot win there by lagging. The error is flat near them (within 2 % for
min_cutoff 2-4 Hz at beta 0.03).
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

from pose_edge.errors import PoseEdgeError


@dataclass
class _KeypointState:
    position: np.ndarray  # [K, 2] filtered
    velocity: np.ndarray  # [K, 2] filtered, pixels per second
    seen: np.ndarray  # [K] timestamp of each keypoint's last update, -inf before its first
    last_seen: float  # timestamp of the track's last row


class KeypointSmoother:
    """One Euro filter over each track's keypoint coordinates (scores pass through).

    min_cutoff  Hz, the cutoff at rest: lower smooths more and lags more.
    beta        per pixel, how fast the cutoff rises with speed (Hz per pixel/s): higher follows fast motion better.
    d_cutoff    Hz, the cutoff of the speed estimate (1 Hz in the paper).
    forget_after  seconds: a track unseen this long is forgotten, so a later row with its id starts afresh.
    """

    def __init__(self, min_cutoff: float = 3.0, beta: float = 0.03, d_cutoff: float = 1.0, forget_after: float = 1.0):
        if min_cutoff <= 0 or beta < 0 or d_cutoff <= 0 or forget_after < 0:
            raise PoseEdgeError(f"One Euro filter needs min_cutoff > 0 ({min_cutoff}), beta >= 0 ({beta}), "
                                f"d_cutoff > 0 ({d_cutoff}) and forget_after >= 0 ({forget_after})")
        self.min_cutoff, self.beta, self.d_cutoff, self.forget_after = min_cutoff, beta, d_cutoff, forget_after
        self.reset()

    def reset(self) -> None:
        self._states: dict[int, _KeypointState] = {}
        self._time: float | None = None

    def update(self, track_ids: np.ndarray, keypoints: np.ndarray, timestamp: float) -> np.ndarray:
        """Smoothed keypoints float32 [P, K, 3] (x, y, score; frame pixels) of one frame.

        track_ids int [P] (-1: untracked, passed through unchanged; the others distinct), keypoints float [P, K, 3],
        timestamp in seconds, increasing from call to call. A keypoint with score <= 0 or a non-finite value is
        one the pose model did not find: it passes through unchanged and leaves its filter as it was.
        """
        track_ids = np.asarray(track_ids).reshape(-1)
        out = np.array(keypoints, np.float32, copy=True)
        if out.ndim != 3 or out.shape[2] != 3 or len(out) != len(track_ids):
            raise PoseEdgeError(f"smoother needs keypoints [P, K, 3] and track_ids [P], got {out.shape} and "
                                f"{track_ids.shape}")
        tracked = track_ids[track_ids >= 0]
        if len(np.unique(tracked)) != len(tracked):
            raise PoseEdgeError("smoother got the same track id twice in one frame")
        now = float(timestamp)
        if not np.isfinite(now) or (self._time is not None and now <= self._time):
            raise PoseEdgeError(f"smoother timestamps must be finite and increasing (got {now} after {self._time}); "
                                f"call reset() when a stream restarts")
        self._time = now
        self._states = {i: s for i, s in self._states.items() if now - s.last_seen <= self.forget_after}
        for row in np.flatnonzero(track_ids >= 0):
            out[row, :, :2] = self._filter(int(track_ids[row]), np.asarray(keypoints[row], np.float64), now)
        return out

    def _filter(self, track_id: int, keypoints: np.ndarray, now: float) -> np.ndarray:
        """Filtered (x, y) [K, 2] of one track's row; keypoints not found keep their input values."""
        xy = keypoints[:, :2]
        found = (keypoints[:, 2] > 0) & np.isfinite(keypoints).all(1)
        state = self._states.get(track_id)
        if state is None or len(state.seen) != len(keypoints):
            k = len(keypoints)
            state = self._states[track_id] = _KeypointState(np.zeros((k, 2)), np.zeros((k, 2)),
                                                            np.full(k, -np.inf), now)
        state.last_seen = now
        first = found & ~np.isfinite(state.seen)  # a keypoint's first sighting starts its filter at rest
        state.position[first], state.velocity[first] = xy[first], 0.0
        state.seen[first] = now
        step = found & ~first
        dt = (now - state.seen[step])[:, None]
        velocity = _lowpass(state.velocity[step], (xy[step] - state.position[step]) / dt, self.d_cutoff, dt)
        cutoff = self.min_cutoff + self.beta * np.linalg.norm(velocity, axis=1, keepdims=True)
        state.position[step] = _lowpass(state.position[step], xy[step], cutoff, dt)
        state.velocity[step] = velocity
        state.seen[step] = now
        return np.where(found[:, None], state.position, xy)


def _lowpass(previous: np.ndarray, value: np.ndarray, cutoff_hz, dt) -> np.ndarray:
    """Exponential smoothing with the weight alpha = 1 / (1 + tau / dt), tau = 1 / (2 pi cutoff) (the paper's)."""
    alpha = 1.0 / (1.0 + 1.0 / (2 * np.pi * cutoff_hz * dt))
    return previous + alpha * (value - previous)
