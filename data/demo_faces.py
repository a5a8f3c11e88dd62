"""How a demo speaker's face is drawn and posed (data/demo.py decides what it looks like
from the voice): a cartoon drawn once per speaker for every mouth opening and both eye
states, then moved, turned, scaled and lit a little for each frame.
"""
from __future__ import annotations

from dataclasses import dataclass

import numpy as np

MOUTH_LEVELS = 12           # mouth openings drawn per speaker; frames pick the nearest
FRAME_BLOCK = 16            # frames are posed this many at a time


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
