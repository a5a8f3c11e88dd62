"""Measures on the pixels themselves: luma (the grid and mouth figures read it) and the l1
metric against the paired real frame."""
from __future__ import annotations

import numpy as np

from models.metrics.registry import register_metric

LUMA = np.float32([0.299, 0.587, 0.114])


def luma(faces: np.ndarray) -> np.ndarray:
    return faces.astype(np.float32) @ LUMA                        # (N, S, S)


@register_metric("l1", "mean L1 distance to the paired real frame, in [-1, 1] pixel units")
def l1(fake, real, speaker_ids, suite) -> dict[str, float]:
    difference = np.abs(fake.faces.astype(np.float32) - real.faces.astype(np.float32))
    return {"l1": float(difference.mean() / 127.5)}
