"""A run's mouth reader (`--mouth_open_coef`): fitted before training or restored, and under
`--mouth_refit_every N` fitted on in training, on the generator's own faces.

Why refit: G learns to draw what the frozen reader reads, and the reader was fitted on real
faces only. On realvids-dev (benchmarks/mouth_fidelity.py) the mouths G means to draw follow
the speech as well as the best predictor fitted to the speech alone (0.39-0.42 within
speaker against 0.41), but dlib, which `mouth_sync` scores with, agrees with the reader on
G's own mouths at only 0.67-0.82: G found mouths the reader reads as open and dlib does not.
Every N steps the refit draws REFIT_FACES train windows' faces with the rendering model,
labels them with the metric's openness measure (dlib's lips: 256 faces drawn and labelled
in 9.9 s on one AVX2 core beside another run; faces without lips found are left out), and
fits the reader REFIT_STEPS steps on batches half of real boxes, half of these, so that
such mouths stop paying.

Exact resume: each refit is a pure function of the step, the seed, the networks and the
train split (a fresh optimiser, generators seeded by seed and step), and checkpoints hold the
reader's weights. Under torchrun every process refits, then takes rank 0's reader.
"""
from __future__ import annotations

import copy

import numpy as np
import torch

from models.mouth_reader import (FIT_BATCH, MIN_FACES, MouthReader, fit_mouth_reader, fit_steps,
                                 labelled_boxes, sample_rows)
from models.metrics.mouth import measure_openness, openness_measure_for
from utils import to_uint8_images

REFIT_FACES = 256       # G's faces labelled at each refit
REFIT_STEPS = 200
REFIT_LR = 1e-3         # half the first fit's: the reader is moved, not refitted from scratch


class ReaderRefit:
    """Fits a run's reader on in training; `faces` (N, 3, S, S) and `openness` (N,) are the
    real train faces the reader was first fitted on and their labels (NaN: none found)."""

    def __init__(self, dataset, faces: torch.Tensor, openness: np.ndarray, measure: str,
                 seed: int, every: int):
        self.real_boxes, self.real_labels, self.mean, self.std = labelled_boxes(faces, openness)
        self.dataset, self.measure, self.seed, self.every = dataset, measure, seed, every
        self._dlib = None

    def due(self, step: int) -> bool:
        return step % self.every == 0

    def __call__(self, step: int, model, reader: MouthReader, ranks) -> int:
        """Refit `reader` in place on `model`'s faces (eval mode) for REFIT_FACES train rows
        drawn by the seed and step; returns how many of the faces were labelled."""
        rng = np.random.default_rng([self.seed, step])
        rows = np.sort(rng.choice(len(self.dataset), min(REFIT_FACES, len(self.dataset)),
                                  replace=False))
        with torch.no_grad():
            conditions = self.dataset.batch(rows)[0]
            device = next(reader.parameters()).device
            faces = torch.cat([model(chunk.to(device))[1].float().cpu()
                               for chunk in conditions.split(64)])
        labelled = self.refit_on(faces, reader, int(rng.integers(2 ** 62)))
        ranks.broadcast(reader)
        return labelled

    def refit_on(self, faces: torch.Tensor, reader: MouthReader, seed: int) -> int:
        """Label generated `faces` (N, 3, S, S) by the measure and fit `reader` in place
        REFIT_STEPS steps on batches half of them, half of the real faces; fewer than
        MIN_FACES labelled leave it as it is. Returns how many were labelled."""
        if self.measure == "landmarks" and self._dlib is None:
            from models.metrics.face_analysis import DlibFaces
            self._dlib = DlibFaces()
        openness = measure_openness(to_uint8_images(faces), self.measure, self._dlib)
        found = int(np.isfinite(openness).sum())
        if found < MIN_FACES:
            return found
        fake_boxes, fake_labels, _, _ = labelled_boxes(faces, openness, self.mean, self.std)
        generator, half = torch.Generator().manual_seed(seed), FIT_BATCH // 2

        def draw():
            real = torch.randint(len(self.real_boxes), (half,), generator=generator)
            fake = torch.randint(len(fake_boxes), (half,), generator=generator)
            return (torch.cat([self.real_boxes[real], fake_boxes[fake]]),
                    torch.cat([self.real_labels[real], fake_labels[fake]]))
        fitted = copy.deepcopy(reader).cpu()
        fit_steps(fitted, draw, REFIT_STEPS, generator, lr=REFIT_LR)
        reader.load_state_dict(fitted.state_dict())     # in place: a graphed step reads it
        return len(fake_boxes)


def mouth_reader_for(train_split, speaker_names: list[str], seed: int, device,
                     saved: bool = False, refit_every: int = 0
                     ) -> tuple[MouthReader, ReaderRefit | None]:
    """A run's frozen reader on `device`, and its ReaderRefit under --mouth_refit_every (else
    None). The reader is fitted on `sample_rows` of `train_split()` (a
    data.dataset.SpeechFaceDataset, faces at the model's size), or, where the checkpoint
    resumed holds one (`saved`), an empty one its weights are loaded into."""
    reader = MouthReader().requires_grad_(False).eval()
    if saved and not refit_every:
        return reader.to(device), None
    dataset = train_split()
    rows = sample_rows(len(dataset), seed)
    faces = torch.stack([dataset.face(int(row)) for row in rows])
    measure = openness_measure_for(speaker_names)
    openness = measure_openness(to_uint8_images(faces), measure)
    if not saved:
        reader = fit_mouth_reader(faces, openness, seed)
    refit = ReaderRefit(dataset, faces, openness, measure, seed, refit_every) if refit_every else None
    return reader.to(device), refit
