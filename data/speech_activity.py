"""Does a window hold speech? Voice activity detectors from registry packages.

`--vad silero` (the default): Silero VAD (silero-vad ships its model; it runs on torch)
on 32 ms frames. `--vad webrtc`: Google's WebRTC VAD (webrtcvad-wheels, a small C
extension) on 30 ms frames; it takes loud noise and chords for voice. Either gives the
share of a window's frames that hold speech; a window below `--speech_fraction` is
dropped. `benchmarks/prepare_speed.py` measures both on the fixture's real speech and on
noise and music-like sound.
"""
from __future__ import annotations

import numpy as np

from data.schema import SAMPLE_RATE

VADS = ("webrtc", "silero", "off")


class WebrtcVad:
    """WebRTC's GMM voice detector; `aggressiveness` 0 (keeps most) to 3 (strictest)."""

    frame_samples = 480  # 30 ms at 16 kHz, one of the three lengths it accepts

    def __init__(self, aggressiveness: int = 3):
        import webrtcvad
        self.vad = webrtcvad.Vad(aggressiveness)

    def speech_fraction(self, waveform: np.ndarray) -> float:
        """Share of the 30 ms frames of float speech (T,) at 16 kHz that hold speech."""
        pcm = np.clip(np.round(waveform * 32768.0), -32768, 32767).astype("<i2")
        count = len(pcm) // self.frame_samples
        if count == 0:
            return 0.0
        frames = pcm[:count * self.frame_samples].reshape(count, self.frame_samples)
        voiced = sum(self.vad.is_speech(frame.tobytes(), SAMPLE_RATE) for frame in frames)
        return voiced / count


class SileroVad:
    """Silero's small recurrent voice detector (its TorchScript model ships in silero-vad)."""

    frame_samples = 512  # 32 ms at 16 kHz, the only length its 16 kHz model takes
    threshold = 0.5      # silero's own default speech probability

    def __init__(self):
        import warnings

        import torch
        threads = torch.get_num_threads()
        from silero_vad import load_silero_vad    # its import sets torch to one thread
        self._torch = torch
        with warnings.catch_warnings():  # its loader's importlib and torch.jit deprecations
            warnings.simplefilter("ignore", DeprecationWarning)
            self.model = load_silero_vad()
        torch.set_num_threads(threads)

    def speech_fraction(self, waveform: np.ndarray) -> float:
        count = len(waveform) // self.frame_samples
        if count == 0:
            return 0.0
        self.model.reset_states()  # each window is judged on its own
        frames = self._torch.from_numpy(np.ascontiguousarray(waveform[:count * self.frame_samples],
                                                             np.float32))
        # One thread for a 2k-parameter-per-step model (more only add overhead), and the
        # process's own count back afterwards: training in the same process must not change.
        threads = self._torch.get_num_threads()
        self._torch.set_num_threads(1)
        try:
            with self._torch.no_grad():
                probabilities = [float(self.model(chunk, SAMPLE_RATE))
                                 for chunk in frames.reshape(count, self.frame_samples)]
        finally:
            self._torch.set_num_threads(threads)
        return float(np.mean(np.asarray(probabilities) >= self.threshold))


def make_vad(name: str):
    """The detector called `name`, or None for "off"."""
    return {"webrtc": WebrtcVad, "silero": SileroVad, "off": lambda: None}[name]()
