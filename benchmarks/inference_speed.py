"""Time inference: one 1 s wav file to a face PNG, and batched faces per second; one table.

    python benchmarks/inference_speed.py                  # cpu; cuda too when present
    python benchmarks/inference_speed.py --threads 1 2 --repeats 50

"wav -> png" is what `--inference --audio one.wav` does for each file after start-up:
read and resample the wav (soundfile + torchaudio), peak-normalise and pre-emphasise it,
run the speech encoder and the generator in eval mode, write the PNG. Its parts are timed
separately ("networks CPU ms": the process's CPU time in the networks, load-proof with
--threads 1). "batched" runs the encoder and generator alone over a batch of windows.
The networks are freshly initialised: their speed does not depend on what they learned.
"""
from __future__ import annotations

import argparse
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile
import torch

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))

from data.audio import load_speech, prepare_waveform, speech_windows  # noqa: E402
from models import ModelArgs, SpeechToFace  # noqa: E402
from train_speed import print_table  # noqa: E402  (this folder is on sys.path)
from utils import save_png, to_uint8_images  # noqa: E402


def median_seconds(work, repeats: int, device: torch.device) -> float:
    work()                                                  # warm-up: allocator, kernels
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        if device.type == "cuda":
            torch.cuda.synchronize()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def wav_to_png_parts(model: SpeechToFace, wav: Path, png: Path, device) -> dict:
    """Seconds spent in each part of one file's inference."""
    parts, start = {}, time.perf_counter()
    speech = load_speech(wav)
    window = speech_windows(speech, model.args.audio_samples, source=str(wav))[:1]
    waveform = torch.from_numpy(np.stack([prepare_waveform(w) for w in window]))[:, None]
    parts["read+prepare"] = time.perf_counter() - start
    with torch.no_grad():
        start, cpu = time.perf_counter(), time.process_time()
        face = model(waveform.to(device))[1]
        image = to_uint8_images(face)[0]
        parts["networks"] = time.perf_counter() - start
        cpu = time.process_time() - cpu
    start = time.perf_counter()
    save_png(png, image)
    parts["png"] = time.perf_counter() - start
    return parts, cpu


def bench(device: torch.device, image_size: int, batch: int, repeats: int, wav: Path,
          out: Path) -> dict:
    model = SpeechToFace(ModelArgs(image_size=image_size)).to(device).eval()
    wav_to_png_parts(model, wav, out / "face.png", device)          # warm-up
    runs, cpu = zip(*(wav_to_png_parts(model, wav, out / "face.png", device)
                      for _ in range(repeats)))
    row = {"device": device.type, "threads": torch.get_num_threads(), "size": image_size}
    for part in runs[0]:
        row[f"{part} ms"] = 1000 * statistics.median(r[part] for r in runs)
    row["wav->png ms"] = 1000 * statistics.median(sum(r.values()) for r in runs)
    # process CPU time of the networks: with --threads 1 it hardly moves with other load
    row["networks CPU ms"] = 1000 * statistics.median(cpu)
    waveforms = torch.randn(batch, 1, model.args.audio_samples, device=device)
    with torch.no_grad():
        seconds = median_seconds(lambda: model(waveforms), max(3, repeats // 10), device)
    row[f"faces/s (batch {batch})"] = batch / seconds
    return row


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--image_sizes", type=int, nargs="+", default=[64, 128])
    parser.add_argument("--threads", type=int, nargs="+", default=[torch.get_num_threads()])
    parser.add_argument("--devices", nargs="+",
                        default=["cpu"] + (["cuda"] if torch.cuda.is_available() else []))
    parser.add_argument("--batch", type=int, default=64)
    parser.add_argument("--repeats", type=int, default=30)
    bench_options = parser.parse_args()
    print(f"torch {torch.__version__}")
    rows = []
    with tempfile.TemporaryDirectory() as folder:
        out = Path(folder)
        wav = out / "speech.wav"       # 1 s at 44.1 kHz stereo: resampled and mixed down
        rng = np.random.default_rng(0)
        soundfile.write(wav, rng.normal(0, 0.1, (44100, 2)).astype(np.float32), 44100)
        for device in map(torch.device, bench_options.devices):
            for threads in bench_options.threads if device.type == "cpu" else [None]:
                if threads:
                    torch.set_num_threads(threads)
                rows += [bench(device, size, bench_options.batch, bench_options.repeats, wav,
                               out) for size in bench_options.image_sizes]
    print_table(rows, list(rows[0]), width=16)


if __name__ == "__main__":
    main()
