"""AdaIN face generator: the condition code sets the scale and shift of every layer.

In the spirit of few-shot talking-head generators (Zakharov et al. 2019): a learned constant
4x4 map is upsampled to a face, and after each convolution adaptive instance normalisation
(Huang & Belongie 2017) replaces the feature statistics by a per-layer scale and shift
projected from the speech embedding [+ noise]. A SAGAN self-attention block (Zhang et al.
2019) works on the 32x32 maps, where a face's parts (eyes, mouth, jaw) are a few cells apart.
Same interface as FaceGenerator: (embedding (B, E), noise (B, Z) or None) -> (B, 3, S, S).
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from models.blocks import SelfAttention, dcgan_init, sn
from models.face_generator import IMAGE_SIZES, upsampling_channels


@dataclass
class AdaINGeneratorConfig:
    image_size: int = 64
    embedding_dim: int = 128
    noise_dim: int = 0
    base_channels: int = 64
    attention_size: int = 32    # self-attention on the feature maps of this size


class AdaptiveInstanceNorm(nn.Module):
    """AdaIN(x, code) = (1 + scale(code)) * (x - mu(x)) / sigma(x) + shift(code), per channel.

    Eq. 8 of Huang & Belongie with the style statistics projected from the code; `1 + scale`
    keeps the DCGAN-initialised projection (weights near 0) close to plain normalisation.
    """

    def __init__(self, channels: int, code_dim: int):
        super().__init__()
        self.normalise = nn.InstanceNorm2d(channels, affine=False)
        self.style = nn.Linear(code_dim, 2 * channels)

    def forward(self, features: torch.Tensor, code: torch.Tensor) -> torch.Tensor:
        scale, shift = self.style(code)[:, :, None, None].chunk(2, dim=1)   # (B, C, 1, 1) each
        return self.normalise(features) * (1 + scale) + shift


class AdaINFaceGenerator(nn.Module):
    def __init__(self, config: AdaINGeneratorConfig):
        super().__init__()
        if config.image_size not in IMAGE_SIZES:
            raise ValueError(f"image_size must be one of {IMAGE_SIZES}, got {config.image_size}")
        self.config = config
        channels = upsampling_channels(config)              # 512-256-128-64 at 64 px
        code_dim = config.embedding_dim + config.noise_dim
        self.start = nn.Parameter(torch.randn(1, channels[0], 4, 4))
        convs = [sn(nn.Conv2d(channels[0], channels[0], 3, 1, 1, bias=False))]   # stays 4x4
        convs += [sn(nn.ConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False))       # doubles the size
                  for c_in, c_out in zip(channels, channels[1:])]
        self.convs = nn.ModuleList(convs)
        self.norms = nn.ModuleList(AdaptiveInstanceNorm(c, code_dim) for c in channels)
        attention_channels = channels[int(math.log2(config.attention_size // 4))]
        self.attention = SelfAttention(attention_channels)
        self.to_rgb = sn(nn.ConvTranspose2d(channels[-1], 3, 4, 2, 1, bias=False))
        dcgan_init(self)

    def forward(self, embedding: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        code = embedding if noise is None else torch.cat([embedding, noise], dim=1)  # (B, E+Z)
        features = self.start.expand(len(code), -1, -1, -1)                          # (B, C0, 4, 4)
        for conv, norm in zip(self.convs, self.norms):
            features = torch.relu(norm(conv(features), code))
            if features.shape[-1] == self.config.attention_size:
                features = self.attention(features)
        return torch.tanh(self.to_rgb(features))                                     # (B, 3, S, S)
