"""End to end on a tiny real HDF5 file: train, checkpoint, load back, render."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

import runtime
from models import ModelArgs, SpeechToFace
from tests.conftest import write_wav
from utils import load_checkpoint

FAST = ["--audio_seconds", "0.3", "--batch_size", "4", "--num_workers", "0", "--no_visdom"]


@pytest.fixture
def trained_run(tiny_pairs, tmp_path, monkeypatch):
    """Two training steps in a fresh folder; returns the run folder."""
    monkeypatch.chdir(tmp_path)
    code = runtime.main(["--dataset", str(tiny_pairs), "--save_path", "smoke", "--epochs", "1",
                         "--max_steps", "2", *FAST])
    assert code == 0
    return tmp_path / "checkpoints" / "smoke"


def test_two_steps_write_a_checkpoint_that_loads_into_fresh_networks(trained_run):
    assert (trained_run / "latest.pt").is_file()
    assert (trained_run / "checkpoint_epoch0001.pt").is_file()
    checkpoint = load_checkpoint(trained_run / "latest.pt")
    assert checkpoint["step"] == 2 and checkpoint["epoch"] == 1
    assert checkpoint["speaker_names"] == ["anna", "bert", "carl"]
    assert checkpoint["options"]["lr_D"] == 0.0004
    assert {"optimizer_g", "optimizer_d"} <= checkpoint.keys()
    assert len(checkpoint["optimizer_g"]["state"]) > 0
    fresh = SpeechToFace(ModelArgs(**checkpoint["model_args"]))
    before = {k: v.clone() for k, v in fresh.state_dict().items()}
    fresh.load_state_dict(checkpoint["networks"])
    loaded = fresh.state_dict()
    assert all(torch.equal(loaded[k], checkpoint["networks"][k]) for k in loaded)
    assert any(not torch.equal(before[k], loaded[k]) for k in loaded)


def test_training_writes_grid_log_and_options(trained_run):
    grid = Image.open(trained_run / "samples" / "epoch_0001.png")
    assert grid.size[0] > 64 and grid.size[1] > 64
    records = [json.loads(line) for line in (trained_run / "log.jsonl").read_text().splitlines()]
    record = {k: v for r in records if r["kind"] in ("epoch", "evaluation") for k, v in r.items()}
    assert {"d_loss", "g_loss", "g_l1", "g_fm", "g_softmax", "val_l1"} <= record.keys()
    assert all(np.isfinite(v) for v in record.values() if isinstance(v, float))
    assert json.loads((trained_run / "options.json").read_text())["save_path"] == "smoke"


def test_training_changes_the_generator_and_the_discriminator(tiny_pairs, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    torch.manual_seed(0)
    runtime.main(["--dataset", str(tiny_pairs), "--save_path", "a", "--epochs", "1",
                  "--max_steps", "1", *FAST])
    first = load_checkpoint(tmp_path / "checkpoints/a/latest.pt")["networks"]
    runtime.main(["--dataset", str(tiny_pairs), "--save_path", "b", "--epochs", "2", *FAST])
    later = load_checkpoint(tmp_path / "checkpoints/b/latest.pt")["networks"]
    for part in ("face_generator", "projection_discriminator", "speech_encoder"):
        keys = [k for k in first if k.startswith(part) and first[k].is_floating_point()]
        assert any(not torch.equal(first[k], later[k]) for k in keys), part


def test_pretrained_networks_start_a_new_run(trained_run, tiny_pairs, tmp_path):
    code = runtime.main(["--dataset", str(tiny_pairs), "--save_path", "again", "--epochs", "1",
                         "--max_steps", "1", "--pre_trained_gen", str(trained_run),
                         "--pre_trained_disc", str(trained_run / "latest.pt"), *FAST])
    assert code == 0


def test_inference_renders_the_test_split(trained_run, tiny_pairs, tmp_path):
    code = runtime.main(["--inference", "--pre_trained_gen", str(trained_run / "latest.pt"),
                         "--dataset", str(tiny_pairs), "--save_path", "smoke"])
    assert code == 0
    pngs = sorted((tmp_path / "results" / "smoke").glob("*.png"))
    assert len(pngs) == 3
    width, height = Image.open(pngs[0]).size
    assert width > 2 * height * 0.9 - 10     # generated beside real


def test_inference_from_real_wav_files_of_any_format(trained_run, tmp_path):
    folder = tmp_path / "my_voice"
    folder.mkdir()
    write_wav(folder / "plain.wav", 1.0)
    write_wav(folder / "stereo48k.wav", 0.7, rate=48000, channels=2, subtype="PCM_U8")
    code = runtime.main(["--inference", "--pre_trained_gen", str(trained_run),
                         "--audio", str(folder), "--save_path", "mine"])
    assert code == 0
    pngs = sorted(p.name for p in (tmp_path / "results" / "mine").glob("*.png"))
    # 0.3 s windows: 3 from the 1 s file, 2 from the 0.7 s one.
    assert pngs == ["plain_000.png", "plain_001.png", "plain_002.png",
                    "stereo48k_000.png", "stereo48k_001.png"]
    assert Image.open(tmp_path / "results/mine/plain_000.png").size == (64, 64)


def test_128_px_trains_and_renders(tiny_pairs, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert runtime.main(["--dataset", str(tiny_pairs), "--save_path", "big", "--epochs", "1",
                         "--max_steps", "1", "--image_size", "128", *FAST]) == 0
    checkpoint = load_checkpoint(tmp_path / "checkpoints/big/latest.pt")
    assert checkpoint["model_args"]["image_size"] == 128


def test_a_checkpoint_that_would_run_code_is_refused(tmp_path, capsys):
    import os

    class Payload:
        def __reduce__(self):
            return (os.system, (f"touch {tmp_path / 'pwned'}",))

    torch.save({"model_args": {}, "networks": Payload()}, tmp_path / "evil.pt")
    code = runtime.main(["--inference", "--pre_trained_gen", str(tmp_path / "evil.pt"),
                         "--save_path", "x"])
    err = capsys.readouterr().err
    assert code == 2 and "refused to load" in err and "could run code" in err
    assert not (tmp_path / "pwned").exists()
