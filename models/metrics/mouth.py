"""Mouth sync: does the generated mouth open when the real one does, within each speaker?

Two measures of how open a mouth is. On photographs, dlib's 68 landmarks: the inner lips'
height over the mouth's width (points 61-67, 62-66, 63-65 over 60-64). On the demo set's
cartoon faces, whose mouth is a dark cavity with white teeth drawn larger as the speech gets
louder (data/demo.py), the contrast of the mouth box. Scores are computed
within speakers (each speaker's mean removed), so a model that only tells speakers apart
scores 0 and one whose mouths follow the real frames scores up to 1.
"""
from __future__ import annotations

import numpy as np

from models.metrics.pixels import luma
from models.metrics.registry import register_metric

# The demo faces' mouth box as fractions of the frame (mouth centre at 0.33 of the half-frame
# below the centre, zoomed by 1.12; poses move it by a few pixels).
DEMO_MOUTH_ROWS, DEMO_MOUTH_COLUMNS = (0.60, 0.84), (0.40, 0.60)
INNER_LIPS = ((61, 67), (62, 66), (63, 65))
MOUTH_CORNERS = (60, 64)


def demo_mouth_openness(faces: np.ndarray) -> np.ndarray:
    """uint8 (N, S, S, 3) demo faces -> (N,): the standard deviation of luma in the mouth box.
    An open mouth puts a dark cavity and white teeth between the lips; within a speaker this
    contrast follows the audio-derived openness the frames were drawn from at r = 0.92 on the
    demo test split (the share of cavity-coloured pixels only at 0.40: at 64 px the cavity
    is 1-3 px high and blends with the lips)."""
    size = faces.shape[1]
    rows = slice(int(DEMO_MOUTH_ROWS[0] * size), int(DEMO_MOUTH_ROWS[1] * size))
    columns = slice(int(DEMO_MOUTH_COLUMNS[0] * size), int(DEMO_MOUTH_COLUMNS[1] * size))
    box = faces[:, rows, columns].astype(np.float32)                # contiguous
    return luma(box).std(axis=(1, 2))


def landmark_mouth_openness(points: np.ndarray) -> np.ndarray:
    """(N, 68, 2) landmarks (NaN where none were found) -> (N,) inner-lip aspect ratio."""
    heights = [np.linalg.norm(points[:, a] - points[:, b], axis=1) for a, b in INNER_LIPS]
    width = np.linalg.norm(points[:, MOUTH_CORNERS[0]] - points[:, MOUTH_CORNERS[1]], axis=1)
    return np.mean(heights, axis=0) / np.maximum(width, 1e-6)


def within_speakers(values: np.ndarray, speaker_ids: np.ndarray) -> np.ndarray:
    """Each value minus its speaker's mean (over the finite values)."""
    centred = np.full(len(values), np.nan)
    for speaker in np.unique(speaker_ids):
        mine = speaker_ids == speaker
        if np.isfinite(values[mine]).any():
            centred[mine] = values[mine] - np.nanmean(values[mine])
    return centred


def correlation(a: np.ndarray, b: np.ndarray) -> float:
    both = np.isfinite(a) & np.isfinite(b)
    if both.sum() < 3 or a[both].std() == 0 or b[both].std() == 0:
        return float("nan")
    return float(np.corrcoef(a[both], b[both])[0, 1])


def mouth_sync_scores(generated: np.ndarray, real: np.ndarray, loudness: np.ndarray | None,
                      speaker_ids: np.ndarray) -> dict[str, float]:
    """Within-speaker correlation of generated with real openness, the spread (standard
    deviation within speakers) of each, and, with the speech windows' loudness, how closely
    the real frames themselves follow the speech (the data's own ceiling)."""
    fake, truth = within_speakers(generated, speaker_ids), within_speakers(real, speaker_ids)
    scores = {"mouth_sync": correlation(fake, truth),
              "mouth_spread": float(np.nanstd(fake)), "mouth_spread_real": float(np.nanstd(truth)),
              "mouth_measured": float(np.mean(np.isfinite(fake) & np.isfinite(truth)))}
    if loudness is not None:
        loud = within_speakers(loudness, speaker_ids)
        scores["mouth_loudness"] = correlation(fake, loud)
        scores["mouth_loudness_real"] = correlation(truth, loud)
    return scores


def openness_measure_for(speaker_names: list[str]) -> str:
    """"demo" for the demo set's speakers (data/demo.py names them demo_*), else "landmarks"."""
    return "demo" if all(name.startswith("demo_") for name in speaker_names) else "landmarks"


def measure_openness(faces: np.ndarray, measure: str, dlib=None) -> np.ndarray:
    """uint8 (N, S, S, 3) faces -> (N,) openness by `measure`: "demo" (the mouth box's
    contrast) or "landmarks" (dlib's lips, NaN where none are found; `dlib` a DlibFaces, a
    new one if None)."""
    if measure == "demo":
        return demo_mouth_openness(faces)
    if dlib is None:
        from models.metrics.face_analysis import DlibFaces
        dlib = DlibFaces()
    return landmark_mouth_openness(dlib.landmark_points(faces))


def mouth_openness(faces: np.ndarray, suite) -> np.ndarray:
    """(N,) openness by the suite's measure, with the suite's dlib models."""
    dlib = suite.dlib if suite.mouth_measure == "landmarks" else None   # loaded on first use
    return measure_openness(faces, suite.mouth_measure, dlib)


@register_metric("mouth_sync",
                 "within speakers, the correlation of generated with real mouth openness "
                 "(dlib's lip landmarks; on the demo set its mouth contrast), each one's "
                 "spread, and how both follow the loudness of the speech window",
                 needs=("loudness",), analyse=mouth_openness)
def mouth_sync(fake, real, speaker_ids, suite) -> dict[str, float]:
    return mouth_sync_scores(fake.extra["mouth_sync"], real.extra["mouth_sync"], real.loudness,
                             speaker_ids)
