"""Bad input through the real command line, each a one-line `error:` with exit code 2 and
nothing written: the cases of bad files and values that tests/test_cli.py and tests/test_schema.py do not
already hold (see also the resume refusals in tests/test_resume.py)."""
import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import soundfile

import runtime
from data.audio import AudioError, load_speech
from tests.conftest import write_wav

REPO = Path(__file__).resolve().parents[1]
FAST = ["--audio_seconds", "0.3", "--batch_size", "2", "--num_workers", "0", "--epochs", "1"]


def replace(split_key: str, data):
    def change(f):
        del f[split_key]
        f.create_dataset(split_key, data=data)
    return change


def set_attribute(name: str, value):
    return lambda f: f.attrs.__setitem__(name, value)


BAD_PAIR_FILES = {
    # int16 cannot hold NaN: speech with NaN can only come as floats, refused for its dtype.
    "NaN audio": (replace("train/waveforms", np.full((12, 8000), np.nan, np.float32)),
                  "train/waveforms must be int16 (N, L), found float32"),
    "stereo waveforms": (replace("train/waveforms", np.ones((12, 8000, 2), np.int16)),
                         "train/waveforms must be int16 (N, L)"),
    "faces with an alpha channel": (replace("train/faces", np.zeros((12, 40, 40, 4), np.uint8)),
                                    "train/faces must be uint8 (N, S, S, 3)"),
    "faces as floats": (replace("train/faces", np.zeros((12, 40, 40, 3), np.float32)),
                        "train/faces must be uint8 (N, S, S, 3), found float32"),
    "faces of 2 pixels": (replace("train/faces", np.zeros((12, 2, 2, 3), np.uint8)),
                          "empty windows or faces"),
    "splits with other face sizes": (replace("valid/faces", np.zeros((6, 32, 32, 3), np.uint8)),
                                     "splits disagree on window length or face size"),
    "speaker ids as floats": (replace("train/speaker_ids", np.zeros(12, np.float32)),
                              "train/speaker_ids must be integers"),
    "a sample rate as text": (set_attribute("sample_rate", "16k"), "holds speech at '16k' Hz"),
    "a speaker named twice": (set_attribute("speaker_names", ["anna", "anna", "carl"]),
                              "names a speaker twice"),
}


@pytest.mark.parametrize("case", sorted(BAD_PAIR_FILES))
def test_bad_pair_files_are_one_line_errors_and_write_nothing(tiny_pairs, tmp_path, monkeypatch,
                                                             capsys, case):
    change, expected = BAD_PAIR_FILES[case]
    with h5py.File(tiny_pairs, "a") as f:
        change(f)
    monkeypatch.chdir(tmp_path)
    assert runtime.main(["--dataset", str(tiny_pairs), *FAST]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith(f"error: {tiny_pairs}: ") and "\n" not in err, err
    assert expected in err, err
    assert not (tmp_path / "checkpoints").exists()


def test_a_pair_file_cut_short_is_one_line(tiny_pairs, tmp_path, monkeypatch, capsys):
    whole = tiny_pairs.read_bytes()
    tiny_pairs.write_bytes(whole[: len(whole) // 2])
    monkeypatch.chdir(tmp_path)
    assert runtime.main(["--dataset", str(tiny_pairs), *FAST]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and ("not a readable HDF5 file" in err or "is damaged" in err), err


@pytest.mark.parametrize("args, expected", [
    (["--checkpoint_every_steps", "-1"], "--checkpoint_every_steps must not be negative"),
    (["--keep_checkpoints", "-2"], "--keep_checkpoints must not be negative"),
    (["--max_nonfinite_steps", "0"], "--max_nonfinite_steps must be at least 1"),
])
def test_bad_survival_options_are_one_line(tmp_path, monkeypatch, capsys, args, expected):
    monkeypatch.chdir(tmp_path)
    assert runtime.main(args) == 2
    err = capsys.readouterr().err.strip()
    assert err == f"error: {expected}, got {args[1]}"


# ---------------------------------------------------------------- a read-only output folder

PROBE = """
import contextlib, io, json, sys
import runtime
results = []
for args in json.loads(sys.argv[1]):
    err = io.StringIO()
    with contextlib.redirect_stderr(err):
        results.append([runtime.main(args), err.getvalue()])
print(json.dumps(results))
"""
# Bind-mount a folder onto itself read-only, in a mount namespace of its own (gone on exit).
READ_ONLY = 'mount --bind "$1" "$1" && mount -o remount,ro,bind "$1" "$1" && shift && exec "$@"'


def run_with_read_only_folder(folder: Path, cases: list[list[str]], cwd: Path) -> list:
    """Run CLI cases in a process for which `folder` is really read-only. As root a chmod
    does not stop writes, so root gets a read-only mount instead."""
    prefix = []
    if os.geteuid() == 0:
        try:
            can_mount = subprocess.run(["unshare", "--mount", "true"]).returncode == 0
        except FileNotFoundError:
            can_mount = False
        if not can_mount:
            pytest.skip("running as root without the right to mount: no folder is read-only")
        prefix = ["unshare", "--mount", "sh", "-c", READ_ONLY, "sh", str(folder)]
    else:
        folder.chmod(0o555)
    result = subprocess.run([*prefix, sys.executable, "-c", PROBE, json.dumps(cases)], cwd=cwd,
                            capture_output=True, text=True, timeout=180,
                            env={**os.environ, "PYTHONPATH": str(REPO)})
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout.strip().splitlines()[-1])


def test_a_read_only_output_folder_is_one_line(tiny_pairs, tmp_path):
    (tmp_path / "checkpoints" / "old").mkdir(parents=True)
    (tmp_path / "checkpoints" / "old" / "log.jsonl").write_text('{"epoch": 1}\n')
    run = ["--dataset", str(tiny_pairs), *FAST]
    (old_code, old_err), (new_code, new_err) = run_with_read_only_folder(
        tmp_path / "checkpoints", [[*run, "--save_path", "old"], [*run, "--save_path", "new"]],
        tmp_path)
    assert old_code == 2 and old_err.strip() == (
        "error: the output folder checkpoints/old is read-only; choose another --save_path")
    assert new_code == 2 and new_err.startswith(
        "error: cannot create the output folder checkpoints/new (")
    assert new_err.count("\n") == 1
    assert (tmp_path / "checkpoints" / "old" / "log.jsonl").read_text() == '{"epoch": 1}\n'


# ---------------------------------------------------------------- audio given to inference

def test_a_wav_whose_header_claims_an_absurd_rate_is_refused(tmp_path):
    path = tmp_path / "one_hertz.wav"
    soundfile.write(str(path), np.full(16000, 0.1, np.float32), 1)
    with pytest.raises(AudioError, match="its header says 1 Hz, outside 4000 to 384000 Hz"):
        load_speech(path)


def test_a_wav_at_an_odd_rate_is_converted_quickly(tmp_path):
    """16001 Hz is a 16000 x 16001 sinc kernel for torchaudio (gigabytes); it is read as
    16000 Hz instead, a 0.006% stretch."""
    speech = load_speech(write_wav(tmp_path / "odd.wav", 1.0, rate=16001))
    assert speech.dtype == np.float32 and len(speech) == 16001
    stereo = load_speech(write_wav(tmp_path / "odd.wav", 1.0, rate=44099, channels=2,
                                   subtype="PCM_U8"))
    assert abs(len(stereo) - 16000) <= 1 and 0.3 < np.abs(stereo).max() < 1.05
