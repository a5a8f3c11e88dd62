"""Embedded demo data set: synthetic speakers whose voices determine their faces.

`python runtime.py` must train with nothing downloaded, so the project draws its own data
with numpy alone. Each demo speaker is one voice (pitch, vocal-tract length, speaking rate,
breathiness) and one cartoon face drawn to match it: deeper voices get beards, wider and
squarer jaws and heavier brows; higher voices get rounder faces, bigger eyes and longer
hair. Within a speaker the audio and the frame stay linked: the mouth opens with the
loudness of the centre of the pair's speech window, as a video frame at that instant would.

The file is made once and cached under ``data/.cache/`` (see `demo_dataset_path`).
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path

import numpy as np

from data.demo_faces import Look, face_templates, pose_frames
from data.schema import SAMPLE_RATE, write_pair_file

DEMO_SPEAKERS = 8
DEMO_VERSION = 1  # bump when the synthesis changes, so stale caches are not reused
CACHE_DIR = Path(__file__).resolve().parent / ".cache"
SPLIT_FRACTIONS = (("train", 0.8), ("valid", 0.1), ("test", 0.1))
MOUTH_WINDOW_SECONDS = 0.5  # the loudness the mouth follows: the centre of each window
BLOCK_SAMPLES = 1 << 16     # speech is synthesised this many samples at a time


# ---------------------------------------------------------------- speakers

@dataclass(frozen=True)
class Voice:
    f0_hz: float                 # mean glottal pitch
    formant_scale: float         # 1.0 = adult male vocal tract; shorter tracts scale up
    syllables_per_second: float
    breathiness: float           # aspiration noise relative to the voiced source


@dataclass(frozen=True)
class Speaker:
    name: str
    voice: Voice
    look: Look


# Palettes are ordered so the default eight speakers differ in every attribute at once.
SKINS = [(141, 85, 36), (241, 194, 160), (198, 134, 66), (255, 222, 196),
         (224, 172, 105), (92, 58, 38), (250, 208, 184), (233, 180, 140)]
HAIRS = [(45, 30, 20), (165, 165, 165), (18, 18, 22), (196, 88, 30),
         (236, 204, 112), (25, 20, 24), (150, 45, 28), (112, 72, 40)]
HAIR_STYLES = ["short", "bald", "spiky", "curly", "bob", "long", "pigtails", "bun"]
EYES = [(80, 50, 25), (60, 110, 175), (45, 32, 24), (70, 135, 70),
        (60, 120, 190), (55, 35, 22), (90, 140, 90), (95, 70, 40)]
SHIRTS = [(40, 95, 55), (70, 72, 85), (185, 40, 40), (40, 70, 165),
          (125, 60, 155), (225, 185, 40), (30, 145, 145), (235, 120, 40)]
RATES = [3.4, 4.6, 5.6, 4.0, 5.0, 3.7, 5.4, 4.3]
GLASSES = [False, True, False, False, False, True, False, False]


def _pick(palette: list, index: int):
    """Palette entry for speaker `index`; beyond the palette, shift so combinations repeat late."""
    return palette[(index + 3 * (index // len(palette))) % len(palette)]


def _beard_for(depth: float) -> str:
    for limit, beard in ((0.07, "full"), (0.2, "moustache"), (0.35, "stubble")):
        if depth < limit:
            return beard
    return "none"


def _voice_for(depth: float, index: int) -> Voice:
    # Pitch spaced geometrically (80-272 Hz) so neighbouring speakers differ by ~3 semitones.
    return Voice(f0_hz=80.0 * 3.4 ** depth, formant_scale=0.86 + 0.42 * depth,
                 syllables_per_second=_pick(RATES, index), breathiness=0.03 + 0.07 * depth)


def _look_for(depth: float, index: int) -> Look:
    return Look(face_width=0.47 - 0.08 * depth, face_height=0.58 - 0.05 * depth,
                jaw_power=2.9 - 0.9 * depth, skin=_pick(SKINS, index), hair=_pick(HAIRS, index),
                hair_style=_pick(HAIR_STYLES, index), beard=_beard_for(depth),
                eye_colour=_pick(EYES, index), eye_size=0.075 + 0.03 * depth,
                brow_thickness=0.05 - 0.025 * depth, glasses=_pick(GLASSES, index),
                shirt=_pick(SHIRTS, index), lips=(int(150 + 60 * depth), 70, 75),
                blush=0.35 * max(0.0, depth - 0.4))


def demo_speakers(num_speakers: int = DEMO_SPEAKERS) -> list[Speaker]:
    """The demo speakers, deepest voice first; the same for every seed."""
    width = max(2, len(str(num_speakers - 1)))
    speakers = []
    for index in range(num_speakers):
        depth = index / (num_speakers - 1) if num_speakers > 1 else 0.5
        voice, look = _voice_for(depth, index), _look_for(depth, index)
        feature = {"full": "beard", "none": look.hair_style}.get(look.beard, look.beard)
        name = f"demo_{index:0{width}d}_{voice.f0_hz:.0f}hz_{feature}"
        speakers.append(Speaker(name, voice, look))
    return speakers


# ---------------------------------------------------------------- speech

# Formants (Hz) of /i e a o u/ for an adult male, Peterson & Barney (1952).
VOWEL_FORMANTS = np.array([[270, 2290, 3010], [530, 1840, 2480], [730, 1090, 2440],
                           [570, 840, 2410], [300, 870, 2240]], dtype=np.float32)
FORMANT_BANDWIDTHS = np.array([60.0, 90.0, 150.0], dtype=np.float32)
FORMANT_AMPLITUDES = np.array([1.0, 0.55, 0.3], dtype=np.float32)


def _syllable_plan(rng: np.random.Generator, voice: Voice, num_samples: int) -> dict:
    """Units of speech (syllables and pauses) that cover `num_samples`, one value per unit."""
    shortest = min(0.12, 0.7 / voice.syllables_per_second)  # so even the worst draw covers it
    count = int(num_samples / SAMPLE_RATE / shortest) + 2
    is_pause = rng.random(count) < 0.18
    seconds = np.where(is_pause, rng.uniform(0.12, 0.5, count),
                       rng.uniform(0.7, 1.3, count) / voice.syllables_per_second)
    # Phrases (runs between pauses) are spoken louder or softer, so loudness varies on the
    # scale of a whole window and not only syllable by syllable.
    phrase_gain = rng.uniform(0.3, 1.0, count)[np.cumsum(is_pause)]
    plan = {
        "length": np.maximum(1, (seconds * SAMPLE_RATE).astype(np.int64)),
        "gain": np.where(is_pause, 0.0, phrase_gain * rng.uniform(0.8, 1.0, count)),
        "vowel": rng.integers(0, len(VOWEL_FORMANTS), count),
        "onset": np.where(rng.random(count) < 0.6, rng.uniform(0.15, 0.3, count), 0.05),
        "pitch": np.exp(rng.normal(0.0, 0.06, count)),
        "glide": rng.uniform(-0.15, 0.08, count),
    }
    plan = {key: value.astype(np.float32) if value.dtype == np.float64 else value
            for key, value in plan.items()}
    plan["start"] = np.cumsum(plan["length"]) - plan["length"]
    return plan


def _samples_between(plan: dict, begin: int, end: int) -> dict:
    """Each unit's values spread over samples begin..end, plus `position`, 0..1 within the unit."""
    start, length = plan["start"], plan["length"]
    first = np.searchsorted(start, begin, side="right") - 1
    units = np.arange(first, np.searchsorted(start, end, side="left"))
    covered = np.minimum(start[units] + length[units], end) - np.maximum(start[units], begin)
    unit = np.repeat(units, covered)
    samples = {key: plan[key][unit] for key in ("gain", "vowel", "onset", "pitch", "glide")}
    offset = np.arange(begin, end) - start[unit]
    samples["position"] = (offset / length[unit]).astype(np.float32)
    return samples


def _voiced(samples: dict, voice: Voice, phase: float) -> tuple[np.ndarray, float]:
    """Vowel nuclei by formant-wave-function synthesis (FOF, Rodet 1984).

    Each glottal pulse excites one damped sinusoid per formant; summing the response to the
    latest pulse only is exact enough (formants decay within a pitch period) and keeps the
    stream a handful of vectorised numpy operations, with no recursive filter. `phase` is the
    glottal cycle carried over from the previous block; the new one is returned.
    """
    onset, position = samples["onset"], samples["position"]
    in_vowel = np.clip((position - onset) / (1.0 - onset), 0.0, 1.0)
    f0 = voice.f0_hz * samples["pitch"] * (1.0 + samples["glide"] * (in_vowel - 0.5))
    cycles = phase + np.cumsum(f0 / SAMPLE_RATE, dtype=np.float64)
    since_pulse = (cycles - np.floor(cycles)).astype(np.float32) / f0  # seconds
    wave = np.zeros_like(since_pulse)
    for k in range(3):
        radians_per_second = (2 * np.pi * voice.formant_scale) * VOWEL_FORMANTS[:, k]
        decay = np.exp(np.float32(-np.pi * FORMANT_BANDWIDTHS[k]) * since_pulse)
        ring = np.sin(radians_per_second[samples["vowel"]] * since_pulse)
        wave += FORMANT_AMPLITUDES[k] * decay * ring
    wave *= np.minimum(since_pulse / 0.0008, 1.0)  # soft glottal opening, fewer clicks
    envelope = np.sqrt(np.sin(np.pi * in_vowel)) * (position >= onset)
    return wave * envelope * samples["gain"], float(cycles[-1] - np.floor(cycles[-1]))


def _unvoiced(samples: dict, voice: Voice, rng: np.random.Generator) -> np.ndarray:
    """Consonant bursts at syllable onsets plus breath noise under the vowels."""
    noise = rng.standard_normal(len(samples["position"]), dtype=np.float32)
    hiss = np.diff(noise, prepend=np.float32(0))  # first difference: a crude high-pass
    onset, position = samples["onset"], samples["position"]
    in_burst = np.clip(position / onset, 0.0, 1.0)
    burst = (position < onset) * np.minimum(in_burst * 8.0, 1.0) * (1.0 - in_burst) ** 2
    vowel = np.sqrt(np.sin(np.pi * np.clip((position - onset) / (1 - onset), 0, 1)))
    level = 0.35 * burst * (onset > 0.1) + voice.breathiness * vowel
    return hiss * level * samples["gain"] + 0.002 * noise


def speak(voice: Voice, num_windows: int, window_samples: int,
          rng: np.random.Generator) -> np.ndarray:
    """Consecutive windows of one continuous stream of babble: int16 (num_windows, L)."""
    num_samples = num_windows * window_samples
    plan = _syllable_plan(rng, voice, num_samples)
    speech = np.empty(num_samples, np.float32)
    phase = 0.0
    # Blocks of a few hundred kB: fresh arrays of tens of MB cost more in page faults than
    # in arithmetic (measured: 2x slower overall), while small ones are recycled by malloc.
    for begin in range(0, num_samples, BLOCK_SAMPLES):
        end = min(begin + BLOCK_SAMPLES, num_samples)
        samples = _samples_between(plan, begin, end)
        voiced, phase = _voiced(samples, voice, phase)
        speech[begin:end] = voiced + _unvoiced(samples, voice, rng)
    speech *= 0.85 * 32767 / np.abs(speech).max()  # loudest sample at 85% of full scale
    return np.round(speech).astype(np.int16).reshape(num_windows, window_samples)


def mouth_openness(waveforms: np.ndarray) -> np.ndarray:
    """Openness 0..1 per window: the RMS of its centre over that of the speaker's loud windows."""
    length = waveforms.shape[1]
    half = min(length, int(MOUTH_WINDOW_SECONDS * SAMPLE_RATE)) // 2
    centre = waveforms[:, length // 2 - half: length // 2 + half].astype(np.float32)
    rms = np.sqrt(np.mean(centre ** 2, axis=1))
    return np.clip(rms / max(np.percentile(rms, 95), 1e-6), 0.0, 1.0)


# ---------------------------------------------------------------- pairs

def _speaker_pairs(speaker: Speaker, index: int, seed: int, num_pairs: int,
                   window_samples: int, face_size: int):
    """(waveforms, faces) of one speaker; its own random streams keep speakers independent."""
    voice_rng = np.random.default_rng([seed, index, 0])
    face_rng = np.random.default_rng([seed, index, 1])
    waveforms = speak(speaker.voice, num_pairs, window_samples, voice_rng)
    templates = face_templates(speaker.look, face_size)
    faces = pose_frames(templates, mouth_openness(waveforms), face_rng, face_size)
    return waveforms, faces


def _split_bounds(num_pairs: int) -> dict:
    """Row ranges of each split within one speaker's pairs: about 80/10/10, none empty."""
    valid = max(1, round(num_pairs * SPLIT_FRACTIONS[1][1]))
    test = max(1, round(num_pairs * SPLIT_FRACTIONS[2][1]))
    train = num_pairs - valid - test
    return {"train": (0, train), "valid": (train, train + valid),
            "test": (train + valid, num_pairs)}


def _check_options(num_speakers, pairs_per_speaker, face_size, window_seconds):
    if num_speakers < 1:
        raise ValueError(f"num_speakers is {num_speakers}; the demo needs at least 1 speaker")
    if pairs_per_speaker < 3:
        raise ValueError(f"pairs_per_speaker is {pairs_per_speaker}; use at least 3 so every "
                         "split gets a pair")
    if face_size < 16 or face_size % 2:
        raise ValueError(f"face_size is {face_size}; use an even size of at least 16 (64 or 128)")
    if window_seconds < MOUTH_WINDOW_SECONDS:
        raise ValueError(f"window_seconds is {window_seconds}; use at least {MOUTH_WINDOW_SECONDS}")


def synthesize_demo(seed: int = 0, num_speakers: int = DEMO_SPEAKERS, pairs_per_speaker: int = 250,
                    face_size: int = 64, window_seconds: float = 2.0) -> tuple[dict, list[str]]:
    """Returns ({split: (waveforms int16 (N, L), faces uint8 (N, S, S, 3), speaker_ids int64 (N,))},
    speaker_names). The same arguments always give byte-identical arrays."""
    _check_options(num_speakers, pairs_per_speaker, face_size, window_seconds)
    speakers = demo_speakers(num_speakers)
    window_samples = int(round(window_seconds * SAMPLE_RATE))
    parts = {split: ([], [], []) for split, _ in SPLIT_FRACTIONS}
    for index, speaker in enumerate(speakers):
        waveforms, faces = _speaker_pairs(speaker, index, seed, pairs_per_speaker,
                                          window_samples, face_size)
        for split, (start, stop) in _split_bounds(pairs_per_speaker).items():
            parts[split][0].append(waveforms[start:stop])
            parts[split][1].append(faces[start:stop])
            parts[split][2].append(np.full(stop - start, index, dtype=np.int64))
    splits = {split: tuple(np.concatenate(arrays) for arrays in part)
              for split, part in parts.items()}
    return splits, [speaker.name for speaker in speakers]


def demo_dataset_path(seed: int = 0, cache_dir=None) -> Path:
    """Path of the cached demo pair file, synthesising and writing it on first use."""
    path = Path(cache_dir or CACHE_DIR) / f"demo_v{DEMO_VERSION}_seed{seed}.h5"
    if path.exists():
        return path
    splits, speaker_names = synthesize_demo(seed)
    return write_pair_file(path, splits, speaker_names)


if __name__ == "__main__":
    print(demo_dataset_path())
