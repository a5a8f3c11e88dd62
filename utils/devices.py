"""The device, chosen once and passed down."""
from __future__ import annotations

import torch

from utils.errors import UserError


def choose_device(name: str = "auto") -> torch.device:
    """Pick the device once: CUDA when present (or asked for), else CPU."""
    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    if name == "cuda" and not torch.cuda.is_available():
        raise UserError("--device cuda was asked for but no CUDA device is available; "
                        "use --device cpu or auto")
    return torch.device(name)
