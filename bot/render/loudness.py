"""Integrated loudness (ITU-R BS.1770-4, as pyloudnorm measures it) and the mix's final peak limiter.

pyloudnorm (pinned) defines the K-weighting filters; the gating is the same arithmetic as its
Meter.integrated_loudness, vectorised: pyloudnorm loops over the 400 ms blocks in Python (22 ms
for a 16 s stereo preview at 22.05 kHz), this takes a few milliseconds, and a preview is measured
two or three times while its gain is found. tests/test_mix.py checks both agree.

The limiter is a gain envelope with lookahead: every frame gets at most the gain that keeps it
under the ceiling, reached a few milliseconds before a peak and held a little after it, so the
sample peak can never pass the ceiling (pedalboard's JUCE Limiter has no lookahead and ends in a
hard clip at 0 dBFS; BENCHMARKS.md, issue 22).
"""

from __future__ import annotations

from functools import cache

import numpy as np

BLOCK_S = 0.4  # BS.1770 gating block
STEP = 0.25  # blocks overlap by 75%
ABSOLUTE_GATE = -70.0  # LUFS
RELATIVE_GATE = -10.0  # LU below the loudness of the blocks above the absolute gate
LOOKAHEAD_S = 0.004  # the limiter's gain falls over twice this before a peak (no click) ...
HOLD_S = 0.04  # ... and stays down this long after it, so bass waves are not bent one by one
CHUNK = 32  # frames the limiter takes its minima over at a time


@cache
def _k_weighting(rate: int) -> np.ndarray:
    """BS.1770's two K-weighting stages (pyloudnorm's coefficients at `rate`) as scipy sections."""
    from pyloudnorm.iirfilter import IIRfilter

    stages = [IIRfilter(4.0, 1 / np.sqrt(2), 1500.0, rate, "high_shelf"), IIRfilter(0.0, 0.5, 38.0, rate, "high_pass")]
    # float32 sections: the filter runs in float32 (the energy within 1e-7 of float64's)
    return np.array([np.concatenate([stage.b, stage.a]) / stage.a[0] for stage in stages], dtype=np.float32)


def weighted_power(audio: np.ndarray, rate: int) -> np.ndarray:
    """Per frame, the K-weighted power summed over the channels (left and right weigh 1) of
    (channels, frames) or (frames,) float audio."""
    from scipy.signal import sosfilt

    weighted = sosfilt(_k_weighting(rate), np.atleast_2d(audio).astype(np.float32, copy=False), axis=-1)
    return np.einsum("cf,cf->f", weighted, weighted)


def integrated_from_power(power: np.ndarray, rate: int) -> float:
    """Gated integrated loudness (LUFS) of per-frame K-weighted power; -inf for silence or audio
    shorter than one block."""
    frames = len(power)
    count = int(np.round((frames / rate - BLOCK_S) / (BLOCK_S * STEP))) + 1
    if frames < BLOCK_S * rate or count < 1:
        return -np.inf
    # pyloudnorm's block j spans [int(0.1 j rate), int(0.1 (j + 4) rate)): four hops of 100 ms
    hops = (BLOCK_S * STEP * np.arange(count + 3) * rate).astype(int)
    hops = hops[hops < frames]
    per_hop = np.add.reduceat(power, hops, dtype=np.float64)
    per_hop = np.concatenate([per_hop, np.zeros(count + 3 - len(per_hop))])  # past the end: nothing
    energy = (per_hop[:count] + per_hop[1 : count + 1] + per_hop[2 : count + 2] + per_hop[3 : count + 3])
    energy /= BLOCK_S * rate
    with np.errstate(divide="ignore"):
        loudness = -0.691 + 10 * np.log10(energy)
    above = energy[loudness >= ABSOLUTE_GATE]
    if not above.size:
        return -np.inf
    relative = -0.691 + 10 * np.log10(above.mean()) + RELATIVE_GATE
    gated = energy[(loudness > relative) & (loudness > ABSOLUTE_GATE)]
    return float(-0.691 + 10 * np.log10(gated.mean())) if gated.size else -np.inf


def integrated_loudness(audio: np.ndarray, rate: int) -> float:
    """Integrated loudness (LUFS) of (channels, frames) or (frames,) float audio."""
    return integrated_from_power(weighted_power(audio, rate), rate)


def frame_peaks(audio: np.ndarray) -> np.ndarray:
    """Per frame, the largest absolute sample over the channels of (channels, frames) audio."""
    return np.abs(np.atleast_2d(audio)).max(axis=0)


def limiter_gain(peaks: np.ndarray, ceiling: float, rate: int) -> np.ndarray:
    """Per frame, a gain <= 1 (the same for every channel) under which no frame whose peak is
    `peaks` (frame_peaks) exceeds `ceiling` (linear). The gain at frame t is an average of minima
    over windows that all contain t, so it is never above what t itself needs."""
    from scipy.ndimage import minimum_filter1d, uniform_filter1d

    frames, blocks = len(peaks), -(-len(peaks) // CHUNK)
    ahead, hold = max(1, round(LOOKAHEAD_S * rate)), round(HOLD_S * rate)
    # Each block of CHUNK frames by its loudest frame: the work below is per block (30x less),
    # and done frame by frame only around the blocks to be limited (a mix at -14 LUFS: ~1% of them).
    loudest = np.pad(peaks, (0, blocks * CHUNK - frames)).reshape(blocks, CHUNK).max(axis=1)
    gain = np.ones(frames, dtype=np.float32)
    if loudest.max() <= ceiling:
        return gain
    per_block = np.minimum(1.0, ceiling / np.maximum(loudest, 1e-12)).astype(np.float32)  # each block's least need
    # held[t] <= the minimum need over [t - ahead - hold, t + ahead], taken over whole blocks (the
    # window widened to blocks); then a mean over [t - ahead, t + ahead]: every window averaged
    # contains t (belt and braces: and never above the frame's own need).
    before, after = -(-(ahead + hold) // CHUNK) + 1, -(-ahead // CHUNK) + 1  # blocks either side, to spare
    padded = np.pad(per_block, (before, after), mode="edge")
    width = before + after + 1
    held = minimum_filter1d(padded, width)[width // 2 : width // 2 + blocks]
    # Where held is 1 over a block and the mean's reach either side, the gain is 1: work on the rest.
    reach = -(-ahead // CHUNK) + 1
    active = minimum_filter1d(held, 2 * reach + 1, mode="nearest") < 1.0
    edges = np.flatnonzero(np.diff(np.concatenate([[False], active, [False]]).astype(np.int8)))
    for first, last in zip(edges[0::2] * CHUNK, np.minimum(edges[1::2] * CHUNK, frames)):
        low, high = max(0, first - ahead), min(frames, last + ahead)  # the mean's inputs, as for the whole
        held_frames = np.repeat(held[low // CHUNK : -(-high // CHUNK)], CHUNK)[low % CHUNK :][: high - low]
        mean = uniform_filter1d(held_frames, 2 * ahead + 1, mode="nearest")[first - low : last - low]
        need = np.minimum(1.0, ceiling / np.maximum(peaks[first:last], 1e-12))
        gain[first:last] = np.minimum(mean, need)
    return gain
