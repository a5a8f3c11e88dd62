"""--precision auto: the choice given the hardware (both ways), what a run prints and records,
and what --resume keeps. Each run is a few steps on tiny inputs, so no test's running time
depends on whether this CPU computes bf16 natively."""
from __future__ import annotations

import os
import subprocess
import sys
from pathlib import Path

import pytest
import torch

import runtime
from models.blocks import sn
from models.precision import Hardware, choose_precision, cpu_runs_bf16_natively, hardware_of
from tests.conftest import write_two_speaker_pairs
from utils import UserError, load_checkpoint

REPO = Path(__file__).resolve().parents[1]
RUN = ["--audio_seconds", "0.3", "--batch_size", "2", "--num_workers", "0", "--no_visdom"]
AVX2_ONLY = {"ONEDNN_MAX_CPU_ISA": "AVX2", "ATEN_CPU_CAPABILITY": "avx2",  # as an AVX2 CPU
             "MKL_ENABLE_INSTRUCTIONS": "AVX2"}

AVX2_CPU = Hardware("cpu", "AVX2", cpu_native_bf16=False)
AMX_CPU = Hardware("cpu", "AVX512", cpu_native_bf16=True)
AMPERE = Hardware("cuda", cuda_capability=(8, 0))
TURING = Hardware("cuda", cuda_capability=(7, 5))


@pytest.mark.parametrize("hardware, chosen", [(AVX2_CPU, "fp32"), (AMX_CPU, "bf16"),
                                              (AMPERE, "bf16"), (TURING, "fp32"),
                                              (Hardware("cuda", cuda_capability=(9, 0)), "bf16")])
def test_auto_picks_bf16_only_where_the_hardware_computes_it(hardware, chosen):
    precision, line = choose_precision("auto", hardware)
    assert precision == chosen
    assert line.startswith(f"precision: {chosen} (--precision auto:")
    assert ("natively" in line) == (chosen == "bf16")


def test_explicit_bf16_on_a_cpu_that_emulates_it_runs_after_a_note():
    precision, line = choose_precision("bf16", AVX2_CPU)
    assert precision == "bf16"
    assert line.startswith("note: --precision bf16 on this CPU (AVX2) is emulated and much slower")


def test_explicit_choices_are_kept_and_bf16_is_refused_on_a_gpu_without_it():
    for requested in ("fp32", "fp16"):
        assert choose_precision(requested, AVX2_CPU)[0] == requested
        assert choose_precision(requested, AMPERE)[0] == requested
    assert choose_precision("bf16", AMX_CPU) == ("bf16", "precision: bf16")
    with pytest.raises(UserError, match=r"compute capability 7\.5\) has no bfloat16 support"):
        choose_precision("bf16", TURING)


def test_this_cpu_is_read_from_what_pytorch_reports():
    hardware = hardware_of(torch.device("cpu"))
    assert hardware.cpu_capability == torch.backends.cpu.get_cpu_capability()
    assert hardware.cpu_native_bf16 == cpu_runs_bf16_natively()
    if not torch.ops.mkldnn._is_mkldnn_bf16_supported():
        assert not hardware.cpu_native_bf16


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("precision")
    write_two_speaker_pairs(folder)
    return folder


def runtime_py(workdir: Path, *args: str, env: dict | None = None) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, str(REPO / "runtime.py"), "--dataset", "pairs.h5",
                           *RUN, *args], cwd=workdir, capture_output=True, text=True,
                          env={**os.environ, **(env or {})}, timeout=300)


def test_a_run_on_an_avx2_only_cpu_prints_and_records_fp32(workdir):
    """oneDNN and ATen held to AVX2, as on a CPU without AVX-512: auto must say fp32."""
    result = runtime_py(workdir, "--save_path", "avx2", "--max_steps", "3", env=AVX2_ONLY)
    assert result.returncode == 0, result.stderr
    assert "precision: fp32 (--precision auto: this CPU (AVX2) has no native bfloat16)" \
        in result.stdout.splitlines()
    checkpoint = load_checkpoint(workdir / "checkpoints" / "avx2" / "latest.pt")
    assert checkpoint["options"]["precision"] == "fp32"


def test_the_checkpoint_records_the_precision_auto_chose_here(workdir, capsys, monkeypatch):
    monkeypatch.chdir(workdir)
    assert runtime.main(["--dataset", "pairs.h5", *RUN, "--save_path", "here",
                         "--max_steps", "1"]) == 0
    expected = "bf16" if cpu_runs_bf16_natively() else "fp32"
    assert f"precision: {expected} (--precision auto:" in capsys.readouterr().out
    options = load_checkpoint(workdir / "checkpoints" / "here" / "latest.pt")["options"]
    assert options["precision"] == expected


def test_resume_keeps_the_recorded_precision_unless_given_again(workdir, capsys, monkeypatch):
    """An fp32 run resumes in fp32 even where auto would choose bf16; a checkpoint written
    before --precision existed resumes in fp32, the only precision there was then."""
    monkeypatch.chdir(workdir)
    assert runtime.main(["--dataset", "pairs.h5", *RUN, "--save_path", "kept", "--epochs", "1",
                         "--precision", "fp32", "--checkpoint_every_steps", "1"]) == 0
    first = workdir / "checkpoints" / "kept" / "checkpoint_epoch0001_step00000001.pt"
    capsys.readouterr()
    assert runtime.main(["--resume", str(first), "--save_path", "kept_resumed"]) == 0
    assert "precision: fp32" in capsys.readouterr().out.splitlines()
    old = load_checkpoint(first)
    del old["options"]["precision"]
    torch.save(old, workdir / "before_precision.pt")
    assert runtime.main(["--resume", "before_precision.pt", "--save_path", "old_resumed"]) == 0
    assert "precision: fp32" in capsys.readouterr().out.splitlines()
    assert load_checkpoint(workdir / "checkpoints" / "old_resumed" / "latest.pt")[
        "options"]["precision"] == "fp32"
    assert runtime.main(["--resume", str(first), "--save_path", "auto_resumed",
                         "--precision", "auto"]) == 0
    out = capsys.readouterr().out
    assert "note: resuming with --precision auto (the checkpoint's run used fp32)" in out
    assert "precision: fp32 (--precision auto:" in out or "precision: bf16 (--precision auto:" in out


def test_spectral_norm_runs_its_power_iteration_in_fp32_under_autocast(monkeypatch):
    """CUDA autocast would run the power iteration's torch.mv in bf16; the spy sees whether
    autocast is on inside it, which is the same question on CPU."""
    seen = []
    original = torch.nn.utils.parametrizations._SpectralNorm._power_method

    def spy(self, weight_mat, n_power_iterations):
        seen.append((torch.is_autocast_enabled("cpu"), weight_mat.dtype))
        return original(self, weight_mat, n_power_iterations)

    monkeypatch.setattr(torch.nn.utils.parametrizations._SpectralNorm, "_power_method", spy)
    layer = sn(torch.nn.Conv2d(8, 16, 3))
    with torch.autocast("cpu", dtype=torch.bfloat16):
        weight = layer.weight
        layer(torch.randn(2, 8, 5, 5))
    assert seen and all(state == (False, torch.float32) for state in seen)
    assert weight.dtype == torch.float32
