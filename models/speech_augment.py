"""--speech_augment: every training window of speech changed a little, differently in every
step, before the speech encoder reads it (in D's step and in G's).

Why: on realvids-dev (1,156 train pairs) the mouths G draws follow the train speech at 0.82
and the test speech at 0.26-0.38 (benchmarks/mouth_fidelity.py --split train): the encoder
learns each train window's waveform, not what in the speech opens a mouth. A window shifted
by a few tens of milliseconds, under a little noise, at another loudness, still goes with
the same face and mouth; learning it as such is learning what carries over to new speech.

Each window gets its own draw from torch's random generator (saved in checkpoints, so
resume stays exact). Evaluation, inference and the mouth reader see the speech as it is.
One function per augmentation, registered in SPEECH_AUGMENTATIONS; --speech_augment names
them in order. Speech is (B, 1, T) at 16 kHz.
"""
from __future__ import annotations

from typing import Callable

import torch

from data.audio import SAMPLE_RATE

SHIFT = 0.04            # seconds: the largest move, under half the 0.1 s between 10 fps frames
NOISE_SNR_DB = (10.0, 30.0)     # white noise this far below each window's own power
GAIN_DB = 6.0           # the largest change of loudness, up or down


def _uniform(speech: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """A (B, 1, 1) draw per window in [low, high)."""
    draw = torch.rand(speech.shape[0], 1, 1, device=speech.device, dtype=speech.dtype)
    return low + (high - low) * draw


def shift(speech: torch.Tensor) -> torch.Tensor:
    """Each window moved by up to SHIFT seconds, whole samples, earlier or later; the edge
    sample is held where nothing came in (a constant: silence to the filterbank)."""
    batch, _, length = speech.shape
    reach = round(SHIFT * SAMPLE_RATE)
    moves = torch.randint(-reach, reach + 1, (batch, 1, 1), device=speech.device)
    taken = (torch.arange(length, device=speech.device) - moves).clamp(0, length - 1)
    return speech.gather(2, taken)


def noise(speech: torch.Tensor) -> torch.Tensor:
    """White Gaussian noise at a signal-to-noise ratio drawn in NOISE_SNR_DB per window."""
    power = speech.pow(2).mean(dim=2, keepdim=True)
    snr = _uniform(speech, *NOISE_SNR_DB)
    return speech + torch.randn_like(speech) * (power / 10 ** (snr / 10)).sqrt()


def gain(speech: torch.Tensor) -> torch.Tensor:
    """Each window's loudness changed by up to GAIN_DB decibels."""
    return speech * 10 ** (_uniform(speech, -GAIN_DB, GAIN_DB) / 20)


SPEECH_AUGMENTATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "shift": shift,
    "noise": noise,
    "gain": gain,
}
