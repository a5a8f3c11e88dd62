"""--compile: two steps of compiled halves train and write a checkpoint with plain keys
that loads into fresh networks (and resumes). The test traces with the aot_eager backend
(forward and backward graphs as torch.compile makes them, run with PyTorch's kernels):
inductor's code generation for both halves took minutes on this 2-core machine."""
from __future__ import annotations

import pytest
import torch

import runtime
import trainer
from models import ModelArgs, SpeechToFace
from models.compiled import compile_mode_for, memory_format_for
from utils import UserError, load_checkpoint


def test_compiled_steps_write_a_checkpoint_with_plain_keys(tiny_pairs, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    options = runtime.config_for([
        "--dataset", str(tiny_pairs), "--save_path", "compiled", "--compile", "aot_eager",
        "--audio_seconds", "0.3", "--batch_size", "4", "--num_workers", "0", "--no_visdom",
        "--precision", "fp32", "--epochs", "1"])
    run = trainer.Trainer(options, torch.device("cpu"), tiny_pairs)
    assert run.gan_step.compiled.mode == "aot_eager"
    assert run.gan_step.generator_side is not run.gan_step.compiled.plain_discriminator
    run.order.start(0, 0)
    before = {k: v.clone() for k, v in run.model.state_dict().items()}
    for batch in list(run.train_loader)[:2]:
        assert run.train_batch(batch) is not None
    checkpoint = load_checkpoint(run.save())
    assert not [k for k in checkpoint["networks"] if "_orig_mod" in k]
    assert checkpoint["options"]["compile"] == "aot_eager" and checkpoint["step"] == 2
    fresh = SpeechToFace(ModelArgs(**checkpoint["model_args"]))
    fresh.load_state_dict(checkpoint["networks"])          # strict: every key, plain names
    assert any(not torch.equal(before[k], v) for k, v in checkpoint["networks"].items())


def test_compile_modes_and_refusal():
    assert compile_mode_for("auto", torch.device("cuda")) == "reduce-overhead"
    assert compile_mode_for("auto", torch.device("cpu")) == "default"
    parser = runtime.build_parser()
    assert parser.parse_args(["--compile"]).compile == "auto"
    assert parser.parse_args([]).compile == "off"
    options = parser.parse_args(["--compile", "--loss", "wgan-gp"])
    with pytest.raises(UserError, match="double backward"):
        runtime.check_options(options)


def test_memory_format_follows_device_and_compile_mode(tiny_pairs, tmp_path, monkeypatch):
    """channels_last everywhere but inductor on CUDA, where compiled channels_last D failed a
    stride check (torch 2.11, H200); the Trainer's networks and GanStep's faces follow it."""
    cuda, cpu = torch.device("cuda"), torch.device("cpu")
    for mode in ("auto", "reduce-overhead", "default", "max-autotune"):
        assert memory_format_for(mode, cuda) == torch.contiguous_format
        assert memory_format_for(mode, cpu) == torch.channels_last
    for mode in ("off", "aot_eager"):
        assert memory_format_for(mode, cuda) == torch.channels_last
    monkeypatch.chdir(tmp_path)
    options = runtime.config_for([
        "--dataset", str(tiny_pairs), "--save_path", "layout", "--audio_seconds", "0.3",
        "--batch_size", "4", "--num_workers", "0", "--no_visdom", "--precision", "fp32"])
    run = trainer.Trainer(options, cpu, tiny_pairs)
    weights = run.model.projection_discriminator.state_dict()
    four_d = [w for w in weights.values() if w.dim() == 4 and w.shape[2] * w.shape[3] > 1]
    assert four_d and all(w.is_contiguous(memory_format=torch.channels_last) for w in four_d)
    assert run.gan_step.compiled.memory_format == torch.channels_last


def test_cudnn_benchmark_is_recorded_and_only_turned_on_for_cuda(tiny_pairs, tmp_path,
                                                                  monkeypatch):
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(torch.backends.cudnn, "benchmark", True)
    assert runtime.main(["--dataset", str(tiny_pairs), "--save_path", "bench", "--epochs", "1",
                         "--max_steps", "1", "--audio_seconds", "0.3", "--batch_size", "4",
                         "--num_workers", "0", "--no_visdom", "--device", "cpu",
                         "--cudnn_benchmark"]) == 0
    assert torch.backends.cudnn.benchmark is False            # CPU: nothing for cuDNN to time
    assert load_checkpoint(tmp_path / "checkpoints/bench/latest.pt")["options"]["cudnn_benchmark"]
    assert runtime.build_parser().parse_args([]).cudnn_benchmark is False
