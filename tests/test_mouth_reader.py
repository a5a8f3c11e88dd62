"""--mouth_open_coef: a reader of how open a mouth is, fitted to the train faces, drives G's
g_mouth_open term; it is saved with the run and read back on resume."""
from __future__ import annotations

import numpy as np
import pytest
import torch

import runtime
from data.dataset import SpeechFaceDataset
from data.demo import demo_dataset_path
from data.schema import validate_pair_file
from models.metrics.mouth import correlation, measure_openness
from models.mouth_reader import READ_RANGE, fit_mouth_reader, mouth_open_loss
from models.mouth_refit import ReaderRefit
from tests.conftest import assert_identical
from utils import load_checkpoint


def faces_of(split: str) -> tuple[torch.Tensor, np.ndarray]:
    """The demo file's `split` faces as the model reads them, and as uint8 pixels."""
    dataset = SpeechFaceDataset(validate_pair_file(demo_dataset_path()), split, 16000, 64,
                                train=False)
    faces = torch.stack([dataset.face(row) for row in range(len(dataset))])
    return faces, ((faces + 1) * 127.5).round().byte().permute(0, 2, 3, 1).numpy()


def test_the_reader_reads_mouths_it_was_not_fitted_on():
    train, train_pixels = faces_of("train")
    test, test_pixels = faces_of("test")
    reader = fit_mouth_reader(train[:800], measure_openness(train_pixels[:800], "demo"), seed=0,
                              steps=200)
    assert not any(p.requires_grad for p in reader.parameters())
    with torch.no_grad():
        read = reader(test).numpy()
    assert correlation(read, measure_openness(test_pixels, "demo")) >= 0.8
    # the term: zero on the true faces themselves, and G's gradient reaches only the mouth
    fake = test[:8].clone().requires_grad_(True)
    assert mouth_open_loss(reader, test[:8], test[:8]) == 0
    mouth_open_loss(reader, fake, test[8:16]).backward()
    assert fake.grad[..., :30, :].abs().sum() == 0 and fake.grad[..., 40:60, 22:42].abs().sum() > 0
    # a face unlike any it was fitted on (an untrained G's) is read as far as READ_RANGE, no
    # further, and gives no gradient there
    wild = (test[:8] * 40).clamp(-40, 40).requires_grad_(True)
    with torch.no_grad():
        assert reader(wild).abs().max() > READ_RANGE
    loss = mouth_open_loss(reader, wild, test[8:16])
    assert loss <= 2 * READ_RANGE
    loss.backward()
    outside = (reader(wild).abs() > READ_RANGE).detach()
    assert outside.any() and wild.grad[outside].abs().sum() == 0


def sway(reader, faces: torch.Tensor) -> float:
    """Mean norm of the reading's gradient with respect to the face: what G's term gets."""
    faces = faces.clone().requires_grad_(True)
    reader(faces).sum().backward()
    return float(faces.grad.flatten(1).norm(dim=1).mean())


def test_the_fit_repeats_and_its_noise_steadies_the_reading():
    train, train_pixels = faces_of("train")
    test, _ = faces_of("test")
    openness = measure_openness(train_pixels[:800], "demo")
    noisy = fit_mouth_reader(train[:800], openness, seed=0, steps=200, noise=0.3)
    again = fit_mouth_reader(train[:800], openness, seed=0, steps=200, noise=0.3)
    assert_identical(noisy.state_dict(), again.state_dict(), "reader")
    clean = fit_mouth_reader(train[:800], openness, seed=0, steps=200, noise=0)
    assert sway(noisy, test[:128]) < 0.85 * sway(clean, test[:128])


def test_a_refit_reads_the_generators_mouths_as_the_measure_does():
    """Faces the first fit never saw (the true faces negated: the demo measure, the mouth's
    contrast, reads them as the true ones) are misread until the refit fits on them (0.32
    against the measure, 0.83 after, on an AVX2 CPU); the real faces stay read as before
    (0.95, 0.92)."""
    train, train_pixels = faces_of("train")
    test, test_pixels = faces_of("test")
    openness = measure_openness(train_pixels[:400], "demo")
    reader = fit_mouth_reader(train[:400], openness, seed=0, steps=200)
    refit = ReaderRefit(None, train[:400], openness, "demo", seed=0, every=1)
    truth = measure_openness(test_pixels, "demo")

    def accuracy(faces):
        with torch.no_grad():
            return correlation(reader(faces).numpy(), truth)
    before, real_before = accuracy(-test), accuracy(test)
    assert refit.refit_on(-train[400:656], reader, seed=1) == 256
    assert accuracy(-test) > max(0.7, before + 0.3), (before, accuracy(-test))
    assert accuracy(test) > real_before - 0.05
    assert not any(p.requires_grad for p in reader.parameters())


def test_faces_without_lips_are_refused_in_one_line(tiny_pairs, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    code = runtime.main(["--dataset", str(tiny_pairs), "--mouth_open_coef", "1", "--no_visdom",
                         "--batch_size", "4", "--max_steps", "1", "--audio_seconds", "0.3"])
    error = capsys.readouterr().err
    assert code == 2 and error.count("\n") == 1, error
    assert error.startswith("error: --mouth_open_coef: a mouth was measured on 0 of the "), error


def small_demo_file(path) -> str:
    """32 train and 8 test pairs of the demo file (its speakers' names, so the reader is
    fitted to the demo measure), for a run of a few steps."""
    import h5py
    with h5py.File(demo_dataset_path(), "r") as source, h5py.File(path, "w") as small:
        for key, value in source.attrs.items():
            small.attrs[key] = value
        for split, rows in (("train", 32), ("test", 8)):
            for name, column in source[split].items():
                small.create_dataset(f"{split}/{name}", data=column[:rows])
    return str(path)


# two epochs of 8 steps; wav2pix's encoder, whose resume is bit-identical on every CPU kernel
RUN = ["--batch_size", "4", "--epochs", "2", "--audio_seconds", "0.3", "--noise_dim", "4",
       "--no_visdom", "--precision", "fp32", "--num_workers", "0", "--speech_encoder", "segan",
       "--mouth_open_coef", "1"]


@pytest.mark.parametrize("refit", [[], ["--mouth_refit_every", "5"]], ids=["frozen", "refit"])
def test_a_run_with_the_reader_logs_its_term_and_resumes_exactly(tmp_path, monkeypatch, refit):
    """The reader is saved and read back; refitted at steps 5, 10 and 15, it changes between
    the checkpoints at steps 11 and 16, and the resumed run refits it at 15 as the straight
    one did."""
    monkeypatch.chdir(tmp_path)
    run = ["--dataset", small_demo_file(tmp_path / "small.h5"), *RUN, *refit]
    assert runtime.main([*run, "--save_path", "straight", "--checkpoint_every_steps", "11"]) == 0
    straight = tmp_path / "checkpoints" / "straight"
    inside = straight / "checkpoint_epoch0002_step00000011.pt"
    assert runtime.main([*run, "--save_path", "resumed", "--resume", str(inside)]) == 0
    mine = load_checkpoint(tmp_path / "checkpoints" / "resumed" / "latest.pt")
    theirs = load_checkpoint(straight / "latest.pt")
    assert theirs["step"] == 16 and "mouth_reader" in load_checkpoint(inside)
    for key in ("mouth_reader", "networks", "optimizer_g"):
        assert_identical(mine[key], theirs[key], key)
    assert '"g_mouth_open"' in (straight / "log.jsonl").read_text()
    early, late = load_checkpoint(inside)["mouth_reader"], theirs["mouth_reader"]
    changed = any(not torch.equal(early[key], late[key]) for key in early)
    assert changed == bool(refit)


def test_a_refit_without_the_reader_is_refused_in_one_line(tiny_pairs, tmp_path, monkeypatch,
                                                           capsys):
    monkeypatch.chdir(tmp_path)
    code = runtime.main(["--dataset", str(tiny_pairs), "--mouth_refit_every", "100",
                         "--no_visdom", "--max_steps", "1"])
    error = capsys.readouterr().err
    assert code == 2 and error.count("\n") == 1, error
    assert error.startswith("error: --mouth_refit_every refits the mouth reader of "), error
