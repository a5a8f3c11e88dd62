"""Mouth sync on pairs made by `python -m data.prepare videos`: talking videos of
the demo speakers are drawn, prepared as a user's videos are, trained on and scored.

    python benchmarks/video_mouth_sync.py                  # 8 speakers x 10 clips of 6 s
    python benchmarks/video_mouth_sync.py --epochs 6 --seed 1 --work /tmp/talk

No real talking video can be fetched here, so the videos are synthesised from the demo
set's speakers (data/demo.py): one continuous stream of each speaker's babble, 25 frames a
second, each frame's mouth opened by the loudness of the 0.5 s of speech centred on it (as
the demo set draws a pair's face from the centre of its window), the head under small
random motion and blinking, pasted on a grey wall. `data.prepare videos` has to find each
face (dlib's HOG), crop it and centre a 1 s window of the soundtrack on the frame's time;
only then can a model learn the mouth. The speakers are named `talk_*`, so `--evaluate`
reads the mouths with dlib's lip landmarks, as on real faces (on these cartoon faces the
landmarks follow the drawn mouth for most speakers; the real frames' `mouth_loudness` says
how well). Prints the commands it runs and the evaluation's table.
"""
from __future__ import annotations

import argparse
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from data import demo, demo_faces  # noqa: E402
from data.schema import SAMPLE_RATE  # noqa: E402
from tests.media import encode_video  # noqa: E402

FPS = 25
FACE = 192          # dlib's HOG finds 15-20 of 20 posed demo faces at this size, 4-20 at 128
WALL = 128


def frame_loudness(speech: np.ndarray, frames: int) -> np.ndarray:
    """RMS of the 0.5 s of speech centred on each frame's time (k / FPS)."""
    half = int(demo.MOUTH_WINDOW_SECONDS * SAMPLE_RATE) // 2
    centres = np.arange(frames) * SAMPLE_RATE // FPS
    return np.array([np.sqrt(np.mean(speech[max(0, c - half):c + half].astype(np.float32) ** 2))
                     for c in centres])


def talking_videos(root: Path, clips: int, seconds: int, seed: int) -> None:
    """root/talk_<i>/clip<c>.mp4 for every demo speaker."""
    for index, speaker in enumerate(demo.demo_speakers()):
        rng = np.random.default_rng([seed, index])
        speech = demo.speak(speaker.voice, clips * seconds, SAMPLE_RATE, rng).reshape(clips, -1)
        loudness = [frame_loudness(clip, seconds * FPS) for clip in speech]
        level = np.percentile(np.concatenate(loudness), 95)          # as the demo set's mouths
        templates = demo_faces.face_templates(speaker.look, FACE)
        for number, (clip, loud) in enumerate(zip(speech, loudness)):
            faces = demo_faces.pose_frames(templates, np.clip(loud / level, 0, 1), rng, FACE)
            frames = np.full((len(faces), FACE + 96, FACE + 160, 3), WALL, np.uint8)
            frames[:, 48:48 + FACE, 80:80 + FACE] = faces
            encode_video(root / f"talk_{index}" / f"clip{number}.mp4", frames,
                         clip.astype(np.float32) / 32768, frames_per_second=FPS)


def run(command: list[str]) -> str:
    print("$ " + " ".join(command), flush=True)
    started = time.perf_counter()
    done = subprocess.run(command, cwd=ROOT, capture_output=True, text=True)
    if done.returncode:
        sys.exit(f"failed ({done.returncode}):\n{done.stdout[-2000:]}\n{done.stderr[-2000:]}")
    print(f"  ({time.perf_counter() - started:.0f} s)", flush=True)
    return done.stdout


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--clips", type=int, default=10, help="videos per speaker")
    parser.add_argument("--seconds", type=int, default=6, help="length of each video")
    parser.add_argument("--frames_per_second", type=float, default=5.0,
                        help="pairs made per second of video (data.prepare's option)")
    parser.add_argument("--epochs", type=int, default=6)
    parser.add_argument("--seed", type=int, default=0)
    parser.add_argument("--work", type=Path, default=None, help="folder for videos and pairs")
    bench = parser.parse_args()
    work = bench.work or Path(tempfile.mkdtemp(prefix="talk_"))
    videos, pairs = work / "videos", work / "talk.h5"
    started = time.perf_counter()
    if not videos.exists():
        talking_videos(videos, bench.clips, bench.seconds, bench.seed)
    print(f"videos: {work} ({time.perf_counter() - started:.0f} s)")
    python = sys.executable
    run([python, "-m", "data.prepare", "videos", str(videos), str(pairs), "--face_size", "64",
         "--frames_per_second", str(bench.frames_per_second), "--vad", "off", "--no_align",
         "--test_fraction", "0.1", "--valid_fraction", "0.1", "--overwrite"])
    name = f"video_mouth_sync_{bench.seed}"
    run([python, "runtime.py", "--dataset", str(pairs), "--epochs", str(bench.epochs),
         "--batch_size", "16", "--lr_G", "0.0002", "--seed", str(bench.seed),
         "--save_path", name, "--no_visdom"])
    print(run([python, "runtime.py", "--evaluate", "--dataset", str(pairs), "--save_path", name,
               "--resume", f"checkpoints/{name}/latest.pt",
               "--metrics", "identity,l1,mouth_sync"]))


if __name__ == "__main__":
    main()
