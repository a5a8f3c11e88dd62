"""SEGAN-style speech encoder: raw 16 kHz waveform (B, 1, T) -> speech embedding (B, 128)."""
from __future__ import annotations

from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from models.blocks import dcgan_init


@dataclass
class SpeechEncoderConfig:
    audio_samples: int = 16000      # model input length T; from --audio_seconds
    channels: tuple = (16, 32, 128, 256, 512, 1024)
    kernel_size: int = 15
    stride: int = 4
    embedding_dim: int = 128


def conv_lengths(config: SpeechEncoderConfig) -> list[int]:
    """Length after each strided conv: padding k // 2 makes each ceil(L / stride).

    16000 -> 4000 -> 1000 -> 250 -> 63 -> 16 -> 4, as in wav2pix; computed, never hard-coded.
    """
    lengths, length = [], config.audio_samples
    for _ in config.channels:
        length = (length + 2 * (config.kernel_size // 2) - config.kernel_size) // config.stride + 1
        lengths.append(length)
    return lengths


class StridedConv1d(nn.Conv1d):
    """Conv1d that can run as unfold + one matrix multiply.

    On the deep layers (>= 256 channels, outputs of 16-63 samples) that is faster on CPU
    than the convolution kernel, forward and backward (benchmarks/README.md); on the first
    (one input channel) oneDNN's kernel is faster (7.7 against 11.3 ms at batch 64, fp32, 2
    threads, AVX2; 7.6 against 9.6 with AVX-512). The parameters are the same, so
    checkpoints do not care which path ran.
    """

    def __init__(self, *args, unfold: bool = False, **kwargs):
        super().__init__(*args, **kwargs)
        self.unfold = unfold

    def forward(self, signal: torch.Tensor) -> torch.Tensor:
        if not self.unfold:
            return super().forward(signal)
        pad = self.padding[0]
        mode = "reflect" if self.padding_mode == "reflect" else "constant"
        padded = F.pad(signal, (pad, pad), mode=mode)                     # (B, C, L + 2p)
        patches = padded.unfold(2, self.kernel_size[0], self.stride[0])   # (B, C, L', k)
        patches = patches.permute(0, 2, 1, 3).flatten(2)                  # (B, L', C*k)
        out = patches @ self.weight.flatten(1).t()                       # (B, L', C_out)
        if self.bias is not None:
            out = out + self.bias
        # Contiguous for the BatchNorm that follows (and for torch.compile, whose
        # AOT backward cannot view the transposed gradient): on the transposed view its forward and
        # backward took 68 ms against 45 ms on the first block (batch 64, AVX2, 1 thread).
        return out.transpose(1, 2).contiguous()                           # (B, C_out, L')


class SpeechEncoder(nn.Module):
    def __init__(self, config: SpeechEncoderConfig):
        super().__init__()
        self.config = config
        layers, in_channels, length = [], 1, config.audio_samples
        pad = config.kernel_size // 2
        for out_channels, out_length in zip(config.channels, conv_lengths(config)):
            # SEGAN pads by reflection; a window too short to reflect falls back to zeros.
            # Zero-padded layers always unfold: oneDNN's backward for a kernel longer than its
            # zero-padded input (15 over 5 samples) sums in a thread-dependent order on CPU,
            # which would break bit-identical resume. For 0.3-4 s of speech only the >= 256
            # channel blocks are ever zero-padded, so this holds should that rule change.
            padding_mode = "reflect" if length > pad else "zeros"
            unfold = in_channels >= 256 or padding_mode == "zeros"
            layers += [StridedConv1d(in_channels, out_channels, config.kernel_size, config.stride,
                                     padding=pad, padding_mode=padding_mode, unfold=unfold),
                       nn.BatchNorm1d(out_channels),
                       nn.LeakyReLU(0.3, True)]
            in_channels, length = out_channels, out_length
        self.convs = nn.Sequential(*layers)
        self.project = nn.Sequential(
            nn.Linear(in_channels * length, 256), nn.ReLU(),
            nn.Linear(256, 128), nn.ReLU(),
            nn.Linear(128, config.embedding_dim))
        dcgan_init(self)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        features = self.convs(waveform)                  # (B, 1024, L_last)
        return self.project(features.flatten(1))         # (B, embedding_dim)
