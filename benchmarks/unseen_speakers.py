"""Faces for voices the model never heard: the speech encoders against a voice-blind model on
the unseen-speaker demo file, same seed and wall-time budget, one table.

    python benchmarks/unseen_speakers.py                                  # 4 x 10 minutes
    python benchmarks/unseen_speakers.py --variants "ge2e frozen" --budgets 60

The file is `python -m data.prepare demo --speakers 44 --held_out 8` (32 train speakers; the
test split holds only 8 others: 6 with voices between the train voices, 2 beyond them; valid
holds 4 more).
Each variant trains in this process as learning_speed.py's do (the clock runs only while
batches are read and trained on) and is scored on the test split: attribute agreement per
voice-decided attribute (beard accuracy, face-width correlation...), next to the same
predictor on the real test faces (the ceiling) and the majority class (blind), and 1:2
matching among the unseen speakers in the identity classifier's feature space (mostly hair,
skin and clothes, which follow the speaker's index and no voice), in the attribute
predictor's (what the labelled, voice-decided traits need) and, by Euclidean distance, on the
predicted labels themselves (standardised; `1:2 labels`). The
voice-blind row is an unconditional model (`--condition none`): its faces are drawn from
noise alone, so whatever it agrees on, it agrees on by chance.
"""
from __future__ import annotations

import argparse
import os
import subprocess
import sys
import tempfile
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from benchmarks.learning_speed import train_for_budgets  # noqa: E402
from data.dataset import SpeechFaceDataset, spread_over_speakers  # noqa: E402
from data.schema import validate_pair_file  # noqa: E402
from models.metrics.evaluation import SplitEvaluation, metric_suite  # noqa: E402

COMMON = ["--batch_size", "16", "--precision", "fp32"]
VARIANTS = {
    "raw waveform (filterbank)": COMMON,
    "ge2e frozen": [*COMMON, "--speech_encoder", "ge2e"],
    "ge2e fine-tuned": [*COMMON, "--speech_encoder", "ge2e_finetune"],
    "voice-blind (--condition none)": [*COMMON, "--condition", "none", "--noise_dim", "100"],
}
# Scored on the test split (1:2 matching in the identity classifier's feature space: dlib's
# descriptors barely tell the cartoon demo faces apart).
METRICS = ["attributes", "matching"]
COLUMNS = {"beard": "attributes_beard", "beard real": "attributes_beard_real",
           "beard blind": "attributes_beard_blind", "width r": "attributes_face_width",
           "width r real": "attributes_face_width_real", "height r": "attributes_face_height",
           "jaw r": "attributes_jaw", "glasses": "attributes_glasses",
           "1:2 classifier": "matching_1v2_classifier",
           "1:2 attributes": "matching_1v2_attributes", "1:2 labels": "matching_1v2_labels"}


def make_file(path: Path, seed: int) -> None:
    subprocess.run([sys.executable, "-m", "data.prepare", "demo", str(path), "--speakers", "44",
                    "--held_out", "8", "--seed", str(seed)], check=True,
                   cwd=Path(__file__).resolve().parents[1])


def scorer(info, args, device) -> SplitEvaluation:
    """Every test pair, scored as `--evaluate --metrics attributes,matching` scores it; an
    unconditional model's faces are scored on the same labels (evaluation_for would keep
    only the metrics that need no pairing: here the pairing is what is measured)."""
    dataset = SpeechFaceDataset(info, "test", args.audio_samples, args.image_size, train=False,
                                condition=args.condition)
    rows = spread_over_speakers(dataset.speaker_ids, len(dataset))
    return SplitEvaluation(metric_suite(METRICS, info, device, None, "test", rows), dataset,
                           rows, device, unseen=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--budgets", nargs="+", type=float, default=[150, 300, 600],
                        help="seconds of training at which each variant is scored")
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    parser.add_argument("--dataset", type=Path, default=None,
                        help="an unseen-speaker pair file (default: made here, 44/8, "
                             "with 4 valid speakers)")
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    device, rows = torch.device("cpu"), []
    with tempfile.TemporaryDirectory() as work:
        path = args.dataset.resolve() if args.dataset else Path(work) / "unseen.h5"
        if not args.dataset:
            make_file(path, args.seed)
        info = validate_pair_file(path)
        previous = Path.cwd()
        os.chdir(work)
        try:
            for name in args.variants:
                evaluation = None          # the real faces analysed once per variant
                for seconds, step, model in train_for_budgets(
                        [*VARIANTS[name], "--dataset", str(path)], args.budgets, Path(work),
                        args.seed):
                    evaluation = evaluation or scorer(info, model.args, device)
                    scores = evaluation.run(model)
                    rows.append({"variant": name, "budget s": round(seconds), "steps": step,
                                 **{column: scores.get(key, float("nan"))
                                    for column, key in COLUMNS.items()}})
                    print(rows[-1], flush=True)
        finally:
            os.chdir(previous)
    print(f"\nunseen-speaker demo file (32 train, 8 test speakers), test split, seed "
          f"{args.seed}, {args.threads} threads, CPU {torch.backends.cpu.get_cpu_capability()}")
    columns = ["variant", "budget s", "steps", *COLUMNS]
    print("| " + " | ".join(columns) + " |\n|" + " --- |" * len(columns))
    for row in rows:
        print("| " + " | ".join(f"{row[c]:.3f}" if isinstance(row[c], float) else str(row[c])
                                for c in columns) + " |")


if __name__ == "__main__":
    main()
