"""Softmax speaker classifier on the speech embedding; it keeps speakers apart in that space."""
from __future__ import annotations

import torch
from torch import nn

from models.blocks import dcgan_init


class SpeakerClassifier(nn.Module):
    def __init__(self, embedding_dim: int, num_speakers: int, hidden: int = 200):
        super().__init__()
        # wav2pix hard-coded 10 classes (and a BatchNorm on the logits); ours come from the data.
        self.layers = nn.Sequential(
            nn.Linear(embedding_dim, hidden), nn.BatchNorm1d(hidden), nn.LeakyReLU(0.2),
            nn.Linear(hidden, num_speakers))
        dcgan_init(self)

    def forward(self, embedding: torch.Tensor) -> torch.Tensor:
        return self.layers(embedding)                    # (B, num_speakers) logits
