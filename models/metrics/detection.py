"""Detection metrics: the share of generated faces a face detector finds, beside the real
faces' share (wav2pix counted dlib's detections with all 68 landmarks)."""
from __future__ import annotations

import numpy as np

from models.metrics.face_analysis import DlibFaces, HaarFaces
from models.metrics.registry import register_metric


@register_metric("detection_dlib",
                 "share of faces where dlib's HOG detector finds a face and places all "
                 "68 landmarks (the wav2pix measure)",
                 needs=("detection",), unconditional=True, detector=DlibFaces.name)
def detection_dlib(fake, real, speaker_ids, suite) -> dict[str, float]:
    return {"detection_dlib": fake.dlib_found.mean(), "detection_dlib_real": real.dlib_found.mean()}


def haar_found(faces: np.ndarray, suite) -> np.ndarray:
    """bool (N,): faces OpenCV's cascade finds (HaarFaces.found)."""
    return suite.haar.found(faces)


@register_metric("detection_haar", "share of faces OpenCV's frontal-face Haar cascade finds",
                 unconditional=True, analyse=haar_found, detector=HaarFaces.name)
def detection_haar(fake, real, speaker_ids, suite) -> dict[str, float]:
    return {"detection_haar": fake.extra["detection_haar"].mean(),
            "detection_haar_real": real.extra["detection_haar"].mean()}
