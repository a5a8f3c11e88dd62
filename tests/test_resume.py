"""Training that survives, on a real run: exact resume inside an epoch; SIGTERM to the whole
process group (with DataLoader workers), then kill -9 in the middle of a checkpoint write,
then resume; rotation; a write that fails; a run that diverges; resume refusals.

One uninterrupted run is the reference; every interrupted run must end bit-identical to it.
"""
import contextlib
import json
import os
import resource
import shutil
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import torch

import runtime
import trainer
from models.speech_encoder import SpeechEncoder, SpeechEncoderConfig
from tests.conftest import assert_identical, write_two_speaker_pairs
from utils import StopSignals
from utils import UserError, load_checkpoint, remove_partial_files, save_checkpoint_file

REPO = Path(__file__).resolve().parents[1]
# 4 train pairs in batches of 2: two steps per epoch, two epochs; 0.3 s of speech per face.
RUN = ["--audio_seconds", "0.3", "--batch_size", "2", "--epochs", "2", "--no_visdom",
       "--noise_dim", "4",   # noise: G draws from the RNG that exact resume restores
       "--precision", "fp32",   # the same on every CPU, whatever --precision auto picks
       # wav2pix's encoder, whose bit-identical resume holds on AVX2 and AVX-512 kernels; the
       # filterbank default ended a resumed run a few rounding steps away under AVX2 (README)
       "--speech_encoder", "segan"]
INSIDE_EPOCH_2 = "checkpoint_epoch0002_step00000003.pt"


@contextlib.contextmanager
def working_directory(path: Path):
    previous = Path.cwd()
    os.chdir(path)
    try:
        yield
    finally:
        os.chdir(previous)


def cli(workdir: Path, *args) -> int:
    with working_directory(workdir):
        return runtime.main([str(a) for a in args])


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("survival")
    write_two_speaker_pairs(folder)
    return folder


def fresh_run(workdir: Path, *args) -> list[str]:
    return ["--dataset", str(workdir / "pairs.h5"), *RUN, *args]


@pytest.fixture(scope="module")
def reference(workdir) -> Path:
    """The uninterrupted run (workers 0): a checkpoint after step 3, inside epoch 2, and one
    at the end."""
    assert cli(workdir, *fresh_run(workdir, "--save_path", "straight", "--num_workers", "0",
                                   "--checkpoint_every_steps", "3")) == 0
    return workdir / "checkpoints" / "straight"


def log_records(run_dir: Path) -> list[dict]:
    return [json.loads(line) for line in (run_dir / "log.jsonl").read_text().splitlines()]


def logged_figures(run_dir: Path) -> list[dict]:
    """Every step's losses, every evaluation and every epoch's means, in order, without times."""
    return [{k: v for k, v in r.items() if k != "time"} for r in log_records(run_dir)
            if r["kind"] in ("iteration", "evaluation", "epoch")]


def assert_same_run(reference: Path, run_dir: Path) -> None:
    """Same final networks, optimisers and random generators; same logged epochs."""
    mine, theirs = load_checkpoint(run_dir / "latest.pt"), load_checkpoint(reference / "latest.pt")
    for key in ("networks", "optimizer_g", "optimizer_d", "epoch", "step", "model_args"):
        assert_identical(mine[key], theirs[key], key)
    assert_identical(mine["resume_state"], theirs["resume_state"], "resume_state")
    logged = logged_figures(run_dir)
    assert logged == logged_figures(reference)[-len(logged):]
    grid = "samples/epoch_0002.png"
    assert (run_dir / grid).read_bytes() == (reference / grid).read_bytes()


# ---------------------------------------------------------------- in one process

def test_checkpoints_carry_their_metadata(reference):
    assert sorted(p.name for p in reference.glob("checkpoint_*.pt")) == [
        "checkpoint_epoch0002.pt", INSIDE_EPOCH_2]
    assert (reference / "latest.pt").samefile(reference / "checkpoint_epoch0002.pt")
    checkpoint = load_checkpoint(reference / INSIDE_EPOCH_2)
    assert checkpoint["format_version"] == 2 and checkpoint["options"]["batch_size"] == 2
    assert checkpoint["model_args"]["audio_samples"] == 4800
    assert (checkpoint["epoch"], checkpoint["step"]) == (1, 3)
    assert checkpoint["resume_state"]["epoch_progress"]["pairs_done"] == 2
    assert {"python", "numpy", "torch"} <= checkpoint["resume_state"]["rng"].keys()


def test_resume_inside_an_epoch_is_bit_identical(workdir, reference):
    assert cli(workdir, "--resume", reference / INSIDE_EPOCH_2, "--save_path", "resumed") == 0
    assert_same_run(reference, workdir / "checkpoints" / "resumed")


def test_resume_of_an_augmented_balanced_run_is_bit_identical(workdir):
    """--augment and --speech_augment draw from the random generators a checkpoint restores;
    --balance speakers' order is a function of seed and epoch."""
    assert cli(workdir, *fresh_run(workdir, "--augment", "color,translation,cutout",
                                   "--speech_augment", "shift,noise,gain",
                                   "--balance", "speakers",
                                   "--save_path", "augmented", "--num_workers", "0",
                                   "--checkpoint_every_steps", "3")) == 0
    straight = workdir / "checkpoints" / "augmented"
    assert cli(workdir, "--resume", straight / INSIDE_EPOCH_2,
               "--save_path", "augmented_resumed") == 0
    assert_same_run(straight, workdir / "checkpoints" / "augmented_resumed")


def test_the_encoder_backward_is_exact_where_onednn_is_not():
    """At 0.3 s the last encoder block convolves 5 zero-padded samples with a kernel of 15.
    There oneDNN's convolution backward (torch 2.13, CPU) returns input gradients that change
    from run to run and are at times far off (up to 74% of their largest value against a
    float64 reference, measured); the unfold path is exact and the same every run. Exact
    resume, and training itself, need the unfold path to stay."""
    last_block = SpeechEncoder(SpeechEncoderConfig(audio_samples=4800)).convs[15]
    assert last_block.padding_mode == "zeros"
    features = torch.randn(64, 512, 5, requires_grad=True)
    upstream = torch.randn(64, 1024, 2)
    exact = features.detach().double().requires_grad_()
    torch.nn.functional.conv1d(exact, last_block.weight.double(), last_block.bias.double(),
                               stride=4, padding=7).backward(upstream.double())
    gradients = []
    for _ in range(5):
        features.grad, last_block.weight.grad = None, None
        last_block(features).backward(upstream)
        gradients.append((features.grad.clone(), last_block.weight.grad.clone()))
    assert all(torch.equal(a, b) for later in gradients[1:] for a, b in zip(gradients[0], later))
    torch.testing.assert_close(gradients[0][0].double(), exact.grad, rtol=1e-4, atol=1e-5)


# ---------------------------------------------------------------- real signals, real processes

def start(workdir: Path, *args) -> subprocess.Popen:
    """runtime.py in its own process group, as a shell or a scheduler starts it."""
    return subprocess.Popen([sys.executable, str(REPO / "runtime.py"), *map(str, args)],
                            cwd=workdir, start_new_session=True, text=True,
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE)


def wait_for(condition, process: subprocess.Popen, timeout: float = 180) -> None:
    deadline = time.monotonic() + timeout
    while not condition():
        if process.poll() is not None:
            pytest.fail(f"the run ended first (exit {process.returncode}): "
                        f"{process.stderr.read()[-2000:]}")
        assert time.monotonic() < deadline, "timed out"
        time.sleep(0.01)


def assert_group_gone(group: int, timeout: float = 20) -> None:
    """No process of the run is left, DataLoader workers included."""
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            os.killpg(group, 0)
        except ProcessLookupError:
            return
        time.sleep(0.05)
    pytest.fail("processes of the stopped run are still alive")


def test_sigterm_then_kill_9_mid_write_then_resume_is_bit_identical(workdir, reference):
    """With DataLoader workers, a checkpoint every step and the newest two kept:
    SIGTERM to the whole process group (workers included, as a scheduler sends it) saves and
    exits; a resumed process is killed with -9 while it writes its next checkpoint; a second
    resume ends bit-identical to the uninterrupted run."""
    run_dir = workdir / "checkpoints" / "interrupted"
    first = start(workdir, *fresh_run(workdir, "--save_path", "interrupted", "--num_workers",
                                      "2", "--checkpoint_every_steps", "1",
                                      "--keep_checkpoints", "2"))
    wait_for((run_dir / "latest.pt").exists, first)
    os.killpg(first.pid, signal.SIGTERM)
    _, err = first.communicate(timeout=180)
    assert first.returncode == 128 + signal.SIGTERM, err
    assert err.strip().splitlines()[-1].startswith(
        "stopped by SIGTERM: saved checkpoints/interrupted/")
    assert "Traceback" not in err
    assert_group_gone(first.pid)
    saved_step = load_checkpoint(run_dir / "latest.pt")["step"]

    second = start(workdir, "--resume", "latest", "--save_path", "interrupted",
                   "--num_workers", "0")
    wait_for(lambda: any(run_dir.glob(".checkpoint_*.partial")), second)
    os.killpg(second.pid, signal.SIGKILL)
    second.wait(timeout=60)
    assert load_checkpoint(run_dir / "latest.pt")["step"] >= saved_step    # whole, readable

    assert cli(workdir, "--resume", "latest", "--save_path", "interrupted") == 0
    assert not list(run_dir.glob(".*.partial"))
    assert len(list(run_dir.glob("checkpoint_*.pt"))) == 2
    assert_same_run(reference, run_dir)


def test_a_second_signal_stops_at_once():
    """The first SIGINT only asks for a checkpoint and a clean stop; a second one does not wait."""
    before = signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)
    with StopSignals() as signals:
        os.kill(os.getpid(), signal.SIGTERM)
        for _ in range(100):
            if signals.received:
                break
            time.sleep(0.01)
        assert signals.received == signal.SIGTERM
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGINT)
            time.sleep(1)
    assert (signal.getsignal(signal.SIGINT), signal.getsignal(signal.SIGTERM)) == before


def test_the_same_signal_twice_at_once_is_one_request():
    """SLURM's SIGTERM and torchrun's forwarded one arrive milliseconds apart: one request to
    stop after the step. The same signal after REPEAT_SECONDS is a second request."""
    with StopSignals() as signals:
        os.kill(os.getpid(), signal.SIGTERM)
        os.kill(os.getpid(), signal.SIGTERM)
        time.sleep(0.1)
        assert signals.received == signal.SIGTERM
        time.sleep(StopSignals.REPEAT_SECONDS + 0.1)
        with pytest.raises(KeyboardInterrupt):
            os.kill(os.getpid(), signal.SIGTERM)
            time.sleep(1)


# ---------------------------------------------------------------- faults

def link_or_copy(source: str, destination: str) -> None:
    """Checkpoints are only ever replaced, never written in place: a hard link is a safe copy.
    Logs and PNGs are rewritten in place, so they are copied."""
    if source.endswith(".pt"):
        os.link(source, destination)
    else:
        shutil.copy2(source, destination)


def clone_run(reference: Path, destination: Path, latest: str) -> Path:
    """A copy of the reference run folder whose latest.pt is `latest`."""
    shutil.copytree(reference, destination, copy_function=link_or_copy)
    (destination / "latest.pt").unlink()
    os.link(destination / latest, destination / "latest.pt")
    return destination


def identity(path: Path) -> tuple:
    stat = path.stat()
    return stat.st_ino, stat.st_size, stat.st_mtime_ns


@contextlib.contextmanager
def file_size_limit(size: int):
    """Writes past `size` bytes fail with EFBIG, as on a full disk (Python ignores SIGXFSZ)."""
    soft, hard = resource.getrlimit(resource.RLIMIT_FSIZE)
    resource.setrlimit(resource.RLIMIT_FSIZE, (size, hard))
    try:
        yield
    finally:
        resource.setrlimit(resource.RLIMIT_FSIZE, (soft, hard))


def test_a_write_that_fails_mid_file_keeps_the_previous_checkpoint(workdir, reference, capsys):
    """The kernel refuses the checkpoint's bytes past 32 MB: the same failing write() as a
    full disk, without root. The run stops in one line and loses nothing."""
    run_dir = clone_run(reference, workdir / "checkpoints" / "full", INSIDE_EPOCH_2)
    before = identity(run_dir / "latest.pt")
    with file_size_limit(32 << 20):
        code = cli(workdir, "--resume", "latest", "--save_path", "full")
    error = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in error, error
    assert error.startswith("error: could not write the checkpoint checkpoints/full/")
    assert "(File too large)" in error and "checkpoints/full/latest.pt is intact" in error
    assert identity(run_dir / "latest.pt") == before
    assert load_checkpoint(run_dir / "latest.pt")["step"] == 3
    assert not list(run_dir.glob(".*.partial"))


# A writer killed mid-file: pickling this object blocks, with the partial file open.
KILLED_MID_WRITE = """
import sys, time
sys.path.insert(0, sys.argv[1])
from utils import save_checkpoint_file
class Stalls:
    def __reduce__(self):
        time.sleep(120)
        return (int, ())
save_checkpoint_file(sys.argv[2], {"step": 99, "stalls": Stalls()})
"""


def test_best_pt_is_written_as_every_checkpoint_is(workdir, reference):
    """best.pt (--eval_every) goes through the same durable writer: a full disk is one line
    and keeps the previous best.pt, and a kill mid-write leaves it too, with a partial file
    that the next run's clean-up removes."""
    run_dir = clone_run(reference, workdir / "checkpoints" / "best", INSIDE_EPOCH_2)
    best = save_checkpoint_file(run_dir / "best.pt", load_checkpoint(run_dir / "latest.pt"))
    before = identity(best)
    with file_size_limit(1 << 20), pytest.raises(UserError) as failed:
        save_checkpoint_file(best, {**load_checkpoint(best), "padding": torch.zeros(1 << 21)})
    message = str(failed.value)
    assert "\n" not in message and message.startswith(f"could not write the checkpoint {best} "
                                                      "(File too large)")
    assert "latest.pt is intact" in message
    assert identity(best) == before and not list(run_dir.glob(".*.partial"))
    writer = subprocess.Popen([sys.executable, "-c", KILLED_MID_WRITE, str(REPO), str(best)],
                              stderr=subprocess.PIPE, text=True)
    wait_for(lambda: any(run_dir.glob(".best.pt.*.partial")), writer)
    writer.kill()
    writer.wait()
    assert identity(best) == before and load_checkpoint(best)["step"] == 3
    assert [p.name for p in remove_partial_files(run_dir)] == [f".best.pt.{writer.pid}.partial"]
    assert not list(run_dir.glob(".*.partial"))


def test_a_diverging_run_stops_and_keeps_its_last_good_checkpoint(workdir, reference, capsys):
    """An absurd learning rate really makes the losses NaN: each such step is skipped and
    logged, two in a row stop the run, and no checkpoint is written from a skipped state."""
    run_dir = clone_run(reference, workdir / "checkpoints" / "diverge", INSIDE_EPOCH_2)
    before = identity(run_dir / "latest.pt")
    code = cli(workdir, "--resume", "latest", "--save_path", "diverge", "--epochs", "3",
               "--lr_G", "1e30", "--lr_D", "1e30", "--max_nonfinite_steps", "2")
    err = capsys.readouterr().err.strip()
    assert code == 2 and "\n" not in err
    assert "2 steps in a row had a non-finite loss" in err
    assert "the last good checkpoint is checkpoints/diverge/latest.pt" in err
    assert identity(run_dir / "latest.pt") == before
    assert not list(run_dir.glob("checkpoint_epoch0003*"))
    records = log_records(run_dir)
    skipped = [r for r in records if r["kind"] == "skipped_step"]
    assert [r["step"] for r in skipped] == [4, 5]
    assert "nan" in skipped[-1].values()
    epochs = [r for r in records if r["kind"] == "epoch"]
    assert [(r["epoch"], r["skipped_steps"]) for r in epochs] == [(1, 0), (2, 1)]


def model_and_optimisers(run: trainer.Trainer) -> dict:
    state = {"networks": run.model.state_dict(), "optimizer_g": run.gan_step.optimizer_g.state_dict(),
             "optimizer_d": run.gan_step.optimizer_d.state_dict()}
    return {k: {n: v.clone() if isinstance(v, torch.Tensor) else v for n, v in d.items()}
            for k, d in state.items()}


def test_a_batch_with_a_non_finite_loss_changes_nothing(workdir):
    """A poisoned batch (NaN speech) makes D's loss NaN: no optimiser step, and the BatchNorm
    and spectral-norm statistics its forward pass touched are put back."""
    with working_directory(workdir):
        options = runtime.config_for(fresh_run(workdir, "--save_path", "poison", "--num_workers", "0"))
        run = trainer.Trainer(options, torch.device("cpu"), workdir / "pairs.h5")
        batch = next(iter(run.train_loader))
        poisoned = list(batch)
        poisoned[0] = batch[0].clone()
        poisoned[0][0, 0, 100] = float("nan")
        before = model_and_optimisers(run)
        assert run.train_batch(poisoned) is None
        assert_identical(model_and_optimisers(run), before)
        assert (run.step, run.guard.in_a_row) == (1, 1)
        logged = log_records(run.run_dir)[-1]
        assert logged["kind"] == "skipped_step" and logged["d_loss"] == "nan"
        assert run.train_batch(batch) is not None and run.guard.in_a_row == 0
        after = run.model.state_dict()
        assert not torch.equal(after["face_generator.layers.1.running_mean"],
                               before["networks"]["face_generator.layers.1.running_mean"])


# ---------------------------------------------------------------- resume refusals, nothing lost

def folder_identity(run_dir: Path) -> dict:
    return {p.name: identity(p) for p in run_dir.iterdir() if p.is_file()}


@pytest.mark.parametrize("args, expected", [
    (["--image_size", "128"], "cannot resume into another architecture (image_size 64 vs 128"),
    (["--audio_seconds", "0.35"], "(audio_samples 4800 vs 5600"),
    (["--d_channels", "32"], "(d_channels 64 vs 32"),
])
def test_resume_into_another_architecture_says_what_differs(workdir, reference, capsys,
                                                            args, expected):
    untouched = folder_identity(reference)
    code = cli(workdir, "--resume", reference / INSIDE_EPOCH_2, "--save_path", "straight", *args)
    err = capsys.readouterr().err.strip()
    assert code == 2 and expected in err and "\n" not in err, err
    assert folder_identity(reference) == untouched


def test_resume_refusals_are_one_line(workdir, reference, capsys, tmp_path):
    old = tmp_path / "old.pt"
    torch.save({"format_version": 1, "model_args": {}, "networks": {}, "options": {}}, old)
    cut = tmp_path / "cut.pt"
    cut.write_bytes((reference / "latest.pt").read_bytes()[: 1 << 20])
    cases = {
        ("--resume", "latest", "--save_path", "never_ran"): "holds no checkpoint yet",
        ("--resume", old): "no resume state",
        ("--resume", cut): "not a readable checkpoint",
        ("--resume", "latest", "--inference"): "--resume continues training",
        ("--resume", "latest", "--pre_trained_gen", old): "drop --pre_trained_gen",
        ("--inference", "--pre_trained_gen", cut): "not a readable checkpoint",
    }
    for args, expected in cases.items():
        assert cli(workdir, *args) == 2, args
        err = capsys.readouterr().err.strip()
        assert expected in err and "\n" not in err, (args, err)


def test_pretrained_weights_from_another_architecture_say_what_differs(workdir, reference,
                                                                       capsys):
    code = cli(workdir, *fresh_run(workdir, "--save_path", "other", "--image_size", "128",
                                   "--pre_trained_gen", reference / "latest.pt"))
    err = capsys.readouterr().err.strip()
    assert code == 2 and "different architecture (image_size 64 vs 128" in err, err
