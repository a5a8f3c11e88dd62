"""Demo pair files with attribute labels, and with speakers the train split never has.

`python -m data.prepare demo OUT.h5 --speakers N --held_out K` makes them from data/demo.py's
speakers: speaker i of N has voice depth i / (N - 1), which sets the pitch, formants and
breathiness of the voice and, from it, the labelled attributes below. Skin, hair, eye
colour, glasses and shirt follow the speaker's index instead (no voice predicts them).

With K held-out speakers, train holds the others but V (all their pairs), test holds only
the K and valid only the V (all of each one's pairs): a checkpoint chosen on valid has
never heard a test voice. Of the K, `extrapolated` take the deepest and highest voices
(beyond every train voice, group "extrap"), the rest are spread over the voices between
(group "interp"), and so are the V; the file's root attribute `speaker_groups` says which
is which ("train" for the train speakers). With V = 0 valid and test share the K (half of
each one's pairs each: the files of sessions before valid speakers existed). With K = 0 the
splits are the standard demo's (80/10/10 of every speaker's pairs, the same arrays as
`synthesize_demo`), plus labels.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data.attributes import AttributeSpec
from data.demo import (SAMPLE_RATE, Speaker, _check_options, _speaker_pairs, _split_bounds,
                       demo_speakers)
from data.schema import PairWriter

BEARDS = ("full", "moustache", "stubble", "none")   # class codes 0..3, deepest voice first

# The labels the demo writes: what the voice decides (data/demo.py `_look_for`, each a
# function of depth), and glasses, which follow the speaker index: a control that no voice
# predicts, so on unseen speakers it should stay at the voice-blind baseline.
DEMO_ATTRIBUTES = AttributeSpec(
    names=("beard", "face_width", "face_height", "jaw", "eye_size", "brow_thickness",
           "glasses"),
    kinds=("class", "number", "number", "number", "number", "number", "class"),
    class_names=(BEARDS, (), (), (), (), (), ("no", "yes")))


def speaker_attributes(speaker: Speaker) -> np.ndarray:
    """The speaker's labels, float32 (A,), in DEMO_ATTRIBUTES' column order."""
    look = speaker.look
    return np.float32([BEARDS.index(look.beard), look.face_width, look.face_height,
                       look.jaw_power, look.eye_size, look.brow_thickness, float(look.glasses)])


@dataclass(frozen=True)
class DemoLayout:
    """Who is held out: speaker index -> "interp" or "extrap" (test speakers, and valid
    ones where `valid` names them); everyone else trains."""
    num_speakers: int
    held_out: dict
    valid: frozenset = frozenset()

    def group(self, index: int) -> str:
        return self.held_out.get(index, "train")


def held_out_layout(num_speakers: int, held_out: int, extrapolated: int, seed: int,
                    valid_speakers: int = 0) -> DemoLayout:
    """The extrapolated speakers at both ends of the depth range (deepest first), the
    interpolated ones one per equal stratum of the depths between the remaining train
    extremes, placed within it by `seed`; then the valid speakers the same way among the
    voices still training."""
    low, high = (extrapolated + 1) // 2, extrapolated // 2
    groups = {i: "extrap" for i in range(low)}
    groups.update({num_speakers - 1 - i: "extrap" for i in range(high)})
    inner = list(range(low + 1, num_speakers - 1 - high))   # strictly inside the train range
    interpolated = _strata(inner, held_out - extrapolated, np.random.default_rng([seed, 2]))
    groups.update({i: "interp" for i in interpolated})
    valid = _strata([i for i in inner if i not in groups], valid_speakers,
                    np.random.default_rng([seed, 3]))
    groups.update({i: "interp" for i in valid})
    return DemoLayout(num_speakers, groups, frozenset(valid))


def _strata(places: list, count: int, rng: np.random.Generator) -> list:
    """`count` of `places`, one near the middle of each of `count` equal strata."""
    offset = rng.uniform(0.25, 0.75)
    step = len(places) / count if count else 0
    return [places[int((j + offset) * step)] for j in range(count)]


def check_layout(num_speakers: int, held_out: int, extrapolated: int,
                 valid_speakers: int = 0) -> str:
    """What is wrong with these counts, or ""."""
    if num_speakers < 2:
        return f"--speakers is {num_speakers}; use at least 2"
    if not 0 <= held_out <= num_speakers - 2:
        return f"--held_out is {held_out}; hold out 0 to {num_speakers - 2} of {num_speakers} " \
               "speakers (train keeps at least 2)"
    if not 0 <= extrapolated <= held_out:
        return f"--extrapolated is {extrapolated}; use 0 to --held_out ({held_out})"
    if valid_speakers and not held_out:
        return f"--valid_speakers is {valid_speakers} with --held_out 0; hold test speakers " \
               "out too, or use --valid_speakers 0 (the standard 80/10/10 split)"
    if not 0 <= valid_speakers <= num_speakers - 2 - held_out:
        return f"--valid_speakers is {valid_speakers}; with --speakers {num_speakers} and " \
               f"--held_out {held_out} use 0 to {num_speakers - 2 - held_out} (train keeps " \
               "at least 2)"
    return ""     # then the K - E + V interpolated fit the N - E - 2 places inside the range


def _rows_of(speaker_index: int, layout: DemoLayout, num_pairs: int) -> dict:
    """Row ranges per split of one speaker: all train, all valid or all test; held out with
    no valid speakers, half valid / half test; with nobody held out the standard demo's
    80/10/10."""
    if not layout.held_out:
        return _split_bounds(num_pairs)
    if speaker_index in layout.valid:
        return {"valid": (0, num_pairs)}
    if layout.group(speaker_index) == "train":
        return {"train": (0, num_pairs)}
    if layout.valid:
        return {"test": (0, num_pairs)}
    half = num_pairs // 2
    return {"valid": (0, half), "test": (half, num_pairs)}


def write_demo_file(out, num_speakers: int, held_out: int, extrapolated: int, seed: int = 0,
                    pairs_per_speaker: int = 80, face_size: int = 64,
                    window_seconds: float = 2.0, valid_speakers: int = 0) -> DemoLayout:
    """Synthesise the speakers one at a time (memory stays one speaker's) into OUT."""
    _check_options(num_speakers, pairs_per_speaker, face_size, window_seconds)
    layout = held_out_layout(num_speakers, held_out, extrapolated, seed, valid_speakers)
    speakers = demo_speakers(num_speakers)
    groups = [layout.group(i) for i in range(num_speakers)] if held_out else None
    window_samples = int(round(window_seconds * SAMPLE_RATE))
    with PairWriter(Path(out), [s.name for s in speakers], window_samples, face_size,
                    attributes=DEMO_ATTRIBUTES, speaker_groups=groups) as writer:
        for index, speaker in enumerate(speakers):   # each split's rows in speaker order
            waveforms, faces = _speaker_pairs(speaker, index, seed, pairs_per_speaker,
                                              window_samples, face_size)
            for split, (start, stop) in _rows_of(index, layout, pairs_per_speaker).items():
                _append(writer, split, speaker, index, waveforms[start:stop],
                        faces[start:stop], start)
    return layout


def _append(writer, split, speaker, index, waveforms, faces, start) -> None:
    n = len(waveforms)
    names = [f"{speaker.name}/{start + row:04d}" for row in range(n)]
    labels = np.repeat(speaker_attributes(speaker)[None], n, axis=0)
    writer.append(split, waveforms, faces, np.full(n, index, np.int64), names,
                  attributes=labels)
