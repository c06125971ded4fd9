"""Per-sample randomness for training data: a pure function of (seed, epoch, index).

Every random number of a training sample comes from sample_rng, so any data-loader worker or DDP rank draws the same
augmentation for the same sample, and a run resumed mid-epoch sees exactly the samples it would have seen.
"""

from __future__ import annotations

import numpy as np


def sample_rng(seed: int, epoch: int, index: int) -> np.random.Generator:
    """The random generator of one training sample: the same (seed, epoch, index) always draws the same numbers,
    whatever worker or rank loads it."""
    return np.random.default_rng([seed, epoch, index])
