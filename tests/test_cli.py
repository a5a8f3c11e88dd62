"""The command line as a user meets it: --help, and one-line errors with exit code 2."""
import subprocess
import sys
from pathlib import Path

import pytest

import runtime
from tests.conftest import write_wav

REPO = Path(__file__).resolve().parents[1]


def run_cli(*args, cwd=None):
    return subprocess.run([sys.executable, str(REPO / "runtime.py"), *args], cwd=cwd or REPO,
                          capture_output=True, text=True, timeout=120)


def test_help_lists_every_wav2pix_option():
    result = run_cli("--help")
    assert result.returncode == 0
    for option in ("--lr_D", "--lr_G", "--vis_screen", "--save_path", "--l1_coef", "--l2_coef",
                   "--softmax_coef", "--pre_trained_disc", "--pre_trained_gen", "--batch_size",
                   "--num_workers", "--epochs", "--image_size", "--inference", "--dataset",
                   "--device", "--seed", "--audio_seconds", "--noise_dim", "--checkpoint_every"):
        assert option in result.stdout


def test_wav2pix_defaults():
    options = runtime.build_parser().parse_args([])
    assert (options.lr_D, options.lr_G, options.l1_coef, options.l2_coef, options.softmax_coef,
            options.batch_size, options.num_workers, options.epochs, options.image_size,
            options.vis_screen) == (0.0004, 0.0001, 50, 100, 20, 64, 8, 200, 64, "gan")


def test_a_bad_option_is_one_line_exit_2_in_a_real_process():
    result = run_cli("--image_size", "96")
    assert result.returncode == 2
    assert result.stderr.strip() == "error: --image_size must be 64 or 128, got 96"
    assert "Traceback" not in result.stderr


BAD_OPTIONS = {
    "--image_size 96": "64 or 128",
    "--lr_D -0.1": "--lr_D must be a positive",
    "--lr_G 0": "--lr_G must be a positive",
    "--lr_G nan": "--lr_G must be a positive",
    "--batch_size 0": "--batch_size must be a positive",
    "--epochs -3": "--epochs must be a positive",
    "--audio_seconds 0.1": "between 0.3 and 4",
    "--audio_seconds 5": "between 0.3 and 4",
    "--l1_coef -1": "--l1_coef must be zero or positive",
    "--gdl_coef -0.5": "--gdl_coef must be zero or positive",
    "--noise_dim -2": "--noise_dim must not be negative",
    "--num_workers -1": "--num_workers must not be negative",
    "--checkpoint_every 0": "--checkpoint_every must be a positive",
    "--save_path ../outside": "--save_path must be a plain relative name",
    "--audio x.wav": "needs --inference",
    "--dataset /no/such/file.h5": "no such file",
    "--device cuda": "no CUDA device",
    "--precision fp8": "argument --precision: invalid choice: 'fp8'",
    "--batchnorm bogus": "argument --batchnorm: invalid choice: 'bogus'",
    "--ema_decay x": "argument --ema_decay: invalid float value: 'x'",
    "--d_channels 4": "--d_channels is D's first convolution's width, 8 to 512",
    "--no_such_option 1": "unrecognized arguments: --no_such_option 1",
}


@pytest.mark.parametrize("args", sorted(BAD_OPTIONS))
def test_bad_options_are_refused_in_one_line(args, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    if args == "--device cuda":
        import torch
        if torch.cuda.is_available():
            pytest.skip("a CUDA device is present")
    assert runtime.main(args.split()) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err
    assert BAD_OPTIONS[args] in err


def test_bad_data_and_files_are_refused_in_one_line(tiny_pairs, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    cases = {
        ("--dataset", str(tiny_pairs), "--batch_size", "64", "--audio_seconds", "0.3"):
            "larger than the train split",
        ("--dataset", str(tiny_pairs)): "lower --audio_seconds",
        ("--inference", "--pre_trained_gen", "missing.pt"): "no such checkpoint",
    }
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"\x00not a checkpoint")
    cases[("--inference", "--pre_trained_gen", str(garbage))] = "not a readable checkpoint"
    (tmp_path / "checkpoints").mkdir()
    (tmp_path / "checkpoints" / "taken").write_text("a file where the run folder should be")
    cases[("--dataset", str(tiny_pairs), "--audio_seconds", "0.3", "--batch_size", "2",
           "--save_path", "taken")] = "is a file"
    for args, expected in cases.items():
        assert runtime.main(list(args)) == 2, args
        err = capsys.readouterr().err.strip()
        assert expected in err and "\n" not in err, (args, err)


@pytest.fixture
def checkpoint(tiny_pairs, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert runtime.main(["--dataset", str(tiny_pairs), "--save_path", "c", "--epochs", "1",
                         "--max_steps", "1", "--audio_seconds", "0.3", "--batch_size", "4",
                         "--num_workers", "0"]) == 0
    return tmp_path / "checkpoints" / "c" / "latest.pt"


def test_unusable_audio_is_refused_in_one_line(checkpoint, tmp_path, capsys):
    not_audio = tmp_path / "notes.wav"
    not_audio.write_text("this is text, not audio")
    empty = tmp_path / "empty.wav"
    empty.write_bytes(b"")
    no_audio = tmp_path / "pictures"      # (the run folder holds wav clips of its speech)
    no_audio.mkdir()
    (no_audio / "face.png").write_bytes(b"")
    cases = {
        str(write_wav(tmp_path / "short.wav", 0.1)): "shorter than one window",
        str(write_wav(tmp_path / "silent.wav", 1.0, amplitude=0.0)): "silent",
        str(not_audio): "not a readable audio file",
        str(empty): "not a readable audio file",
        str(tmp_path / "absent.wav"): "no such file",
        str(no_audio): "no audio files",
    }
    for path, expected in cases.items():
        code = runtime.main(["--inference", "--pre_trained_gen", str(checkpoint),
                             "--audio", path, "--save_path", "x"])
        err = capsys.readouterr().err.strip()
        assert code == 2 and expected in err and "\n" not in err, (path, err)


def test_num_workers_above_the_core_count_is_clipped_with_a_note(tiny_pairs, tmp_path,
                                                                 monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert runtime.main(["--dataset", str(tiny_pairs), "--save_path", "w", "--epochs", "1",
                         "--max_steps", "1", "--audio_seconds", "0.3", "--batch_size", "4",
                         "--num_workers", "512"]) == 0
    assert "--num_workers 512 is more than this machine's" in capsys.readouterr().out
