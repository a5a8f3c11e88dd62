"""Precise BatchNorm statistics for the generator side, recomputed before faces are drawn."""
from __future__ import annotations

import torch

from data.dataset import SpeechFaceDataset, spread_over_speakers
from models import SpeechToFace

BATCHNORM_PAIRS = 512        # training pairs G's precise BatchNorm statistics average over


class PreciseBatchNorm:
    """G's BatchNorm statistics recomputed from fixed training pairs before faces are drawn
    in eval mode or saved, once a step. They are computed from scratch, so they depend on
    the weights alone and a resumed run saves the same ones. --batchnorm frozen trains on
    the stored statistics, so they stay."""

    def __init__(self, dataset: SpeechFaceDataset, seed: int, frozen: bool):
        # Cropped as training crops them, from a generator of their own: no training draw moves.
        crops = torch.Generator().manual_seed(seed)
        rows = spread_over_speakers(dataset.speaker_ids, BATCHNORM_PAIRS)
        self.conditions = dataset.batch(rows, crops)[0]
        self.enabled = len(self.conditions) >= 2 and not frozen
        self.refreshed_at: int | None = None

    def refresh(self, models: list[SpeechToFace], step: int, device: torch.device) -> None:
        if not self.enabled or self.refreshed_at == step:
            return
        chunks = self.conditions.tensor_split(-(-len(self.conditions) // 64))
        devices = [device] if device.type == "cuda" else []
        with torch.random.fork_rng(devices=devices):     # G's noise must not move the RNG
            for model in models:
                model.refresh_batchnorm(chunk.to(device) for chunk in chunks)
        self.refreshed_at = step


