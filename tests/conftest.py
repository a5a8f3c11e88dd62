"""Small real inputs made on the spot (HDF5 pair files and wav files), and a bit-for-bit
comparison of checkpoints."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import pytest
import soundfile
import torch

from data.schema import write_pair_file

FIXTURE = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "wav2pix-mini"


def make_pairs(rng, count: int, window: int, face_size: int, speakers: int):
    """Speech-like windows (a per-speaker tone plus noise) and per-speaker coloured faces."""
    speaker_ids = np.arange(count) % speakers
    t = np.arange(window) / 16000
    waveforms = np.stack([np.sin(2 * np.pi * (120 + 40 * s) * t) * 8000 for s in speaker_ids])
    waveforms += rng.normal(0, 500, waveforms.shape)
    faces = rng.integers(0, 60, (count, face_size, face_size, 3))
    faces[..., 0] += (speaker_ids * 60)[:, None, None]
    return waveforms.astype(np.int16), faces.astype(np.uint8), speaker_ids


def write_tiny_pairs(folder) -> Path:
    """A real pair file: 3 speakers, 0.5 s windows, 40 px faces (resized by the loader)."""
    rng = np.random.default_rng(0)
    splits = {"train": make_pairs(rng, 12, 8000, 40, 3),
              "valid": make_pairs(rng, 6, 8000, 40, 3),
              "test": make_pairs(rng, 3, 8000, 40, 3)}
    return write_pair_file(Path(folder) / "tiny.h5", splits, ["anna", "bert", "carl"])


def write_two_speaker_pairs(folder) -> Path:
    """The smallest run: 2 speakers, 4 train pairs (two steps of 2), 0.375 s windows, 16 px."""
    rng = np.random.default_rng(0)
    return write_pair_file(Path(folder) / "pairs.h5", {"train": make_pairs(rng, 4, 6000, 16, 2),
                                                       "valid": make_pairs(rng, 2, 6000, 16, 2)},
                           ["a", "b"])


@pytest.fixture
def tiny_pairs(tmp_path) -> Path:
    return write_tiny_pairs(tmp_path)


@pytest.fixture(scope="session")
def tiny_pairs_once(tmp_path_factory) -> Path:
    """The same file made once per session, so an identity classifier cached beside it is
    trained once for every test that scores on it. Tests must not change it."""
    return write_tiny_pairs(tmp_path_factory.mktemp("tiny_once"))


def trainer_with_one_batch(pairs: Path, *flags: str):
    """A Trainer on `pairs` (small fast settings plus `flags`, run folder in the current
    folder) that has trained on the first batch of its loader, and that batch's figures."""
    import runtime
    import trainer
    options = runtime.config_for([
        "--dataset", str(pairs), "--audio_seconds", "0.3", "--batch_size", "4",
        "--num_workers", "0", "--no_visdom", "--precision", "fp32", "--speech_encoder", "segan",
        "--generator", "dcgan", *flags])
    run = trainer.Trainer(options, torch.device("cpu"), pairs)
    run.order.start(0, 0)
    return run, run.train_batch(next(iter(run.train_loader)))


def write_wav(path, seconds: float, rate: int = 16000, channels: int = 1,
              subtype: str = "PCM_16", amplitude: float = 0.5) -> Path:
    t = np.arange(int(seconds * rate)) / rate
    tone = amplitude * np.sin(2 * np.pi * 220 * t) * (1 + 0.3 * np.sin(2 * np.pi * 3 * t)) / 1.3
    soundfile.write(str(path), np.repeat(tone[:, None], channels, axis=1), rate, subtype=subtype)
    return Path(path)


def assert_identical(mine, theirs, where="checkpoint"):
    """Tensors equal bit for bit (torch.equal), everything else equal, recursively."""
    if isinstance(mine, torch.Tensor):
        assert torch.equal(mine, theirs), where
    elif isinstance(mine, dict):
        assert mine.keys() == theirs.keys(), where
        for key in mine:
            assert_identical(mine[key], theirs[key], f"{where}[{key!r}]")
    elif isinstance(mine, (list, tuple)):
        assert len(mine) == len(theirs), where
        for index, (a, b) in enumerate(zip(mine, theirs)):
            assert_identical(a, b, f"{where}[{index}]")
    else:
        assert mine == theirs, where
