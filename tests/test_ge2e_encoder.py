"""The GE2E speech encoder (models/ge2e_encoder.py): it reproduces Resemblyzer's embeddings
on real wavs, stays frozen through a real run, and its checkpoints render without the package.

Resemblyzer itself is imported only by the comparison tests, which skip where it cannot be
(it needs librosa and webrtcvad); the others need only its weights file (the wheel
installed with --no-deps) and skip, saying how to install it, where even that is missing.
"""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import runtime
from data.audio import load_speech, prepare_waveform
from models import ModelArgs, SpeechToFace
from models.ge2e_encoder import (GE2EEncoder, GE2EEncoderConfig, INSTALL_HINT, ge2e_weights_path,
                                 mel_filterbank, partial_starts)
from tests.conftest import FIXTURE
from utils import UserError, load_checkpoint

ROOT = Path(__file__).resolve().parents[1]
FAST = ["--audio_seconds", "0.3", "--batch_size", "4", "--num_workers", "0", "--no_visdom",
        "--epochs", "1", "--max_steps", "2", "--precision", "fp32"]
# A python that cannot find resemblyzer (find_spec returns None for a None in sys.modules).
WITHOUT_PACKAGE = ("import sys; sys.modules['resemblyzer'] = None; import runtime; "
                   "sys.exit(runtime.main(sys.argv[1:]))")


def wheel_weights() -> dict:
    try:
        path = ge2e_weights_path()
    except UserError as missing:
        pytest.skip(f"GE2E weights not installed ({missing})")
    state = torch.load(path, map_location="cpu", weights_only=True)["model_state"]
    return {k: v for k, v in state.items() if k.startswith(("lstm.", "linear."))}


def import_resemblyzer():
    try:
        import resemblyzer
        from resemblyzer import audio
    except Exception as error:   # noqa: BLE001 - librosa, webrtcvad or pkg_resources missing
        pytest.skip(f"resemblyzer is not importable here ({type(error).__name__}: {error}); "
                    "the comparison needs it with librosa and webrtcvad(-wheels)")
    return resemblyzer, audio


def fixture_wavs() -> list[Path]:
    wavs = sorted((FIXTURE / "test").glob("*/*.wav"))
    if not wavs:
        pytest.skip(f"wav2pix-mini fixture not found at {FIXTURE} (it lives beside the clone in CI)")
    return wavs


@pytest.mark.parametrize("seconds", [1, 2])
def test_embeddings_match_resemblyzer_on_real_wavs(seconds):
    """The project's input (peak-normalised, pre-emphasised window) through the module, against
    VoiceEncoder.embed_utterance on the same window before pre-emphasis, volume-normalised as
    preprocess_wav does (its VAD trimming left out: a window is fixed-length). 1 s: one
    zero-padded 1.6 s partial; 2 s (two wavs of a speaker joined): two partials, averaged."""
    resemblyzer, audio = import_resemblyzer()
    wavs = fixture_wavs()
    reference = resemblyzer.VoiceEncoder("cpu", verbose=False)
    encoder = GE2EEncoder(GE2EEncoderConfig(audio_samples=16000 * seconds)).eval()
    for first in (0, len(wavs) - 2):          # one pair of wavs of each speaker
        raw = np.concatenate([load_speech(path)[:16000] for path in wavs[first:first + seconds]])
        wav = audio.normalize_volume(raw / np.abs(raw).max(), -30, increase_only=True)
        expected = reference.embed_utterance(wav.astype(np.float32))
        with torch.no_grad():
            mine = encoder.speaker_embedding(encoder.speech_wav(
                torch.from_numpy(prepare_waveform(raw))[None, None]))[0].numpy()
        assert float(expected @ mine) > 0.99999
        assert np.abs(expected - mine).max() < 1e-5


def test_frontend_and_partials_match_resemblyzer():
    resemblyzer, audio = import_resemblyzer()
    import librosa
    np.testing.assert_allclose(mel_filterbank(), librosa.filters.mel(sr=16000, n_fft=400, n_mels=40),
                               atol=1e-8)
    wav = load_speech(fixture_wavs()[0])
    encoder = GE2EEncoder(GE2EEncoderConfig())
    mine = encoder.mel_frames(torch.from_numpy(wav)[None])[0].numpy()
    expected = audio.wav_to_mel_spectrogram(wav)
    assert mine.shape == expected.shape == (101, 40)
    assert np.abs(mine - expected).max() < 1e-5 * expected.max()
    for samples in (4800, 16000, 25600, 32000, 40000, 64000):
        _, slices = resemblyzer.VoiceEncoder.compute_partial_slices(samples, 1.3, 0.75)
        assert partial_starts(samples)[0] == tuple(s.start for s in slices)


@pytest.mark.parametrize("samples", [4800, 16000, 64000])
def test_frozen_by_default_only_the_projection_learns_and_finetune_trains_it(samples):
    weights = wheel_weights()
    frozen = GE2EEncoder(GE2EEncoderConfig(audio_samples=samples, embedding_dim=64)).train()
    assert all(torch.equal(frozen.ge2e.state_dict()[k], v) for k, v in weights.items())
    assert not frozen.ge2e.training and frozen.project.training
    speech = torch.randn(3, 1, samples) * 0.1
    frozen(speech).square().mean().backward()
    assert frozen.project[0].weight.grad is not None
    assert all(p.grad is None and not p.requires_grad for p in frozen.ge2e.parameters())
    finetuned = GE2EEncoder(GE2EEncoderConfig(audio_samples=samples, finetune=True)).train()
    assert finetuned.ge2e.training
    finetuned(speech).square().mean().backward()
    assert all(p.grad is not None for p in finetuned.ge2e.parameters())


def without_package(arguments: list[str], folder: Path) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-c", WITHOUT_PACKAGE, *arguments], cwd=folder,
                          env={**os.environ, "PYTHONPATH": str(ROOT)}, capture_output=True,
                          text=True, timeout=300)


def test_two_steps_leave_ge2e_as_shipped_and_the_checkpoint_resumes_and_renders_without_the_package(
        tiny_pairs, tmp_path, monkeypatch):
    """Step 1 here; step 2 resumed, and the faces rendered, where resemblyzer cannot be found."""
    weights = wheel_weights()
    monkeypatch.chdir(tmp_path)
    assert runtime.main(["--dataset", str(tiny_pairs), "--save_path", "ge2e", "--speech_encoder",
                         "ge2e", *FAST[:-4], "--epochs", "2", "--max_steps", "1",
                         "--checkpoint_every_steps", "1"]) == 0
    resumed = without_package(["--resume", "latest", "--save_path", "ge2e", "--max_steps", "2"],
                              tmp_path)
    assert resumed.returncode == 0, resumed.stderr[-2000:]
    checkpoint = load_checkpoint(tmp_path / "checkpoints" / "ge2e" / "latest.pt")
    assert checkpoint["model_args"]["speech_encoder"] == "ge2e" and checkpoint["step"] == 2
    for name, tensor in weights.items():
        assert torch.equal(checkpoint["networks"][f"speech_encoder.ge2e.{name}"], tensor), name
    # Adam holds state for the trainable tensors only: the frozen ones took no step.
    model = SpeechToFace(ModelArgs(**checkpoint["model_args"]))
    frozen = {i for i, p in enumerate(model.generator_parameters()) if not p.requires_grad}
    assert len(frozen) == len(list(model.speech_encoder.ge2e.parameters()))
    assert checkpoint["optimizer_g"]["state"] and not frozen & set(checkpoint["optimizer_g"]["state"])
    rendered = without_package(["--inference", "--pre_trained_gen", "checkpoints/ge2e",
                                "--dataset", str(tiny_pairs), "--save_path", "ge2e"], tmp_path)
    assert rendered.returncode == 0, rendered.stderr[-2000:]
    assert len(list((tmp_path / "results" / "ge2e").glob("*.png"))) == 3


def test_a_new_model_without_the_weights_is_refused_in_one_line(tiny_pairs, tmp_path):
    refused = without_package(["--dataset", str(tiny_pairs), "--save_path", "x",
                               "--speech_encoder", "ge2e_finetune", *FAST], tmp_path)
    assert refused.returncode == 2
    assert refused.stderr.strip().splitlines() == [
        f"error: --speech_encoder ge2e needs the resemblyzer package; {INSTALL_HINT}"]
    assert not (tmp_path / "checkpoints").exists()
