"""Options are resolved once, in runtime.py, and frozen: what options.json and the checkpoint
record is what every part of a run used."""
import json

import pytest
import torch

import runtime
from models.variant_options import UNCONDITIONAL_NOISE_DIM
from utils import Config, load_checkpoint


def test_resolution_fills_every_dependent_default_and_freezes():
    config = runtime.config_for(["--loss", "wgan-gp", "--num_workers", "64"])
    assert isinstance(config, Config)
    assert config.d_iters == 5                          # wgan-gp's critic steps
    assert config.precision in ("fp32", "bf16")         # never "auto" once resolved
    assert config.num_workers <= 64
    with pytest.raises(AttributeError, match="resolved once, in runtime.py"):
        config.lr_G = 1.0
    with pytest.raises(AttributeError, match="resolved once"):
        del config.seed
    changed = config.replace(seed=7)
    assert changed.seed == 7 and config.seed == 0
    with pytest.raises(AttributeError, match="no such options: sede"):
        config.replace(sede=7)


def test_a_step_refuses_options_that_were_not_resolved():
    from models import ModelArgs, SpeechToFace
    from models.gan_step import GanStep
    options = runtime.build_parser().parse_args([])        # --precision auto, unresolved
    model = SpeechToFace(ModelArgs(audio_samples=4800, num_speakers=3))
    with pytest.raises(ValueError, match="resolved by runtime.resolve"):
        GanStep(model, options, torch.device("cpu"))


def test_the_run_records_the_options_it_trained_with(tiny_pairs, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    argv = ["--dataset", str(tiny_pairs), "--save_path", "frozen", "--audio_seconds", "0.3",
            "--batch_size", "4", "--num_workers", "0", "--no_visdom", "--max_steps", "1",
            "--condition", "none"]
    assert runtime.main(argv) == 0
    recorded = json.loads((tmp_path / "checkpoints/frozen/options.json").read_text())
    saved = load_checkpoint(tmp_path / "checkpoints/frozen/latest.pt")["options"]
    assert recorded == saved
    assert recorded["precision"] != "auto" and recorded["d_iters"] == 1
    assert recorded["noise_dim"] == UNCONDITIONAL_NOISE_DIM     # --condition none's
