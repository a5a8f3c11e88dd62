"""Runs the chosen metrics on generated faces against the real faces of the same pairs.

Detectors and networks are loaded once, and the real faces are analysed once
(SplitEvaluation.real), so training can score the same validation rows every few epochs cheaply.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from functools import cached_property

import numpy as np

from models.metrics.attributes import AttributeAgreement
from models.metrics.face_analysis import DlibFaces, HaarFaces
from models.metrics.identity_classifier import IdentityClassifier, classify
from models.metrics.registry import metric, needs_of


@dataclass
class Analysis:
    """What the metrics read from one set of faces (uint8 (N, S, S, 3)): the analyses several
    metrics share, and each metric's own (`extra`, by metric name: its `analyse`)."""
    faces: np.ndarray
    dlib_found: np.ndarray | None = None        # bool (N,)
    descriptors: np.ndarray | None = None       # (N, 128) dlib
    logits: np.ndarray | None = None            # (N, K) identity classifier
    features: np.ndarray | None = None          # (N, 128) identity classifier
    loudness: np.ndarray | None = None          # (N,) dB of the speech window's centre (real)
    extra: dict = field(default_factory=dict)


class FaceMetrics:
    def __init__(self, names: list[str], device, classifier: IdentityClassifier | None = None,
                 inception=None, mouth_measure: str = "landmarks",
                 attributes: AttributeAgreement | None = None):
        """`mouth_measure`: "landmarks" (dlib's lips) or "demo" (the demo faces' mouth contrast);
        `attributes`: the predictor and labels of the scored rows, for that metric."""
        self.names, self.device = list(names), device
        self.attributes = attributes
        self.classifier, self.inception = classifier, inception
        self.mouth_measure = mouth_measure
        self.needs = needs_of(self.names)
        for need, supplied, what in (("classifier", classifier, "an identity classifier"),
                                     ("attribute_labels", attributes, "an AttributeAgreement")):
            if need in self.needs and supplied is None:
                users = [name for name in self.names if need in metric(name).needs]
                raise ValueError(f"the {', '.join(users)} metrics need {what}")

    # Loaded on first use: the shared analysis or a metric's own (mouth_sync's lip landmarks).
    @cached_property
    def dlib(self) -> DlibFaces:
        return DlibFaces()

    @cached_property
    def haar(self) -> HaarFaces:
        return HaarFaces()

    def detectors(self) -> dict[str, str]:
        """The detectors behind the detection figures, named for metrics.json."""
        return {name: metric(name).detector for name in self.names if metric(name).detector}

    def analyse(self, faces: np.ndarray) -> Analysis:
        analysis = Analysis(faces)
        if self.needs & {"detection", "descriptors"}:
            analysis.dlib_found, analysis.descriptors = self.dlib.analyse(
                faces, descriptors="descriptors" in self.needs)
        if "classifier" in self.needs:
            analysis.logits, analysis.features = classify(self.classifier, faces, self.device)
        for name in self.names:
            if metric(name).analyse is not None:
                analysis.extra[name] = metric(name).analyse(faces, self)
        return analysis

    def score(self, fake: Analysis, real: Analysis, speaker_ids: np.ndarray) -> dict[str, float]:
        """Every chosen metric of the generated faces `fake` against their paired `real`."""
        results = {}
        for name in self.names:
            results.update(metric(name).score(fake, real, speaker_ids, self))
        return {key: float(value) for key, value in results.items()}


# ---------------------------------------------------------------- the printed table

def metric_rows(results: dict) -> list[tuple[str, str, str, str]]:
    """(metric, generated, real faces, chance) rows for the printed table; a voice-blind
    baseline (`_blind`) shows as the chance."""
    def cell(key):
        return f"{results[key]:.4f}" if key in results else ""

    def chance(key):
        plain = key
        for space in ("_classifier", "_attributes", "_labels"):
            plain = plain.removesuffix(space)
        return cell(f"{plain}_chance") or cell(f"{key}_blind")
    return [(key, cell(key), cell(f"{key}_real"), chance(key))
            for key in results if not key.endswith(("_real", "_chance", "_blind"))]


def format_table(results: dict) -> str:
    rows = [("metric", "generated", "real", "chance")] + metric_rows(results)
    widths = [max(len(row[i]) for row in rows) for i in range(4)]
    lines = ["  ".join(cell.ljust(width) for cell, width in zip(row, widths)).rstrip()
             for row in rows]
    lines.insert(1, "  ".join("-" * width for width in widths))
    return "\n".join(lines)

