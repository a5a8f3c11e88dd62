"""Blocks shared by the networks: DCGAN init, spectral norm that keeps it, self-attention."""
from __future__ import annotations

import torch
import torch.nn.functional as F
from torch import nn
from torch.nn.utils import parametrize
from torch.nn.utils.parametrizations import _SpectralNorm

_WEIGHTED = (nn.Conv1d, nn.Conv2d, nn.ConvTranspose2d, nn.Linear)
BATCH_NORMS = nn.modules.batchnorm._BatchNorm   # BatchNorm1d/2d and SyncBatchNorm


def dcgan_init(module: nn.Module) -> None:
    """N(0, 0.02) for conv/linear weights, N(1, 0.02) for BatchNorm scales, zero biases."""
    for layer in module.modules():
        if isinstance(layer, _WEIGHTED):
            nn.init.normal_(_stored_weight(layer), 0.0, 0.02)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
        elif isinstance(layer, BATCH_NORMS):
            nn.init.normal_(layer.weight, 1.0, 0.02)
            nn.init.zeros_(layer.bias)


def _stored_weight(layer: nn.Module):
    """The weight tensor the optimiser updates.

    Under spectral norm `layer.weight` is recomputed from `weight.original` on every
    access, so initialising it changes nothing: that is how wav2pix's spectral-norm
    layers silently kept PyTorch's default init. We initialise the stored tensor.
    """
    if hasattr(layer, "parametrizations") and "weight" in layer.parametrizations:
        return layer.parametrizations.weight.original
    return layer.weight


class FullPrecisionSpectralNorm(_SpectralNorm):
    """PyTorch's spectral norm with its power iteration and sigma kept in fp32 under autocast.

    CUDA autocast runs `torch.mv` in bf16/fp16: sigma would carry 8 (or 11) bits, rescaling
    every weight by up to 0.4% from step to step, and the power iteration's vectors would
    drift. CPU autocast leaves `mv` in fp32 already. State-dict keys are PyTorch's own.
    """

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        with torch.autocast(weight.device.type, enabled=False):
            return super().forward(weight.float())


def sn(layer: nn.Module) -> nn.Module:
    """Spectral norm (Miyato et al. 2018); call dcgan_init on the whole network afterwards."""
    dim = 1 if isinstance(layer, nn.ConvTranspose2d) else 0     # the output-channel axis
    parametrize.register_parametrization(layer, "weight",
                                         FullPrecisionSpectralNorm(layer.weight, dim=dim))
    return layer


class SelfAttention(nn.Module):
    """Self-attention over a feature map (SAGAN, Zhang et al. 2019, eqs. 1-3).

    Keys and values are 2x2 max-pooled (as in BigGAN's SAGAN block), so at 32x32 each of the
    1024 positions attends to 256 keys. gamma starts at 0: the block begins as the identity
    and the network learns how much non-local evidence to mix in.
    """

    def __init__(self, channels: int):
        super().__init__()
        self.query = sn(nn.Conv2d(channels, channels // 8, 1, bias=False))
        self.key = sn(nn.Conv2d(channels, channels // 8, 1, bias=False))
        self.value = sn(nn.Conv2d(channels, channels // 2, 1, bias=False))
        self.out = sn(nn.Conv2d(channels // 2, channels, 1, bias=False))
        self.gamma = nn.Parameter(torch.zeros(()))

    def forward(self, features: torch.Tensor) -> torch.Tensor:
        b, c, h, w = features.shape
        query = self.query(features).flatten(2)                          # (B, C/8, HW)
        key = F.max_pool2d(self.key(features), 2).flatten(2)             # (B, C/8, HW/4)
        value = F.max_pool2d(self.value(features), 2).flatten(2)         # (B, C/2, HW/4)
        attention = torch.softmax(query.transpose(1, 2) @ key, dim=-1)   # (B, HW, HW/4)
        mixed = (value @ attention.transpose(1, 2)).view(b, c // 2, h, w)
        return features + self.gamma * self.out(mixed)
