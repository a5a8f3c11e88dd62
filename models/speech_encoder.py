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


class ZeroPaddedConv1d(nn.Conv1d):
    """Conv1d whose zero padding is applied before the convolution, not inside it.

    The same numbers, but a deterministic backward: on CPU, oneDNN's backward pass for a
    kernel longer than its zero-padded input (15 over 5 samples, the last block at 0.3 s)
    sums in a thread-dependent order, which breaks bit-identical resume.
    """

    def _conv_forward(self, input, weight, bias):
        padded = F.pad(input, self._reversed_padding_repeated_twice)
        return F.conv1d(padded, weight, bias, self.stride, 0, self.dilation, self.groups)


class SpeechEncoder(nn.Module):
    def __init__(self, config: SpeechEncoderConfig):
        super().__init__()
        self.config = config
        layers, in_channels, length = [], 1, config.audio_samples
        pad = config.kernel_size // 2
        for out_channels, out_length in zip(config.channels, conv_lengths(config)):
            # SEGAN pads by reflection; a window too short to reflect falls back to zeros.
            conv = nn.Conv1d if length > pad else ZeroPaddedConv1d
            layers += [conv(in_channels, out_channels, config.kernel_size, config.stride,
                            padding=pad, padding_mode="reflect" if length > pad else "zeros"),
                       nn.BatchNorm1d(out_channels),
                       nn.LeakyReLU(0.3)]
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
