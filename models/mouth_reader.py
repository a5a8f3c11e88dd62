"""`--mouth_open_coef`: a small network that reads how open a face's mouth is, fitted to the
train split's real faces before training, then frozen (or fitted on in training on G's own
faces: `--mouth_refit_every`, models/mouth_refit.py); G's loss term `g_mouth_open` is the
L1 between its reading of the generated face and of the true frame.

Why: the whole-face L1 spends almost nothing on the mouth, and L1 on the mouth's pixels
(`--mouth_coef`) is met best by the mean of the mouths a window of speech may go with, a
half-open blur. One number per face, how open, is what mouth sync scores, and what the
speech predicts: on realvids-dev a predictor fitted from the train windows' log-mel frames
alone follows the real test mouths at 0.41 within speaker (benchmarks/mouth_ceiling.py),
where the generator's faces follow them at 0.13-0.16.

The labels are the openness measure the `mouth_sync` metric uses on the file (dlib's inner
lips, or the demo faces' mouth contrast), read from up to FIT_FACES train faces at the
model's size; faces dlib finds no lips on are left out. The reader sees the mouth's box
(models.losses.MOUTH_BOX) only, and reads z-scores of the openness. The loss clamps both
readings to +-READ_RANGE: an untrained G's first faces read at 20 and more, and their
gradient pulled G away from faces (realvids-dev at 500 steps, benchmarks/README.md
#real_videopy: recall@1 0.42 unclamped against 0.76, mouth sync 0.18 against 0.25).

The fit: FIT_STEPS Adam steps (fewer for fewer faces: FIT_EPOCHS passes over them) with
FIT_NOISE Gaussian noise on every box shown. G learns to draw what the reader reads, so the
reader must read the lips as dlib does and not be swayed by small pixel changes. On
realvids-dev's real test mouths (benchmarks/mouth_fidelity.py --fits) 600 steps read at
0.80 of dlib, 4,000 at 0.91; the noise keeps 0.91 and halves how far the reading moves
with the pixels (the gradient G gets: 1.3 against 2.6). 4,000 steps without the noise cost
G's faces their detail (sharpness 0.28 at 1,000 steps against 0.43 with 600 steps).
"""
from __future__ import annotations

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

from models.losses import mouth_of
from utils import UserError

FIT_FACES = 3000        # labelling a face costs dlib about 4 ms
FIT_STEPS = 4000
FIT_BATCH = 64
FIT_EPOCHS = 220        # 4,000 steps of 64 are 220 passes over realvids-dev's 1,155 faces
FIT_NOISE = 0.1         # Gaussian noise on the fitted boxes (pixels in [-1, 1])
MIN_FACES = 32
READ_RANGE = 3.0     # z-scores: a reading of a face unlike any fitted on gives no gradient
BOX_SIZE = (16, 24)     # the mouth's box resampled to (rows, columns)


def mouth_box(faces: torch.Tensor) -> torch.Tensor:
    """(B, 3, S, S) faces -> (B, 3, 16, 24): the box the mouth lies in."""
    return F.interpolate(mouth_of(faces), size=BOX_SIZE, mode="bilinear", align_corners=False,
                         antialias=True)


class MouthReader(nn.Module):
    """(B, 3, S, S) faces in [-1, 1] -> (B,) how open each mouth is (z-scored)."""

    def __init__(self, width: int = 32):
        super().__init__()
        self.net = nn.Sequential(
            nn.Conv2d(3, width, 3, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(width, width, 3, stride=2, padding=1), nn.LeakyReLU(0.2),
            nn.Conv2d(width, width, 3, stride=2, padding=1), nn.LeakyReLU(0.2),
            nn.AdaptiveAvgPool2d(1), nn.Flatten(), nn.Linear(width, 1))

    def forward(self, faces: torch.Tensor) -> torch.Tensor:
        return self.read_boxes(mouth_box(faces))

    def read_boxes(self, boxes: torch.Tensor) -> torch.Tensor:
        return self.net(boxes.float())[:, 0]


def mouth_open_loss(reader: MouthReader, fake_faces: torch.Tensor, real_faces: torch.Tensor):
    """L1 between the reader's openness of the generated faces and of the true frames."""
    with torch.no_grad():
        target = reader(real_faces).clamp(-READ_RANGE, READ_RANGE)
    return F.l1_loss(reader(fake_faces).clamp(-READ_RANGE, READ_RANGE), target)


def fit_mouth_reader(faces: torch.Tensor, openness: np.ndarray, seed: int,
                     steps: int | None = None, noise: float = FIT_NOISE) -> MouthReader:
    """A frozen MouthReader fitted (Adam, L1, batch FIT_BATCH, `noise` x Gaussian noise added to
    each box) to `openness` (N,) of `faces` (N, 3, S, S) in [-1, 1] for `steps` (None:
    FIT_STEPS, or FIT_EPOCHS passes where that is fewer); rows with a NaN label are left
    out. A pure function of its arguments on one device."""
    known = torch.from_numpy(np.isfinite(openness))
    if int(known.sum()) < MIN_FACES:
        raise UserError(f"--mouth_open_coef: a mouth was measured on {int(known.sum())} of the "
                        f"{len(openness)} train faces read (dlib's lips), fewer than {MIN_FACES}; "
                        "train on faces with visible mouths, or leave --mouth_open_coef at 0")
    boxes, labels, _, _ = labelled_boxes(faces, openness)   # once: the fit reads boxes alone
    generator = torch.Generator().manual_seed(seed)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        reader = MouthReader()
    if steps is None:
        steps = min(FIT_STEPS, FIT_EPOCHS * -(-len(boxes) // FIT_BATCH))

    def draw():
        batch = torch.randint(len(boxes), (min(FIT_BATCH, len(boxes)),), generator=generator)
        return boxes[batch], labels[batch]
    fit_steps(reader, draw, steps, generator, noise)
    return reader.eval().requires_grad_(False)


def labelled_boxes(faces: torch.Tensor, openness: np.ndarray, mean=None, std=None):
    """The mouth boxes of the `faces` whose `openness` is known, their openness z-scored
    (by the known labels' own mean and std unless given), and that mean and std."""
    known = np.isfinite(openness)
    labels = torch.from_numpy(openness[known]).float()
    if mean is None:
        mean, std = labels.mean(), labels.std().clamp_min(1e-6)
    return mouth_box(faces[torch.from_numpy(known)]), (labels - mean) / std, mean, std


def fit_steps(reader: MouthReader, draw, steps: int, generator: torch.Generator,
              noise: float = FIT_NOISE, lr: float = 2e-3) -> None:
    """`steps` Adam steps (L1) of `reader` on the (boxes, labels) batches `draw()` returns,
    `noise` x Gaussian noise (from `generator`) added to each box."""
    reader.train().requires_grad_(True)
    optimizer = torch.optim.Adam(reader.parameters(), lr=lr)
    for _ in range(steps):
        shown, labels = draw()
        if noise:
            shown = shown + noise * torch.randn(shown.shape, generator=generator)
        loss = F.l1_loss(reader.read_boxes(shown), labels)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()


def sample_rows(num_rows: int, seed: int, count: int = FIT_FACES) -> np.ndarray:
    """Sorted rows of a split to fit the reader on: all, or `count` drawn by the seed."""
    if num_rows <= count:
        return np.arange(num_rows)
    return np.sort(np.random.default_rng(seed).choice(num_rows, count, replace=False))
