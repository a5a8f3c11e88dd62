"""How much a model learns per minute of CPU: one table of held-out scores after fixed
wall-time budgets, for the defaults and for each lever, on the demo set, same seed.

    python benchmarks/learning_speed.py                          # every variant, 30-180 s
    python benchmarks/learning_speed.py --variants "demo command" "batch 64" --budgets 60 120

Each variant trains in this process (runtime.py's options, visdom off); the clock runs only
while batches are read and trained on, so the per-epoch reports, checkpoints and the scoring
below are not counted. At each budget the generator side is copied, its BatchNorm statistics
recomputed as before every evaluation, and after training it is scored on the test split with
`--evaluate`'s metrics: identity top-1 (the identity classifier), 1:2 matching in that
classifier's feature space, and L1 to the true frame; "texture" is the roughness of the
generated faces' background (background_roughness below), "mosaic" and "checkerboard" the
`grid` metric's grid_4 and checkerboard (models/metrics/grid.py; 1.0 and about 1: no grid);
the real test faces' own values are printed under the table.
"""
from __future__ import annotations

import argparse
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

import runtime  # noqa: E402
import trainer  # noqa: E402
from benchmarks.train_speed import print_table  # noqa: E402
from data.schema import validate_pair_file  # noqa: E402
from models.metrics.evaluation import evaluation_for  # noqa: E402
from utils.checkpoints import load_checkpoint  # noqa: E402

# name -> options over runtime.py's defaults; each row past the first changes one lever of
# the README's demo command (batch 16, G's learning rate doubled, the hybrid generator, the
# averaged generator drawing), except the last two, which start from runtime.py's defaults
# (wav2pix's rate, the resize generator, no average) and name what they change.
DEMO = ["--batch_size", "16", "--lr_G", "0.0002", "--generator", "hybrid", "--ema"]
VARIANTS = {
    "demo command": DEMO,
    "resize generator (the default)": [*DEMO, "--generator", "resize"],
    "without ema": [option for option in DEMO if option != "--ema"],
    "segan encoder": [*DEMO, "--speech_encoder", "segan"],
    "dcgan generator": [*DEMO, "--generator", "dcgan"],
    "bilinear generator": [*DEMO, "--generator", "bilinear"],
    "no feature matching": [*DEMO, "--l2_coef", "0"],
    "l1 x2": [*DEMO, "--l1_coef", "100"],
    "no gradient difference": [*DEMO, "--gdl_coef", "0"],
    "gradient difference 200": [*DEMO, "--gdl_coef", "200"],
    "wrong faces from loader": [*DEMO, "--wrong_faces", "loader"],
    "lr_G 0.0001 (wav2pix's)": [*DEMO, "--lr_G", "0.0001"],
    "batch 64": ["--batch_size", "64"],
    "wav2pix (segan, dcgan, 64)": ["--speech_encoder", "segan", "--generator", "dcgan",
                                   "--gdl_coef", "0", "--batch_size", "64"],
}


def background_roughness(faces: np.ndarray) -> float:
    """Mean absolute difference of neighbouring pixels (grey levels 0-255, across and down) in
    the two top corner squares of side S/8 of uint8 faces (N, S, S, 3): there the demo faces
    show only their smooth background gradient (about 0.2), so what is there is texture."""
    side = faces.shape[1] // 8
    corners = np.concatenate([faces[:, :side, :side], faces[:, :side, -side:]]).astype(np.float32)
    return float((np.abs(np.diff(corners, axis=1)).mean()
                  + np.abs(np.diff(corners, axis=2)).mean()) / 2)


def train_for_budgets(extra: list[str], budgets: list[float], work: Path, seed: int,
                      in_steps: bool = False, save: bool = False, resume: Path | None = None):
    """Yields the rendering model at each budget as it is reached, to be scored before the
    next is asked for (the random generators are restored after, so scoring does not change
    the training that follows): (seconds, step, model). Budgets are seconds of batches, or
    (in_steps) steps, which a busy machine cannot shift; seconds is the budget, or with
    in_steps the seconds the steps took. `save` writes a checkpoint at the last budget into
    the run folder (--save_path in `extra`) for --evaluate and --inference. `resume`: a
    checkpoint this wrote, to train on from its step (networks, optimisers, random state; the
    epoch it stopped in starts over) towards budgets past it, counted from step 0."""
    options = runtime.config_for(
        ["--save_path", "bench", "--no_visdom", "--num_workers", "0", "--seed", str(seed),
         "--epochs", "1000", *extra])
    checkpoint = None
    if resume is not None:
        options = options.replace(resume=str(resume))
        checkpoint = load_checkpoint(resume)
    run = trainer.Trainer(options, torch.device("cpu"), runtime.dataset_path(options),
                          resume=checkpoint)
    elapsed, pending = 0.0, sorted(budgets)
    while pending:
        run._train_mode()
        run.order.start(run.epoch, 0)
        started = time.perf_counter()
        for batch in run.train_loader:
            run.train_batch(batch)
            elapsed += time.perf_counter() - started
            while pending and (run.step if in_steps else elapsed) >= pending[0]:
                budget = pending.pop(0)
                run.refresh_batchnorm()
                generators = torch.get_rng_state(), np.random.get_state()
                yield elapsed if in_steps else budget, run.step, run.rendering_model
                torch.set_rng_state(generators[0])
                np.random.set_state(generators[1])
                run._train_mode()
            if not pending:
                break
            started = time.perf_counter()
        run.epoch += 1
    if save:
        print(f"wrote {run.save()}", flush=True)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--variants", nargs="+", default=list(VARIANTS), choices=list(VARIANTS))
    parser.add_argument("--budgets", nargs="+", type=float, default=[30, 60, 120, 180])
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--test_pairs", type=int, default=200)
    parser.add_argument("--threads", type=int, default=torch.get_num_threads())
    args = parser.parse_args()
    torch.set_num_threads(args.threads)
    rows = []
    with tempfile.TemporaryDirectory() as work:
        previous = Path.cwd()
        os.chdir(work)
        try:
            info = validate_pair_file(runtime.dataset_path(runtime.build_parser().parse_args([])))
            scoring = argparse.Namespace(metrics="identity,l1,matching,grid", inception=None)
            for name in args.variants:
                for seconds, step, model in train_for_budgets(VARIANTS[name], args.budgets,
                                                              Path(work), args.seed):
                    evaluation = evaluation_for(scoring, info, "test", model.args,
                                                        torch.device("cpu"), args.test_pairs)
                    faces = evaluation.generate(model)
                    scores = evaluation.suite.score(evaluation.suite.analyse(faces),
                                                    evaluation.real, evaluation.speaker_ids)
                    real_texture = background_roughness(evaluation.real.faces)
                    rows.append({"variant": name, "budget s": round(seconds), "steps": step,
                                 "identity top-1": scores["identity_top1"],
                                 "1:2 classifier": scores["matching_1v2_classifier"],
                                 "L1": scores["l1"],
                                 "texture": background_roughness(faces),
                                 "mosaic": scores["grid_4"],
                                 "checkerboard": scores["checkerboard"]})
                    print(rows[-1], flush=True)
        finally:
            os.chdir(previous)
    print(f"\ndemo set, test split ({args.test_pairs} pairs), seed {args.seed}, "
          f"{args.threads} threads, CPU {torch.backends.cpu.get_cpu_capability()}; texture of "
          f"the real test faces {real_texture:.2f}, mosaic {scores['grid_4_real']:.3f}, "
          f"checkerboard {scores['checkerboard_real']:.2f}")
    print_table(rows, ["variant", "budget s", "steps", "identity top-1", "1:2 classifier", "L1",
                       "texture", "mosaic", "checkerboard"],
                width=26)


if __name__ == "__main__":
    main()
