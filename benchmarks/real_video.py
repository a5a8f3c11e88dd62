"""Real people, end to end: prepare realvids-dev's talking-head clips with the end of each
clip held out (`--split_by time`), train each lever for a fixed CPU time, and score the faces
drawn from the held-out speech. One table; a row per lever, the real test faces' own row and
the chance row under it.

    python benchmarks/real_video.py                # defaults (the video recipe), 30 min
    python benchmarks/real_video.py --levers "plain defaults" "demo command" --budget 600

Preparation is `python -m data.prepare videos` with `--split_by time --test_fraction 0.3
--valid_fraction 0`, made once per --frames_per_second into --work. Training runs in this
process with runtime.py's options (visdom off; the clock runs only while batches are read and
trained on, as in learning_speed.py). The columns, on the test split (the last 30% of every
clip, speech the model never heard):
- recall@1/5/10: voice-to-face retrieval in dlib's 128-d descriptor space, each generated
  face ranked against each speaker's mean real test descriptor (SF2F's protocol), among the
  speakers with at least --min_speech seconds of video (chance K / speakers);
- cos own: mean cosine of each generated descriptor to its own speaker's real ones;
- detected: share of generated faces dlib's HOG detector finds with all 68 landmarks;
- sharpness: high-frequency power against the real test faces' (the `sharpness` metric;
  1.0 is as sharp as the real faces);
- mouth sync: within-speaker correlation of generated with real mouth openness (dlib's lips)
  on the speakers with a clip of at least --long_clip seconds.
"""
from __future__ import annotations

import argparse
import os
import re
import shutil
import subprocess
import sys
import tempfile
from pathlib import Path

import av
import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.learning_speed import train_for_budgets  # noqa: E402
from benchmarks.train_speed import print_table  # noqa: E402
from data.schema import validate_pair_file  # noqa: E402
from data.video import VIDEO_SUFFIXES  # noqa: E402
from models.metrics import METRICS  # noqa: E402
from models.metrics.distances import recall_at_k, similarity_to_speakers  # noqa: E402
from models.metrics.evaluation import evaluation_for  # noqa: E402
from models.metrics.mouth import mouth_sync_scores  # noqa: E402

FIXTURE = REPO.parent / "shared" / "fixtures" / "realvids-dev"
RECALL_KS = (1, 5, 10)
DEMO = ["--batch_size", "16", "--lr_G", "0.0002", "--generator", "hybrid", "--ema"]
DEMO_FRAMES = [*DEMO, "--speech_encoder", "filterbank_frames"]
# The mouth options on the frames encoder; a later repeat of an option overrides one.
MOUTH_RECIPE = [*DEMO_FRAMES, "--mouth_open_coef", "10", "--loss", "hinge", "--mouth_coef", "20"]
# runtime.py's `video` recipe (models/recipes.py) is this with D width 32
VIDEO_RECIPE = [*MOUTH_RECIPE, "--speech_encoder", "filterbank_centre", "--speech_augment",
                "shift,noise,gain"]
# name -> runtime.py options over the listed defaults (--recipe plain); "defaults" is what
# runtime.py chooses by itself for this file (--recipe auto: the video recipe)
LEVERS = {
    "defaults": [],
    "plain defaults": [],
    "demo command": DEMO,
    "least-squares loss": ["--loss", "lsgan"],
    "hinge loss": ["--loss", "hinge"],
    "demo command, least-squares loss": [*DEMO, "--loss", "lsgan"],
    "demo command, hinge loss": [*DEMO, "--loss", "hinge"],
    "hybrid generator": ["--generator", "hybrid"],
    "ema": ["--ema"],
    "hybrid generator, ema": ["--generator", "hybrid", "--ema"],
    "hybrid generator, ema, frames encoder": ["--generator", "hybrid", "--ema",
                                              "--speech_encoder", "filterbank_frames"],
    "frames encoder": ["--speech_encoder", "filterbank_frames"],
    "demo command, frames encoder": DEMO_FRAMES,
    "demo command, frames encoder, mouth L1": [*DEMO_FRAMES, "--mouth_coef", "50"],
    "frames encoder, mouth reader": [*DEMO_FRAMES, "--mouth_open_coef", "10"],
    "frames encoder, mouth reader 2": [*DEMO_FRAMES, "--mouth_open_coef", "2"],
    "frames encoder, SAGAN discriminator": [*DEMO_FRAMES, "--discriminator", "sagan"],
    "frames encoder, DiffAugment": [*DEMO_FRAMES, "--augment", "color,translation,cutout"],
    "frames encoder, R1 0.1": [*DEMO_FRAMES, "--r1_coef", "0.1"],
    "frames encoder, speakers balanced": [*DEMO_FRAMES, "--balance", "speakers"],
    "frames encoder, encoder lr 0.0005": [*DEMO_FRAMES, "--lr_E", "0.0005"],
    "frames encoder, mouth reader, DiffAugment": [*DEMO_FRAMES, "--mouth_open_coef", "10",
                                                  "--augment", "color,translation,cutout"],
    "frames encoder, classifier weight 5": [*DEMO_FRAMES, "--softmax_coef", "5"],
    "frames encoder, hinge loss": [*DEMO_FRAMES, "--loss", "hinge"],
    "frames encoder, mouth reader, hinge loss": [*DEMO_FRAMES, "--mouth_open_coef", "10",
                                                 "--loss", "hinge"],
    "frames encoder, mouth reader, hinge loss, mouth L1": MOUTH_RECIPE,
    "frames encoder, mouth reader 20, hinge loss, mouth L1": [*MOUTH_RECIPE,
                                                             "--mouth_open_coef", "20"],
    "centre frames encoder, mouth reader, hinge loss, mouth L1": [
        *MOUTH_RECIPE, "--speech_encoder", "filterbank_centre"],
    "centre frames encoder, mouth reader, hinge loss, mouth L1, speech augmented": VIDEO_RECIPE,
    "video recipe, D width 32": [*VIDEO_RECIPE, "--d_channels", "32"],
    "video recipe, D width 128": [*VIDEO_RECIPE, "--d_channels", "128"],
    "frames encoder, mouth reader, hinge loss, mouth L1, reader refit": [
        *MOUTH_RECIPE, "--mouth_refit_every", "100"],
    "frames encoder, no wrong pairs": [*DEMO_FRAMES, "--no_cls"],
    "frames encoder, 2 D steps": [*DEMO_FRAMES, "--d_iters", "2"],
    "demo command, GE2E fine-tuned": [*DEMO, "--speech_encoder", "ge2e_finetune"],
    "wav2pix (segan, dcgan)": ["--speech_encoder", "segan", "--generator", "dcgan",
                               "--gdl_coef", "0"],
}


def clip_seconds(fixture: Path) -> dict[str, list[float]]:
    """speaker -> the duration of each of its clips, as their containers state it."""
    durations: dict[str, list[float]] = {}
    for path in sorted(fixture.glob("*/*")):
        if path.suffix.lower() not in VIDEO_SUFFIXES:
            continue
        with av.open(str(path)) as container:
            durations.setdefault(path.parent.name, []).append(container.duration / av.time_base)
    return durations


def lever_options(lever: str) -> list[str]:
    return LEVERS[lever] if lever == "defaults" else ["--recipe", "plain", *LEVERS[lever]]


def prepared(work: Path, fixture: Path, fps: float) -> Path:
    """The pair file of the fixture with each clip's end held out, made once."""
    out = work / f"realvids_time_{fps:g}fps.h5"
    if out.exists() and validate_pair_file(out).source != "videos":
        out.unlink()        # made before pair files named their source: --recipe auto needs it
    if not out.exists():
        command = [sys.executable, "-m", "data.prepare", "videos", str(fixture), str(out),
                   "--split_by", "time", "--test_fraction", "0.3", "--valid_fraction", "0",
                   "--frames_per_second", str(fps), "--workers", str(os.cpu_count() or 1)]
        print(" ".join(command[1:]), flush=True)
        subprocess.run(command, cwd=REPO, check=True)
    return out


def scores(evaluation, fake, retrieval, long_clips) -> dict[str, float]:
    """The table's figures for one set of faces (`fake`, an Analysis) against the real test
    faces."""
    real, speaker_ids = evaluation.real, evaluation.speaker_ids
    figures = evaluation.suite.score(fake, real, speaker_ids)
    row = {}
    keep = np.isin(speaker_ids, retrieval)
    for k, value in recall_at_k(fake.descriptors[keep], speaker_ids[keep],
                                real.descriptors[keep], speaker_ids[keep], RECALL_KS,
                                "cosine").items():
        row[f"recall@{k}"] = value
    row["cos own"] = similarity_to_speakers(fake.descriptors, speaker_ids, real.descriptors,
                                            speaker_ids)["cosine_same"]
    row["detected"] = figures["detection_dlib"]
    if "sharpness" in figures:
        row["sharpness"] = figures["sharpness"]
    rows = np.isin(speaker_ids, long_clips)
    row["mouth sync"] = mouth_sync_scores(fake.extra["mouth_sync"][rows],
                                          real.extra["mouth_sync"][rows], None,
                                          speaker_ids[rows])["mouth_sync"]
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--levers", nargs="+", default=["defaults"], choices=list(LEVERS))
    parser.add_argument("--budget", type=float, nargs="+", default=[1800],
                        help="training seconds per lever; several give a row each (one run)")
    parser.add_argument("--steps", action="store_true",
                        help="--budget counts steps, not seconds: for a machine others share")
    parser.add_argument("--frames_per_second", type=float, default=10)
    parser.add_argument("--min_speech", type=float, default=4.0,
                        help="seconds of video a speaker needs to count in recall@K")
    parser.add_argument("--long_clip", type=float, default=10.0,
                        help="a clip this long makes its speaker one mouth sync is measured on")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--precision", default="fp32",
                        help="runtime.py's --precision; fp32, as the targets are set, where "
                             "'auto' would pick bf16 on a CPU that computes it natively")
    parser.add_argument("--save_path", type=Path,
                        help="keep each lever's run folder, with its checkpoint at the last "
                             "budget, as SAVE_PATH/<lever>/ (runtime.py --evaluate "
                             "--pre_trained_gen SAVE_PATH/<lever>)")
    parser.add_argument("--resume", type=Path, metavar="CHECKPOINT",
                        help="with one lever and --steps: train it on from the checkpoint "
                             "--save_path kept for it to each --budget (steps from 0)")
    parser.add_argument("--work", type=Path, default=REPO / "data" / ".cache" / "real_video")
    parser.add_argument("--fixture", type=Path, default=FIXTURE)
    args = parser.parse_args()
    if args.resume and (len(args.levers) != 1 or not args.steps):
        raise SystemExit("--resume continues one lever's run: pass one --levers and --steps")
    if not args.fixture.is_dir():
        raise SystemExit(f"no {args.fixture}: pass --fixture FOLDER of <speaker>/<clip> videos")
    args.work.mkdir(parents=True, exist_ok=True)
    pairs = prepared(args.work, args.fixture, args.frames_per_second)
    info = validate_pair_file(pairs)
    durations = clip_seconds(args.fixture)
    ids = {name: index for index, name in enumerate(info.speaker_names)}
    retrieval = [ids[s] for s, d in durations.items() if s in ids and sum(d) >= args.min_speech]
    long_clips = [ids[s] for s, d in durations.items() if s in ids and max(d) >= args.long_clip]
    names = [n for n in ("detection_dlib", "dlib_similarity", "mouth_sync", "sharpness")
             if n in METRICS]
    scoring = argparse.Namespace(metrics=",".join(names), inception=None)
    table, real_row, evaluations = [], None, {}
    kept = args.save_path.resolve() if args.save_path else None
    with tempfile.TemporaryDirectory() as folder:
        previous = Path.cwd()
        os.chdir(folder)
        try:
            for lever in args.levers:
                run_name = re.sub(r"\W+", "_", lever)
                for seconds, step, model in train_for_budgets(
                        ["--dataset", str(pairs), "--precision", args.precision,
                         *lever_options(lever), "--save_path", run_name],
                        args.budget, Path(folder), args.seed, in_steps=args.steps,
                        save=kept is not None,
                        resume=args.resume.resolve() if args.resume else None):
                    # the real faces, analysed once for each size and speech length
                    key = (model.args.image_size, model.args.audio_samples)
                    if key not in evaluations:
                        evaluations[key] = evaluation_for(scoring, info, "test", model.args,
                                                          torch.device("cpu"), None)
                    evaluation = evaluations[key]
                    fake = evaluation.suite.analyse(evaluation.generate(model))
                    table.append({"lever": lever, "budget s": round(seconds), "steps": step,
                                  **scores(evaluation, fake, retrieval, long_clips)})
                    print(table[-1], flush=True)
                    if real_row is None:
                        real_row = {"lever": "real test faces",
                                    **scores(evaluation, evaluation.real, retrieval, long_clips)}
                if kept:
                    shutil.copytree(Path(folder, "checkpoints", run_name), kept / run_name,
                                    dirs_exist_ok=True)
                    print(f"kept {kept / run_name}", flush=True)
        finally:
            os.chdir(previous)
    speakers = len(retrieval)
    chance = {"lever": "chance", **{f"recall@{k}": min(k / speakers, 1.0) for k in RECALL_KS}}
    print(f"\nrealvids-dev, --split_by time, test = the last 30% of each clip "
          f"({len(evaluation.rows)} pairs of {len(info.speaker_names)} speakers; recall among "
          f"the {speakers} with >= {args.min_speech:g} s, mouth sync on the {len(long_clips)} "
          f"with a clip >= {args.long_clip:g} s); {args.frames_per_second:g} fps, seed "
          f"{args.seed}, {torch.get_num_threads()} threads, CPU "
          f"{torch.backends.cpu.get_cpu_capability()}, fp32")
    columns = ["lever", "budget s", "steps", *(f"recall@{k}" for k in RECALL_KS), "cos own",
               "detected", *(["sharpness"] if "sharpness" in names else []), "mouth sync"]
    print_table(table + [real_row, chance], columns, width=24)


if __name__ == "__main__":
    main()
