"""Which identity errors are the generator's, and which the speech's: the generated faces
against two readers of the speech alone, on the test pairs of a checkpoint's pair file.

    python benchmarks/identity_ceiling.py checkpoints/demo/latest.pt [more checkpoints]

For each checkpoint, per test pair:
- faces: identity top-1 of its generated face (the identity classifier, and the averaged
  generator where the run kept one, as `--evaluate`);
- embedding: the checkpoint's own speaker classifier on the speech embedding, which is what
  the generator is given;
- spectrum: a linear classifier on each window's mean log power spectrum, trained here on the
  train split (a reader of the voice that shares nothing with the project's networks).
It prints each reader's accuracy and the test rows it gets wrong. A row that every reader
gets wrong is a window whose voice reads as another speaker's: a face drawn from it is
that speaker's only by chance, so the speech readers show what identity top-1 can reach.
"""
from __future__ import annotations

import argparse
import sys
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data.dataset import SpeechFaceDataset, in_chunks  # noqa: E402
from data.schema import validate_pair_file  # noqa: E402
from models import SpeechToFace  # noqa: E402
from models.metrics.evaluation import SplitEvaluation, metric_suite  # noqa: E402
from runtime import dataset_path  # noqa: E402
from models.loading import generator_from_checkpoint  # noqa: E402


def log_spectra(dataset: SpeechFaceDataset) -> torch.Tensor:
    """(N, 257): the mean log power spectrum (512-point frames, 10 ms hop) of each window."""
    window, spectra = torch.hann_window(512), []
    for chunk in in_chunks(list(range(len(dataset)))):
        waveform = dataset.batch(chunk)[0].squeeze(1)
        power = torch.stft(waveform, 512, 160, window=window, return_complex=True).abs() ** 2
        spectra.append(torch.log(power + 1e-6).mean(dim=-1))
    return torch.cat(spectra)


def spectrum_predictions(train: SpeechFaceDataset, test: SpeechFaceDataset, seed: int = 0):
    """Test speakers predicted by softmax regression on standardised log spectra."""
    torch.manual_seed(seed)
    x_train, x_test = log_spectra(train), log_spectra(test)
    mean, std = x_train.mean(0), x_train.std(0) + 1e-6
    x_train, x_test = (x_train - mean) / std, (x_test - mean) / std
    labels = torch.as_tensor(train.speaker_ids, dtype=torch.long)
    model = torch.nn.Linear(x_train.shape[1], int(labels.max()) + 1)
    optimizer = torch.optim.Adam(model.parameters(), 1e-2, weight_decay=1e-4)
    for _ in range(500):
        optimizer.zero_grad()
        F.cross_entropy(model(x_train), labels).backward()
        optimizer.step()
    with torch.no_grad():
        return model(x_test).argmax(1).numpy()


@torch.no_grad()
def embedding_predictions(model: SpeechToFace, test: SpeechFaceDataset) -> np.ndarray:
    return torch.cat([model.speaker_classifier(model.encode(test.batch(chunk)[0])).argmax(1)
                      for chunk in in_chunks(list(range(len(test))))]).numpy()


def face_predictions(model: SpeechToFace, info, test: SpeechFaceDataset) -> np.ndarray:
    rows = list(range(len(test)))
    evaluation = SplitEvaluation(metric_suite(["identity"], info, "cpu", None, "test", rows),
                                 test, rows, "cpu", unseen=False)
    return evaluation.suite.analyse(evaluation.generate(model)).logits.argmax(1)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkpoints", nargs="+", type=Path)
    args = parser.parse_args()
    spectrum_cache = {}
    for path in args.checkpoints:
        model, checkpoint = generator_from_checkpoint(path, torch.device("cpu"))
        if model.args.condition != "speech":
            sys.exit(f"{path}: not a speech-conditioned model; nothing to compare")
        options = argparse.Namespace(**checkpoint["options"])
        info = validate_pair_file(dataset_path(options))
        split = {name: SpeechFaceDataset(info, name, model.args.audio_samples,
                                         model.args.image_size, train=False, condition="speech")
                 for name in ("train", "test")}
        truth = split["test"].speaker_ids
        key = (str(info.path), model.args.audio_samples)
        if key not in spectrum_cache:
            spectrum_cache[key] = spectrum_predictions(split["train"], split["test"])
        readers = {"faces": face_predictions(model, info, split["test"]),
                   "embedding": embedding_predictions(model, split["test"]),
                   "spectrum": spectrum_cache[key]}
        print(f"\n{path} on the test split of {info.path} ({len(truth)} pairs)")
        wrong = {}
        for name, predicted in readers.items():
            wrong[name] = set(np.nonzero(predicted != truth)[0].tolist())
            print(f"  {name:9s} top-1 {np.mean(predicted == truth):.4f}  wrong rows "
                  f"{sorted(wrong[name])}")
        speech = wrong["embedding"] & wrong["spectrum"]
        print(f"  both speech readers wrong on rows {sorted(speech)}: a face drawn from those "
              f"windows is its speaker's only by chance, so identity top-1 near "
              f"{1 - len(speech) / len(truth):.4f} is what this speech allows")


if __name__ == "__main__":
    main()
