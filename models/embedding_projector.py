"""Embedding projector: a fixed per-pair vector (B, E_file) -> condition embedding (B, 128).

With `--condition embedding` the generator is conditioned on a vector stored in the pair
file (a face-recognition or text embedding computed elsewhere) instead of speech; this
small learned MLP takes the speech encoder's place, so G, D and the speaker classifier see
an embedding of the same size either way.
"""
from __future__ import annotations

from dataclasses import dataclass

import torch
from torch import nn

from models.blocks import dcgan_init


@dataclass
class EmbeddingProjectorConfig:
    input_dim: int              # E of the stored vectors (`<split>/embeddings`, (N, E))
    embedding_dim: int = 128
    hidden: int = 256


class EmbeddingProjector(nn.Module):
    def __init__(self, config: EmbeddingProjectorConfig):
        super().__init__()
        self.config = config
        self.layers = nn.Sequential(
            nn.Linear(config.input_dim, config.hidden), nn.LeakyReLU(0.2),
            nn.Linear(config.hidden, config.embedding_dim))
        dcgan_init(self)

    def forward(self, vectors: torch.Tensor) -> torch.Tensor:
        return self.layers(vectors)                      # (B, E_file) -> (B, embedding_dim)
