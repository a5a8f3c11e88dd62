"""Faces and speech out of raw videos: find the videos, decode them, find and crop the faces.

One pass over each file decodes its audio and video together (PyAV bundles FFmpeg), so
memory holds only the speech that the frames still waiting for their window need, never
the whole soundtrack: an hour-long video costs what a minute-long one does.
"""
from __future__ import annotations

import csv
from collections import deque
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import av
import numpy as np

from data.faces import FaceCropper, FaceSettings
from data.schema import SAMPLE_RATE
from data.speech_activity import make_vad
from utils import UserError

VIDEO_SUFFIXES = (".mp4", ".mkv", ".webm", ".avi", ".mov")
# What the decoder can raise on a broken file, besides its own FFmpegError family.
DECODE_ERRORS = (av.FFmpegError, OSError, ValueError, UnicodeDecodeError)


class VideoListError(UserError):
    """The folder or manifest of videos cannot be read."""


class BrokenVideo(Exception):
    """One video that cannot be used; the run skips it and reports `reason`."""

    def __init__(self, reason: str):
        super().__init__(reason)
        self.reason = reason


@dataclass(frozen=True)
class VideoSource:
    path: Path
    speaker: str
    label: str  # how pair names and reports call it, e.g. "alice/talk.mp4"


@dataclass
class FrameWindow:
    """One sampled frame and the speech centred on it, or why that pair is dropped."""
    time: float                           # seconds on the container's clock
    face: np.ndarray | None = None        # uint8 (S, S, 3) RGB
    waveform: np.ndarray | None = None    # float32 (L,) at 16 kHz
    dropped: str | None = None


# ---------------------------------------------------------------- finding the videos

def find_videos(src) -> tuple[list[VideoSource], list[str]]:
    """Videos from a folder `<speaker>/.../<name>.<ext>` or a CSV manifest `path,speaker`.

    Returns the videos sorted by label and notes on files that were passed over.
    """
    src = Path(src)
    if not src.exists():
        raise VideoListError(f"{src}: no such folder or manifest; pass a folder of "
                             "<speaker>/<video> files or a CSV of path,speaker")
    videos, notes = (read_manifest(src), []) if src.is_file() else _scan_folder(src)
    if not videos:
        raise VideoListError(f"{src}: no videos ({', '.join(VIDEO_SUFFIXES)}) found; "
                             "put them in one folder per speaker: <speaker>/<name>.mp4")
    return sorted(videos, key=lambda v: v.label), notes


def _scan_folder(root: Path) -> tuple[list[VideoSource], list[str]]:
    videos, notes = [], []
    for path in sorted(root.rglob("*")):
        if not path.is_file() or path.suffix.lower() not in VIDEO_SUFFIXES:
            continue
        relative = path.relative_to(root)
        if len(relative.parts) < 2:
            notes.append(f"{relative}: not inside a speaker folder, ignored")
            continue
        videos.append(VideoSource(path, relative.parts[0], relative.as_posix()))
    return videos, notes


def read_manifest(manifest: Path) -> list[VideoSource]:
    """Rows `path,speaker` (a header row `path,speaker` is allowed); relative paths are
    taken from the manifest's folder. Missing videos are kept: the run reports them."""
    try:
        with open(manifest, newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError) as error:
        raise VideoListError(f"{manifest}: cannot read the manifest ({error})") from None
    videos = []
    for line, row in enumerate(rows, start=1):
        cells = [cell.strip() for cell in row]
        if not any(cells) or (line == 1 and [c.lower() for c in cells] == ["path", "speaker"]):
            continue
        if len(cells) != 2 or not all(cells):
            raise VideoListError(f"{manifest}, line {line}: expected `path,speaker`, "
                                 f"found {','.join(row)!r}")
        path = Path(cells[0]) if Path(cells[0]).is_absolute() else manifest.parent / cells[0]
        videos.append(VideoSource(path, cells[1], cells[0]))
    return videos


# ---------------------------------------------------------------- speech

class SpeechTimeline:
    """The decoded speech as a sliding buffer placed on the container's clock."""

    def __init__(self):
        self.samples = np.zeros(0, np.float32)
        self.first_sample: int | None = None   # clock position of samples[0], in samples

    def add(self, samples: np.ndarray, time: float | None) -> None:
        if self.first_sample is None:
            self.first_sample = int(round((time or 0.0) * SAMPLE_RATE))
        self.samples = np.concatenate([self.samples, samples])

    @property
    def end(self) -> int | None:
        return None if self.first_sample is None else self.first_sample + len(self.samples)

    def covers(self, start: int, length: int) -> bool:
        return self.end is not None and self.end >= start + length

    def window(self, start: int, length: int) -> np.ndarray | None:
        """The `length` samples from clock position `start`, or None where the audio ends."""
        if self.first_sample is None or start < self.first_sample or not self.covers(start, length):
            return None
        offset = start - self.first_sample
        return self.samples[offset:offset + length].copy()

    def forget_before(self, position: int) -> None:
        if self.first_sample is not None and position > self.first_sample:
            drop = min(position - self.first_sample, len(self.samples))
            self.samples = self.samples[drop:]
            self.first_sample += drop


def rms_dbfs(waveform: np.ndarray) -> float:
    """Loudness of a float waveform in dB relative to full scale; -inf for digital silence."""
    power = float(np.mean(np.square(waveform, dtype=np.float64)))
    return 10 * np.log10(power) if power > 0 else float("-inf")


# ---------------------------------------------------------------- one video

@dataclass(frozen=True)
class WindowSettings:
    window_samples: int = SAMPLE_RATE
    frames_per_second: float = 2.0
    face_size: int = 128
    margin: float = 0.1  # a border beyond wav2pix's framing, which Haar's box matches
    silence_dbfs: float = -50.0
    detector: str = "hog"
    align: bool = True
    vad: str = "silero"
    speech_fraction: float = 0.5

    def face_settings(self) -> FaceSettings:
        return FaceSettings(self.detector, self.align, self.face_size, self.margin)


class Inspector:
    """What judges one process's frames and windows: the face cropper and the voice
    detector, loaded once per process and reset per clip."""

    def __init__(self, settings: WindowSettings):
        self.settings = settings
        self.faces = FaceCropper(settings.face_settings())
        self.vad = make_vad(settings.vad)
        self.decoder_threads = 0  # FFmpeg's own choice (one per core); workers use 1


def probe(path: Path) -> str | None:
    """Why a video cannot be used (unreadable, no audio or video track), or None.

    Reads only the header, so the splits can be drawn among usable videos."""
    try:
        with av.open(str(path)) as container:
            return _missing_track(container)
    except DECODE_ERRORS as error:
        return _reason(error)


def _missing_track(container) -> str | None:
    if not container.streams.video:
        return "no video track"
    if not container.streams.audio:
        return "no audio track"
    return None


def frame_windows(path: Path, settings: WindowSettings, inspector: Inspector) -> Iterator[FrameWindow]:
    """Every sampled frame of one video with its speech window, in time order.

    Raises BrokenVideo when the file cannot be opened or has no audio or video track;
    a decoding error midway ends the video (pairs already yielded stay) with BrokenVideo.
    """
    try:
        container = av.open(str(path))
    except DECODE_ERRORS as error:
        raise BrokenVideo(_reason(error)) from None
    with container:
        missing = _missing_track(container)
        if missing:
            raise BrokenVideo(missing)
        inspector.faces.start_clip()
        yield from _pair_up(container, settings, inspector)


def _pair_up(container, settings: WindowSettings, inspector: Inspector) -> Iterator[FrameWindow]:
    video, audio = container.streams.video[0], container.streams.audio[0]
    video.thread_type = "AUTO"
    video.thread_count = inspector.decoder_threads
    # Keep the channels and average them ourselves, as data.audio does: FFmpeg's own
    # downmix scales each channel by 0.71, so loud stereo speech would clip.
    resampler = av.AudioResampler(format="fltp", rate=SAMPLE_RATE)
    speech, waiting = SpeechTimeline(), deque()
    sampler = FrameSampler(settings.frames_per_second)
    half = settings.window_samples // 2
    last_time = 0.0
    try:
        for packet in container.demux(video, audio):
            for frame in packet.decode():
                if packet.stream.type == "audio":
                    for chunk in resampler.resample(frame):
                        speech.add(chunk.to_ndarray().mean(axis=0), chunk.time)  # (C, n) -> (n,)
                elif sampler.take(frame.time):
                    last_time = frame.time
                    waiting.append(_look_at(frame, inspector.faces))
            yield from _ready(waiting, speech, inspector, final=False)
            # no frame to come can start its window before the oldest waiting one, or
            # before the next sampling time: the speech before that is never needed
            oldest = waiting[0].time if waiting else float(sampler.next_time) - 1e-3
            speech.forget_before(_start(oldest, half))
        for chunk in resampler.resample(None):
            speech.add(chunk.to_ndarray().mean(axis=0), chunk.time)
    except DECODE_ERRORS as error:
        raise BrokenVideo(f"{_reason(error)} (decoding stopped at {last_time:.1f} s)") from None
    yield from _ready(waiting, speech, inspector, final=True)


class FrameSampler:
    """Picks the first frame at or after each multiple of 1 / frames_per_second."""

    def __init__(self, frames_per_second: float):
        self.step = Fraction(1) / Fraction(frames_per_second).limit_denominator(1000)
        self.next_time = Fraction(0)

    def take(self, time: float | None) -> bool:
        if time is None or time < self.next_time - Fraction(1, 1000):
            return False
        while self.next_time <= time + 1e-3:
            self.next_time += self.step
        return True


def _look_at(frame, faces: FaceCropper) -> FrameWindow:
    """Find the face on arrival, so a waiting frame holds a small crop, not the picture."""
    face, dropped = faces.crop(frame.to_ndarray(format="rgb24"), frame.time)  # (H, W, 3)
    return FrameWindow(frame.time, face=face, dropped=dropped)


def _start(time: float, half: int) -> int:
    return int(round(time * SAMPLE_RATE)) - half


def _ready(waiting: deque, speech: SpeechTimeline, inspector: Inspector,
           final: bool) -> Iterator[FrameWindow]:
    """Yield waiting frames whose speech window has fully arrived (all of them at the end)."""
    settings = inspector.settings
    half, length = settings.window_samples // 2, settings.window_samples
    while waiting and (final or speech.covers(_start(waiting[0].time, half), length)):
        item = waiting.popleft()
        if item.dropped is None:
            item.waveform = speech.window(_start(item.time, half), length)
            item.dropped = _not_speech(item.waveform, inspector)
        if item.dropped is not None:
            item.face, item.waveform = None, None
        yield item


def _not_speech(waveform: np.ndarray | None, inspector: Inspector) -> str | None:
    """Why a window is not usable speech (missing, silent, no voice in it), or None."""
    if waveform is None:
        return "outside audio"
    if rms_dbfs(waveform) < inspector.settings.silence_dbfs:
        return "silent speech"
    vad = inspector.vad
    if vad is not None and vad.speech_fraction(waveform) < inspector.settings.speech_fraction:
        return "no voice (VAD)"
    return None


def _reason(error: Exception) -> str:
    text = str(error).strip().splitlines()[0] if str(error).strip() else ""
    return text or type(error).__name__
