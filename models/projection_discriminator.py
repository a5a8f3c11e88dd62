"""Projection discriminator (Miyato & Koyama 2018) judging (face, speech embedding) pairs.

With embedding_dim 0 it is an unconditional DCGAN discriminator (no projection term); with
attention_size > 0 a SAGAN self-attention block follows the stride-2 conv that reaches it.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from models.blocks import SelfAttention, dcgan_init, sn


@dataclass
class ProjectionDiscriminatorConfig:
    image_size: int = 64
    embedding_dim: int = 128
    base_channels: int = 64
    max_channels: int = 512
    attention_size: int = 0     # 0: none; else self-attention on the maps of this size (32)


def downsampling_channels(config: ProjectionDiscriminatorConfig) -> list[int]:
    """Channels after each stride-2 conv, S -> 4: 64-128-256-512 at 64 px."""
    stages = int(math.log2(config.image_size // 4))
    return [min(config.base_channels * 2 ** i, config.max_channels) for i in range(stages)]


class ProjectionDiscriminator(nn.Module):
    def __init__(self, config: ProjectionDiscriminatorConfig):
        super().__init__()
        self.config = config
        layers, in_channels, size = [], 3, config.image_size
        for out_channels in downsampling_channels(config):
            # In place (here and in the encoders): a convolution does not keep its output for
            # its backward, so each layer holds one map instead of two. The values are the
            # same; the step was not measurably faster on CPU (benchmarks/README.md).
            layers += [sn(nn.Conv2d(in_channels, out_channels, 4, 2, 1)), nn.LeakyReLU(0.2, True)]
            in_channels, size = out_channels, size // 2
            if size == config.attention_size:
                layers.append(SelfAttention(out_channels))
        self.trunk = nn.Sequential(*layers)
        self.score = sn(nn.Linear(in_channels, 1))
        self.embed = (sn(nn.Linear(config.embedding_dim, in_channels, bias=False))
                      if config.embedding_dim else None)
        dcgan_init(self)

    def forward(self, faces: torch.Tensor, embedding: torch.Tensor,
                wrong_faces: torch.Tensor | None = None):
        """faces (B, 3, S, S), embedding (B, E) -> (scores (B,), trunk features (B, C*4*4)).

        With wrong_faces (W,) indices (models/wrong_pairs.py) W more scores follow: face
        wrong_faces[i] under condition i, from the trunk features already computed (so the
        first W faces are the real ones, under their own conditions)."""
        features = self.trunk(faces)                     # (B, C, 4, 4)
        phi = features.sum(dim=(2, 3))                   # (B, C): sum-pooled, as in the paper
        if wrong_faces is not None:
            phi = torch.cat([phi, phi[wrong_faces]])
            embedding = torch.cat([embedding, embedding[:len(wrong_faces)]])
        # score = psi(phi(x)) + <V c, phi(x)>: the projection term, eq. (3) of Miyato & Koyama.
        scores = self.score(phi).squeeze(1)
        if self.embed is not None:
            scores = scores + (self.embed(embedding) * phi).sum(dim=1)
        return scores, features.flatten(1)
