"""Sharpness: do the generated faces keep the fine detail of the real ones, or are they blurred?

High-frequency power, per face: the share of the spectral power of its luma (the luma grid
and mouth read, models/metrics/pixels.py) that lies above a quarter of the Nyquist frequency,
radially, from a 2-D FFT of the face under a 2-D Hann window:

    hf = sum(P(f) for |f| > 0.125 cycles/px) / sum(P(f) for all f),   P = |FFT(w * (y - m))|^2

where y is the luma, w the outer product of two Hann windows and m the window-weighted mean
of y, so the windowed face has no power at f = 0. The metric reports the mean over the faces
of this share for the generated faces (`hf_power`) and for their real faces
(`hf_power_real`), and their ratio (`sharpness`): 1.0 as sharp as the real faces, below 1
blurred, above 1 noisy or over-sharpened.

Why this form:
- A share, not absolute power: brightness and contrast scale every frequency alike, so a
  generator that draws faces a little darker or flatter is not called blurred.
- The Hann window: the FFT treats the face as periodic, and the jump from its left edge to
  its right (and top to bottom) is a step, with power along both axes at every frequency
  up to Nyquist, that blur does not remove. Without the window that leakage puts a floor
  under the figure: on the wav2pix-mini faces a Gaussian blur of sigma 3 px still keeps
  0.24 of the real faces' share (0.003 with the window), sigma 1.5 px 0.35 (0.16).
- A quarter of Nyquist (0.125 cycles/px, periods below 8 px; radially, so the diagonal
  frequencies count the same as the axes'): above it on a 64 px face lie eyelashes, lip and
  nostril edges and hair strands, the detail blur removes first; the eyes, mouth and face
  outline lie below it. On the wav2pix-mini real faces (64 px) the share is 0.144 (0.394
  above an eighth of Nyquist, 0.024 above a half), so the band holds a measurable part of
  the power and its loss shows: a Gaussian blur of sigma 1 px keeps 0.39 of it, 1.5 px 0.16
  (tests/test_sharpness.py).
"""
from __future__ import annotations

import numpy as np

from models.metrics.pixels import luma
from models.metrics.registry import register_metric

CUTOFF = 0.125          # cycles per pixel: a quarter of the Nyquist frequency (0.5)
CHUNK = 256             # faces per FFT, bounding its memory at large face sizes


def hann_window(height: int, width: int) -> np.ndarray:
    return np.outer(np.hanning(height), np.hanning(width)).astype(np.float32)   # (H, W)


def spectrum_weights(height: int, width: int) -> tuple[np.ndarray, np.ndarray]:
    """(H, W // 2 + 1) each: the radial frequency of every bin of rfft2 in cycles per pixel,
    and how many bins of the full spectrum it stands for (its mirror image is left out, except
    for the columns of frequency 0 and, at even widths, of Nyquist, which have none)."""
    rows, columns = np.fft.fftfreq(height)[:, None], np.fft.rfftfreq(width)[None, :]
    radius = np.hypot(rows, columns)
    counts = np.full(columns.shape, 2.0)
    counts[:, 0] = 1
    if width % 2 == 0:
        counts[:, -1] = 1
    return radius, np.broadcast_to(counts, radius.shape)


def high_frequency_share(faces: np.ndarray) -> np.ndarray:
    """uint8 (N, H, W, 3) -> (N,): each face's share of luma power above CUTOFF (module
    docstring); 0 for a face of one grey level."""
    grey = luma(faces)                                              # (N, H, W)
    window = hann_window(*grey.shape[1:])
    radius, counts = spectrum_weights(*grey.shape[1:])
    high = radius > CUTOFF
    shares = []
    for start in range(0, len(grey), CHUNK):
        chunk = grey[start:start + CHUNK]
        mean = (chunk * window).sum(axis=(1, 2), keepdims=True) / window.sum()
        power = np.abs(np.fft.rfft2((chunk - mean) * window)) ** 2 * counts   # (n, H, W//2+1)
        total = power.sum(axis=(1, 2))
        shares.append(power[:, high].sum(axis=1) / np.maximum(total, 1e-12))
    return np.concatenate(shares) if shares else np.zeros(0)


def sharpness_scores(generated: np.ndarray, real: np.ndarray) -> dict[str, float]:
    """Per-face shares of the generated and the real faces -> {sharpness, hf_power,
    hf_power_real}; sharpness is NaN where the real faces have no high-frequency power."""
    hf_power, hf_power_real = float(generated.mean()), float(real.mean())
    ratio = hf_power / hf_power_real if hf_power_real > 0 else float("nan")
    return {"sharpness": ratio, "hf_power": hf_power, "hf_power_real": hf_power_real}


@register_metric("sharpness",
                 "high-frequency power: the share of luma power above a quarter of Nyquist "
                 "(Hann-windowed 2-D FFT), generated over real (1.0: as sharp as the real faces; "
                 "below: blurred; above: noisy), beside the real faces' own share",
                 unconditional=True, analyse=lambda faces, suite: high_frequency_share(faces))
def sharpness(fake, real, speaker_ids, suite) -> dict[str, float]:
    return sharpness_scores(fake.extra["sharpness"], real.extra["sharpness"])
