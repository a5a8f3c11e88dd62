"""Speech in: read the user's audio files, resample to 16 kHz mono, cut windows, preprocess."""
from __future__ import annotations

import importlib
import math
import sys
import types
from pathlib import Path

import numpy as np
import soundfile

from data.schema import SAMPLE_RATE
from utils import UserError

PRE_EMPHASIS = 0.95
AUDIO_SUFFIXES = (".wav", ".flac", ".ogg")
RATE_RANGE = (4000, 384000)   # Hz; outside it a file is not speech audio (or its header is broken)


class AudioError(UserError):
    """Audio that cannot be read or is unusable (empty, silent, too short)."""


def import_torchaudio():
    """Import torchaudio's pure-Python parts on machines where its C++ extension cannot load.

    The registry's torchaudio 2.11 wheel is a CUDA build: on CPU-only torch,
    `import torchaudio` fails loading `_torchaudio.abi3.so` (it needs libc10_cuda).
    The resampler we use is pure PyTorch, so when loading fails we register a stand-in
    `torchaudio._extension` that reports "no extension" and import again.
    Where the extension loads (a CUDA machine), this is a plain import.
    """
    try:
        return importlib.import_module("torchaudio")
    except OSError:
        for name in [m for m in sys.modules if m == "torchaudio" or m.startswith("torchaudio.")]:
            del sys.modules[name]
        stub = types.ModuleType("torchaudio._extension")
        stub._IS_TORCHAUDIO_EXT_AVAILABLE = False
        stub._IS_ALIGN_AVAILABLE = False

        def fail_if_no_align(func):
            def refuse(*args, **kwargs):
                raise RuntimeError("torchaudio's alignment needs its C++ extension")
            return refuse

        stub.fail_if_no_align = fail_if_no_align
        sys.modules["torchaudio._extension"] = stub
        return importlib.import_module("torchaudio")


def resample(waveform: np.ndarray, orig_rate: int, new_rate: int = SAMPLE_RATE) -> np.ndarray:
    """Band-limited resampling with torchaudio's sinc resampler; float32 (T,) in and out."""
    orig_rate = tractable_rate(orig_rate, new_rate)
    if orig_rate == new_rate:
        return waveform.astype(np.float32, copy=False)
    import torch  # here, not above: commands that never resample start without it

    functional = import_torchaudio().functional
    tensor = torch.from_numpy(np.ascontiguousarray(waveform, dtype=np.float32))
    return functional.resample(tensor, orig_rate, new_rate).numpy()


def tractable_rate(orig_rate: int, new_rate: int) -> int:
    """The rate to resample from: `orig_rate`, or the nearest multiple of 50 Hz when the ratio
    is awkward.

    torchaudio's sinc kernel is (new / g) x (orig / g) with g = gcd(orig, new): 16001 Hz ->
    16 kHz builds a 16000 x 16015 kernel (seconds and gigabytes), 44099 Hz is worse. A
    multiple of 50 Hz keeps g >= 50 against 16 kHz; the cost is a time stretch of at most
    25 Hz / rate (0.3% at 8 kHz, 0.06% at 44.1 kHz), far below what a listener hears.
    """
    if new_rate // math.gcd(orig_rate, new_rate) <= 320:
        return orig_rate
    return max(50, round(orig_rate / 50) * 50)


def load_speech(path) -> np.ndarray:
    """Read any audio file soundfile knows as float32 mono at 16 kHz, shape (T,).

    Any channel count and sample format, and any rate from 4 to 384 kHz, is converted,
    not refused.
    """
    path = Path(path)
    if not path.is_file():
        raise AudioError(f"{path}: no such audio file")
    try:
        samples, rate = soundfile.read(str(path), dtype="float32", always_2d=True)  # (T, C)
    except (soundfile.LibsndfileError, RuntimeError, TypeError, ValueError) as error:
        raise AudioError(f"{path}: not a readable audio file ({_first_line(error)}); "
                         "pass a wav, flac or ogg file") from None
    if samples.shape[0] == 0:
        raise AudioError(f"{path}: the audio file holds no samples")
    if not RATE_RANGE[0] <= rate <= RATE_RANGE[1]:
        raise AudioError(f"{path}: its header says {rate} Hz, outside {RATE_RANGE[0]} to "
                         f"{RATE_RANGE[1]} Hz; re-encode it (e.g. at {SAMPLE_RATE} Hz)")
    if not np.all(np.isfinite(samples)):
        raise AudioError(f"{path}: the audio holds NaN or infinite samples")
    mono = samples.mean(axis=1, dtype=np.float64).astype(np.float32)   # float64: no overflow
    return resample(mono, rate)


def _first_line(error: Exception) -> str:
    return str(error).strip().splitlines()[0] if str(error).strip() else type(error).__name__


def speech_windows(speech: np.ndarray, window_samples: int, source: str = "audio") -> np.ndarray:
    """Cut (T,) speech into consecutive whole windows (n, window_samples); the tail is dropped."""
    count = len(speech) // window_samples
    if count == 0:
        raise AudioError(f"{source}: {len(speech) / SAMPLE_RATE:.2f} s of audio is shorter than one "
                         f"window of {window_samples / SAMPLE_RATE:.2f} s; use a longer file "
                         "or a smaller --audio_seconds")
    windows = speech[: count * window_samples].reshape(count, window_samples)
    if not np.any(np.abs(windows) > 1e-4):
        raise AudioError(f"{source}: the audio is silent")
    return windows


def find_audio_files(paths) -> list[Path]:
    """Expand files and folders (recursively) into a sorted list of audio files."""
    found = []
    for path in map(Path, paths):
        if path.is_dir():
            found += sorted(p for p in path.rglob("*") if p.suffix.lower() in AUDIO_SUFFIXES)
        elif path.exists():
            found.append(path)
        else:
            raise AudioError(f"{path}: no such file or folder; --audio takes wav files or folders")
    if not found:
        raise AudioError(f"no audio files ({', '.join(AUDIO_SUFFIXES)}) in {', '.join(map(str, paths))}")
    return found


def prepare_waveform(window: np.ndarray) -> np.ndarray:
    """wav2pix's input preprocessing: peak normalisation, then pre-emphasis 0.95. (T,) float32."""
    window = window.astype(np.float32)
    peak = np.abs(window).max()
    if peak > 0:
        window = window / peak
    emphasised = np.empty_like(window)
    emphasised[0] = window[0]
    emphasised[1:] = window[1:] - PRE_EMPHASIS * window[:-1]
    return emphasised
