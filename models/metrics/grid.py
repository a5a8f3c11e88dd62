"""Grid artifacts: do the faces show the pixel grid their generator doubled its maps on?

Two kinds, two figures, each beside the real faces' own value:

- A mosaic (`grid_2`, `grid_4`, `grid_8`): nearest-neighbour doublings repeat each value over
  a block, so two of them from 16x16 leave cells of 4 px on a 64 px face. Then the step
  between neighbouring pixels depends on where the pair falls within the period: small
  inside a cell, large across its edge. Per period p, the mean absolute luma step at the
  most stepped phase, each step taken over the average step of the period around it: 1.0
  where every phase steps alike, 2.0 where cell edges step twice as much as their
  surroundings. (The grids are aligned with the frame, since every doubling starts from a
  4x4 map, so a pair's phase is its row or column modulo p.)
- A checkerboard (`checkerboard`): stride-2 transposed convolutions make alternate pixels
  brighter (Odena et al. 2016). That steps alike at every phase, so the step figure cannot
  see it; it puts power at the highest frequency instead, a sharp peak in the spectrum
  (Durall et al. 2020). The power spectrum of the faces' luma at the three frequencies of
  period 2 over that of their eight neighbours (geometric mean): about 1 on a smooth
  spectrum, tens with a checkerboard of one grey level.
"""
from __future__ import annotations

import numpy as np

from models.metrics.pixels import luma
from models.metrics.registry import register_metric

PERIODS = (2, 4, 8)


def position_steps(grey: np.ndarray) -> np.ndarray:
    """(N, S, S) -> (S - 1,): the mean absolute step between pixels i and i + 1, across
    (columns) and down (rows) together, over all faces."""
    across = np.abs(np.diff(grey, axis=2)).mean(axis=(0, 1))
    down = np.abs(np.diff(grey, axis=1)).mean(axis=(0, 2))
    return (across + down) / 2


def phase_ratios(steps: np.ndarray, period: int) -> np.ndarray:
    """(period,): each phase's mean of the steps over their centred moving average of one
    period. The average holds the face's own layout (a cheek's edge, the eyes' rows, at the
    same place in every aligned face) and cancels anything of this period, so the ratio is
    1 at every phase unless the steps repeat with the period."""
    weights = np.ones(period + 1, dtype=np.float32)
    weights[[0, -1]] = 0.5
    trend = np.convolve(steps, weights / period, mode="valid")      # centres p/2 ... n-1-p/2
    centre = steps[period // 2: period // 2 + len(trend)]
    ratios = centre / np.maximum(trend, 1e-6)
    phases = np.arange(period // 2, period // 2 + len(trend)) % period
    return np.array([ratios[phases == r].mean() for r in range(period)])


def checkerboard_peak(grey: np.ndarray) -> float:
    """The mean power spectrum's period-2 frequencies over their 8 neighbours (geometric
    mean of the three: across, down, diagonal)."""
    power = (np.abs(np.fft.fft2(grey - grey.mean(axis=(1, 2), keepdims=True))) ** 2).mean(0)
    neighbours = sum(np.roll(power, (a, b), (0, 1)) for a in (-1, 0, 1) for b in (-1, 0, 1)
                     if (a, b) != (0, 0)) / 8
    half = power.shape[0] // 2
    ratios = [power[u, v] / max(neighbours[u, v], 1e-12) for u, v in
              ((half, 0), (0, half), (half, half))]
    return float(np.exp(np.mean(np.log(ratios))))


def grid_scores(faces: np.ndarray) -> dict[str, float]:
    """uint8 (N, S, S, 3) -> {grid_2, grid_4, grid_8, checkerboard} (module docstring)."""
    grey = luma(faces)
    steps = position_steps(grey)
    scores = {f"grid_{period}": float(phase_ratios(steps, period).max()) for period in PERIODS}
    return {**scores, "checkerboard": checkerboard_peak(grey)}


@register_metric("grid",
                 "grid artifacts: the mean luma step between neighbouring pixels at the most "
                 "stepped phase of a 2, 4 and 8 px period over the mean step (1.0: no grid; "
                 "checkerboards and nearest-neighbour mosaics score above), beside the real faces",
                 unconditional=True, analyse=lambda faces, suite: grid_scores(faces))
def grid(fake, real, speaker_ids, suite) -> dict[str, float]:
    generated, truth = fake.extra["grid"], real.extra["grid"]
    return {**generated, **{f"{key}_real": value for key, value in truth.items()}}
