"""Blocks shared by the networks: DCGAN initialisation and spectral norm that keeps it."""
from __future__ import annotations

from torch import nn
from torch.nn.utils.parametrizations import spectral_norm

_WEIGHTED = (nn.Conv1d, nn.Conv2d, nn.ConvTranspose2d, nn.Linear)
_NORMS = (nn.BatchNorm1d, nn.BatchNorm2d)


def dcgan_init(module: nn.Module) -> None:
    """N(0, 0.02) for conv/linear weights, N(1, 0.02) for BatchNorm scales, zero biases."""
    for layer in module.modules():
        if isinstance(layer, _WEIGHTED):
            nn.init.normal_(_stored_weight(layer), 0.0, 0.02)
            if layer.bias is not None:
                nn.init.zeros_(layer.bias)
        elif isinstance(layer, _NORMS):
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


def sn(layer: nn.Module) -> nn.Module:
    """Spectral norm (Miyato et al. 2018); call dcgan_init on the whole network afterwards."""
    return spectral_norm(layer)
