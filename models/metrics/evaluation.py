"""Scoring a generator on one split of a pair file: which metrics apply, the suite that
computes them, and the fixed rows it scores (for --evaluate and --eval_every alike)."""
from __future__ import annotations

import numpy as np
import torch

from data.dataset import (SpeechFaceDataset, in_chunks, read_faces, read_speaker_ids,
                          spread_over_speakers)
from data.schema import PairFileInfo
from models import ModelArgs, SpeechToFace
from models.metrics import parse_metric_names
from models.metrics.attributes import attribute_agreement_for, labelled_metrics
from models.metrics.frechet import load_inception
from models.metrics.identity_classifier import identity_classifier_for
from models.metrics.mouth import openness_measure_for
from models.metrics.registry import needs_of, unconditional_names
from models.metrics.suite import FaceMetrics
from utils import UserError, to_uint8_images

EVAL_SAMPLES = 256           # held-out pairs --eval_every scores unless --eval_samples says


class SplitEvaluation:
    """Scores a generator on fixed rows of one split; the real faces are analysed once."""

    def __init__(self, suite: FaceMetrics, dataset: SpeechFaceDataset, rows: list[int], device,
                 unseen: bool):
        self.suite, self.dataset, self.rows, self.device = suite, dataset, rows, device
        self.mode = "unseen_speakers" if unseen else "seen_speakers"
        self.speaker_ids = dataset.speaker_ids[rows]
        real = [to_uint8_images(dataset.batch(chunk)[1]) for chunk in in_chunks(rows)]
        self.real = suite.analyse(np.concatenate(real))
        if "loudness" in suite.needs and dataset.condition_kind == "speech":
            self.real.loudness = np.array([dataset.centre_loudness(i) for i in rows])

    @torch.no_grad()
    def generate(self, model: SpeechToFace) -> np.ndarray:
        """uint8 faces (N, S, S, 3), one per row, in eval mode."""
        was_training = model.training
        model.eval()
        faces = [to_uint8_images(model(self.dataset.batch(chunk)[0].to(self.device))[1])
                 for chunk in in_chunks(self.rows)]
        model.train(was_training)
        return np.concatenate(faces)

    def run(self, model: SpeechToFace) -> dict[str, float]:
        fake = self.suite.analyse(self.generate(model))
        return self.suite.score(fake, self.real, self.speaker_ids)


def unseen_speakers(info: PairFileInfo, split: str) -> bool:
    """True where the split holds a speaker with no train pairs (a speaker-disjoint split)."""
    heard = set(read_speaker_ids(info, "train").tolist())
    return not set(read_speaker_ids(info, split).tolist()) <= heard


def metric_suite(names: list[str], info: PairFileInfo, device, inception_path, split=None,
                 rows=None) -> FaceMetrics:
    """The named metrics, with the identity classifier of this file where one is needed
    (and the attribute labels of `rows` of `split`, for the attributes metric)."""
    inception = inception_network(inception_path, device) if inception_path else None
    classifier, needs = None, needs_of(names)
    if "classifier" in needs:
        classifier = identity_classifier_for(info.path, lambda: read_faces(info, "train"),
                                             len(info.speaker_names), device)
    attributes = (attribute_agreement_for(info, split, rows, device)
                  if "attribute_labels" in needs else None)
    return FaceMetrics(names, device, classifier, inception,
                       openness_measure_for(info.speaker_names), attributes)


def inception_network(path, device):
    try:
        return load_inception(path, device)
    except (RuntimeError, ValueError) as error:
        raise UserError(f"--inception {path}: not a TorchScript model "
                        f"({str(error).splitlines()[0][:100]})") from None


def unconditional_metrics(names: list[str], args: ModelArgs) -> list[str]:
    """An unconditional model's faces belong to no speaker and pair with no frame: of the
    metrics, only those registered as unconditional (face detection, Frechet distances,
    grid artifacts, sharpness) apply."""
    if args.condition != "none":
        return names
    unconditional = unconditional_names()
    kept = [name for name in names if name in unconditional]
    if not kept:
        *most, last = sorted(unconditional)
        raise UserError("an unconditional model (--condition none) has no speaker or true "
                        f"frame to be scored against; choose --metrics {', '.join(most)} "
                        f"or {last}")
    if len(kept) < len(names):
        print(f"note: an unconditional model is scored on {', '.join(kept)} only")
    return kept


def evaluation_for(options, info: PairFileInfo, split: str, args: ModelArgs, device,
                   limit: int | None) -> SplitEvaluation:
    """Rows of `split` (all, or `limit` spread over the speakers) ready to score."""
    dataset = SpeechFaceDataset(info, split, args.audio_samples, args.image_size, train=False,
                                condition=args.condition)
    rows = spread_over_speakers(dataset.speaker_ids, limit or len(dataset))
    names = unconditional_metrics(parse_metric_names(options.metrics), args)
    names = labelled_metrics(names, info, options.metrics)
    if "matching" in names and len(np.unique(dataset.speaker_ids[rows])) < 2:
        raise UserError(f"split '{split}' of {info.path} holds one speaker; 1:2 matching "
                        "compares speakers, so evaluate a split with two or more")
    unseen = unseen_speakers(info, split)
    if unseen and "identity" in names:
        names.remove("identity")
        print(f"note: split '{split}' holds speakers the train split lacks; identity accuracy "
              "is undefined for them, so 1:2 matching and recall@K score identity instead")
    suite = metric_suite(names, info, device, options.inception, split, rows)
    return SplitEvaluation(suite, dataset, rows, device, unseen)
