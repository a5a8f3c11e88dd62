"""--log_to tensorboard,wandb: real training processes on a tiny real pair file, and what they
logged read back with each tracker's own reader (TensorBoard's EventAccumulator; the W&B
offline run's transaction log, parsed as wandb's protobuf records, and its media files).

No network: W&B runs in offline mode because the processes see no API key (HOME is the
test's folder), which is the product's own choice, not a setting of the tests.
"""
from __future__ import annotations

import io
import json
import os
import shutil
import struct
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import soundfile
from PIL import Image
from tensorboard.backend.event_processing.event_accumulator import EventAccumulator
from tensorboard.backend.event_processing.event_file_loader import EventFileLoader
from tensorboard.compat.proto.event_pb2 import SessionLog
from tensorboard.plugins.hparams.plugin_data_pb2 import HParamsPluginData
from wandb.proto import wandb_internal_pb2

import runtime
from tests.conftest import write_tiny_pairs

REPO = Path(__file__).resolve().parents[1]
# 12 train pairs in batches of 6: two steps per epoch, then the epoch's grids and scores.
FAST = ["--audio_seconds", "0.3", "--batch_size", "6", "--num_workers", "0"]
HELD_OUT_GRID = "faces/held_out_speech_generated_faces_above_the_real_ones"
HELD_OUT_SPEECH = "speech/held_out_speech_in_grid_order"
FIGURES = ("g_loss", "g_adv", "g_l1", "g_fm", "g_softmax", "d_loss", "d_real", "d_fake",
           "d_wrong", "speaker_acc", "lr_G", "lr_D")


def offline_environment(home: Path) -> dict:
    """This machine's environment without any W&B login or setting; HOME in the test."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("WANDB_") and k != "NETRC"}
    return {**env, "HOME": str(home)}


def train(folder: Path, *args: str) -> subprocess.CompletedProcess:
    result = subprocess.run([sys.executable, str(REPO / "runtime.py"), *args], cwd=folder,
                            env=offline_environment(folder), capture_output=True, text=True,
                            timeout=300)
    assert result.returncode == 0, result.stdout[-2000:] + result.stderr[-3000:]
    assert "Traceback" not in result.stdout + result.stderr
    return result


@pytest.fixture(scope="module")
def runs(tmp_path_factory) -> dict:
    """One run folder at three moments: after a first epoch of two steps ("first"), after
    --resume latest trained epoch 2 ("resumed"), and after a resume from the epoch-1
    checkpoint stopped after one step ("rewound": as if the process that logged steps 3-4
    had crashed and its checkpoints were lost)."""
    folder = tmp_path_factory.mktemp("trackers")
    pairs = write_tiny_pairs(folder)
    run, copies, outputs = folder / "checkpoints" / "t", {}, {}
    commands = {
        "first": ["--dataset", str(pairs), "--save_path", "t", "--epochs", "1", *FAST,
                  "--log_to", "tensorboard,wandb"],
        "resumed": ["--save_path", "t", "--resume", "latest", "--epochs", "2"],
        "rewound": ["--save_path", "t", "--resume", str(run / "checkpoint_epoch0001.pt"),
                    "--epochs", "2", "--max_steps", "3"]}
    for moment, command in commands.items():
        outputs[moment] = train(folder, *command).stdout
        copies[moment] = shutil.copytree(run, folder / moment)
    return {"runs": copies, "stdout": outputs}


def events(run: Path) -> EventAccumulator:
    accumulator = EventAccumulator(str(run / "tensorboard"), size_guidance={
        "scalars": 0, "images": 0, "audio": 0, "tensors": 0})
    return accumulator.Reload()


def logged(run: Path, kind: str) -> dict[int, dict]:
    """log.jsonl's records of one kind by step (the complete record to compare with)."""
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    return {r["step"]: r for r in records if r["kind"] == kind}


def hyperparameters(accumulator: EventAccumulator) -> dict:
    content = accumulator.PluginTagToContent("hparams")["_hparams_/session_start_info"]
    values = HParamsPluginData.FromString(content).session_start_info.hparams
    return {name: value.WhichOneof("kind") and getattr(value, value.WhichOneof("kind"))
            for name, value in values.items()}


def wandb_records(path: Path) -> list:
    """The records of a .wandb file: W&B's header, then LevelDB-style log blocks of 32 KiB,
    each chunk a 7-byte header (CRC32, length, type: 1 full, 2 first, 3 middle, 4 last)."""
    data, position, pending, records = path.read_bytes(), 7, b"", []
    assert data[:4] == b":W&B"
    while position + 7 <= len(data):
        if 32768 - position % 32768 < 7:          # a block's tail too short for a header
            position += 32768 - position % 32768
            continue
        _, length, kind = struct.unpack("<IHB", data[position:position + 7])
        if kind == 0:
            break
        pending += data[position + 7:position + 7 + length]
        position += 7 + length
        if kind in (1, 4):
            records.append(wandb_internal_pb2.Record.FromString(pending))
            pending = b""
    return records


def wandb_history(run_folder: Path) -> dict[int, dict]:
    """{step: {key: value}} of one offline W&B run folder; a media value's fields come as
    keys of their own (faces/<window>/_type, .../caption)."""
    history = {}
    for record in wandb_records(next(run_folder.glob("run-*.wandb"))):
        if record.WhichOneof("record_type") == "history":
            row = {item.key or "/".join(item.nested_key): json.loads(item.value_json)
                   for item in record.history.item}
            history.setdefault(row["_step"], {}).update(row)
    return history


def wandb_config(run_folder: Path) -> dict:
    config = {}
    for record in wandb_records(next(run_folder.glob("run-*.wandb"))):
        if record.WhichOneof("record_type") == "config":
            config.update({u.key: json.loads(u.value_json) for u in record.config.update})
    return config


def offline_runs(run: Path) -> list[Path]:
    return sorted((run / "wandb").glob("offline-run-*"))


def scalar_steps(accumulator: EventAccumulator, tag: str) -> list[int]:
    return [event.step for event in accumulator.Scalars(tag)]


def assert_scalars_match_the_log(accumulator: EventAccumulator, run: Path) -> None:
    iterations = logged(run, "iteration")
    for name in FIGURES:
        values = {e.step: e.value for e in accumulator.Scalars(f"train/{name}")}
        assert values == pytest.approx({s: r[name] for s, r in iterations.items()}, rel=1e-6)


def test_a_two_step_run_writes_tensorboard_events_in_its_run_folder(runs):
    run = runs["runs"]["first"]
    accumulator = events(run)
    assert_scalars_match_the_log(accumulator, run)
    assert scalar_steps(accumulator, "train/g_loss") == [1, 2]
    held_out = logged(run, "evaluation")[2]
    for name in ("val_l1", "val_nearest_speaker_acc"):
        assert [(e.step, e.value) for e in accumulator.Scalars(f"evaluation/{name}")] == [
            (2, pytest.approx(held_out[name]))]
    grid = accumulator.Images(HELD_OUT_GRID)
    assert [image.step for image in grid] == [2]
    sent = np.asarray(Image.open(io.BytesIO(grid[0].encoded_image_string)))
    assert np.array_equal(sent, np.asarray(Image.open(run / "samples" / "epoch_0001.png")))
    assert [i.step for i in accumulator.Images(HELD_OUT_GRID.replace(
        "held_out_speech", "training_pairs"))] == [2]
    clips = sorted(tag for tag in accumulator.Tags()["audio"] if tag.startswith(HELD_OUT_SPEECH))
    assert len(clips) == 6                    # the 6 held-out pairs of the first grid row
    clip = accumulator.Audio(clips[0])[0]
    waveform, rate = soundfile.read(io.BytesIO(clip.encoded_audio_string))
    assert (clip.step, rate, waveform.shape) == (1, 16000, (4800,))   # 0.3 s, at step 1
    stored, _ = soundfile.read(run / "samples" / "speech" / "held_out_speech_in_grid_order_00.wav")
    assert np.abs(waveform - stored).max() < 1e-3     # the same clip (both 16-bit)
    options = hyperparameters(accumulator)
    assert options["batch_size"] == 6 and options["log_to"] == "tensorboard,wandb"
    assert options["resume"] == "None" and options["epochs"] == 1


def test_a_two_step_run_writes_an_offline_wandb_run_that_wandb_sync_can_upload(runs):
    run, stdout = runs["runs"]["first"], runs["stdout"]["first"]
    run_id = (run / "wandb_run_id").read_text().strip()
    [folder] = offline_runs(run)
    assert folder.name.endswith(f"-{run_id}")
    assert f"wandb: offline run {run_id} in checkpoints/t/wandb; upload it with `wandb sync " \
           f"checkpoints/t/wandb/offline-run-*-{run_id}`" in stdout
    history, iterations = wandb_history(folder), logged(run, "iteration")
    assert sorted(history) == [1, 2]
    for step, record in iterations.items():
        assert {n: history[step][f"train/{n}"] for n in FIGURES} == pytest.approx(
            {n: record[n] for n in FIGURES})
    assert history[2]["evaluation/val_l1"] == pytest.approx(logged(run, "evaluation")[2]["val_l1"])
    assert history[2][f"{HELD_OUT_GRID}/_type"] == "image-file"       # media keys are nested
    assert history[2][f"{HELD_OUT_GRID}/caption"] == "epoch 1"
    assert history[1][f"{HELD_OUT_SPEECH}/_type"] == "audio"
    assert history[1][f"{HELD_OUT_SPEECH}/count"] == 6
    assert history[1][f"{HELD_OUT_SPEECH}/captions"][0] == "1: anna"
    assert f"{HELD_OUT_SPEECH}/_type" not in history[2]
    assert len(list((folder / "files" / "media" / "images").rglob("*.png"))) == 2
    assert len(list((folder / "files" / "media" / "audio").rglob("*.wav"))) == 6 + 8
    config = wandb_config(folder)
    assert config["batch_size"] == 6 and config["save_path"] == "t" and config["resume"] is None


def test_a_resume_continues_the_same_tensorboard_run_and_wandb_run(runs):
    run = runs["runs"]["resumed"]
    assert len(list((run / "tensorboard").glob("events.out.tfevents.*"))) == 2   # one folder
    accumulator = events(run)
    assert_scalars_match_the_log(accumulator, run)
    assert scalar_steps(accumulator, "train/g_loss") == [1, 2, 3, 4]
    assert scalar_steps(accumulator, "evaluation/val_l1") == [2, 4]
    assert [image.step for image in accumulator.Images(HELD_OUT_GRID)] == [2, 4]
    assert hyperparameters(accumulator)["epochs"] == 1     # the options the run started with
    run_id = (run / "wandb_run_id").read_text().strip()
    assert run_id == (runs["runs"]["first"] / "wandb_run_id").read_text().strip()
    first, second = offline_runs(run)
    assert first.name.endswith(f"-{run_id}") and second.name.endswith(f"-{run_id}")
    history = wandb_history(second)
    assert sorted(history) == [3, 4]       # the speech of its start waited for its first step
    assert history[3][f"{HELD_OUT_SPEECH}/_type"] == "audio"
    assert history[4]["train/g_loss"] == pytest.approx(logged(run, "iteration")[4]["g_loss"])
    assert wandb_config(second)["epochs"] == 2


def test_a_resume_from_an_earlier_checkpoint_hides_the_steps_logged_after_it(runs):
    """As if the process that logged steps 3-4 had crashed and lost its checkpoints: the run
    resumed from epoch 1 (step 2) stops after step 3. Its writer starts with a SessionLog
    START at step 3, so TensorBoard drops every tag's events from step 3 on written before
    it; what remains is what log.jsonl holds, each step once."""
    run = runs["runs"]["rewound"]
    newest = sorted((run / "tensorboard").glob("events.out.tfevents.*"))[-1]
    starts = [event.step for event in EventFileLoader(str(newest)).Load()
              if event.HasField("session_log") and event.session_log.status == SessionLog.START]
    assert starts == [3]
    accumulator = events(run)
    assert_scalars_match_the_log(accumulator, run)
    assert scalar_steps(accumulator, "train/g_loss") == [1, 2, 3]
    assert scalar_steps(accumulator, "evaluation/val_l1") == sorted(logged(run, "evaluation"))
    assert [image.step for image in accumulator.Images(HELD_OUT_GRID)] == [2, 3]
    assert len(offline_runs(run)) == 3


def test_without_the_tracker_packages_training_goes_on_with_one_note_each(tiny_pairs, tmp_path):
    """tensorboard and wandb made unimportable in this process (sys.modules entries of None
    make `import` raise ImportError), as on a machine without them."""
    hide = ("import sys; sys.modules['tensorboard'] = sys.modules['wandb'] = None; "
            f"sys.path.insert(0, {str(REPO)!r}); import runtime; sys.exit(runtime.main())")
    result = subprocess.run(
        [sys.executable, "-c", hide, "--dataset", str(tiny_pairs), "--save_path", "bare",
         "--max_steps", "1", *FAST, "--log_to", "visdom,tensorboard,wandb", "--no_visdom"],
        cwd=tmp_path, env=offline_environment(tmp_path), capture_output=True, text=True,
        timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    notes = [line for line in result.stdout.splitlines() if line.startswith("note: --log_to")]
    assert notes == [f"note: --log_to {name} needs the {name} package (its pinned line is in "
                     "requirements.txt); training goes on without it"
                     for name in ("tensorboard", "wandb")]
    run = tmp_path / "checkpoints" / "bare"
    assert list(logged(run, "iteration")) == [1] and (run / "latest.pt").is_file()
    assert not (run / "tensorboard").exists() and not (run / "wandb").exists()


def test_bad_log_to_is_refused_in_one_line(capsys):
    for value in ("mlflow", "visdom,visdom", "", "tensorboard,"):
        assert runtime.main(["--log_to", value]) == 2, value
        err = capsys.readouterr().err.strip()
        assert err == ("error: --log_to takes one or more of visdom,tensorboard,wandb, "
                       f"comma-separated and each once, got {value!r}"), err


def test_under_torchrun_only_rank_0_writes_the_trackers(tiny_pairs, tmp_path):
    result = subprocess.run(
        [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
         str(REPO / "runtime.py"), "--dataset", str(tiny_pairs), "--save_path", "two",
         "--audio_seconds", "0.3", "--batch_size", "3", "--num_workers", "0", "--epochs", "1",
         "--log_to", "tensorboard,wandb"],
        cwd=tmp_path, env={**offline_environment(tmp_path), "OMP_NUM_THREADS": "1"},
        capture_output=True, text=True, timeout=300)
    assert result.returncode == 0, result.stderr[-3000:]
    run = tmp_path / "checkpoints" / "two"
    assert result.stdout.count("wandb: offline run") == 1 and len(offline_runs(run)) == 1
    assert len(list((run / "tensorboard").glob("events.out.tfevents.*"))) == 1
    assert scalar_steps(events(run), "train/g_loss") == [1, 2]    # global batch 6: two steps
