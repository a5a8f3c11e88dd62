"""Filterbank speech encoder: raw 16 kHz waveform (B, 1, T) -> speech embedding (B, E).

Who is speaking does not depend on where in the window a sound falls, so this encoder ends
in statistics pooling over time (mean and standard deviation of every channel, as x-vectors
do, Snyder et al. 2018) instead of SEGAN's flattened (1024 x 4) map. Its first layer is a
learnable band-pass filterbank initialised as windowed-sinc filters on the mel scale
(SincNet's initialisation, Ravanelli & Bengio 2018, with every tap free to learn), whose
rectified, smoothed output is log-compressed, so the network starts from something like a
log spectrogram of the raw waveform and learns from there. The input stays the waveform.
"""
from __future__ import annotations

import math
from dataclasses import dataclass

import torch
import torch.nn.functional as F
from torch import nn

from models.blocks import dcgan_init


@dataclass
class FilterbankEncoderConfig:
    audio_samples: int = 16000      # model input length T; from --audio_seconds
    embedding_dim: int = 128
    filters: int = 64               # band-pass filters of the first layer
    filter_taps: int = 401          # 25 ms at 16 kHz: about 40 Hz resolution
    filter_stride: int = 10         # the band signals' rate before smoothing (1.6 kHz)
    frame_hop: int = 16             # x filter_stride: 10 ms frames after smoothing
    channels: tuple = (128, 128, 256)
    sample_rate: int = 16000
    keep_frames: bool = False       # also every frame in order: when each sound falls
    centre_frames: int = 0          # with keep_frames: only this many middle frames (0: all)


def feature_frames(config: FilterbankEncoderConfig) -> int:
    """Frames of the last conv's map for a window of config.audio_samples: the filterbank's
    stride, the smoothing hop (padding half a hop) and each conv's stride 2 (padding 2)."""
    frames = -(-config.audio_samples // config.filter_stride)
    frames = (frames + config.frame_hop // 2 * 2 - 2 * config.frame_hop) // config.frame_hop + 1
    for _ in config.channels:
        frames = (frames - 1) // 2 + 1
    return frames


def mel(hz: torch.Tensor) -> torch.Tensor:
    return 2595.0 * torch.log10(1.0 + hz / 700.0)


def mel_sinc_filters(count: int, taps: int, sample_rate: int) -> torch.Tensor:
    """(count, 1, taps) Hamming-windowed band-pass filters whose bands tile 30 Hz to
    Nyquist evenly on the mel scale, each scaled to unit gain at its centre."""
    edges_mel = torch.linspace(mel(torch.tensor(30.0)), mel(torch.tensor(sample_rate / 2 - 100)),
                               count + 2)
    edges = 700.0 * (10 ** (edges_mel / 2595.0) - 1.0)
    t = (torch.arange(taps) - taps // 2) / sample_rate
    window = torch.hamming_window(taps, periodic=False)
    filters = []
    for low, high in zip(edges[:-2], edges[2:]):
        band = 2 * high * torch.sinc(2 * high * t) - 2 * low * torch.sinc(2 * low * t)
        band = band * window
        centre = (low + high) / 2
        gain = (band * torch.cos(2 * math.pi * centre * t)).sum().abs()
        filters.append(band / gain.clamp_min(1e-6))
    return torch.stack(filters)[:, None]


class FilterbankEncoder(nn.Module):
    def __init__(self, config: FilterbankEncoderConfig):
        super().__init__()
        self.config = config
        self.filterbank = nn.Conv1d(1, config.filters, config.filter_taps, config.filter_stride,
                                    padding=config.filter_taps // 2, bias=False)
        layers, in_channels = [], config.filters
        self.input_norm = nn.BatchNorm1d(config.filters)
        for out_channels in config.channels:
            layers += [nn.Conv1d(in_channels, out_channels, 5, 2, padding=2),
                       nn.BatchNorm1d(out_channels), nn.LeakyReLU(0.2, True)]
            in_channels = out_channels
        self.convs = nn.Sequential(*layers)
        frames = feature_frames(config)
        # with keep_frames: the frames kept in order, the middle centre_frames or all of them
        self.kept_frames = min(config.centre_frames or frames, frames) if config.keep_frames else 0
        pooled = (2 + self.kept_frames) * in_channels
        self.project = nn.Sequential(nn.Linear(pooled, 256), nn.BatchNorm1d(256),
                                     nn.LeakyReLU(0.2), nn.Linear(256, config.embedding_dim))
        dcgan_init(self)
        with torch.no_grad():
            self.filterbank.weight.copy_(mel_sinc_filters(config.filters, config.filter_taps,
                                                          config.sample_rate))

    def log_bands(self, waveform: torch.Tensor) -> torch.Tensor:
        """(B, 1, T) -> (B, filters, frames): log energy of each band per 10 ms frame."""
        bands = self.filterbank(waveform)                                   # (B, F, T / 10)
        energy = F.avg_pool1d(bands * bands, 2 * self.config.frame_hop, self.config.frame_hop,
                              padding=self.config.frame_hop // 2)          # (B, F, T / 160)
        return torch.log(energy + 1e-6)

    def pool(self, features: torch.Tensor) -> torch.Tensor:
        """(B, C, frames) -> (B, C * (2 + kept frames)): mean and std over time, then with
        keep_frames the kept frames in order."""
        pooled = [features.mean(2), features.std(2)]                       # (B, C) each
        if self.kept_frames:
            start = (features.shape[2] - self.kept_frames) // 2
            pooled.append(features[:, :, start:start + self.kept_frames].flatten(1))
        return torch.cat(pooled, dim=1)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        features = self.convs(self.input_norm(self.log_bands(waveform)))   # (B, C, frames / 8)
        return self.project(self.pool(features))                           # (B, E)
