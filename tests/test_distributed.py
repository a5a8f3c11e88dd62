"""Several processes (torchrun, DDP over gloo on CPU), the averaged generator, mixed precision.

The runs share one tiny real pair file: a single-process run makes a checkpoint; a real
2-process torchrun run starts from it; single-process runs on the same global batch are
the reference it is compared with.
"""
import json
import math
import os
import subprocess
import sys
from pathlib import Path

import numpy as np
import pytest
import torch

import runtime
from data.dataset import SpeechFaceDataset
from data.schema import validate_pair_file, write_pair_file
from ema import EMA_PARTS, GeneratorEma
from models import ModelArgs, SpeechToFace
from tests.conftest import make_pairs
from trainer import generator_from_checkpoint
from utils import load_checkpoint

REPO = Path(__file__).resolve().parents[1]
FAST = ["--audio_seconds", "0.3", "--num_workers", "0", "--epochs", "1", "--no_visdom"]
# BatchNorm on stored statistics and no feature matching: the two terms whose batch
# statistics do not split over processes (see test_two_processes_equal_one_process...).
COMPARABLE = ["--batchnorm", "frozen", "--l2_coef", "0"]


@pytest.fixture(scope="module")
def workdir(tmp_path_factory) -> Path:
    """A run folder root holding a real pair file: 3 speakers, 12 train pairs."""
    root = tmp_path_factory.mktemp("ddp")
    rng = np.random.default_rng(0)
    splits = {"train": make_pairs(rng, 12, 8000, 40, 3), "valid": make_pairs(rng, 6, 8000, 40, 3)}
    write_pair_file(root / "tiny.h5", splits, ["anna", "bert", "carl"])
    return root


def train_here(workdir: Path, *args: str, threads: int | None = None) -> int:
    """runtime.main in this process, in `workdir`, optionally on a given number of threads."""
    before_dir, before_threads = Path.cwd(), torch.get_num_threads()
    os.chdir(workdir)
    try:
        torch.set_num_threads(threads or before_threads)
        return runtime.main(["--dataset", "tiny.h5", *FAST, *args])
    finally:
        torch.set_num_threads(before_threads)
        os.chdir(before_dir)


@pytest.fixture(scope="module")
def single_process_checkpoint(workdir) -> Path:
    """One default step in one process: the start of the 2-process run."""
    assert train_here(workdir, "--save_path", "base", "--batch_size", "4", "--max_steps", "1") == 0
    return workdir / "checkpoints" / "base" / "latest.pt"


@pytest.fixture(scope="module")
def two_process_run(workdir, single_process_checkpoint) -> subprocess.CompletedProcess:
    """torchrun, 2 processes of batch 2, gloo on CPU: 3 steps (one epoch of 12 pairs)."""
    command = [sys.executable, "-m", "torch.distributed.run", "--standalone", "--nproc_per_node=2",
               str(REPO / "runtime.py"), "--dataset", "tiny.h5", *FAST, *COMPARABLE,
               "--batch_size", "2", "--ema", "--save_path", "two",
               "--pre_trained_gen", str(single_process_checkpoint),
               "--pre_trained_disc", str(single_process_checkpoint)]
    result = subprocess.run(command, cwd=workdir, capture_output=True, text=True, timeout=300,
                            env={**os.environ, "OMP_NUM_THREADS": "1"})
    assert result.returncode == 0, result.stderr[-3000:]
    return result


def one_process(workdir, single_process_checkpoint, name: str, *args: str) -> Path:
    """The same start and options in one process, on one thread as each torchrun process."""
    start = str(single_process_checkpoint)
    assert train_here(workdir, *COMPARABLE, "--ema", "--save_path", name, "--pre_trained_gen",
                      start, "--pre_trained_disc", start, *args, threads=1) == 0
    return workdir / "checkpoints" / name


def log_records(run: Path) -> list[dict]:
    return [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]


def epoch_figures(run: Path) -> dict:
    """The first epoch's means and held-out scores, from the run's log."""
    return {k: v for r in log_records(run) if r["kind"] in ("epoch", "evaluation")
            for k, v in r.items()}


def relative_difference(a: dict, b: dict, start: dict, part: str) -> float:
    """|a - b| / |a - start| over a network's trained tensors: how far apart two runs ended,
    measured against how far training moved the weights."""
    keys = [k for k in a if k.startswith(part + ".") and a[k].is_floating_point()
            and not k.endswith(("._u", "._v", "running_mean", "running_var"))]
    apart = sum(((a[k] - b[k]) ** 2).sum() for k in keys).sqrt()
    moved = sum(((a[k] - start[k]) ** 2).sum() for k in keys).sqrt()
    return (apart / moved).item()


# ---------------------------------------------------------------- 2 processes

def test_two_processes_finish_and_only_rank_0_writes(two_process_run, workdir):
    run = workdir / "checkpoints" / "two"
    assert two_process_run.stdout.count("training on cpu x 2 processes (global batch 2 x 2)") == 1
    assert two_process_run.stdout.count("epoch 1:") == 1
    kinds = [record["kind"] for record in log_records(run)]
    assert kinds.count("start") == 1 and kinds.count("epoch") == 1
    assert kinds.count("iteration") == 3          # rank 0's steps only, not rank 1's too
    assert sorted(p.name for p in run.iterdir()) == [
        "checkpoint_epoch0001.pt", "index.html", "latest.pt", "log.jsonl", "options.json",
        "samples"]
    assert not list(run.glob(".*partial"))


def test_two_process_checkpoint_loads_and_renders_in_one_process(two_process_run, workdir,
                                                                 monkeypatch):
    checkpoint = load_checkpoint(workdir / "checkpoints" / "two" / "latest.pt")
    assert checkpoint["world_size"] == 2 and checkpoint["step"] == 3
    assert not any(k.startswith("module.") for k in checkpoint["networks"])   # unwrapped
    SpeechToFace(ModelArgs(**checkpoint["model_args"])).load_state_dict(checkpoint["networks"])
    monkeypatch.chdir(workdir)
    code = runtime.main(["--inference", "--pre_trained_gen", "checkpoints/two",
                         "--dataset", "tiny.h5", "--save_path", "two"])
    assert code == 0
    assert len(list((workdir / "results" / "two").glob("*.png"))) == 6   # the valid split


def test_two_processes_equal_one_process_with_the_global_batch(two_process_run, workdir,
                                                              single_process_checkpoint):
    """2 processes x batch 2 against 1 process x batch 4, from the same checkpoint.

    Why they can be compared: the DistributedSampler gives rank r the items perm[r::2] of
    the permutation the single process reads, so each step's global batch holds the same
    4 pairs; crops and wrong faces come from (seed, epoch, index), whoever reads the item;
    DDP starts every rank from rank 0's weights and averages gradients, and each loss is a
    batch mean, so the mean of two half-batch gradients is the full-batch gradient. Two
    terms do not split over processes by design and are held out: BatchNorm's batch
    statistics (--batchnorm frozen normalises with the stored ones) and feature matching,
    a squared difference of batch means (--l2_coef 0).

    The tolerance: what remains is float summation order (two half sums averaged by
    all-reduce against one sum, and kernels that block batch 2 and 4 differently). Adam
    amplifies it: its early steps move each weight by about lr whatever the gradient's
    size, so a gradient component near rounding level can flip its sign. The reference
    runs on one thread as torchrun's processes do (OMP_NUM_THREADS=1), since the thread
    count changes summation order too: measured on this data, two threads instead of one
    end up to 1e-3 of the training movement away (30% for the speech encoder before its
    convolutions became unfold+matmul), the 2-process run 4e-6 to 1.5e-5 per network,
    logged losses within 1e-7 relative. We allow 1% per network. A run that sees only
    half of each global batch (what ranks that did not average would learn) ends 19-97%
    away, and the check below shows it fails.
    """
    one = one_process(workdir, single_process_checkpoint, "one", "--batch_size", "4")
    half = one_process(workdir, single_process_checkpoint, "half", "--batch_size", "2",
                       "--max_steps", "3")
    two = workdir / "checkpoints" / "two"
    start = load_checkpoint(single_process_checkpoint)["networks"]
    a, b, c = (load_checkpoint(run / "latest.pt") for run in (one, two, half))
    for part in ("speech_encoder", "face_generator", "speaker_classifier",
                 "projection_discriminator"):
        assert relative_difference(a["networks"], b["networks"], start, part) < 0.01, part
        assert relative_difference(a["networks"], c["networks"], start, part) > 0.1, part
    for part in EMA_PARTS:
        assert relative_difference(a["ema"], b["ema"], start, part) < 0.01, part
    logged_one, logged_two = epoch_figures(one), epoch_figures(two)
    for name in ("d_loss", "g_loss", "g_adv", "g_l1", "g_softmax", "val_l1"):
        assert math.isclose(logged_one[name], logged_two[name], rel_tol=1e-4), name


# ---------------------------------------------------------------- EMA

def test_ema_weights_differ_from_raw_and_round_trip(two_process_run, workdir):
    path = workdir / "checkpoints" / "two" / "latest.pt"
    checkpoint = load_checkpoint(path)
    raw, ema = checkpoint["networks"], checkpoint["ema"]
    assert checkpoint["ema_updates"] == 3
    assert set(ema) == {k for k in raw if k.startswith(tuple(p + "." for p in EMA_PARTS))}
    trained = [k for k in ema if k.endswith(("weight", "original"))]
    assert all(not torch.equal(ema[k], raw[k]) for k in trained)
    model, _ = generator_from_checkpoint(path, torch.device("cpu"))   # inference takes the EMA
    assert all(torch.equal(v, ema[k]) for k, v in model.state_dict().items() if k in ema)


def test_ema_follows_its_decay():
    torch.manual_seed(0)
    model = SpeechToFace(ModelArgs(audio_samples=4800, num_speakers=3))
    ema = GeneratorEma(model, decay=0.9)
    weight = model.face_generator.layers[1].weight
    before = weight.detach().clone()
    with torch.no_grad():
        weight.add_(1.0)
        model.face_generator.layers[1].running_mean.add_(3.0)
    ema.update()   # first update: the ramp (1 + 0) / (10 + 0) = 0.1 is below 0.9
    averaged = ema.average.face_generator.layers[1]
    assert torch.allclose(averaged.weight, before + 0.9)
    assert torch.equal(averaged.running_mean, model.face_generator.layers[1].running_mean)
    assert ema.current_decay() == pytest.approx(2 / 11)
    assert "projection_discriminator.score.bias" not in ema.state_dict()


# ---------------------------------------------------------------- mixed precision

# fp16 autocast is 3-5x slower than fp32 on this CPU (benchmarks/scaling_speed.py): one small step.
@pytest.mark.parametrize("precision, steps, batch", [("bf16", "2", "4"), ("fp16", "1", "2")])
def test_mixed_precision_trains_on_cpu_with_finite_losses(workdir, precision, steps, batch):
    assert train_here(workdir, "--precision", precision, "--save_path", precision,
                      "--batch_size", batch, "--max_steps", steps) == 0
    run = workdir / "checkpoints" / precision
    losses = {k: v for k, v in epoch_figures(run).items() if k.startswith(("d_", "g_"))}
    assert {"d_loss", "g_loss"} <= losses.keys() and all(map(math.isfinite, losses.values()))
    checkpoint = load_checkpoint(run / "latest.pt")
    assert all(t.dtype == torch.float32 for t in checkpoint["networks"].values()
               if t.is_floating_point())                      # autocast keeps fp32 weights
    scaler = checkpoint["grad_scalers"]["g"]
    assert (scaler.get("scale", 0) > 0) == (precision == "fp16")   # loss scaling for fp16 only


# ---------------------------------------------------------------- data and options

def test_an_item_is_drawn_from_seed_epoch_and_index_alone(workdir):
    info = validate_pair_file(workdir / "tiny.h5")
    first = SpeechFaceDataset(info, "train", 4800, 64, train=True, seed=3)
    second = SpeechFaceDataset(info, "train", 4800, 64, train=True, seed=3)
    _ = second[7], second[2]                       # what was read before does not matter
    assert all(torch.equal(a, b) for a, b in zip(first[5], second[5]))
    crops = set()
    for epoch in range(8):
        first.set_epoch(epoch)
        crops.add(first._crop_start(8000, first.item_random(5)))
    assert len(crops) > 1                         # a new crop each epoch


@pytest.mark.parametrize("args, message", [
    (["--batchnorm", "sync"], "--batchnorm sync needs CUDA"),
    (["--ema_decay", "1.5"], "--ema_decay must be between 0 and 1"),
    (["--precision", "fp8"], None),
])
def test_scaling_options_are_checked(args, message, capsys):
    if message is None:                           # argparse refuses choices it does not know
        with pytest.raises(SystemExit) as exit_info:
            runtime.main(args)
        assert exit_info.value.code == 2
        return
    assert runtime.main(["--device", "cpu", *args]) == 2
    assert capsys.readouterr().err.strip().startswith(f"error: {message}")


def test_inference_refuses_torchrun(monkeypatch, capsys):
    monkeypatch.setenv("WORLD_SIZE", "2")
    assert runtime.main(["--inference"]) == 2
    assert "start it with python, not torchrun" in capsys.readouterr().err


def test_batch_size_is_checked_against_each_process_share(workdir):
    from distributed import Ranks
    from trainer import Trainer
    options = runtime.build_parser().parse_args(["--batch_size", "8", "--num_workers", "0",
                                                 "--audio_seconds", "0.3"])
    with pytest.raises(runtime.UserError, match="6 for each of 2 processes"):
        Trainer(options, torch.device("cpu"), workdir / "tiny.h5", Ranks(rank=1, world_size=2))
