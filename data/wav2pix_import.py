"""Read data sets in wav2pix's own folder layout.

    SRC/<split>/<speaker>/preprocessed_frame_<N>.wav    the speech of one second
    SRC/<split>/<speaker>/cropped_face_frame_<N>.png    the face seen meanwhile

Real copies have quirks (see shared/fixtures/wav2pix-mini/README.md): the `.png` files
hold JPEG bytes of varying square sizes, stored BGR, and several N can share one face.
"""
from __future__ import annotations

import re
from dataclasses import dataclass, field, replace
from pathlib import Path

import numpy as np
from PIL import Image, UnidentifiedImageError

from data.audio import AudioError, load_speech
from utils import UserError

SPLIT_FOLDERS = ("train", "valid", "test")
_FILE_NAME = re.compile(r"^(preprocessed_frame|cropped_face_frame)_(\d+)\.(wav|png|jpe?g)$",
                        re.IGNORECASE)


class Wav2pixLayoutError(UserError):
    """A source folder that is not in wav2pix's layout."""


class UnusablePair(Exception):
    """One pair that cannot be used; the import skips it and counts `cause`."""

    def __init__(self, cause: str, detail: str = ""):
        super().__init__(f"{cause}: {detail}" if detail else cause)
        self.cause = cause


@dataclass(frozen=True)
class Wav2pixPair:
    split: str
    speaker: str
    number: int
    speech_path: Path
    face_path: Path

    @property
    def name(self) -> str:
        """Where the pair came from, e.g. "train/jaimealtozano/1622" (also for carved valid)."""
        return f"{self.speech_path.parent.parent.name}/{self.speaker}/{self.number}"


@dataclass
class Wav2pixLayout:
    pairs: list[Wav2pixPair]                                  # sorted by split, speaker, N
    speakers: list[str]                                       # sorted: index i is speaker i
    lone_files: list[Path] = field(default_factory=list)      # a wav or face without its partner
    ignored: list[str] = field(default_factory=list)          # folders and files passed over


# ---------------------------------------------------------------- scanning

def scan_layout(root) -> Wav2pixLayout:
    """Pair every speech file with the face of the same number, split by split."""
    root = Path(root)
    if not root.is_dir():
        raise Wav2pixLayoutError(f"{root}: no such folder; pass the folder that holds "
                                 "train/ and test/ of a wav2pix data set")
    layout = Wav2pixLayout(pairs=[], speakers=[])
    for folder in sorted(p for p in root.iterdir() if p.is_dir()):
        if folder.name not in SPLIT_FOLDERS:
            layout.ignored.append(f"{folder.name}/: not a split folder ({', '.join(SPLIT_FOLDERS)})")
            continue
        for speaker_folder in sorted(p for p in folder.iterdir() if p.is_dir()):
            _scan_speaker(speaker_folder, folder.name, layout)
    if not any(pair.split == "train" for pair in layout.pairs):
        raise Wav2pixLayoutError(
            f"{root}: found no train pairs; expected {root}/train/<speaker>/"
            "preprocessed_frame_<N>.wav with cropped_face_frame_<N>.png beside it")
    layout.speakers = sorted({pair.speaker for pair in layout.pairs})
    return layout


def _scan_speaker(folder: Path, split: str, layout: Wav2pixLayout) -> None:
    speech, faces = {}, {}
    for path in sorted(folder.iterdir()):
        match = _FILE_NAME.match(path.name)
        if not path.is_file() or match is None:
            layout.ignored.append(f"{split}/{folder.name}/{path.name}: not a wav2pix file")
            continue
        kind = speech if match.group(1).lower() == "preprocessed_frame" else faces
        kind[int(match.group(2))] = path
    for number in sorted(speech.keys() & faces.keys()):
        layout.pairs.append(Wav2pixPair(split, folder.name, number, speech[number], faces[number]))
    lone = (speech.keys() | faces.keys()) - (speech.keys() & faces.keys())
    layout.lone_files += [speech.get(n) or faces[n] for n in sorted(lone)]


# ---------------------------------------------------------------- a validation split

def carve_valid(pairs: list[Wav2pixPair], fraction: float) -> list[Wav2pixPair]:
    """Move the last `fraction` of each speaker's train numbers into a `valid` split.

    A contiguous range, not a random draw: neighbouring numbers are neighbouring seconds
    of one video and often share a face, so a random draw would leak them across splits.
    The cut also moves down past numbers that share the face on its other side.
    """
    carved = []
    for speaker in sorted({p.speaker for p in pairs if p.split == "train"}):
        train = [p for p in pairs if p.split == "train" and p.speaker == speaker]
        count = round(len(train) * fraction)
        if fraction > 0 and len(train) >= 2:
            count = min(max(count, 1), len(train) - 1)
        cut = _cut_between_faces(train, len(train) - count) if count else len(train)
        carved += [replace(p, split="valid") for p in train[cut:]]
    moved = {(p.speaker, p.number) for p in carved}
    kept = [p for p in pairs if not (p.split == "train" and (p.speaker, p.number) in moved)]
    return _sorted_pairs(kept + carved)


def _cut_between_faces(train: list[Wav2pixPair], cut: int) -> int:
    while cut > 1 and _same_face(train[cut - 1].face_path, train[cut].face_path):
        cut -= 1
    return cut


def _same_face(first: Path, second: Path) -> bool:
    try:
        with Image.open(first) as a, Image.open(second) as b:
            return a.size == b.size and np.array_equal(np.asarray(a), np.asarray(b))
    except (OSError, UnidentifiedImageError):
        return False


def _sorted_pairs(pairs: list[Wav2pixPair]) -> list[Wav2pixPair]:
    order = {split: i for i, split in enumerate(SPLIT_FOLDERS)}
    return sorted(pairs, key=lambda p: (order[p.split], p.speaker, p.number))


# ---------------------------------------------------------------- reading one pair

def read_image(path: Path, bgr_swap: bool = True) -> np.ndarray:
    """The stored face as true-colour uint8 (H, W, 3), any image format whatever the
    suffix says, BGR turned to RGB."""
    try:
        with Image.open(path) as image:
            rgb = np.asarray(image.convert("RGB"))  # (H, W, 3)
    except (OSError, UnidentifiedImageError, ValueError) as error:
        raise UnusablePair("unreadable face", f"{path}: {error}") from None
    return np.ascontiguousarray(rgb[..., ::-1]) if bgr_swap else rgb


def read_face(path: Path, size: int, bgr_swap: bool = True) -> np.ndarray:
    """The face as true-colour uint8 (size, size, 3), centre-cropped to a square and
    resized bilinearly."""
    rgb = read_image(path, bgr_swap)
    height, width = rgb.shape[:2]
    side = min(height, width)
    top, left = (height - side) // 2, (width - side) // 2
    square = Image.fromarray(np.ascontiguousarray(rgb[top:top + side, left:left + side]))
    return np.asarray(square.resize((size, size), Image.Resampling.BILINEAR))


def read_window(path: Path, window_samples: int) -> np.ndarray:
    """The centre `window_samples` of the speech, float32 at 16 kHz; never padded."""
    try:
        speech = load_speech(path)
    except AudioError as error:
        raise UnusablePair("unreadable speech", str(error)) from None
    if len(speech) < window_samples:
        raise UnusablePair("speech shorter than window", f"{path}: {len(speech)} samples")
    start = (len(speech) - window_samples) // 2
    window = speech[start:start + window_samples]
    if not np.any(np.abs(window) > 1e-4):
        raise UnusablePair("silent speech", str(path))
    return window
