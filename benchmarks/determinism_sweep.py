"""Are the networks' gradients bit-identical from run to run on this machine's CPU?

    python benchmarks/determinism_sweep.py [--repeats 6] [--seconds 0.3 0.5 1 2 4] [--batches 4 16]

Exact resume (tests/test_resume.py) needs every backward pass to sum in the same order each
time. This repeats one forward/backward through encoder, generator and discriminator (in
channels_last, as the Trainer runs them) for each speech length and batch size, and counts
the parameters whose gradient ever differs from the first run's. Through oneDNN's
convolution backward the last encoder block at 0.3 s (kernel 15 over 5 zero-padded samples)
was not deterministic; it runs as unfold + matmul (models/speech_encoder.py:StridedConv1d),
which is, and so must it stay.
"""
from __future__ import annotations

import argparse
import copy
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from models import ModelArgs, SpeechToFace  # noqa: E402


def gradients(model: SpeechToFace, waveform: torch.Tensor) -> dict[str, torch.Tensor]:
    model = copy.deepcopy(model)
    embedding, faces = model(waveform)
    scores, features = model.projection_discriminator(faces, embedding)
    (faces.square().mean() + embedding.square().mean() + scores.mean()
     + features.mean()).backward()
    return {n: p.grad.clone() for n, p in model.named_parameters() if p.grad is not None}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeats", type=int, default=6)
    parser.add_argument("--seconds", type=float, nargs="+", default=[0.3, 0.5, 1.0, 2.0, 4.0])
    parser.add_argument("--batches", type=int, nargs="+", default=[4, 16])
    args = parser.parse_args()
    print(f"torch {torch.__version__}, {torch.get_num_threads()} threads\n")
    print("| speech s | batch | parameters with differing gradients | seconds |")
    print("| -------: | ----: | ----------------------------------: | ------: |")
    for seconds in args.seconds:
        for batch in args.batches:
            torch.manual_seed(0)
            samples = round(seconds * 16000)
            model = SpeechToFace(ModelArgs(audio_samples=samples, num_speakers=3))
            model = model.to(memory_format=torch.channels_last)
            waveform = torch.randn(batch, 1, samples)
            start, first, differing = time.perf_counter(), gradients(model, waveform), set()
            for _ in range(args.repeats):
                again = gradients(model, waveform)
                differing |= {n for n in first if not torch.equal(first[n], again[n])}
            print(f"| {seconds:8.1f} | {batch:5d} | {len(differing):35d} | "
                  f"{time.perf_counter() - start:7.1f} |")


if __name__ == "__main__":
    main()
