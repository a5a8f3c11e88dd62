"""Training batches made on the device from a train split held there (--data_on_device).

The split's stored arrays (int16 speech windows, uint8 faces) are copied to the device once;
each batch is then gathered, cropped, normalised, pre-emphasised and resized there, with no
DataLoader, no worker processes and one small host-to-device copy of indices per batch.

The random choices are the DataLoader path's, made by the same function: the batch's
(row, item_seed) keys of data.order.EpochOrder go, as two arrays, through
SpeechFaceDataset.item_choices, which derives every pair's wrong face and crop start from its
item seed in a few numpy operations (well under a microsecond per pair on the host). So the
same seed gives the same batches as the DataLoader (tests/test_device_batches.py compares them
bit for bit on CPU) and resume stays exact.
"""
from __future__ import annotations

from itertools import islice

import h5py
import numpy as np
import torch
import torch.nn.functional as F

from data.audio import PRE_EMPHASIS
from data.dataset import SpeechFaceDataset

FREE_MEMORY_SHARE = 0.25    # auto: the split may take this share of the GPU's free memory


def split_bytes(dataset: SpeechFaceDataset) -> int:
    with h5py.File(dataset.path, "r") as f:
        return f[dataset.split]["waveforms"].nbytes + f[dataset.split]["faces"].nbytes


def hold_on_device(choice: str, dataset: SpeechFaceDataset, device: torch.device) -> bool:
    """--data_on_device: on, off, or auto (on CUDA when the split fits in a quarter of the
    free memory; on CPU the DataLoader's workers prepare batches beside the step instead)."""
    if choice != "auto":
        return choice == "on"
    if device.type != "cuda":
        return False
    free, _ = torch.cuda.mem_get_info(device)
    return split_bytes(dataset) <= FREE_MEMORY_SHARE * free


class DeviceBatches:
    """Iterates like the training DataLoader (drop_last): (condition, faces, speaker ids,
    wrong faces), already on `device`. Call `order.start(epoch, pairs_done)` first, as for
    the DataLoader."""

    def __init__(self, dataset: SpeechFaceDataset, order, batch_size: int, device: torch.device):
        self.dataset, self.order, self.batch_size, self.device = dataset, order, batch_size, device
        arrays = dataset._arrays
        if arrays is None:                       # a split too large to be read in memory
            with h5py.File(dataset.path, "r") as f:
                arrays = {key: f[dataset.split][key][()] for key in ("waveforms", "faces")}
        self.waveforms = torch.from_numpy(arrays["waveforms"]).to(device)   # (N, W) int16
        self.faces = torch.from_numpy(arrays["faces"]).to(device)           # (N, S, S, 3) uint8
        self.speaker_ids = torch.from_numpy(dataset.speaker_ids).to(device)
        self.embeddings = (torch.from_numpy(dataset._embeddings).to(device)
                           if dataset.condition_kind == "embedding" else None)
        self.offsets = torch.arange(dataset.audio_samples, device=device)

    def __len__(self) -> int:
        return len(self.order) // self.batch_size

    def __iter__(self):
        keys = iter(self.order)
        for _ in range(len(self)):
            yield self.batch(list(islice(keys, self.batch_size)))

    def draws(self, keys) -> torch.Tensor:
        """(3, B) int64 on the device: rows, crop starts, wrong rows of the batch's
        (row, item_seed) keys, as SpeechFaceDataset.__getitem__ draws them."""
        rows, item_seeds = np.array(keys, dtype=np.uint64).T
        rows = rows.astype(np.int64)
        wrong_rows, starts = self.dataset.item_choices(rows, item_seeds)
        host = torch.from_numpy(np.stack([rows, starts, wrong_rows]))
        if self.device.type == "cuda":
            host = host.pin_memory()
        return host.to(self.device, non_blocking=True)

    def batch(self, keys):
        rows, starts, wrong_rows = self.draws(keys)
        return (self.conditions(rows, starts), self.face_batch(rows), self.speaker_ids[rows],
                self.face_batch(wrong_rows))

    def conditions(self, rows: torch.Tensor, starts: torch.Tensor) -> torch.Tensor:
        kind = self.dataset.condition_kind
        if kind == "embedding":
            return self.embeddings[rows]
        if kind == "none":
            return torch.zeros(len(rows), 0, device=self.device)
        crops = self.waveforms[rows[:, None], starts[:, None] + self.offsets]   # (B, T) int16
        return prepared_waveforms(crops.float() / 32768.0)[:, None]              # (B, 1, T)

    def face_batch(self, rows: torch.Tensor) -> torch.Tensor:
        """uint8 (B, S, S, 3) -> float (B, 3, size, size) in [-1, 1], as data.dataset.face_tensor."""
        faces = self.faces[rows].permute(0, 3, 1, 2).float()
        size = self.dataset.image_size
        if faces.shape[-1] != size:
            faces = F.interpolate(faces, size=(size, size), mode="bilinear", antialias=True,
                                  align_corners=False).clamp(0, 255)
        return faces / 127.5 - 1.0


def prepared_waveforms(windows: torch.Tensor) -> torch.Tensor:
    """data.audio.prepare_waveform on a batch (B, T): peak normalisation where the peak is
    above zero, then pre-emphasis."""
    peak = windows.abs().amax(dim=1, keepdim=True)
    windows = torch.where(peak > 0, windows / torch.where(peak > 0, peak, 1.0), windows)
    return torch.cat([windows[:, :1], windows[:, 1:] - PRE_EMPHASIS * windows[:, :-1]], dim=1)
