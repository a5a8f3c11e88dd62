"""DCGAN-style face generator: speech embedding [+ noise] -> RGB face (B, 3, S, S) in [-1, 1]."""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
from torch import nn

from models.blocks import MatmulConvTranspose2d, dcgan_init, sn

IMAGE_SIZES = (64, 128)
UPSAMPLING = ("transposed", "resize", "bilinear", "hybrid")
BILINEAR_FROM = 16     # hybrid: maps this size and larger are doubled bilinearly


@dataclass
class FaceGeneratorConfig:
    image_size: int = 64
    embedding_dim: int = 128
    noise_dim: int = 0          # 0: no noise vector, the speech alone decides the face (wav2pix)
    base_channels: int = 64
    upsample: str = "transposed"    # transposed (DCGAN, wav2pix) | resize | bilinear | hybrid


def upsampling_channels(config: FaceGeneratorConfig) -> list[int]:
    """Channels of the 4x4 ... S/2 feature maps: 512-256-128-64 at 64 px, 1024-...-64 at 128 px."""
    stages = int(math.log2(config.image_size // 4))
    return [config.base_channels * 2 ** (stages - 1 - i) for i in range(stages)]


class FaceGenerator(nn.Module):
    def __init__(self, config: FaceGeneratorConfig):
        super().__init__()
        if config.image_size not in IMAGE_SIZES:
            raise ValueError(f"image_size must be one of {IMAGE_SIZES}, got {config.image_size}")
        if config.upsample not in UPSAMPLING:
            raise ValueError(f"upsample must be one of {UPSAMPLING}, got {config.upsample}")
        self.config = config
        channels = upsampling_channels(config)
        in_dim = config.embedding_dim + config.noise_dim
        layers = [sn(MatmulConvTranspose2d(in_dim, channels[0], 4, 1, 0, bias=False,  # (B, C0, 4, 4)
                                           matmul=True)),
                  nn.BatchNorm2d(channels[0]), nn.ReLU(True)]
        size = 4
        for c_in, c_out in zip(channels, channels[1:]):
            layers += [*self.doubling(c_in, c_out, size), nn.BatchNorm2d(c_out), nn.ReLU(True)]
            size *= 2
        layers += [*self.doubling(channels[-1], 3, size), nn.Tanh()]
        self.layers = nn.Sequential(*layers)
        dcgan_init(self)

    def doubling(self, c_in: int, c_out: int, size: int) -> list[nn.Module]:
        """A layer that doubles the map's size (`size` in). Stride-2 transposed 4x4
        convolutions overlap unevenly and draw checkerboards (Odena et al. 2016);
        resizing then a 3x3 convolution covers every output pixel alike. Nearest-neighbour
        resizing still repeats each value over a 2x2 block, which a 3x3 kernel sees at two
        phases; bilinear resizing leaves no block to see. Two nearest doublings from 16x16
        leave a mosaic of 4 px cells in the early faces; bilinear everywhere blurs the mouth
        for longer (benchmarks/README.md), so hybrid is nearest below 16x16, bilinear from it."""
        upsample = self.config.upsample
        if upsample != "transposed":
            bilinear = upsample == "bilinear" or (upsample == "hybrid" and size >= BILINEAR_FROM)
            resize = (nn.Upsample(scale_factor=2, mode="bilinear", align_corners=False) if bilinear
                      else nn.Upsample(scale_factor=2, mode="nearest"))
            return [resize,
                    sn(nn.Conv2d(c_in, c_out, 3, 1, 1, bias=False))]
        # from a 4x4 map a matrix multiply + fold beats oneDNN (MatmulConvTranspose2d)
        return [sn(MatmulConvTranspose2d(c_in, c_out, 4, 2, 1, bias=False, matmul=size <= 4))]

    def forward(self, embedding: torch.Tensor, noise: torch.Tensor | None = None) -> torch.Tensor:
        code = embedding if noise is None else torch.cat([embedding, noise], dim=1)
        return self.layers(code[:, :, None, None])      # (B, 3, S, S)
