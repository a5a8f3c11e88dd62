"""--augment: differentiable augmentation of every face the discriminator sees (DiffAugment,
Zhao et al. 2020), the real, wrong and generated faces alike, in D's step and in G's.

Why: with a few thousand pairs D learns the train faces themselves and its gradient stops
telling G anything general. Augmenting only the real faces would teach G to draw the
augmentations; augmenting both, through operations G's gradient passes, leaves G's target
the un-augmented faces. Each face gets its own draw from torch's random generator (saved in
checkpoints, so resume stays exact). The L1, gradient-difference and mouth terms compare
un-augmented faces.

One function per augmentation, registered in AUGMENTATIONS; --augment names them in order.
Faces are (B, 3, S, S) in [-1, 1]; 0 is mid-grey, what translation and cutout fill with.
"""
from __future__ import annotations

from typing import Callable

import torch

TRANSLATION = 1 / 8     # of the side: the largest shift
CUTOUT = 1 / 2          # of the side: the square cut out


def _uniform(faces: torch.Tensor, low: float, high: float) -> torch.Tensor:
    """A (B, 1, 1, 1) draw per face in [low, high)."""
    draw = torch.rand(faces.shape[0], 1, 1, 1, device=faces.device, dtype=faces.dtype)
    return low + (high - low) * draw


def color(faces: torch.Tensor) -> torch.Tensor:
    """Brightness +-0.5, saturation x0-2 (around each pixel's grey), contrast x0.5-1.5
    (around each face's mean)."""
    faces = faces + _uniform(faces, -0.5, 0.5)
    grey = faces.mean(dim=1, keepdim=True)
    faces = (faces - grey) * _uniform(faces, 0.0, 2.0) + grey
    mean = faces.mean(dim=(1, 2, 3), keepdim=True)
    return (faces - mean) * _uniform(faces, 0.5, 1.5) + mean


def translation(faces: torch.Tensor) -> torch.Tensor:
    """Each face moved by up to TRANSLATION of its side across and down, whole pixels; what
    comes in from outside is grey."""
    batch, _, side, _ = faces.shape
    reach = int(side * TRANSLATION)
    shifts = torch.randint(-reach, reach + 1, (2, batch, 1), device=faces.device)
    padded = torch.nn.functional.pad(faces, (reach, reach, reach, reach))
    pixels = torch.arange(side, device=faces.device)[None]
    rows, cols = pixels + reach - shifts[0], pixels + reach - shifts[1]     # (B, S)
    picked = padded[torch.arange(batch, device=faces.device)[:, None, None], :,
                    rows[:, :, None], cols[:, None, :]]                    # (B, S, S, 3)
    return picked.permute(0, 3, 1, 2)


def cutout(faces: torch.Tensor) -> torch.Tensor:
    """A grey square of CUTOUT of the side, centred anywhere on the face (so partly outside
    it now and then)."""
    batch, _, side, _ = faces.shape
    half = int(side * CUTOUT) // 2
    centres = torch.randint(0, side, (2, batch, 1), device=faces.device)
    pixels = torch.arange(side, device=faces.device)[None]
    inside_rows = (pixels - centres[0]).abs() < half        # (B, S)
    inside_cols = (pixels - centres[1]).abs() < half
    keep = ~(inside_rows[:, :, None] & inside_cols[:, None, :])
    return faces * keep[:, None].to(faces.dtype)


AUGMENTATIONS: dict[str, Callable[[torch.Tensor], torch.Tensor]] = {
    "color": color,
    "translation": translation,
    "cutout": cutout,
}


def augmentation_names(policy: str) -> list[str]:
    """'color,translation' -> ['color', 'translation']; '' or 'none' -> []."""
    if policy in ("", "none"):
        return []
    return [name.strip() for name in policy.split(",")]


def augmentation(policy: str, registry: dict = AUGMENTATIONS
                 ) -> Callable[[torch.Tensor], torch.Tensor] | None:
    """The function POLICY applies, its registry's augmentations in order (the faces' by
    default; models/speech_augment.py's for --speech_augment); None for none."""
    steps = [registry[name] for name in augmentation_names(policy)]
    if not steps:
        return None

    def augment(inputs: torch.Tensor) -> torch.Tensor:
        for step in steps:
            inputs = step(inputs)
        return inputs
    return augment
