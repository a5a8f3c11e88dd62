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

from data.schema import SAMPLE_RATE, write_pair_file

DEMO_SPEAKERS = 8
DEMO_VERSION = 1  # bump when the synthesis changes, so stale caches are not reused
CACHE_DIR = Path(__file__).resolve().parent / ".cache"
SPLIT_FRACTIONS = (("train", 0.8), ("valid", 0.1), ("test", 0.1))
MOUTH_WINDOW_SECONDS = 0.5  # the loudness the mouth follows: the centre of each window
MOUTH_LEVELS = 12           # mouth openings drawn per speaker; frames pick the nearest
BLOCK_SAMPLES = 1 << 16     # speech is synthesised this many samples at a time
FRAME_BLOCK = 16            # and frames this many at a time


# ---------------------------------------------------------------- speakers

@dataclass(frozen=True)
class Voice:
    f0_hz: float                 # mean glottal pitch
    formant_scale: float         # 1.0 = adult male vocal tract; shorter tracts scale up
    syllables_per_second: float
    breathiness: float           # aspiration noise relative to the voiced source


@dataclass(frozen=True)
class Look:
    face_width: float            # half-widths in image units, the image spans [-1, 1]
    face_height: float
    jaw_power: float             # superellipse exponent: 2 round, larger squarer
    skin: tuple
    hair: tuple
    hair_style: str
    beard: str                   # "full", "moustache", "stubble" or "none"
    eye_colour: tuple
    eye_size: float
    brow_thickness: float
    glasses: bool
    shirt: tuple
    lips: tuple
    blush: float


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


# ---------------------------------------------------------------- faces

# Face layout in image units (x right, y down, the frame spans -1..1 before the zoom).
FACE_ZOOM = 1.12   # > 1 crops in so the head fills more of the frame
EYE_Y, MOUTH_Y = -0.07, 0.33

def _shape(x, y, cx, cy, rx, ry, edge, power=2.0):
    """Soft coverage (0..1) of a superellipse; the one-pixel ramp anti-aliases its border."""
    radius = (np.abs((x - cx) / rx) ** power + np.abs((y - cy) / ry) ** power) ** (1 / power)
    return np.clip((1.0 - radius) * np.minimum(rx, ry) / edge + 0.5, 0.0, 1.0)


def _below(y, level, edge):
    """Soft coverage of everything below `level` (y grows downward)."""
    return np.clip((y - level) / edge + 0.5, 0.0, 1.0)


def _paint(canvas, alpha, colour):
    canvas += np.asarray(alpha, np.float32)[..., None] * (np.float32(colour) - canvas)


def _shade(colour, factor):
    return tuple(min(255.0, c * factor) for c in colour)


@dataclass
class _Grid:
    x: np.ndarray      # (1, H, W) image units, -1..1 left to right
    y: np.ndarray      # (1, H, W) image units, -1..1 top to bottom
    edge: float        # one pixel in image units


def _grid(size: int, zoom: float = FACE_ZOOM) -> _Grid:
    """Pixel centres in image units, `zoom` times closer than the plain -1..1 frame."""
    centres = ((np.arange(size, dtype=np.float32) + 0.5) / size * 2 - 1) / zoom
    y, x = np.meshgrid(centres, centres, indexing="ij")
    return _Grid(x[None], y[None], 2.0 / size / zoom)


def _draw_hair_back(canvas, g: _Grid, look: Look):
    """Hair that falls behind the head and shoulders."""
    fw, fh, hair = look.face_width, look.face_height, look.hair
    if look.hair_style == "long":
        _paint(canvas, _shape(g.x, g.y, 0, 0.15, fw * 1.3, 0.85, g.edge, 3.0), hair)
    elif look.hair_style == "bob":
        _paint(canvas, _shape(g.x, g.y, 0, -0.05, fw * 1.3, fh * 1.05, g.edge, 3.0)
               * (1 - _below(g.y, 0.32, g.edge)), hair)
    elif look.hair_style == "curly":
        angle = np.arctan2(g.y + 0.15, g.x)
        radius = fw * 1.45 * (1 + 0.07 * np.cos(13 * angle))
        _paint(canvas, _shape(g.x, g.y, 0, -0.15, radius, radius * 0.95, g.edge), hair)
    elif look.hair_style == "pigtails":
        for side in (-1, 1):
            _paint(canvas, _shape(g.x, g.y, side * fw * 1.25, 0.1, 0.14, 0.3, g.edge), hair)


def _draw_body_and_head(canvas, g: _Grid, look: Look):
    fw, fh, skin = look.face_width, look.face_height, look.skin
    _paint(canvas, _shape(g.x, g.y, 0, 1.2, 0.95, 0.55, g.edge, 2.5), look.shirt)
    _paint(canvas, _shape(g.x, g.y, 0, 0.55, fw * 0.42, 0.3, g.edge, 4.0), _shade(skin, 0.82))
    for side in (-1, 1):
        _paint(canvas, _shape(g.x, g.y, side * fw * 0.98, 0.0, 0.07, 0.12, g.edge),
               _shade(skin, 0.9))
    _paint(canvas, _shape(g.x, g.y, 0, -0.02, fw, fh, g.edge, look.jaw_power), skin)
    for side in (-1, 1):  # blush on the cheeks
        _paint(canvas, look.blush * _shape(g.x, g.y, side * fw * 0.55, 0.16, 0.09, 0.06, g.edge),
               (235, 110, 120))
    _paint(canvas, _shape(g.x, g.y, 0, 0.12, 0.055, 0.08, g.edge), _shade(skin, 0.86))


def _draw_beard(canvas, g: _Grid, look: Look):
    fw, fh, beard_colour = look.face_width, look.face_height, _shade(look.hair, 0.8)
    around_mouth = _shape(g.x, g.y, 0, MOUTH_Y, 0.17, 0.085, g.edge)
    if look.beard == "full":
        jaw = _shape(g.x, g.y, 0, 0.02, fw * 1.02, fh * 1.08, g.edge, look.jaw_power)
        _paint(canvas, jaw * _below(g.y, 0.14, g.edge) * (1 - around_mouth), beard_colour)
    elif look.beard == "stubble":
        jaw = _shape(g.x, g.y, 0, -0.02, fw, fh, g.edge, look.jaw_power)
        _paint(canvas, 0.45 * jaw * _below(g.y, 0.2, g.edge) * (1 - around_mouth), beard_colour)
    if look.beard in ("full", "moustache"):
        _paint(canvas, _shape(g.x, g.y, 0, MOUTH_Y - 0.085, 0.16, 0.04, g.edge), beard_colour)
    if look.beard == "moustache":  # and a small goatee under the lip
        _paint(canvas, _shape(g.x, g.y, 0, MOUTH_Y + 0.14, 0.06, 0.07, g.edge), beard_colour)


def _draw_hair_front(canvas, g: _Grid, look: Look):
    """Hair over the top of the head, in front of the face."""
    fw, fh, style, hair = look.face_width, look.face_height, look.hair_style, look.hair
    top = -0.02 - fh  # crown of the face oval
    cap = _shape(g.x, g.y, 0, -0.05, fw * 1.06, fh * 1.02, g.edge)
    if style == "bald":  # a fringe above the ears only
        for side in (-1, 1):
            _paint(canvas, _shape(g.x, g.y, side * fw * 0.93, -0.12, 0.07, 0.14, g.edge), hair)
        shine = _shape(g.x, g.y, -0.12, top + 0.14, 0.1, 0.05, g.edge)
        _paint(canvas, 0.5 * shine, (255, 255, 255))
        return
    hairline = {"bob": -0.22, "spiky": -0.3, "curly": -0.28}.get(style, -0.32)
    if style == "long":  # side parting
        hairline = -0.32 + 0.12 * np.clip(g.x - 0.05, -1, 0)
    _paint(canvas, cap * (1 - _below(g.y, hairline + 0.06 * g.x ** 2, g.edge)), hair)
    if style == "spiky":
        spikes = top - 0.05 - 0.12 * np.abs(np.sin(9 * g.x))
        _paint(canvas, _below(g.y, spikes, g.edge) * (1 - _below(g.y, top + 0.2, g.edge))
               * (np.abs(g.x) < fw * 0.9), hair)
    elif style == "bun":
        _paint(canvas, _shape(g.x, g.y, 0, top - 0.1, 0.17, 0.14, g.edge), hair)
    elif style == "curly":
        for side in (-1, 1):
            _paint(canvas, _shape(g.x, g.y, side * fw * 0.95, -0.2, 0.12, 0.22, g.edge), hair)


def _draw_brows(canvas, g: _Grid, look: Look):
    spread, colour = look.face_width * 0.42, _shade(look.hair, 0.7)
    for side in (-1, 1):
        _paint(canvas, _shape(g.x, g.y, side * spread, -0.19, look.eye_size * 1.5,
                              look.brow_thickness, g.edge), colour)


def _draw_eyes(canvas, g: _Grid, look: Look, openness):
    """Eyes; `openness` (T, 1, 1) is 1 for open and near 0 for a blink."""
    spread, size = look.face_width * 0.42, look.eye_size
    for side in (-1, 1):
        cx = side * spread
        white = _shape(g.x, g.y, cx, EYE_Y, size * 1.25, size * openness + 1e-3, g.edge)
        _paint(canvas, white, (245, 245, 240))
        _paint(canvas, white * _shape(g.x, g.y, cx, EYE_Y, size * 0.72, size * 0.72, g.edge),
               look.eye_colour)
        _paint(canvas, white * _shape(g.x, g.y, cx, EYE_Y, size * 0.33, size * 0.33, g.edge),
               (10, 10, 12))
        lid = _shape(g.x, g.y, cx, EYE_Y, size * 1.3, 0.018, g.edge) * (openness < 0.5)
        _paint(canvas, lid, _shade(look.skin, 0.45))


def _draw_mouth(canvas, g: _Grid, look: Look, openness):
    """Lips, a dark mouth cavity and upper teeth; `openness` (T, 1, 1) in 0..1."""
    lip_height = 0.028 + 0.1 * openness
    cavity_height = 0.004 + 0.09 * openness
    _paint(canvas, _shape(g.x, g.y, 0, MOUTH_Y, 0.13, lip_height, g.edge), look.lips)
    cavity = _shape(g.x, g.y, 0, MOUTH_Y, 0.1, cavity_height, g.edge)
    _paint(canvas, cavity, (35, 8, 14))
    teeth = cavity * (1 - _below(g.y, MOUTH_Y - cavity_height * 0.55, g.edge))
    _paint(canvas, teeth, (240, 240, 230))


def _draw_glasses(canvas, g: _Grid, look: Look):
    spread, radius = look.face_width * 0.42, look.eye_size * 1.7
    frame = (30, 30, 35)
    for side in (-1, 1):
        outer = _shape(g.x, g.y, side * spread, EYE_Y, radius, radius * 0.85, g.edge)
        inner = _shape(g.x, g.y, side * spread, EYE_Y, radius - 0.03, radius * 0.85 - 0.03, g.edge)
        _paint(canvas, outer * (1 - inner), frame)
    bar = _shape(g.x, g.y, 0, EYE_Y - 0.02, 1, 0.015, g.edge)
    bridge = bar * (np.abs(g.x) < spread - radius + 0.01)
    _paint(canvas, bridge, frame)


def face_templates(look: Look, face_size: int) -> np.ndarray:
    """Every face this speaker shows: float32 (2 eye states, MOUTH_LEVELS, S, S, 3).

    Drawn once per speaker at twice the size and averaged down (anti-aliasing); frames are
    then posed from these, which is far cheaper than drawing every frame.
    """
    size = 2 * face_size
    g = _grid(size)
    sky = np.float32(196) - 40 * (g.y[..., None] + 1) / 2 * np.float32([1.0, 0.9, 0.6])
    canvas = np.broadcast_to(sky, (1, size, size, 3)).astype(np.float32)
    _draw_hair_back(canvas, g, look)
    _draw_body_and_head(canvas, g, look)
    _draw_beard(canvas, g, look)
    _draw_hair_front(canvas, g, look)
    _draw_brows(canvas, g, look)
    eye_openness = np.repeat(np.float32([1.0, 0.1]), MOUTH_LEVELS)[:, None, None]
    mouth_openness = np.tile(np.linspace(0, 1, MOUTH_LEVELS, dtype=np.float32), 2)[:, None, None]
    canvas = np.repeat(canvas, 2 * MOUTH_LEVELS, axis=0)
    _draw_eyes(canvas, g, look, eye_openness)
    _draw_mouth(canvas, g, look, mouth_openness)
    if look.glasses:
        _draw_glasses(canvas, g, look)
    canvas = canvas.reshape(2, MOUTH_LEVELS, face_size, 2, face_size, 2, 3)
    return canvas.mean(axis=(3, 5))


def _random_poses(rng: np.random.Generator, n: int) -> dict:
    """Small head motion and lighting changes, so no two frames are the same image."""
    return {"shift": np.clip(rng.normal(0, 0.025, (n, 2)), -0.07, 0.07).astype(np.float32),
            "angle": np.deg2rad(rng.normal(0, 2.5, n)).astype(np.float32),
            "scale": (1 + np.clip(rng.normal(0, 0.015, n), -0.04, 0.04)).astype(np.float32),
            "light": (1 + np.clip(rng.normal(0, 0.03, n), -0.08, 0.08)).astype(np.float32),
            "blink": rng.random(n) < 0.08}


def _bilinear(images: np.ndarray, index, row, col) -> np.ndarray:
    """Sample images (T, H, W, 3) at fractional pixel (row, col) of image `index`."""
    h, w = images.shape[1:3]
    row, col = np.clip(row, 0, h - 1.001), np.clip(col, 0, w - 1.001)
    r0, c0 = row.astype(np.int64), col.astype(np.int64)
    fr, fc = (row - r0)[..., None], (col - c0)[..., None]
    flat = images.reshape(-1, 3)
    base = index * h * w + r0 * w + c0
    top = flat[base] * (1 - fc) + flat[base + 1] * fc
    bottom = flat[base + w] * (1 - fc) + flat[base + w + 1] * fc
    return top * (1 - fr) + bottom * fr


def _posed(templates: np.ndarray, index: np.ndarray, poses: dict, face_size: int) -> np.ndarray:
    """Render frames (n, S, S, 3): template `index` moved by its pose."""
    centres = (np.arange(face_size, dtype=np.float32) + 0.5) / face_size * 2 - 1
    y, x = np.meshgrid(centres, centres, indexing="ij")
    x = x[None] - poses["shift"][:, 0, None, None]
    y = y[None] - poses["shift"][:, 1, None, None]
    cos, sin = np.cos(poses["angle"])[:, None, None], np.sin(poses["angle"])[:, None, None]
    scale = poses["scale"][:, None, None]
    source_x, source_y = (cos * x + sin * y) / scale, (cos * y - sin * x) / scale
    to_pixel = face_size / 2
    frames = _bilinear(templates, index[:, None, None],
                       (source_y + 1) * to_pixel - 0.5, (source_x + 1) * to_pixel - 0.5)
    return frames * poses["light"][:, None, None, None]


def pose_frames(templates: np.ndarray, mouth: np.ndarray, rng: np.random.Generator,
                face_size: int) -> np.ndarray:
    """Frames uint8 (n, face_size, face_size, 3), one per mouth openness (n,) in 0..1: the
    speaker's template for that opening (blinking now and then) under a small random pose."""
    n, template_size = len(mouth), templates.shape[2]
    poses = _random_poses(rng, n)
    level = np.round(mouth * (MOUTH_LEVELS - 1)).astype(np.int64)
    index = poses.pop("blink") * MOUTH_LEVELS + level
    flat_templates = templates.reshape(-1, template_size, template_size, 3)
    frames = np.empty((n, face_size, face_size, 3), np.uint8)
    for begin in range(0, n, FRAME_BLOCK):  # blocks keep arrays small, as in `speak`
        block = slice(begin, begin + FRAME_BLOCK)
        rendered = _posed(flat_templates, index[block],
                          {key: value[block] for key, value in poses.items()}, face_size)
        frames[block] = np.clip(np.round(rendered), 0, 255)
    return frames


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
