"""How fast data.prepare runs on this machine: wav2pix import and video preparation.

    python benchmarks/prepare_speed.py [--seconds 24] [--copies 5]

Import: the wav2pix-mini fixture, linked `--copies` times under new numbers so the timing
covers a few hundred pairs. Videos: talking-head mp4s (h264 + AAC at 44.1 kHz, 25 fps)
made here from the fixture's faces and speech, prepared at the default 2 frames/s
(a face in every frame: all but the first and last window, which lack speech, are kept).
Each case runs the real command in-process; the table gives the best of `--repeats`.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import os
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
from data import prepare  # noqa: E402
from data import video as videos  # noqa: E402
from data.audio import resample  # noqa: E402
from data.schema import validate_pair_file  # noqa: E402

FIXTURE = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "wav2pix-mini"


def timed_run(argv) -> float:
    """Seconds one `python -m data.prepare ...` takes, its output swallowed."""
    start = time.perf_counter()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        code = prepare.main([str(a) for a in argv] + ["--overwrite"])
    if code != 0:
        raise RuntimeError(f"data.prepare {argv[0]} failed with status {code}")
    return time.perf_counter() - start


def linked_copies(root: Path, copies: int) -> int:
    """The fixture `copies` times over (numbers shifted), as symlinks; returns the pairs."""
    count = 0
    for wav in FIXTURE.glob("*/*/preprocessed_frame_*.wav"):
        split, speaker, number = wav.parent.parent.name, wav.parent.name, int(wav.stem.rsplit("_", 1)[1])
        face = wav.with_name(f"cropped_face_frame_{number}.png")
        folder = root / split / speaker
        folder.mkdir(parents=True, exist_ok=True)
        for copy in range(copies):
            shifted = number + copy * 100_000
            os.symlink(wav, folder / f"preprocessed_frame_{shifted}.wav")
            os.symlink(face, folder / f"cropped_face_frame_{shifted}.png")
            count += 1
    return count


def talking_video(path: Path, seconds: int, width: int, height: int) -> None:
    """`seconds` of the fixture's faces, one per second, each with its own speech."""
    wavs = sorted(FIXTURE.glob("train/*/preprocessed_frame_*.wav"))[:seconds]
    speech, frames = [], []
    for wav in wavs:
        speech.append(resample(soundfile.read(wav, dtype="float32")[0], 16000, 44100))
        face = Image.open(wav.with_name(wav.name.replace("preprocessed", "cropped_face").replace(".wav", ".png")))
        face = np.asarray(face.convert("RGB"))[..., ::-1]
        side = height * 2 // 3
        canvas = np.full((height, width, 3), (60, 80, 100), np.uint8)
        top, left = (height - side) // 2, (width - side) // 2
        canvas[top:top + side, left:left + side] = np.asarray(Image.fromarray(face).resize((side, side)))
        frames += [canvas] * 25
    videos.encode_video(path, frames, np.concatenate(speech), frames_per_second=25, speech_rate=44100)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=24, help="length of each test video")
    parser.add_argument("--copies", type=int, default=5, help="times the fixture is imported")
    parser.add_argument("--repeats", type=int, default=3)
    args = parser.parse_args()
    if not FIXTURE.is_dir():
        sys.exit(f"the wav2pix-mini fixture is not at {FIXTURE}; it lives beside the clone")
    rows = []
    with tempfile.TemporaryDirectory() as scratch:
        scratch = Path(scratch)
        pairs = linked_copies(scratch / "wav2pix", args.copies)
        best = min(timed_run(["wav2pix", scratch / "wav2pix", scratch / "w.h5"]) for _ in range(args.repeats))
        rows.append(("wav2pix import, 128 px faces", f"{pairs} pairs", f"{best:.2f} s", f"{pairs / best:.0f} pairs/s"))
        for width, height in ((640, 360), (1280, 720)):
            talking_video(scratch / "videos" / "speaker" / f"{height}p.mp4", args.seconds, width, height)
        for height in (360, 720):
            folder = scratch / f"only{height}"
            (folder / "speaker").mkdir(parents=True)
            os.symlink(scratch / "videos" / "speaker" / f"{height}p.mp4", folder / "speaker" / "v.mp4")
            best = min(timed_run(["videos", folder, scratch / "v.h5", "--test_fraction", 0,
                                  "--valid_fraction", 0]) for _ in range(args.repeats))
            kept = validate_pair_file(scratch / "v.h5").splits["train"].num_pairs
            rows.append((f"videos, {height}p 25 fps h264+AAC, 2 frames/s",
                         f"{args.seconds} s of video, {kept} pairs kept",
                         f"{best:.2f} s", f"{args.seconds / best:.1f} s of video/s"))
    print_table(("case", "input", "time (best)", "speed"), rows)


def print_table(header, rows) -> None:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, tuple("-" * w for w in widths), *rows]:
        print("| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths)) + " |")


if __name__ == "__main__":
    main()
