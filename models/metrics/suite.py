"""Runs the chosen metrics on generated faces against the real faces of the same pairs.

Detectors and networks are loaded once, and the real faces are analysed once
(`reference`), so training can score the same validation rows every few epochs cheaply.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np
import torch

from models.metrics import NEEDS_CLASSIFIER, NEEDS_DESCRIPTORS
from models.metrics.distances import (frechet_distance, matching_1v2, recall_at_k,
                                      similarity_to_speakers, top_k_accuracy)
from models.metrics.face_analysis import DlibFaces, HaarFaces
from models.metrics.attributes import AttributeAgreement
from models.metrics.grid import grid_scores
from models.metrics.identity_classifier import IdentityClassifier, classify
from models.metrics.mouth import demo_mouth_openness, landmark_mouth_openness, mouth_sync_scores

RECALL_KS = (1, 5, 10)


@dataclass
class Analysis:
    """What the metrics read from one set of faces (uint8 (N, S, S, 3))."""
    faces: np.ndarray
    dlib_found: np.ndarray | None = None        # bool (N,)
    descriptors: np.ndarray | None = None       # (N, 128) dlib
    haar_found: np.ndarray | None = None        # bool (N,)
    logits: np.ndarray | None = None            # (N, K) identity classifier
    features: np.ndarray | None = None          # (N, 128) identity classifier
    inception: np.ndarray | None = None         # (N, 2048)
    mouth: np.ndarray | None = None             # (N,) mouth openness, NaN where unmeasured
    loudness: np.ndarray | None = None          # (N,) dB of the speech window's centre (real)
    attributes: np.ndarray | None = None        # (N, A) predicted attribute labels
    attribute_features: np.ndarray | None = None    # (N, 128) the attribute predictor's
    grid: dict | None = None                    # grid_scores of the whole set


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
        wants = set(self.names)
        landmarks = "mouth_sync" in wants and mouth_measure == "landmarks"
        needs_dlib = wants & ({"detection_dlib"} | NEEDS_DESCRIPTORS) or landmarks
        self.dlib = DlibFaces() if needs_dlib else None
        self.haar = HaarFaces() if "detection_haar" in wants else None
        if wants & NEEDS_CLASSIFIER and classifier is None:
            raise ValueError("the identity and frechet metrics need an identity classifier")
        if "attributes" in wants and attributes is None:
            raise ValueError("the attributes metric needs an AttributeAgreement")

    def detectors(self) -> dict[str, str]:
        """The detectors behind the detection figures, named for metrics.json."""
        found = {"detection_dlib": self.dlib, "detection_haar": self.haar}
        return {name: d.name for name, d in found.items() if d is not None and name in self.names}

    def analyse(self, faces: np.ndarray) -> Analysis:
        analysis = Analysis(faces)
        wants = set(self.names)
        if self.dlib is not None:
            analysis.dlib_found, analysis.descriptors = self.dlib.analyse(
                faces, descriptors=bool(wants & NEEDS_DESCRIPTORS))
        if self.haar is not None:
            analysis.haar_found = self.haar.found(faces)
        if self.classifier is not None and wants & NEEDS_CLASSIFIER:
            analysis.logits, analysis.features = classify(self.classifier, faces, self.device)
        if self.inception is not None and "frechet" in wants:
            analysis.inception = inception_features(self.inception, faces, self.device)
        if "mouth_sync" in wants:
            analysis.mouth = (demo_mouth_openness(faces) if self.mouth_measure == "demo" else
                              landmark_mouth_openness(self.dlib.landmark_points(faces)))
        if "grid" in wants:
            analysis.grid = grid_scores(faces)
        if "attributes" in wants:
            analysis.attributes, analysis.attribute_features = self.attributes.predict(
                faces, self.device)
        return analysis

    def score(self, fake: Analysis, real: Analysis, speaker_ids: np.ndarray) -> dict[str, float]:
        """Every chosen metric of the generated faces `fake` against their paired `real`."""
        results = {}
        for name in self.names:
            results.update(getattr(self, f"_{name}")(fake, real, speaker_ids))
        return {key: float(value) for key, value in results.items()}

    # ---- one method per registry name; each returns flat {key: value}

    def _detection_dlib(self, fake, real, _):
        return {"detection_dlib": fake.dlib_found.mean(), "detection_dlib_real": real.dlib_found.mean()}

    def _detection_haar(self, fake, real, _):
        return {"detection_haar": fake.haar_found.mean(), "detection_haar_real": real.haar_found.mean()}

    def _identity(self, fake, real, speaker_ids):
        results, classes = {}, fake.logits.shape[1]
        for k in (1, 5):
            results[f"identity_top{k}"] = top_k_accuracy(fake.logits, speaker_ids, k)
            results[f"identity_top{k}_real"] = top_k_accuracy(real.logits, speaker_ids, k)
            results[f"identity_top{k}_chance"] = min(k / classes, 1.0)
        return results

    def _dlib_similarity(self, fake, real, speaker_ids):
        scores = similarity_to_speakers(fake.descriptors, speaker_ids, real.descriptors, speaker_ids)
        return {f"dlib_{k}": v for k, v in scores.items()}

    def _frechet(self, fake, real, _):
        results = {"frechet_classifier": frechet_distance(real.features, fake.features),
                   "frechet_dlib": frechet_distance(real.descriptors, fake.descriptors)}
        if fake.inception is not None:
            results["fid_inception"] = frechet_distance(real.inception, fake.inception)
        return results

    def _mouth_sync(self, fake, real, speaker_ids):
        return mouth_sync_scores(fake.mouth, real.mouth, real.loudness, speaker_ids)

    def _grid(self, fake, real, _):
        return {**fake.grid, **{f"{key}_real": value for key, value in real.grid.items()}}

    def _attributes(self, fake, real, _):
        return self.attributes.scores(fake.attributes, real.attributes)

    def _l1(self, fake, real, _):
        difference = np.abs(fake.faces.astype(np.float32) - real.faces.astype(np.float32))
        return {"l1": float(difference.mean() / 127.5)}

    def _matching(self, fake, real, speaker_ids):
        """1:2 matching and recall@K with dlib's descriptors (SF2F's protocol, dlib in place
        of FaceNet) and, when the identity classifier ran, in its feature space too
        (`_classifier` keys): dlib's recogniser was trained on photographs, and on faces
        far from them (the cartoon demo set) its descriptors barely tell speakers apart.
        With the attributes metric, also in the attribute predictor's hidden space
        (`_attributes` keys): it holds only what the labelled attributes need, so it asks
        whether the face carries the speaker's voice-predictable traits, where the
        classifier's space is mostly hair, skin and clothes, which no voice tells; and by
        Euclidean distance between the predicted labels themselves (`_labels` keys,
        AttributeAgreement.label_space): whether the face's traits, as the predictor reads
        them, are nearer its speaker's than another speaker's."""
        speakers = len(np.unique(speaker_ids))
        results = {"matching_1v2_chance": 0.5}
        spaces = [("", "cosine", fake.descriptors, real.descriptors)]
        if fake.features is not None:
            spaces.append(("_classifier", "cosine", fake.features, real.features))
        if fake.attribute_features is not None:
            spaces.append(("_attributes", "cosine", fake.attribute_features,
                           real.attribute_features))
            spaces.append(("_labels", "euclidean",
                           *self.attributes.label_space(fake.attributes, real.attributes)))
        for suffix, distance, generated, truth in spaces:
            results[f"matching_1v2{suffix}"] = matching_1v2(generated, speaker_ids, truth,
                                                           speaker_ids, distance)
            for k, value in recall_at_k(generated, speaker_ids, truth, speaker_ids,
                                        RECALL_KS, distance).items():
                results[f"recall_at_{k}{suffix}"] = value
        for k in RECALL_KS:
            results[f"recall_at_{k}_chance"] = min(k / speakers, 1.0)
        return results


# ---------------------------------------------------------------- Inception, user-supplied

def load_inception(path, device):
    """A TorchScript Inception-v3 feature network, e.g. NVIDIA's `inception-2015-12-05.pt`
    of the StyleGAN2-ADA metrics: called as net(uint8 NCHW, return_features=True) -> (N, 2048).
    Nothing is downloaded: the user passes the file."""
    return torch.jit.load(str(path), map_location=device).eval()


@torch.no_grad()
def inception_features(network, faces: np.ndarray, device, batch: int = 64) -> np.ndarray:
    chunks = []
    for start in range(0, len(faces), batch):
        images = torch.from_numpy(np.ascontiguousarray(faces[start:start + batch]))
        chunks.append(network(images.permute(0, 3, 1, 2).to(device), return_features=True).cpu())
    return torch.cat(chunks).float().numpy()


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

