"""GE2E speech encoder: a pretrained speaker encoder, then a learned projection to the condition.

The network is Resemblyzer's (resemblyzer 0.1.4, the Real-Time-Voice-Cloning encoder): the
GE2E speaker encoder of Wan et al. 2018, a 3-layer LSTM (256 hidden) over 40-band mel power
frames (25 ms Hann windows, 10 ms hop, 16 kHz) whose last hidden state goes through a
linear layer and a ReLU to a 256-d L2-normalised embedding, trained on thousands of
speakers with 1.6 s (160-frame) partial utterances. It is rebuilt here, mel frontend
included, so that it runs on the project's raw waveform (B, 1, T) on CPU or CUDA without
librosa or webrtcvad. Only the weights come from the package, read by path from the wheel
(`pip install --no-deps resemblyzer==0.1.4`; see requirements.txt for why not a plain
requirement); once a model is built they are part of its state dict, so a checkpoint renders
anywhere, with or without the package.

The waveform goes where Resemblyzer's `embed_utterance` takes a wav: the project's input is
peak-normalised and pre-emphasised (data/audio.py:prepare_waveform), so the pre-emphasis is
undone first; then Resemblyzer's volume normalisation (raised to -30 dBFS, never lowered),
its zero padding to whole 1.6 s partials, and the mean of the partials' embeddings. Its
voice-activity trimming is not done: a training window is a fixed-length piece of speech.
The GE2E part is frozen by default (no gradients, always in eval mode, run in fp32 under
any autocast); `finetune=True` trains it too, at G's learning rate.
"""
from __future__ import annotations

import importlib.util
import math
from dataclasses import dataclass
from functools import lru_cache
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from data.audio import PRE_EMPHASIS
from models.blocks import dcgan_init
from utils import UserError

INSTALL_HINT = "install its weights with: pip install --no-deps resemblyzer==0.1.4"
SAMPLE_RATE = 16000
WINDOW, HOP, MELS = 400, 160, 40         # 25 ms, 10 ms, 40 bands (resemblyzer/hparams.py)
PARTIAL_FRAMES = 160                     # 1.6 s partial utterances
PARTIAL_RATE, MIN_COVERAGE = 1.3, 0.75   # embed_utterance's defaults
TARGET_RMS = 10 ** (-30 / 20)            # audio_norm_target_dBFS = -30
HIDDEN, LAYERS, GE2E_DIM = 256, 3, 256


@dataclass
class GE2EEncoderConfig:
    audio_samples: int = 16000      # model input length T; from --audio_seconds
    embedding_dim: int = 128
    finetune: bool = False          # False: the pretrained GE2E network stays as shipped


def ge2e_weights_path() -> Path:
    """resemblyzer/pretrained.pt inside the installed package, found without importing it
    (its __init__ imports librosa and webrtcvad, which this module does not need)."""
    spec = importlib.util.find_spec("resemblyzer")
    if spec is None or not spec.submodule_search_locations:
        raise UserError(f"--speech_encoder ge2e needs the resemblyzer package; {INSTALL_HINT}")
    path = Path(next(iter(spec.submodule_search_locations))) / "pretrained.pt"
    if not path.is_file():
        raise UserError(f"{path} is missing; reinstall resemblyzer ({INSTALL_HINT})")
    return path


def hz_to_mel(hz: np.ndarray) -> np.ndarray:
    """Slaney's mel scale (librosa's default, htk=False): linear below 1 kHz, log above."""
    hz = np.asarray(hz, np.float64)
    linear = hz / (200.0 / 3)
    log = 15.0 + np.log(np.maximum(hz, 1e-10) / 1000.0) / (math.log(6.4) / 27.0)
    return np.where(hz >= 1000.0, log, linear)


def mel_to_hz(mel: np.ndarray) -> np.ndarray:
    linear = mel * (200.0 / 3)
    log = 1000.0 * np.exp((math.log(6.4) / 27.0) * (mel - 15.0))
    return np.where(mel >= 15.0, log, linear)


def mel_filterbank(sample_rate: int = SAMPLE_RATE, n_fft: int = WINDOW, mels: int = MELS) -> np.ndarray:
    """(mels, n_fft // 2 + 1) float32: librosa.filters.mel's default (Slaney-normalised
    triangles from 0 Hz to Nyquist, htk=False), computed as librosa does, in float64."""
    bins = np.fft.rfftfreq(n_fft, 1.0 / sample_rate)
    edges = mel_to_hz(np.linspace(hz_to_mel(0.0), hz_to_mel(sample_rate / 2), mels + 2))
    widths = np.diff(edges)
    ramps = edges[:, None] - bins[None, :]
    rising, falling = -ramps[:-2] / widths[:-1, None], ramps[2:] / widths[1:, None]
    weights = np.maximum(0.0, np.minimum(rising, falling))
    weights *= (2.0 / (edges[2:] - edges[:-2]))[:, None]
    return weights.astype(np.float32)


@lru_cache(maxsize=16)
def partial_starts(samples: int) -> tuple[tuple[int, ...], int]:
    """Resemblyzer's VoiceEncoder.compute_partial_slices for a wav of `samples`: the first
    frame of each 160-frame partial, and the length the wav is zero-padded to."""
    frames = math.ceil((samples + 1) / HOP)
    step = round((SAMPLE_RATE / PARTIAL_RATE) / HOP)
    starts = list(range(0, max(1, frames - PARTIAL_FRAMES + step + 1), step))
    coverage = (samples - starts[-1] * HOP) / (PARTIAL_FRAMES * HOP)
    if coverage < MIN_COVERAGE and len(starts) > 1:
        starts.pop()
    return tuple(starts), max(samples, (starts[-1] + PARTIAL_FRAMES) * HOP)


class GE2ENetwork(nn.Module):
    """Resemblyzer's VoiceEncoder network, with its state-dict names: mel frames
    (N, frames, 40) -> L2-normalised speaker embeddings (N, 256)."""

    def __init__(self):
        super().__init__()
        self.lstm = nn.LSTM(MELS, HIDDEN, LAYERS, batch_first=True)
        self.linear = nn.Linear(HIDDEN, GE2E_DIM)

    def forward(self, mels: torch.Tensor) -> torch.Tensor:
        _, (hidden, _) = self.lstm(mels)
        embedding = F.relu(self.linear(hidden[-1]))
        return embedding / torch.linalg.vector_norm(embedding, dim=1, keepdim=True).clamp_min(1e-12)


class GE2EEncoder(nn.Module):
    def __init__(self, config: GE2EEncoderConfig):
        super().__init__()
        self.config = config
        self.ge2e = GE2ENetwork()
        self.project = nn.Sequential(nn.Linear(GE2E_DIM, 256), nn.BatchNorm1d(256),
                                     nn.LeakyReLU(0.2), nn.Linear(256, config.embedding_dim))
        dcgan_init(self.project)
        self.register_buffer("mel_basis", torch.from_numpy(mel_filterbank()), persistent=False)
        self.register_buffer("window", torch.hann_window(WINDOW), persistent=False)
        self.register_buffer("deemphasis", PRE_EMPHASIS ** torch.arange(1024.0), persistent=False)
        # 1 once the GE2E weights are in: from the wheel now, or from a checkpoint's state
        # dict later (so a checkpoint loads where the package is not installed).
        self.register_buffer("ge2e_loaded", torch.zeros(()))
        self._load_pretrained()
        self.ge2e.requires_grad_(config.finetune)

    def _load_pretrained(self) -> None:
        try:
            path = ge2e_weights_path()
        except UserError as missing:
            self._missing = str(missing)     # raised at the first forward, unless loaded
            return
        state = torch.load(path, map_location="cpu", weights_only=True)["model_state"]
        self.ge2e.load_state_dict({k: v for k, v in state.items()
                                   if k.startswith(("lstm.", "linear."))})
        self.ge2e_loaded.fill_(1.0)

    def train(self, mode: bool = True):
        super().train(mode)
        if not self.config.finetune:
            self.ge2e.eval()
        return self

    def mel_frames(self, waveform: torch.Tensor) -> torch.Tensor:
        """(B, T) wav in [-1, 1] -> (B, 1 + T // 160, 40) mel power frames, as
        resemblyzer.audio.wav_to_mel_spectrogram (librosa >= 0.10: zero-padded centre)."""
        spectrum = torch.stft(waveform, WINDOW, HOP, window=self.window, center=True,
                              pad_mode="constant", return_complex=True)       # (B, 201, F)
        return (self.mel_basis @ spectrum.abs().square()).transpose(1, 2)

    def speech_wav(self, waveform: torch.Tensor) -> torch.Tensor:
        """(B, 1, T) project input (peak-normalised, pre-emphasised) -> (B, T) the wav
        Resemblyzer would embed: pre-emphasis undone (its impulse response 0.95^k, causal,
        by FFT; 1024 taps leave 1e-23), then raised to -30 dBFS if quieter."""
        wav, samples = waveform[:, 0], waveform.shape[-1]
        taps = self.deemphasis[:min(samples, len(self.deemphasis))]
        size = 1 << (samples + len(taps)).bit_length()
        wav = torch.fft.irfft(torch.fft.rfft(wav, size) * torch.fft.rfft(taps, size), size)[:, :samples]
        rms = wav.square().mean(1, keepdim=True).sqrt().clamp_min(1e-6)
        return wav * (TARGET_RMS / rms).clamp_min(1.0)

    def speaker_embedding(self, wav: torch.Tensor) -> torch.Tensor:
        """(B, T) wav -> (B, 256): embed_utterance's L2-normalised mean over partials."""
        starts, padded = partial_starts(wav.shape[-1])
        mels = self.mel_frames(F.pad(wav, (0, padded - wav.shape[-1])))           # (B, F, 40)
        index = torch.tensor(starts, device=wav.device)[:, None] + torch.arange(
            PARTIAL_FRAMES, device=wav.device)                                     # (P, 160)
        partials = mels[:, index].flatten(0, 1)                                    # (B P, 160, 40)
        embeddings = self.ge2e(partials).unflatten(0, (len(wav), len(starts))).mean(1)
        return embeddings / torch.linalg.vector_norm(embeddings, dim=1, keepdim=True).clamp_min(1e-12)

    def forward(self, waveform: torch.Tensor) -> torch.Tensor:
        """(B, 1, T) waveform -> (B, embedding_dim)."""
        if hasattr(self, "_missing") and not self.ge2e_loaded:
            raise UserError(self._missing)
        with torch.autocast(waveform.device.type, enabled=False), \
                torch.set_grad_enabled(torch.is_grad_enabled() and self.config.finetune):
            embedding = self.speaker_embedding(self.speech_wav(waveform.float()))  # (B, 256)
        return self.project(embedding)
