"""Each GAN variant (losses, conditions, networks, fine-tuning) trains a few steps on a tiny
real HDF5 file and renders."""
import json

import numpy as np
import pytest
import torch
from PIL import Image

import runtime
import trainer
from data.schema import write_pair_file
from models import ModelArgs, SpeechToFace
from models.gan_step import GanStep
from models.run_state import EpochProgress
from tests.conftest import make_pairs, write_wav
from tests.test_resume import assert_same_run, cli
from utils import load_checkpoint

FAST = ["--audio_seconds", "0.3", "--batch_size", "4", "--num_workers", "0", "--no_visdom"]

VARIANTS = {
    "gan": ["--loss", "gan"],
    "hinge": ["--loss", "hinge"],
    "wgan-gp": ["--loss", "wgan-gp", "--d_iters", "2"],   # 2 steps: a critic step, then D + G
    "no_cls": ["--no_cls"],
    "wrong_loader": ["--wrong_faces", "loader"],
    "adain": ["--generator", "adain"],
    "sagan": ["--discriminator", "sagan"],
    "no_gradient_difference": ["--gdl_coef", "0"],
}


def train(dataset, save_path, *extra, steps=2):
    return runtime.main(["--dataset", str(dataset), "--save_path", save_path, "--epochs", "1",
                         "--max_steps", str(steps), *FAST, *extra])


def epoch_figures(run_dir):
    """The first epoch's mean losses and held-out scores, as log.jsonl holds them."""
    records = [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]
    return {k: v for r in records if r["kind"] in ("epoch", "evaluation") and r["epoch"] == 1
            for k, v in r.items()}


@pytest.mark.parametrize("variant", sorted(VARIANTS))
def test_each_variant_trains_two_steps_and_renders(variant, tiny_pairs, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert train(tiny_pairs, variant, *VARIANTS[variant]) == 0
    run_dir = tmp_path / "checkpoints" / variant
    checkpoint = load_checkpoint(run_dir / "latest.pt")
    record = epoch_figures(run_dir)
    assert all(np.isfinite(v) for v in record.values() if isinstance(v, float))
    assert {"d_loss", "g_loss", "g_adv", "g_l1"} <= record.keys()
    assert ("d_gp" in record) == (variant == "wgan-gp")
    assert ("d_wrong" in record) == (variant != "no_cls")
    assert ("g_gdl" in record) == (variant != "no_gradient_difference")
    model = SpeechToFace(ModelArgs(**checkpoint["model_args"]))
    model.load_state_dict(checkpoint["networks"])
    assert checkpoint["model_args"]["generator"] == ("adain" if variant == "adain" else "resize")
    assert checkpoint["model_args"]["discriminator"] == ("sagan" if variant == "sagan" else "dcgan")
    assert runtime.main(["--inference", "--pre_trained_gen", str(run_dir), "--dataset",
                         str(tiny_pairs), "--save_path", variant]) == 0
    assert len(list((tmp_path / "results" / variant).glob("*.png"))) == 3


def test_gradient_difference_charges_texture_on_flat_faces_but_not_edges():
    from models.losses import gradient_difference_loss, reconstruction_l1
    flat = torch.zeros(2, 3, 8, 8)
    checker = 0.1 * (torch.arange(8)[:, None] + torch.arange(8)[None]).remainder(2) * 2 - 0.1
    textured = flat + checker
    # L1 charges the texture its amplitude; the gradient difference every step of it, twice
    assert torch.isclose(reconstruction_l1(textured, flat), torch.tensor(0.1))
    assert torch.isclose(gradient_difference_loss(textured, flat), torch.tensor(0.4))
    edge = flat.clone()
    edge[..., 4:] = 1.0
    assert gradient_difference_loss(edge, edge) == 0
    # an edge of the other sign is as steep: only its place is charged, not its direction
    assert gradient_difference_loss(1 - edge, edge) == 0 < reconstruction_l1(1 - edge, edge)


def test_wgan_gp_takes_five_critic_steps_per_generator_step_by_default(tiny_pairs, tmp_path,
                                                                       monkeypatch):
    options = runtime.config_for(["--loss", "wgan-gp"])
    assert options.d_iters == 5
    torch.manual_seed(0)
    model = SpeechToFace(ModelArgs(audio_samples=4800, num_speakers=3))
    step = GanStep(model, options, torch.device("cpu"))
    faces = lambda: torch.rand(4, 3, 64, 64) * 2 - 1  # noqa: E731
    batch = (torch.randn(4, 1, 4800), faces(), torch.tensor([0, 1, 2, 0]), faces())
    generator_before = [p.detach().clone() for p in model.face_generator.parameters()]
    critic_only = [step(batch, number) for number in range(1, 5)]
    assert all("g_loss" not in values and "d_gp" in values for values in critic_only)
    assert all(torch.equal(a, b) for a, b in zip(generator_before, model.face_generator.parameters()))
    assert "g_loss" in step(batch, 5)       # the fifth batch: D, then G
    assert any(not torch.equal(a, b) for a, b in zip(generator_before,
                                                      model.face_generator.parameters()))


def test_unconditional_dcgan_trains_on_faces_alone_and_draws_random_faces(tiny_pairs, tmp_path,
                                                                          monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert train(tiny_pairs, "none", "--condition", "none") == 0
    assert "using --noise_dim 100" in capsys.readouterr().out
    run_dir = tmp_path / "checkpoints" / "none"
    checkpoint = load_checkpoint(run_dir / "latest.pt")
    assert checkpoint["model_args"]["condition"] == "none"
    assert checkpoint["model_args"]["noise_dim"] == 100
    assert not any(k.startswith(("speech_encoder.", "speaker_classifier.", "projection_"
                                 "discriminator.embed")) for k in checkpoint["networks"])
    record = epoch_figures(run_dir)
    assert {"g_adv", "g_fm"} <= record.keys()
    assert not {"g_l1", "g_softmax", "d_wrong", "val_l1"} & record.keys()
    assert runtime.main(["--inference", "--pre_trained_gen", str(run_dir), "--num_faces", "3",
                         "--save_path", "none"]) == 0
    pngs = sorted((tmp_path / "results" / "none").glob("*.png"))
    assert [p.name for p in pngs] == ["face_0000.png", "face_0001.png", "face_0002.png"]
    assert Image.open(pngs[0]).size == (64, 64)
    assert not np.array_equal(np.asarray(Image.open(pngs[0])), np.asarray(Image.open(pngs[1])))
    capsys.readouterr()
    assert runtime.main(["--evaluate", "--pre_trained_gen", str(run_dir), "--dataset",
                         str(tiny_pairs), "--metrics", "detection_haar,l1"]) == 0
    assert "scored on detection_haar only" in capsys.readouterr().out
    report = json.loads((run_dir / "metrics.json").read_text())
    assert set(report["metrics"]) == {"detection_haar", "detection_haar_real"}
    assert runtime.main(["--evaluate", "--pre_trained_gen", str(run_dir), "--dataset",
                         str(tiny_pairs), "--metrics", "identity"]) == 2
    assert "choose --metrics detection_dlib" in capsys.readouterr().err
    wav = write_wav(tmp_path / "voice.wav", 1.0)
    assert runtime.main(["--inference", "--pre_trained_gen", str(run_dir), "--audio", str(wav),
                         "--save_path", "x"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    assert err.endswith("draws faces from noise, not speech; drop --audio")
    assert not (tmp_path / "results" / "x").exists()


BAD_VARIANT_OPTIONS = {
    "--d_iters 0": "--d_iters is the number of discriminator steps per generator step",
    "--gp_coef -1": "--gp_coef must be zero or positive",
    "--loss wgan": "invalid choice",
    "--finetune_steps 0": "--finetune_steps must be at least 1",
    "--num_faces 0": "--num_faces must be at least 1",
    "--finetune run": "--finetune needs --dataset NEW.h5",
    "--finetune run --inference": "--finetune trains",
    "--finetune run --evaluate": "--finetune trains",
    "--finetune run --dataset x.h5 --pre_trained_gen run": "drop --pre_trained_gen",
    "--finetune missing.pt --dataset TINY": "no such checkpoint",
    "--condition embedding --dataset TINY": "holds no per-pair 'embeddings'",
}


@pytest.mark.parametrize("args", sorted(BAD_VARIANT_OPTIONS))
def test_bad_variant_options_are_one_line_errors(args, tiny_pairs, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    argv = [str(tiny_pairs) if a == "TINY" else a for a in args.split()]
    assert runtime.main(argv + FAST) == 2                 # argparse's own errors too (--loss)
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    assert BAD_VARIANT_OPTIONS[args] in err
    assert not (tmp_path / "checkpoints").exists()       # refused before anything was made


# ---------------------------------------------------------------- fine-tuning

def test_finetune_extends_the_speaker_classifier_and_trains_bounded_steps(tiny_pairs, tmp_path,
                                                                          monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert train(tiny_pairs, "base", steps=1) == 0
    base = load_checkpoint(tmp_path / "checkpoints/base/latest.pt")
    rng = np.random.default_rng(5)
    new_file = write_pair_file(tmp_path / "new.h5", {          # carl again, and a new speaker
        "train": make_pairs(rng, 2, 8000, 40, 2), "test": make_pairs(rng, 2, 8000, 40, 2)},
        ["carl", "dora"])
    options = runtime.config_for(
        ["--finetune", "checkpoints/base", "--dataset", str(new_file), "--save_path", "tuned",
         "--finetune_steps", "3", "--image_size", "128", *FAST])
    tuner = trainer.Trainer(options, torch.device("cpu"), new_file)
    assert tuner.speaker_names == ["anna", "bert", "carl", "dora"]
    assert tuner.train_loader.dataset.speaker_ids.tolist() == [2, 3]     # the file's 0, 1
    assert options.image_size == 64                                      # the checkpoint's
    old_weight = base["networks"]["speaker_classifier.layers.3.weight"]
    weight = tuner.model.speaker_classifier.layers[3].weight.detach()
    assert weight.shape[0] == 4 and torch.equal(weight[:3], old_weight)
    generator_key = "face_generator.layers.0.parametrizations.weight.original"
    assert torch.equal(tuner.model.state_dict()[generator_key], base["networks"][generator_key])
    tuner.train()            # 3 batches of 4 drawn with replacement from 2 pairs
    tuned = load_checkpoint(tmp_path / "checkpoints/tuned/latest.pt")
    assert tuned["step"] == 3 and tuned["epoch"] == 1
    assert tuned["speaker_names"] == ["anna", "bert", "carl", "dora"]
    assert tuned["model_args"]["num_speakers"] == 4
    assert not torch.equal(tuned["networks"][generator_key], base["networks"][generator_key])
    assert runtime.main(["--inference", "--pre_trained_gen", "checkpoints/tuned", "--dataset",
                         str(new_file), "--save_path", "tuned"]) == 0
    assert sorted(p.name for p in (tmp_path / "results/tuned").glob("*.png")) == [
        "carl_00000.png", "dora_00001.png"]


# ---------------------------------------------------------------- with the survival machinery

def test_epoch_means_count_each_figure_over_the_batches_that_have_it():
    progress = EpochProgress()
    progress.add(4, {"d_loss": 1.0})                       # a critic step
    progress.add(4, {"d_loss": 3.0, "g_loss": 10.0})       # D, then G
    progress.add(4, None)                                  # skipped
    assert progress.means() == {"d_loss": 2.0, "g_loss": 10.0}
    assert EpochProgress(**{**progress.state(), "counts": {}}).means()["g_loss"] == 5.0


def test_a_wgan_gp_run_resumed_between_critic_steps_ends_bit_identical(tmp_path):
    rng = np.random.default_rng(0)
    write_pair_file(tmp_path / "pairs.h5", {"train": make_pairs(rng, 4, 6000, 16, 2),
                                            "valid": make_pairs(rng, 2, 6000, 16, 2)}, ["a", "b"])
    run = ["--dataset", str(tmp_path / "pairs.h5"), "--audio_seconds", "0.3", "--batch_size", "2",
           "--epochs", "2", "--no_visdom", "--num_workers", "0", "--loss", "wgan-gp",
           "--d_iters", "2"]          # G steps at steps 2 and 4; the checkpoint after step 3
    assert cli(tmp_path, *run, "--save_path", "straight", "--checkpoint_every_steps", "3") == 0
    straight = tmp_path / "checkpoints" / "straight"
    assert cli(tmp_path, "--resume", straight / "checkpoint_epoch0002_step00000003.pt",
               "--save_path", "resumed") == 0
    assert_same_run(straight, tmp_path / "checkpoints" / "resumed")
