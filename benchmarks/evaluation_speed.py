"""How long evaluation takes on this machine, per 1,000 faces, stage by stage.

    python benchmarks/evaluation_speed.py [--faces 200] [--repeats 3] [--checkpoint CKPT]

Faces come from the demo set's test split (real frames) and from a generator (a checkpoint,
or freshly initialised networks): the same work `--evaluate` does for each face. The
identity classifier's one-off training (cached per pair file) is timed separately.
Each stage reports the median of `--repeats` runs, scaled to 1,000 faces.
"""
from __future__ import annotations

import argparse
import os
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from data.dataset import SpeechFaceDataset, read_faces  # noqa: E402
from data.demo import demo_dataset_path  # noqa: E402
from data.schema import validate_pair_file  # noqa: E402
from models import ModelArgs, SpeechToFace  # noqa: E402
from models.metrics.face_analysis import DlibFaces, HaarFaces  # noqa: E402
from models.metrics.identity_classifier import (classify, train_identity_classifier,  # noqa: E402
                                                training_steps)
from utils import load_checkpoint, to_uint8_images  # noqa: E402


GENERATE = "generate faces (speech encoder + G)"
LANDMARKS_ONLY = "dlib HOG + 68 landmarks"


def median_seconds(work, repeats: int) -> tuple[float, float]:
    """Median wall-clock and CPU seconds of `work`: CPU time says more on a shared machine."""
    wall, cpu = [], []
    for _ in range(repeats):
        start, start_cpu = time.perf_counter(), time.process_time()
        work()
        wall.append(time.perf_counter() - start)
        cpu.append(time.process_time() - start_cpu)
    return statistics.median(wall), statistics.median(cpu)


def generator(checkpoint) -> SpeechToFace:
    if checkpoint is None:
        return SpeechToFace(ModelArgs()).eval()
    saved = load_checkpoint(checkpoint)
    model = SpeechToFace(ModelArgs(**saved["model_args"]))
    model.load_state_dict(saved["networks"])
    return model.eval()


@torch.no_grad()
def generate(model: SpeechToFace, dataset: SpeechFaceDataset, rows) -> np.ndarray:
    faces = []
    for start in range(0, len(rows), 64):
        waveform = torch.stack([dataset.waveform(i) for i in rows[start:start + 64]])
        faces.append(to_uint8_images(model(waveform)[1]))
    return np.concatenate(faces)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--faces", type=int, default=200)
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--checkpoint", default=None)
    options = parser.parse_args()
    info = validate_pair_file(demo_dataset_path())
    model = generator(options.checkpoint)
    dataset = SpeechFaceDataset(info, "test", model.args.audio_samples, model.args.image_size,
                                train=False)
    rows = [i % len(dataset) for i in range(options.faces)]
    train_faces, train_ids = read_faces(info, "train")
    dlib_faces, haar = DlibFaces(), HaarFaces()
    faces = generate(model, dataset, rows)
    start, start_cpu = time.perf_counter(), time.process_time()
    classifier = train_identity_classifier(train_faces, train_ids, len(info.speaker_names), "cpu")
    training = (time.perf_counter() - start, time.process_time() - start_cpu)
    stages = {
        GENERATE: lambda: generate(model, dataset, rows),
        LANDMARKS_ONLY: lambda: dlib_faces.analyse(faces, descriptors=False),
        "dlib HOG + landmarks + 128-d descriptor": lambda: dlib_faces.analyse(faces),
        "OpenCV Haar cascade": lambda: haar.found(faces),
        "identity classifier": lambda: classify(classifier, faces, "cpu"),
    }
    print(f"{options.faces} faces of {model.args.image_size} px, median of {options.repeats}, "
          f"torch threads {torch.get_num_threads()}, load average {os.getloadavg()[0]:.1f}")
    print(f"{'stage':42s} {'wall s / 1000':>14s} {'CPU s / 1000':>13s}")
    scale = 1000 / options.faces
    per_thousand = {}
    for name, work in stages.items():
        per_thousand[name] = [v * scale for v in median_seconds(work, options.repeats)]
        print(f"{name:42s} {per_thousand[name][0]:14.1f} {per_thousand[name][1]:13.1f}")
    analysis = [sum(v[i] for k, v in per_thousand.items() if k not in (LANDMARKS_ONLY, GENERATE))
                for i in (0, 1)]
    generated = [a + g for a, g in zip(analysis, per_thousand[GENERATE])]
    print(f"{'all metrics on generated faces':42s} {generated[0]:14.1f} {generated[1]:13.1f}")
    print(f"{'--evaluate per 1000 pairs (+ real faces)':42s} {generated[0] + analysis[0]:14.1f} "
          f"{generated[1] + analysis[1]:13.1f}")
    print(f"identity classifier training, once per pair file: {training[0]:.1f} s wall, "
          f"{training[1]:.1f} s CPU "
          f"({training_steps(len(train_faces))} steps on {len(train_faces)} faces)")


if __name__ == "__main__":
    main()
