"""Where a mouth-reader run loses mouth sync: in what G means to draw, or in the drawing.

    python benchmarks/mouth_fidelity.py CHECKPOINT [CHECKPOINT ...] [--pairs FILE] [--split train]
    python benchmarks/mouth_fidelity.py --fits 600:0 4000:0 4000:0.1    # readers alone

For a checkpoint trained with `--mouth_open_coef` on benchmarks/real_video.py's pair file,
the faces of the test split are drawn (the averaged generator when the run kept one) and
their mouth openness read two ways: by dlib's inner lips (the `mouth_sync` metric's
measure) and by the run's own frozen mouth reader (models/mouth_reader.py), whose reading G
was trained to match. Within-speaker correlations on the long-clip speakers, one row per
checkpoint:
- mouth sync: dlib on the generated faces against dlib on the real ones (real_video.py's
  column);
- meant: the reader on the generated faces against dlib on the real ones: how well G's
  mouths would follow the speech if dlib read them as the reader does;
- reader on real: the reader against dlib on the real test faces (the reader's accuracy);
- drawn: the reader against dlib on the generated faces (how readable G's mouths are).

`--fits STEPS:NOISE ...` fits a reader per pair (models.mouth_reader.fit_mouth_reader, seed
0) to the train split's faces as a run does, without training G, and prints its accuracy on
the real test faces and how strongly its reading moves with the pixels it reads (the mean
norm of the reading's gradient with respect to the face, which is the gradient G's term
sends back): a reader that reads the lips as dlib does, and that small pixel changes do not
sway, is the one to train G against.
"""
from __future__ import annotations

import argparse
import sys
import time
from pathlib import Path

import numpy as np
import torch

REPO = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(REPO))

from benchmarks.real_video import FIXTURE, clip_seconds, prepared  # noqa: E402
from benchmarks.train_speed import print_table  # noqa: E402
from data.dataset import SpeechFaceDataset  # noqa: E402
from data.schema import validate_pair_file  # noqa: E402
from models import ModelArgs  # noqa: E402
from models.loading import generator_from_checkpoint  # noqa: E402
from models.metrics.evaluation import evaluation_for  # noqa: E402
from models.metrics.face_analysis import DlibFaces  # noqa: E402
from models.metrics.identity_classifier import faces_to_input  # noqa: E402
from models.metrics.mouth import correlation, measure_openness, within_speakers  # noqa: E402
from models.mouth_reader import MouthReader, fit_mouth_reader, sample_rows  # noqa: E402
from utils import to_uint8_images  # noqa: E402


def read(reader: MouthReader, pixels: np.ndarray) -> np.ndarray:
    with torch.no_grad():
        return reader(faces_to_input(pixels, pixels.shape[1])).numpy()


def real_test_faces(evaluation) -> np.ndarray:
    faces = torch.stack([evaluation.dataset.face(int(row)) for row in evaluation.rows])
    return to_uint8_images(faces)


def within(a: np.ndarray, b: np.ndarray, speakers: np.ndarray) -> float:
    return correlation(within_speakers(a, speakers), within_speakers(b, speakers))


def sway(reader: MouthReader, pixels: np.ndarray) -> float:
    """Mean L2 norm of d(reading)/d(face) over the faces (pixels in [-1, 1])."""
    faces = faces_to_input(pixels, pixels.shape[1]).requires_grad_()
    reader(faces).sum().backward()
    return float(faces.grad.flatten(1).norm(dim=1).mean())


def fits_table(fits: list[str], info, evaluation, rows, dlib) -> None:
    """One row per STEPS:NOISE reader fitted to the train faces: its accuracy and sway."""
    train = SpeechFaceDataset(info, "train", 16000, evaluation.dataset.image_size, train=False)
    chosen = sample_rows(len(train), 0)
    faces = torch.stack([train.face(int(row)) for row in chosen])
    train_pixels = to_uint8_images(faces)
    labels = measure_openness(train_pixels, "landmarks", dlib)
    real = real_test_faces(evaluation)
    real_open = measure_openness(real, "landmarks", dlib)
    speakers = evaluation.speaker_ids[rows]
    table = []
    for fit in fits:
        steps, noise = fit.split(":")
        start = time.perf_counter()
        reader = fit_mouth_reader(faces, labels, 0, steps=int(steps), noise=float(noise))
        table.append({"fit steps": int(steps), "noise": float(noise),
                      "fit s": round(time.perf_counter() - start, 1),
                      "on train": within(read(reader, train_pixels), labels,
                                         train.speaker_ids[chosen]),
                      "reader on real": within(read(reader, real)[rows], real_open[rows], speakers),
                      "sway": sway(reader, real[rows])})
        print(table[-1], flush=True)
    print(f"\n{len(chosen)} train faces fitted on; the real test faces of the long-clip "
          f"speakers; {torch.get_num_threads()} threads, CPU "
          f"{torch.backends.cpu.get_cpu_capability()}")
    print_table(table, ["fit steps", "noise", "fit s", "on train", "reader on real", "sway"], width=14)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="*", type=Path)
    parser.add_argument("--fits", nargs="+", metavar="STEPS:NOISE",
                        help="fit readers alone, without a checkpoint")
    parser.add_argument("--pairs", type=Path)
    parser.add_argument("--work", type=Path, default=REPO / "data" / ".cache" / "real_video")
    parser.add_argument("--long_clip", type=float, default=10.0)
    parser.add_argument("--split", default="test", choices=["train", "test"],
                        help="the pairs whose faces are drawn and read: train shows how much of "
                             "a checkpoint's mouth sync holds on the speech it was trained on")
    args = parser.parse_args()
    pairs = args.pairs or prepared(args.work, FIXTURE, 10)
    info = validate_pair_file(pairs)
    ids = {name: index for index, name in enumerate(info.speaker_names)}
    long_ids = [ids[s] for s, d in clip_seconds(FIXTURE).items()
                if s in ids and max(d) >= args.long_clip]
    scoring = argparse.Namespace(metrics="detection_dlib", inception=None)
    dlib, table, real = DlibFaces(), [], None
    if args.fits:
        model_args = ModelArgs(image_size=64, num_speakers=len(info.speaker_names))
        evaluation = evaluation_for(scoring, info, "test", model_args, torch.device("cpu"), None)
        fits_table(args.fits, info, evaluation, np.isin(evaluation.speaker_ids, long_ids), dlib)
        return
    if not args.checkpoints:
        raise SystemExit("pass CHECKPOINT ... or --fits STEPS:NOISE ...")
    for path in args.checkpoints:
        model, checkpoint = generator_from_checkpoint(path, torch.device("cpu"))
        if "mouth_reader" not in checkpoint:
            raise SystemExit(f"{path} was trained without --mouth_open_coef: it holds no reader")
        reader = MouthReader().eval()
        reader.load_state_dict(checkpoint["mouth_reader"])
        evaluation = evaluation_for(scoring, info, args.split, model.args, torch.device("cpu"),
                                    None)
        if real is None:
            real = real_test_faces(evaluation)
            real_open = measure_openness(real, "landmarks", dlib)
            rows = np.isin(evaluation.speaker_ids, long_ids)
            speakers = evaluation.speaker_ids[rows]
        fake = evaluation.generate(model)
        fake_open = measure_openness(fake, "landmarks", dlib)
        fake_read, real_read = read(reader, fake)[rows], read(reader, real)[rows]
        table.append({"checkpoint": path.parent.name if path.name == "latest.pt" else path.name,
                      "mouth sync": within(fake_open[rows], real_open[rows], speakers),
                      "meant": within(fake_read, real_open[rows], speakers),
                      "reader on real": within(real_read, real_open[rows], speakers),
                      "drawn": within(fake_read, fake_open[rows], speakers)})
        print(table[-1], flush=True)
    print(f"\n{int(rows.sum())} {args.split} pairs of the {len(long_ids)} long-clip speakers of {pairs}")
    print_table(table, ["checkpoint", "mouth sync", "meant", "reader on real", "drawn"], width=18)


if __name__ == "__main__":
    main()
