"""Blocks shared by the networks: DCGAN init, spectral norm that keeps it, self-attention,
convolutions that run as matrix multiplies where that is faster on CPU."""
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

    _eval_key, _eval_weight = None, None

    def forward(self, weight: torch.Tensor) -> torch.Tensor:
        if self.training or torch.is_grad_enabled():
            self.forget()
            return self._normalised(weight)
        # Eval mode without gradients (inference, grids, evaluation): sigma is fixed until the
        # weight or the power-iteration vectors change, so W / sigma is kept between calls
        # instead of recomputed per face (G's 4x4 -> 8x8 layer alone: a 2 M-element copy and
        # division, 11 ms of a 1-sample inference on AVX2).
        key = (weight.data_ptr(), weight._version, self._u._version, self._v._version,
               weight.dtype, torch.is_autocast_enabled(weight.device.type),
               torch.is_inference_mode_enabled())
        if key != self._eval_key:
            self._eval_key, self._eval_weight = key, self._normalised(weight)
        return self._eval_weight

    def forget(self) -> None:
        """Drop the kept W / sigma: also for a replayed CUDA graph, which writes new weights
        without bumping the version counters it is keyed by (models/graphed_step.py)."""
        self._eval_key = self._eval_weight = None

    def _normalised(self, weight: torch.Tensor) -> torch.Tensor:
        with torch.autocast(weight.device.type, enabled=False):
            return super().forward(weight.float())


def spectral_norms(network: nn.Module) -> list[FullPrecisionSpectralNorm]:
    return [m for m in network.modules() if isinstance(m, FullPrecisionSpectralNorm)]


def sn(layer: nn.Module) -> nn.Module:
    """Spectral norm (Miyato et al. 2018); call dcgan_init on the whole network afterwards."""
    dim = 1 if isinstance(layer, nn.ConvTranspose2d) else 0     # the output-channel axis
    parametrize.register_parametrization(layer, "weight",
                                         FullPrecisionSpectralNorm(layer.weight, dim=dim))
    return layer


class MatmulConvTranspose2d(nn.ConvTranspose2d):
    """ConvTranspose2d that can run as one matrix multiply + fold (col2im), the transposed
    convolution's own definition (same parameters and keys; no groups, no dilation).

    On G's first layers (1x1 and 4x4 input maps) forward and backward at batch 64 took
    10.6 ms against oneDNN's 15.3 (128 -> 512, 1x1 -> 4x4) and 332 against 389 (1024 -> 512,
    4x4 -> 8x8, 128 px), fp32, 2 threads, AVX2 with MKL held to AVX2 too; on 512 -> 256 (64
    px) the two are within 6 %. From 8x8 maps on, and to RGB, oneDNN is faster. CUDA runs
    the transposed convolution.
    """

    def __init__(self, *args, matmul: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.matmul = matmul

    def forward(self, maps: torch.Tensor, output_size=None) -> torch.Tensor:
        if not self.matmul or output_size is not None or maps.device.type != "cpu":
            return super().forward(maps, output_size)
        b, c, h, w = maps.shape
        (kh, kw), (sh, sw), (ph, pw) = self.kernel_size, self.stride, self.padding
        out_size = ((h - 1) * sh - 2 * ph + kh + self.output_padding[0],
                    (w - 1) * sw - 2 * pw + kw + self.output_padding[1])
        pixels = maps.permute(0, 2, 3, 1).reshape(b * h * w, c)    # a view when channels_last
        columns = (pixels @ self.weight.flatten(1)).view(b, h * w, -1)     # (B, HW, C_out k k)
        if h * w == 1 and self.padding == (0, 0) and out_size == tuple(self.kernel_size):
            # one input pixel, nothing cropped or added: its columns are the output map already
            # (G's first layer; fold's col2im and its backward cost 5 ms of a 64 px step)
            out = columns.view(b, -1, *out_size)
        else:
            out = F.fold(columns.transpose(1, 2), out_size, self.kernel_size,
                         padding=self.padding, stride=self.stride)         # (B, C_out, H', W')
        if self.bias is not None:
            out = out + self.bias[:, None, None]
        # the layers after it run on the input's memory format (channels_last in training)
        return out.contiguous(memory_format=_memory_format(maps))


def _memory_format(maps: torch.Tensor) -> torch.memory_format:
    if maps.is_contiguous() or not maps.is_contiguous(memory_format=torch.channels_last):
        return torch.contiguous_format
    return torch.channels_last


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
