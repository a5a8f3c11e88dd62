"""How fast data.prepare runs on this machine, and how well its detectors do.

    python benchmarks/prepare_speed.py [--seconds 24] [--copies 5] [--repeats 3]
                                       [--videos 8] [--workers 1 2] [--tables speed workers detectors vad]

Detectors: the 100 fixture faces pasted on a 640x360 wall at 2/3 and 1/3 of its height
(turned up to 10 degrees), and 100 non-faces (the same faces cut into 8x8 shuffled tiles,
skin-coloured ellipses, smooth noise): recall, false positives, ms per frame.
Voice detectors: share of the fixture's 1 s speech windows, and of white noise, pink
noise and harmonic chords, that they pass at --speech_fraction 0.5; ms per window.

Import: the wav2pix-mini fixture, linked `--copies` times under new numbers so the timing
covers a few hundred pairs. Videos: talking-head mp4s (h264 + AAC at 44.1 kHz, 25 fps)
made here from the fixture's faces and speech, prepared at the default 2 frames/s
(a face in every frame: all but the first and last window, which lack speech, are kept).
Each case runs the real command in-process; the table gives the best of `--repeats`, and
that run's speed per CPU second of its process (all threads: FFmpeg decodes on several),
which other jobs on the machine do not slow down as much as they do the wall clock.

Workers: `--videos` different 360p talking heads of `--seconds` each (workers share out
whole videos, so a run needs several), prepared with the defaults by data.prepare's own
command line in a fresh process (start-up and imports included) for each `--workers`
count in turn, `--repeats` rounds; best wall time, and the CPU seconds all its processes
used (user + system) in that run. Other jobs on the machine take cores from the workers
(Linux shares the cores fairly between sessions, however many processes each runs), so
the load average is printed beside it, and so is the CPU time on the critical path: the
parent's own (imports, models, probing, merging) plus that of its busiest worker. On
free cores the wall time is that; its speed is the last speed column.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import soundfile
from PIL import Image

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import cv2  # noqa: E402

from data import faces as face_tools  # noqa: E402
from data import prepare  # noqa: E402
from data import speech_activity  # noqa: E402
from data.audio import resample  # noqa: E402
from data.schema import validate_pair_file  # noqa: E402
from tests.media import encode_video  # noqa: E402

FIXTURE = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "wav2pix-mini"


def timed_run(argv) -> tuple[float, float]:
    """(wall s, CPU s of this process) one `python -m data.prepare ...` takes, in-process,
    its output swallowed."""
    start, cpu = time.perf_counter(), time.process_time()
    with contextlib.redirect_stdout(io.StringIO()), contextlib.redirect_stderr(io.StringIO()):
        code = prepare.main([str(a) for a in argv] + ["--overwrite"])
    if code != 0:
        raise RuntimeError(f"data.prepare {argv[0]} failed with status {code}")
    return time.perf_counter() - start, time.process_time() - cpu


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


def talking_video(path: Path, seconds: int, width: int, height: int, first: int = 0) -> None:
    """`seconds` of the fixture's faces, one per second, each with its own speech, from
    the `first` training pair on (round the fixture's pairs again past the last)."""
    wavs = sorted(FIXTURE.glob("train/*/preprocessed_frame_*.wav"))
    wavs = [wavs[(first + k) % len(wavs)] for k in range(seconds)]
    speech, frames = [], []
    for wav in wavs:
        speech.append(resample(soundfile.read(wav, dtype="float32")[0], 16000, 44100))
        face_name = wav.name.replace("preprocessed", "cropped_face").replace(".wav", ".png")
        face = Image.open(wav.with_name(face_name))
        face = np.asarray(face.convert("RGB"))[..., ::-1]
        side = height * 2 // 3
        canvas = np.full((height, width, 3), (60, 80, 100), np.uint8)
        top, left = (height - side) // 2, (width - side) // 2
        canvas[top:top + side, left:left + side] = np.asarray(Image.fromarray(face).resize((side, side)))
        frames += [canvas] * 25
    encode_video(path, frames, np.concatenate(speech), frames_per_second=25, speech_rate=44100)


def fixture_faces() -> list:
    return [np.asarray(Image.open(p).convert("RGB"))[..., ::-1]
            for p in sorted(FIXTURE.glob("*/*/cropped_face_frame_*.png"))]


def pasted(image: np.ndarray, side: int, degrees: float) -> np.ndarray:
    canvas = np.full((360, 640, 3), (60, 80, 100), np.uint8)
    square = cv2.resize(np.ascontiguousarray(image), (side, side), interpolation=cv2.INTER_AREA)
    turn = cv2.getRotationMatrix2D((side / 2, side / 2), degrees, 1.0)
    square = cv2.warpAffine(square, turn, (side, side), borderMode=cv2.BORDER_REPLICATE)
    top, left = (360 - side) // 2, (640 - side) // 2
    canvas[top:top + side, left:left + side] = square
    return canvas


def non_faces(faces: list, rng) -> list:
    """Things with a face's colours and size but no face: shuffled tiles, ellipses, noise."""
    images = []
    for index, face in enumerate(faces):
        face = cv2.resize(np.ascontiguousarray(face), (240, 240))
        kind = index % 3
        if kind == 0:
            tiles = face.reshape(8, 30, 8, 30, 3).transpose(0, 2, 1, 3, 4).reshape(64, 30, 30, 3)
            tiles = tiles[rng.permutation(64)].reshape(8, 8, 30, 30, 3)
            image = tiles.transpose(0, 2, 1, 3, 4).reshape(240, 240, 3)
        elif kind == 1:
            image = np.full((240, 240, 3), (40, 40, 40), np.uint8)
            colour = tuple(int(c) for c in face[100:140, 100:140].reshape(-1, 3).mean(0))
            cv2.ellipse(image, (120, 120), (80, 105), 0, 0, 360, colour, -1)
            for x in (85, 155):  # two dark spots where eyes would be
                cv2.circle(image, (x, 100), 10, (30, 30, 30), -1)
        else:
            image = cv2.resize(rng.integers(0, 255, (12, 12, 3), dtype=np.uint8), (240, 240),
                               interpolation=cv2.INTER_CUBIC)
        images.append(pasted(image, 240, 0))
    return images


def detector_rows(rng) -> list:
    faces = fixture_faces()
    turns = rng.uniform(-10, 10, len(faces))
    large = [pasted(f, 240, t) for f, t in zip(faces, turns)]
    small = [pasted(f, 120, t) for f, t in zip(faces, turns)]
    others = non_faces(faces, rng)
    rows = []
    for name in face_tools.DETECTORS:
        detector = face_tools.make_detector(name)
        start = time.perf_counter()
        found_large = sum(bool(face_tools.find_faces(detector, frame)) for frame in large)
        per_frame = (time.perf_counter() - start) / len(large) * 1000
        found_small = sum(bool(face_tools.find_faces(detector, frame)) for frame in small)
        fooled = sum(bool(face_tools.find_faces(detector, frame)) for frame in others)
        rows.append((name, f"{found_large}/{len(large)}", f"{found_small}/{len(small)}",
                     f"{fooled}/{len(others)}", f"{per_frame:.1f}"))
    return rows


def vad_rows(rng) -> list:
    speech = [soundfile.read(p, dtype="float32")[0] for p in sorted(FIXTURE.glob("*/*/*.wav"))]
    t = np.arange(16000) / 16000

    def chord(seed):
        root = np.random.default_rng(seed).uniform(110, 440)
        return sum(np.sin(2 * np.pi * root * ratio * h * t) / h
                   for ratio in (1, 1.26, 1.5) for h in range(1, 6)) * 0.1

    def pink(seed):
        spectrum = np.fft.rfft(np.random.default_rng(seed).standard_normal(16000))
        signal = np.fft.irfft(spectrum / np.sqrt(np.maximum(np.arange(len(spectrum)), 1)))
        return 0.2 * signal / signal.std()

    others = {"white noise": [0.1 * rng.standard_normal(16000) for _ in range(20)],
              "pink noise": [pink(s) for s in range(20)], "chords": [chord(s) for s in range(20)]}
    rows = []
    for name in ("webrtc", "silero"):
        vad = speech_activity.make_vad(name)
        start = time.perf_counter()
        passed = sum(vad.speech_fraction(w) >= 0.5 for w in speech)
        per_window = (time.perf_counter() - start) / len(speech) * 1000
        cells = [f"{sum(vad.speech_fraction(np.float32(w)) >= 0.5 for w in ws)}/{len(ws)}"
                 for ws in others.values()]
        rows.append((name, f"{passed}/{len(speech)}", *cells, f"{per_window:.2f}"))
    return rows


VIDEO_CASES = (  # (label, extra options)
    ("Haar, box crop, no VAD (no alignment, no voice check)",
     ["--detector", "haar", "--no_align", "--vad", "off"]),
    ("defaults: HOG, aligned, Silero VAD", []),
)
REPO = Path(__file__).resolve().parents[1]


# data.prepare's own command line, reporting each process's CPU time: every worker after
# each of its videos (a forked or spawned child's clock starts at 0), the parent at the end.
DRIVER = """
import json, os, resource, sys, time
from data import prepare, video_parts
write_part = video_parts.write_part
def timed(*args, **kwargs):
    summary = write_part(*args, **kwargs)
    print(json.dumps({"pid": os.getpid(), "cpu": time.process_time()}), file=sys.stderr, flush=True)
    return summary
video_parts.write_part = timed
code = prepare.main(sys.argv[1:])
usage = resource.getrusage(resource.RUSAGE_SELF)
print(json.dumps({"parent": os.getpid(), "cpu": usage.ru_utime + usage.ru_stime}), file=sys.stderr)
sys.exit(code)
"""


def cli_run(argv) -> dict:
    """Wall time, CPU of all processes, and CPU on the critical path (the parent's own, plus
    its busiest worker's) of `python -m data.prepare ...` run in a fresh process."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    done = subprocess.run([sys.executable, "-c", DRIVER, *map(str, argv), "--overwrite"],
                          cwd=REPO, capture_output=True, text=True)
    wall = time.perf_counter() - start
    if done.returncode != 0:
        raise RuntimeError(f"data.prepare {argv[0]} failed: {done.stderr.strip()[-300:]}")
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    reports = [json.loads(r) for r in re.findall(r'\{"(?:pid|parent)"[^}]*\}', done.stderr)]
    parent = next(r for r in reports if "parent" in r)
    workers = {r["pid"]: r["cpu"] for r in reports if r.get("pid", parent["parent"]) != parent["parent"]}
    if not workers and any(r.get("pid") for r in reports):
        workers = {0: 0.0}  # one worker: the parent prepared every video itself
    # spawned workers import data.prepare afresh, without the driver's report: no figure
    critical = parent["cpu"] + max(workers.values()) if workers else float("nan")
    return {"wall": wall, "cpu": (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime),
            "critical": critical}


def load() -> str:
    return "/".join(f"{value:.1f}" for value in os.getloadavg())


def workers_rows(scratch: Path, count: int, seconds: int, workers: list, repeats: int) -> list:
    """Rows of the --workers table: `count` different 360p videos, each worker count in turn."""
    folder = scratch / "many"
    for index in range(count):
        talking_video(folder / ("jaime", "javi")[index % 2] / f"clip{index}.mp4", seconds, 640, 360,
                      first=index * seconds)
    runs = {n: [] for n in workers}
    for _ in range(repeats):  # alternate, so a change in the machine's load hits every count
        for n in workers:
            loads = load()
            run = cli_run(["videos", folder, scratch / f"w{n}.h5", "--test_fraction", 0,
                           "--valid_fraction", 0, "--workers", n])
            runs[n].append((run["wall"], run, loads))
    rows, video = [], count * seconds
    for n in workers:
        kept = validate_pair_file(scratch / f"w{n}.h5").splits["train"].num_pairs
        wall, best, loads = min(runs[n], key=lambda r: r[0])
        critical = min(r["critical"] for _, r, _ in runs[n])
        rows.append((str(n), f"{count} x {seconds} s", str(kept), f"{wall:.2f} s", f"{video / wall:.1f}",
                     f"{best['cpu'] / video:.3f}", f"{critical:.2f} s", f"{video / critical:.1f}", loads,
                     ", ".join(f"{w:.1f}" for w, _, _ in runs[n])))
    return rows


TABLES = ("speed", "workers", "detectors", "vad")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=24, help="length of each test video")
    parser.add_argument("--copies", type=int, default=5, help="times the fixture is imported")
    parser.add_argument("--repeats", type=int, default=3)
    parser.add_argument("--videos", type=int, default=8, help="videos in the --workers table")
    parser.add_argument("--workers", type=int, nargs="+", default=[1, 2])
    parser.add_argument("--tables", choices=TABLES, nargs="+", default=list(TABLES))
    args = parser.parse_args()
    if not FIXTURE.is_dir():
        sys.exit(f"the wav2pix-mini fixture is not at {FIXTURE}; it lives beside the clone")
    rng = np.random.default_rng(0)
    with tempfile.TemporaryDirectory() as scratch:
        if "speed" in args.tables:
            print_table(("case", "input", "time (best)", "speed", "per CPU second (same run)"),
                        speed_rows(Path(scratch), args))
            print()
        if "workers" in args.tables:
            rows = workers_rows(Path(scratch), args.videos, args.seconds, args.workers, args.repeats)
            print_table(("--workers", "360p videos", "pairs", "time (best)", "s of video/s",
                         "CPU s per s of video", "critical path CPU (best)", "s of video/s, free cores",
                         "load before (1/5/15 min)", "all runs, s"), rows)
            print()
    if "detectors" in args.tables:
        print_table(("detector", "recall, face 2/3 of 360p", "recall, face 1/3", "false positives",
                     "ms per 640x360 frame"), detector_rows(rng))
        print()
    if "vad" in args.tables:
        print_table(("voice detector", "fixture speech passed", "white noise", "pink noise", "chords",
                     "ms per 1 s window"), vad_rows(rng))


def speed_rows(scratch: Path, args) -> list:
    """The wav2pix import and two copies of one video at 360p and 720p, in-process."""
    pairs = linked_copies(scratch / "wav2pix", args.copies)
    best, cpu = min(timed_run(["wav2pix", scratch / "wav2pix", scratch / "w.h5"])
                    for _ in range(args.repeats))
    rows = [("wav2pix import, 128 px faces", f"{pairs} pairs", f"{best:.2f} s", f"{pairs / best:.0f} pairs/s",
             f"{pairs / cpu:.0f} pairs/s")]
    for width, height in ((640, 360), (1280, 720)):
        talking_video(scratch / "videos" / "speaker" / f"{height}p.mp4", args.seconds, width, height)
    for height in (360, 720):
        folder = scratch / f"only{height}"
        (folder / "speaker").mkdir(parents=True)
        for copy in range(2):
            os.symlink(scratch / "videos" / "speaker" / f"{height}p.mp4", folder / "speaker" / f"v{copy}.mp4")
        for label, extra in VIDEO_CASES:
            best, cpu = min(timed_run(["videos", folder, scratch / "v.h5", "--test_fraction", 0,
                                       "--valid_fraction", 0, *extra]) for _ in range(args.repeats))
            kept = validate_pair_file(scratch / "v.h5").splits["train"].num_pairs
            rows.append((f"videos, {height}p 25 fps h264+AAC, 2 frames/s, {label}",
                         f"2 x {args.seconds} s of video, {kept} pairs kept",
                         f"{best:.2f} s", f"{2 * args.seconds / best:.1f} s of video/s",
                         f"{2 * args.seconds / cpu:.1f} s of video/s"))
    return rows


def print_table(header, rows) -> None:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    for row in [header, tuple("-" * w for w in widths), *rows]:
        print("| " + " | ".join(cell.ljust(w) for cell, w in zip(row, widths)) + " |")


if __name__ == "__main__":
    main()
