"""Fine-tuning to a speaker the model never heard, on the demo set; prints one table.

    python benchmarks/finetune_speaker.py                  # hold out demo speaker 3
    python benchmarks/finetune_speaker.py --held_out 7 --base_steps 400 --pairs 4

1. A base model trains on the demo set without one speaker (7 of the 8).
2. `--finetune` continues it for --finetune_steps batches on --pairs of that speaker's
   train pairs (2 s each) plus --replay pairs of every trained speaker, which guard the
   old speakers against being forgotten; the speaker classifier grows by the new speaker.
3. A control run takes as many steps on the replay pairs alone, so the table separates what
   the new speaker's pairs do from what more training does.

Identity accuracy: how often a face drawn from a test-split speech window is nearer (L2,
pixels) to its own speaker's mean real test face than to any other of the 8 speakers' (the
Trainer's `val_nearest_speaker_acc`, per speaker). The runs live in a temporary folder
unless --work names one. Fine-tuning uses --finetune_lr for both networks: at wav2pix's
0.0001, 100 steps with 6 replay pairs per speaker moved the held-out speaker from 0 to 0.04.

Measured with the defaults (CPU, 1 thread, 9 min; 25 test windows per speaker, so steps of
0.04): held-out speaker 0.00 -> 0.28 after fine-tuning, 0.00 after the control; trained
speakers 0.30 (base), 0.29 (fine-tuned), 0.41 (control).
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import h5py
import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import runtime  # noqa: E402
from data.dataset import SpeechFaceDataset  # noqa: E402
from data.demo import demo_dataset_path  # noqa: E402
from data.schema import validate_pair_file, write_pair_file  # noqa: E402
from models.loading import generator_from_checkpoint  # noqa: E402


def read_split(path, split: str):
    with h5py.File(path, "r") as f:
        return tuple(f[split][key][()] for key in ("waveforms", "faces", "speaker_ids"))


def rows_of(arrays, rows):
    return tuple(array[rows] for array in arrays)


def write_base_file(demo, names, held_out: int, path) -> Path:
    """The demo set without the held-out speaker; the others keep their order."""
    kept = [s for s in range(len(names)) if s != held_out]
    renumber = np.full(len(names), -1)
    renumber[kept] = np.arange(len(kept))
    splits = {}
    for split in ("train", "valid", "test"):
        arrays = read_split(demo, split)
        waveforms, faces, ids = rows_of(arrays, np.isin(arrays[2], kept))
        splits[split] = (waveforms, faces, renumber[ids])
    return write_pair_file(path, splits, [names[s] for s in kept])


def write_tune_file(demo, names, counts: dict, path) -> Path:
    """counts[speaker] train pairs of each speaker; the whole demo test split held out."""
    train = read_split(demo, "train")
    rows = np.concatenate([np.flatnonzero(train[2] == s)[:n] for s, n in counts.items()])
    return write_pair_file(path, {"train": rows_of(train, rows), "test": read_split(demo, "test")},
                           names)


@torch.no_grad()
def identity_accuracy(run_dir, demo_info) -> np.ndarray:
    """Per demo speaker: the share of its test windows drawn nearest its own mean face."""
    model, _ = generator_from_checkpoint(run_dir, torch.device("cpu"))
    test = SpeechFaceDataset(demo_info, "test", model.args.audio_samples, model.args.image_size,
                             train=False)
    real = torch.stack([test.face(i) for i in range(len(test))]).flatten(1)
    speakers = np.unique(test.speaker_ids)
    means = torch.stack([real[test.speaker_ids == s].mean(0) for s in speakers])
    waveforms = torch.stack([test.waveform(i) for i in range(len(test))])
    drawn = torch.cat([model(chunk)[1].flatten(1) for chunk in waveforms.split(64)])
    nearest = speakers[torch.cdist(drawn, means).argmin(1).numpy()]
    return np.array([np.mean(nearest[test.speaker_ids == s] == s) for s in speakers])


def train(*args) -> float:
    start = time.perf_counter()
    if runtime.main([str(a) for a in args]) != 0:
        raise SystemExit(f"training failed: {args}")
    return time.perf_counter() - start


def print_table(rows, held_out: int, old: list[int]) -> None:
    print(f"{'run':>24} | {'steps':>5} | {'seconds':>7} | {'held-out speaker acc':>20} | "
          f"{'trained speakers acc':>20}")
    print("-" * 90)
    for label, steps, seconds, accuracy in rows:
        took = f"{seconds:>7.0f}" if np.isfinite(seconds) else f"{'reused':>7}"
        print(f"{label:>24} | {steps:>5} | {took} | {accuracy[held_out]:>20.3f} | "
              f"{accuracy[old].mean():>20.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--held_out", type=int, default=3, help="demo speaker index to hold out")
    parser.add_argument("--base_steps", type=int, default=400)
    parser.add_argument("--finetune_steps", type=int, default=100)
    parser.add_argument("--pairs", type=int, default=6, help="train pairs of the new speaker")
    parser.add_argument("--replay", type=int, default=2, help="train pairs per trained speaker")
    parser.add_argument("--batch_size", type=int, default=16)
    parser.add_argument("--audio_seconds", type=float, default=1.0,
                        help="speech per face (1 s: wav2pix's; it costs about what 0.3 s does)")
    parser.add_argument("--finetune_lr", type=float, default=0.0004,
                        help="--lr_G and --lr_D of the fine-tuning runs")
    parser.add_argument("--work", default=None,
                        help="keep the runs in this folder (default: a temporary one); a base "
                             "run already there is reused")
    # On a shared machine one thread wastes least: a batch-16 step took 0.85 s of CPU with
    # one thread and 3.4 s with two while other jobs were running (2 cores, load 12).
    parser.add_argument("--threads", type=int, default=1, help="torch CPU threads")
    bench = parser.parse_args()
    torch.set_num_threads(bench.threads)
    demo = demo_dataset_path()
    demo_info = validate_pair_file(demo)
    names = demo_info.speaker_names
    old = [s for s in range(len(names)) if s != bench.held_out]
    common = ["--batch_size", bench.batch_size, "--audio_seconds", bench.audio_seconds,
              "--num_workers", 0, "--no_visdom"]
    with tempfile.TemporaryDirectory() as temporary:
        work = Path(bench.work or temporary).resolve()
        work.mkdir(parents=True, exist_ok=True)
        os.chdir(work)
        base = write_base_file(demo, names, bench.held_out, Path(work) / "base.h5")
        replay = {s: bench.replay for s in old}
        tune_files = {
            f"finetune ({bench.pairs} new pairs)": write_tune_file(
                demo, names, {bench.held_out: bench.pairs, **replay}, Path(work) / "tune.h5"),
            "control (replay only)": write_tune_file(demo, names, replay, Path(work) / "ctrl.h5")}
        seconds = float("nan")     # "reused" in the table
        if not (work / "checkpoints/base/latest.pt").exists():
            seconds = train("--dataset", base, "--save_path", "base", "--epochs", 1000,
                            "--max_steps", bench.base_steps, "--checkpoint_every", 1000, *common)
        rows = [(f"base ({len(old)} speakers)", bench.base_steps, seconds,
                 identity_accuracy("checkpoints/base", demo_info))]
        for index, (label, path) in enumerate(tune_files.items()):
            seconds = train("--finetune", "checkpoints/base", "--dataset", path, "--save_path",
                            f"tuned{index}", "--finetune_steps", bench.finetune_steps,
                            "--lr_G", bench.finetune_lr, "--lr_D", bench.finetune_lr, *common)
            rows.append((label, bench.finetune_steps, seconds,
                         identity_accuracy(f"checkpoints/tuned{index}", demo_info)))
    print()
    print(f"held-out speaker: {names[bench.held_out]}; {bench.pairs} fine-tuning pairs "
          f"({bench.pairs * demo_info.window_samples / 16000:.0f} s of speech), {bench.replay} "
          f"replay pairs per trained speaker; identity accuracy over "
          f"{demo_info.splits['test'].num_pairs} test windows of all {len(names)} speakers")
    print_table(rows, bench.held_out, old)


if __name__ == "__main__":
    main()
