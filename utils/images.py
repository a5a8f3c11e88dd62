"""Face tensors to pixels, grids and PNG files."""
from __future__ import annotations

from pathlib import Path

import numpy as np
import torch
from PIL import Image


def to_uint8_images(faces: torch.Tensor) -> np.ndarray:
    """(N, 3, S, S) in [-1, 1] -> uint8 (N, S, S, 3)."""
    pixels = ((faces.detach().float().cpu().clamp(-1, 1) + 1) * 127.5).round()
    return pixels.to(torch.uint8).permute(0, 2, 3, 1).numpy()


def face_grid(rows: list[torch.Tensor], pad: int = 2) -> np.ndarray:
    """Stack image rows, each (N, 3, S, S) with the same N, into one uint8 grid (H, W, 3)."""
    images = [to_uint8_images(row) for row in rows]
    n, size = images[0].shape[0], images[0].shape[1]
    grid = np.full((len(rows) * (size + pad) + pad, n * (size + pad) + pad, 3), 255, np.uint8)
    for r, row in enumerate(images):
        for c, image in enumerate(row):
            y, x = pad + r * (size + pad), pad + c * (size + pad)
            grid[y:y + size, x:x + size] = image
    return grid


def save_png(path, pixels: np.ndarray) -> Path:
    path = Path(path)
    path.parent.mkdir(parents=True, exist_ok=True)
    Image.fromarray(pixels).save(path)
    return path
