import numpy as np
import pytest
import soundfile

from data.audio import (AudioError, import_torchaudio, load_speech, prepare_waveform, resample,
                        speech_windows)
from tests.conftest import write_wav


def test_torchaudio_imports_on_this_machine_and_resamples():
    torchaudio = import_torchaudio()
    assert hasattr(torchaudio.functional, "resample")
    t = np.arange(48000) / 48000
    tone = np.sin(2 * np.pi * 440 * t).astype(np.float32)
    down = resample(tone, 48000, 16000)
    assert down.shape == (16000,)
    spectrum = np.abs(np.fft.rfft(down))
    assert abs(np.argmax(spectrum) - 440) <= 1     # 1 Hz bins: the tone stays at 440 Hz


@pytest.mark.parametrize("rate,channels,subtype", [(16000, 1, "PCM_16"), (48000, 2, "PCM_U8"),
                                                   (44100, 1, "FLOAT"), (8000, 3, "PCM_24")])
def test_unusual_wavs_are_converted_not_refused(tmp_path, rate, channels, subtype):
    path = write_wav(tmp_path / "voice.wav", 1.5, rate=rate, channels=channels, subtype=subtype)
    speech = load_speech(path)
    assert speech.dtype == np.float32 and speech.ndim == 1
    assert abs(len(speech) - 24000) <= 1
    assert 0.3 < np.abs(speech).max() < 1.05


def test_windows_cut_whole_and_refuse_short_or_silent_audio():
    speech = np.random.default_rng(0).normal(0, 0.1, 40000).astype(np.float32)
    assert speech_windows(speech, 16000).shape == (2, 16000)
    with pytest.raises(AudioError, match="shorter than one window"):
        speech_windows(speech[:1000], 16000)
    with pytest.raises(AudioError, match="silent"):
        speech_windows(np.zeros(32000, np.float32), 16000)


def test_non_audio_is_an_audio_error(tmp_path):
    path = tmp_path / "fake.wav"
    path.write_bytes(b"RIFF\x00\x00\x00\x00WAVEjunk")
    with pytest.raises(AudioError):
        load_speech(path)


def test_nan_audio_is_refused(tmp_path):
    samples = np.full(16000, np.nan, np.float32)
    soundfile.write(str(tmp_path / "nan.wav"), samples, 16000, subtype="FLOAT")
    with pytest.raises(AudioError, match="NaN"):
        load_speech(tmp_path / "nan.wav")


def test_preprocessing_is_peak_normalisation_then_pre_emphasis():
    window = np.array([0.0, 0.5, -0.25, 0.25], np.float32)
    np.testing.assert_allclose(prepare_waveform(window), [0.0, 1.0, -0.5 - 0.95, 0.5 + 0.95 * 0.5])
    assert not np.any(prepare_waveform(np.zeros(8, np.float32)))
