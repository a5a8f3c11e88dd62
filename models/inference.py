"""Faces from a trained checkpoint: --inference renders them as PNGs, --evaluate scores them.

Both draw with the checkpoint's generator side (its averaged weights under --ema,
models/loading.py) and need nothing of the training loop.
"""
from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import torch
from tqdm import tqdm

from data.audio import find_audio_files, load_speech, prepare_waveform, speech_windows
from data.dataset import SpeechFaceDataset, held_out_split, in_chunks
from data.schema import PairFileInfo, require_embeddings, validate_pair_file
from models import SpeechToFace
from models.loading import generator_from_checkpoint
from models.metrics.evaluation import evaluation_for
from models.metrics.suite import format_table
from utils import (UserError, face_grid, prepare_output_dir, resolve_checkpoint, save_png,
                   seed_everything, to_uint8_images, write_json)


@torch.no_grad()
def render_test_split(model: SpeechToFace, info: PairFileInfo, out_dir: Path, device,
                      split: str = "test") -> int:
    """One PNG per pair of the split: the generated face beside the real frame."""
    dataset = SpeechFaceDataset(info, split, model.args.audio_samples, model.args.image_size,
                                train=False, condition=model.args.condition)
    names = info.speaker_names
    for rows in tqdm(in_chunks(range(len(dataset))), desc="rendering", leave=False, disable=None):
        condition, real = dataset.batch(rows)
        _, fake = model(condition.to(device))
        for i, row in enumerate(rows):
            pair = face_grid([torch.stack([fake[i].cpu(), real[i]])])
            save_png(out_dir / f"{names[dataset.speaker_ids[row]]}_{row:05d}.png", pair)
    return len(dataset)


@torch.no_grad()
def render_audio_files(model: SpeechToFace, paths, out_dir: Path, device) -> int:
    """One face PNG per window of each of the user's audio files."""
    samples, written = model.args.audio_samples, 0
    for path in find_audio_files(paths):
        windows = speech_windows(load_speech(path), samples, source=str(path))
        waveform = torch.from_numpy(np.stack([prepare_waveform(w) for w in windows]))[:, None]
        _, faces = model(waveform.to(device))
        for index, face in enumerate(to_uint8_images(faces)):
            save_png(out_dir / f"{path.stem}_{index:03d}.png", face)
            written += 1
    return written


@torch.no_grad()
def render_random_faces(model: SpeechToFace, count: int, out_dir: Path, device) -> int:
    """An unconditional model's faces: `count` PNGs, each from fresh noise."""
    for rows in in_chunks(range(count)):
        _, faces = model(torch.zeros(len(rows), 0, device=device))
        for index, face in zip(rows, to_uint8_images(faces)):
            save_png(out_dir / f"face_{index:04d}.png", face)
    return count


def rendered_checkpoint(options):
    """What --inference and --evaluate read: --pre_trained_gen, else the --resume checkpoint
    named, else the run's latest.pt."""
    return options.pre_trained_gen or options.resume or Path("checkpoints") / options.save_path


def run_inference(options, device: torch.device, dataset_path: Path | None) -> Path:
    source = rendered_checkpoint(options)
    model, checkpoint = generator_from_checkpoint(source, device)
    condition = model.args.condition
    if options.audio and condition != "speech":
        drawn_from = "noise" if condition == "none" else "the vectors stored in a pair file"
        raise UserError(f"{source} draws faces from {drawn_from}, not speech; drop --audio")
    out_dir = prepare_output_dir(Path("results") / options.save_path)
    if condition == "none":
        seed_everything(options.seed)
        count = render_random_faces(model, options.num_faces, out_dir, device)
    elif options.audio:
        count = render_audio_files(model, options.audio, out_dir, device)
    else:
        info = validate_pair_file(dataset_path)
        if condition == "embedding":
            require_embeddings(info, model.args.condition_dim)
        if info.speaker_names != checkpoint["speaker_names"]:
            print(f"note: {info.path} names other speakers than the checkpoint was trained on")
        split = "test" if "test" in info.splits else held_out_split(info)
        count = render_test_split(model, info, out_dir, device, split)
    print(f"wrote {count} face images to {out_dir}")
    return out_dir



def run_evaluation(options, device: torch.device, dataset_path: Path) -> dict:
    """--evaluate: score a checkpoint's faces for a split, print a table, write metrics.json."""
    source = resolve_checkpoint(rendered_checkpoint(options))
    model, checkpoint = generator_from_checkpoint(source, device)
    info = validate_pair_file(dataset_path)
    if options.split not in info.splits:
        raise UserError(f"{info.path} has no '{options.split}' split (it has "
                        f"{', '.join(info.splits)}); choose one with --split")
    started = time.perf_counter()
    evaluation = evaluation_for(options, info, options.split, model.args, device,
                                options.eval_samples)
    prepared = time.perf_counter()
    metrics = evaluation.run(model)
    report = {"checkpoint": str(source), "dataset": str(info.path), "split": options.split,
              "pairs": len(evaluation.rows), "speakers": int(len(np.unique(evaluation.speaker_ids))),
              "mode": evaluation.mode,
              "epoch": checkpoint.get("epoch"), "step": checkpoint.get("step"),
              "detectors": evaluation.suite.detectors(), "metrics": metrics,
              "seconds": {"real_faces": round(prepared - started, 2),
                          "generated_faces": round(time.perf_counter() - prepared, 2)}}
    print(f"{source} on split '{options.split}' of {info.path} ({report['pairs']} pairs, "
          f"{report['speakers']} speakers, {report['mode'].replace('_', ' ')}):")
    print(format_table(metrics))
    write_json(source.parent / "metrics.json", report)
    print(f"wrote {source.parent / 'metrics.json'}")
    return report
