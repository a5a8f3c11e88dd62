"""Real media made from arrays, and checks read back from finished files, for tests and
benchmarks: nothing the product itself runs."""
from __future__ import annotations

import itertools
from pathlib import Path

import av
import cv2
import h5py
import numpy as np

from data.attributes import speaker_groups_of
from data.faces import Landmarks, find_faces
from data.schema import SAMPLE_RATE


def encode_video(path, frames, speech: np.ndarray, frames_per_second: int = 25,
                 speech_rate: int = SAMPLE_RATE, video_codec: str = "libx264",
                 audio_codec: str = "aac", container_format: str | None = None,
                 audio_bit_rate: int | None = None, video_options: dict | None = None) -> Path:
    """Write a video (h264 + AAC unless told, in the container the suffix or
    `container_format` names) from RGB frames (each (H, W, 3) uint8) and float speech,
    mono (T,) or stereo (2, T). Audio and video are interleaved as a camera would write them.
    """
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    speech = np.atleast_2d(np.asarray(speech, np.float32))  # (C, T)
    frames = iter(frames)
    first = next(frames)
    with av.open(str(path), "w", format=container_format) as container:
        video = container.add_stream(video_codec, rate=frames_per_second, options=video_options or {})
        video.height, video.width = first.shape[0] // 2 * 2, first.shape[1] // 2 * 2
        video.pix_fmt = "yuv420p"
        layout = "mono" if speech.shape[0] == 1 else "stereo"
        audio = container.add_stream(audio_codec, rate=speech_rate, layout=layout)
        if audio_bit_rate:  # WMA's encoder refuses to open without one
            audio.bit_rate = audio_bit_rate
        speech_done = 0
        for index, picture in enumerate(itertools.chain([first], frames)):
            picture = np.ascontiguousarray(picture[:video.height, :video.width], np.uint8)
            container.mux(video.encode(av.VideoFrame.from_ndarray(picture, format="rgb24")))
            until = (index + 1) * speech_rate // frames_per_second
            speech_done = _encode_speech(container, audio, speech[:, :until], speech_done)
        container.mux(video.encode(None))
        _encode_speech(container, audio, speech, speech_done, last=True)
        container.mux(audio.encode(None))
    return path


def _encode_speech(container, audio, speech: np.ndarray, start: int, last: bool = False) -> int:
    """Encode speech (C, T) from `start` in AAC-sized blocks (a short one only if `last`;
    PyAV regroups them for codecs with other frame sizes); returns where it stopped."""
    block = 1024  # AAC's frame size
    layout = "mono" if speech.shape[0] == 1 else "stereo"
    while start + block <= speech.shape[1] or (last and start < speech.shape[1]):
        chunk = np.ascontiguousarray(speech[:, start:start + block])
        frame = av.AudioFrame.from_ndarray(chunk, format="fltp", layout=layout)
        frame.sample_rate, frame.pts = audio.rate, start
        container.mux(audio.encode(frame))
        start += chunk.shape[1]
    return start


def measured_eyes(landmarks: Landmarks, detector, crop: np.ndarray):
    """Eye centres re-detected on a finished crop ((2, 2) in its pixels, or None): how
    alignment is checked. The crop is enlarged 2x inside a replicated border first, as
    HOG needs faces of 80 px and landmarks need room past the jaw."""
    pad = crop.shape[0] // 4
    canvas = cv2.copyMakeBorder(crop, pad, pad, pad, pad, cv2.BORDER_REPLICATE)
    canvas = cv2.resize(canvas, None, fx=2, fy=2, interpolation=cv2.INTER_LINEAR)
    boxes = find_faces(detector, canvas)
    if not boxes:
        return None
    largest = max(boxes, key=lambda box: box[2] * box[3])  # box: (x, y, width, height)
    eyes = landmarks.eyes(canvas, largest)
    return None if eyes is None else eyes / 2 - pad


def read_speaker_groups(path) -> list[str] | None:
    """The root attribute `speaker_groups` (one string per speaker), or None if absent."""
    with h5py.File(Path(path), "r") as f:
        return speaker_groups_of(f)
