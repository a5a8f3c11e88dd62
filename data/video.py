"""Faces and speech out of raw videos: find the videos, decode them, find and crop the faces.

One pass over each file decodes its audio and video together (PyAV bundles FFmpeg), so
memory holds only the speech that the frames still waiting for their window need, never
the whole soundtrack: an hour-long video costs what a minute-long one does.
"""
from __future__ import annotations

import csv
from collections import deque
from dataclasses import dataclass, field
from fractions import Fraction
from pathlib import Path
from typing import Iterator

import av
import numpy as np

from data.faces import FaceCropper, FaceSettings
from data.schema import SAMPLE_RATE, SPLITS
from data.speech_activity import make_vad
from utils import UserError

# The containers FFmpeg (bundled by PyAV) demuxes that hold picture and sound together; it
# decodes their codecs too (H.264/5, VP8/9, AV1, MPEG-1/2/4, WMV, DV, ...). A folder's
# other files are skipped and listed. A manifest row is read whatever its suffix, as
# FFmpeg tells the container from the bytes.
VIDEO_SUFFIXES = (
    ".mp4", ".m4v", ".mov", ".qt", ".3gp", ".3g2", ".f4v", ".mj2",   # ISO media / QuickTime
    ".mkv", ".mk3d", ".webm",                                        # Matroska
    ".avi", ".divx",
    ".mpg", ".mpeg", ".mpe", ".vob", ".mod", ".tod",                 # MPEG program stream
    ".ts", ".mts", ".m2ts", ".m2t", ".trp", ".tp",                   # MPEG transport stream
    ".flv", ".wmv", ".asf", ".ogv", ".ogm", ".rm", ".rmvb", ".dv", ".dif",
    ".mxf", ".nut", ".wtv", ".nsv", ".amv",
)
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
    split: str | None = None  # fixed by the manifest; None follows --split_by


@dataclass
class VideoList:
    """The videos found (sorted by label) and what was passed over, for the summary."""
    videos: list
    notes: list = field(default_factory=list)     # files passed over, and why
    skipped: list = field(default_factory=list)   # (file, why): not a video by its suffix
    unread_speakers: list = field(default_factory=list)  # speaker folders without a video


@dataclass
class FrameWindow:
    """One sampled frame and the speech centred on it, or why that pair is dropped."""
    time: float                           # seconds on the container's clock
    face: np.ndarray | None = None        # uint8 (S, S, 3) RGB
    waveform: np.ndarray | None = None    # float32 (L,) at 16 kHz
    dropped: str | None = None
    window_start: int = 0                 # the speech window's first sample on the clock


@dataclass
class ClipSpan:
    """Where a clip's picture and speech both run, in 16 kHz samples on the container's
    clock, as far as it was decoded: what --split_by time shares out."""
    video: list = field(default_factory=lambda: [None, None])   # first frame, last frame's end
    speech: list = field(default_factory=lambda: [None, None])  # first sample, end

    def see_frame(self, time: float | None, duration: float) -> None:
        if time is not None:
            if self.video[0] is None:
                self.video[0] = round(time * SAMPLE_RATE)
            self.video[1] = round((time + duration) * SAMPLE_RATE)

    def see_speech(self, speech: "SpeechTimeline") -> None:
        self.speech = [speech.origin, speech.end]

    def bounds(self) -> list | None:
        """[start, end) where both run, or None where either never started."""
        if None in self.video or None in self.speech:
            return None
        start, end = max(self.video[0], self.speech[0]), min(self.video[1], self.speech[1])
        return [start, max(start, end)]


# ---------------------------------------------------------------- finding the videos

def find_videos(src) -> VideoList:
    """Videos from a folder `<speaker>/.../<name>.<ext>` or a CSV manifest
    `path,speaker[,split]`, sorted by label, with the files passed over and why."""
    src = Path(src)
    if not src.exists():
        raise VideoListError(f"{src}: no such folder or manifest; pass a folder of "
                             "<speaker>/<video> files or a CSV of path,speaker")
    found = VideoList(read_manifest(src)) if src.is_file() else _scan_folder(src)
    if not found.videos:
        count = len(found.skipped)
        skipped = (f" ({count} file{'s' * (count != 1)} skipped for their suffix, e.g. "
                   f"{found.skipped[0][0]})" if count else "")
        raise VideoListError(f"{src}: no videos found{skipped}; put them in one folder per "
                             "speaker, <speaker>/<name>.mp4, with a video suffix (docs/data.md)")
    found.videos.sort(key=lambda v: v.label)
    return found


def _scan_folder(root: Path) -> VideoList:
    found, has_video = VideoList([]), {}  # speaker -> whether any of its files is a video
    for path in sorted(root.rglob("*")):
        if not path.is_file():
            continue
        relative = path.relative_to(root)
        speaker = relative.parts[0] if len(relative.parts) >= 2 else None
        is_video = path.suffix.lower() in VIDEO_SUFFIXES
        if speaker is not None:
            has_video[speaker] = has_video.get(speaker, False) or is_video
        if not is_video:
            kind = f"{path.suffix} is" if path.suffix else "a name without a suffix is"
            found.skipped.append((relative.as_posix(), f"{kind} not a video container read "
                                  "here; rename it if it is one (docs/data.md)"))
        elif speaker is None:
            found.notes.append(f"{relative}: not inside a speaker folder, ignored")
        else:
            found.videos.append(VideoSource(path, speaker, relative.as_posix()))
    found.unread_speakers = sorted(s for s, seen in has_video.items() if not seen)
    return found


_HEADERS = (["path", "speaker"], ["path", "speaker", "split"])


def read_manifest(manifest: Path) -> list[VideoSource]:
    """Rows `path,speaker[,split]` (a header row naming those columns is allowed); relative
    paths are taken from the manifest's folder; a split (train, valid, test) fixes the
    video's split, an empty one follows --split_by. Missing videos are kept: the run
    reports them."""
    try:
        with open(manifest, newline="", encoding="utf-8") as handle:
            rows = list(csv.reader(handle))
    except (OSError, UnicodeDecodeError) as error:
        raise VideoListError(f"{manifest}: cannot read the manifest ({error})") from None
    videos = []
    for line, row in enumerate(rows, start=1):
        cells = [cell.strip() for cell in row]
        if not any(cells) or (line == 1 and [c.lower() for c in cells] in _HEADERS):
            continue
        if len(cells) not in (2, 3) or not all(cells[:2]):
            raise VideoListError(f"{manifest}, line {line}: expected `path,speaker` or "
                                 f"`path,speaker,split`, found {','.join(row)!r}")
        split = cells[2].lower() if len(cells) == 3 and cells[2] else None
        if split is not None and split not in SPLITS:
            raise VideoListError(f"{manifest}, line {line}: split {cells[2]!r} is not train, "
                                 "valid or test; leave it empty to follow --split_by")
        path = Path(cells[0]) if Path(cells[0]).is_absolute() else manifest.parent / cells[0]
        videos.append(VideoSource(path, cells[1], cells[0], split))
    return videos


# ---------------------------------------------------------------- speech

class SpeechTimeline:
    """The decoded speech as a sliding buffer placed on the container's clock."""

    def __init__(self):
        self.samples = np.zeros(0, np.float32)
        self.first_sample: int | None = None   # clock position of samples[0], in samples
        self.origin: int | None = None         # clock position of the first sample decoded

    def add(self, samples: np.ndarray, time: float | None) -> None:
        if self.first_sample is None:
            self.first_sample = self.origin = int(round((time or 0.0) * SAMPLE_RATE))
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


def frame_windows(path: Path, settings: WindowSettings, inspector: Inspector,
                  span: ClipSpan | None = None) -> Iterator[FrameWindow]:
    """Every sampled frame of one video with its speech window, in time order; `span`, if
    given, follows where picture and speech run.

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
        yield from _pair_up(container, settings, inspector, span or ClipSpan())


def _pair_up(container, settings: WindowSettings, inspector: Inspector,
             span: ClipSpan) -> Iterator[FrameWindow]:
    video, audio = container.streams.video[0], container.streams.audio[0]
    video.thread_type = "AUTO"
    video.thread_count = inspector.decoder_threads
    frame_seconds = 1 / float(video.average_rate) if video.average_rate else 0.0
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
                    span.see_speech(speech)
                    continue
                span.see_frame(frame.time, frame_seconds)
                if sampler.take(frame.time):
                    last_time = frame.time
                    waiting.append(_look_at(frame, inspector.faces))
            yield from _ready(waiting, speech, inspector, final=False)
            # no frame to come can start its window before the oldest waiting one, or
            # before the next sampling time: the speech before that is never needed
            oldest = waiting[0].time if waiting else float(sampler.next_time) - 1e-3
            speech.forget_before(_start(oldest, half))
        for chunk in resampler.resample(None):
            speech.add(chunk.to_ndarray().mean(axis=0), chunk.time)
        span.see_speech(speech)
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
        item.window_start = _start(item.time, half)
        if item.dropped is None:
            item.waveform = speech.window(item.window_start, length)
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
