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

    def load_extended(self, trained_state: dict) -> None:
        """Load a classifier trained on the first speakers of this one (fine-tuning).

        The output layer's trained rows stay rows 0..K-1; the rows of the speakers added
        after them keep their fresh DCGAN init.
        """
        state = {key: value.clone() for key, value in self.state_dict().items()}
        for key, trained in trained_state.items():
            if trained.shape == state[key].shape:
                state[key] = trained
            elif trained.dim() and trained.shape[1:] == state[key].shape[1:] \
                    and len(trained) < len(state[key]):
                state[key][:len(trained)] = trained          # (K, ...) into (K + new, ...)
            else:
                raise ValueError(f"{key}: trained shape {tuple(trained.shape)} does not fit "
                                 f"{tuple(state[key].shape)}")
        self.load_state_dict(state)
