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

Under torchrun each process holds the whole split by default; where it does not fit (auto)
or with `--data_on_device shard`, each holds only its stripe of the rows
(data.order.ShardOrder), read from the file a block at a time so the host never holds more
than the stripe and one block either.
"""
from __future__ import annotations

import copy
from itertools import islice

import h5py
import numpy as np
import torch
import torch.nn.functional as F

from data.audio import PRE_EMPHASIS
from data.dataset import SpeechFaceDataset, own_spans, read_by_block

FREE_MEMORY_SHARE = 0.25    # auto: the split may take this share of the GPU's free memory
READ_BLOCK_ROWS = 1024      # a stripe is read this many rows of the file at a time (45 MB)


def split_bytes(dataset: SpeechFaceDataset) -> int:
    with h5py.File(dataset.path, "r") as f:
        return f[dataset.split]["waveforms"].nbytes + f[dataset.split]["faces"].nbytes


def hold_on_device(choice: str, dataset: SpeechFaceDataset, device: torch.device,
                   world_size: int = 1) -> str | None:
    """What --data_on_device holds on the device: "split" (on), "shard" (this process's
    stripe), or None (off: the DataLoader). auto: on CUDA the split where it fits in a
    quarter of the free memory, else under torchrun the stripe where that fits; on CPU the
    DataLoader's workers prepare batches beside the step instead."""
    if choice != "auto":
        return {"on": "split", "shard": "shard"}.get(choice)
    if device.type != "cuda":
        return None
    free, _ = torch.cuda.mem_get_info(device)
    size = split_bytes(dataset)
    if size <= FREE_MEMORY_SHARE * free:
        return "split"
    return "shard" if world_size > 1 and size / world_size <= FREE_MEMORY_SHARE * free else None


def shard_of(dataset: SpeechFaceDataset, rows: np.ndarray) -> SpeechFaceDataset:
    """`dataset` cut to its sorted `rows` (row i of the shard is rows[i]), arrays in memory:
    wrong faces are drawn among the shard's other speakers."""
    shard = copy.copy(dataset)
    shard.speaker_ids = dataset.speaker_ids[rows]
    if dataset.condition_kind == "embedding":
        shard._embeddings = dataset._embeddings[rows]
    if dataset._arrays is not None:
        shard._arrays = {key: values[rows] for key, values in dataset._arrays.items()}
    else:
        with h5py.File(dataset.path, "r") as f:
            waveforms, faces = read_by_block(f[dataset.split], rows, READ_BLOCK_ROWS)
        shard._arrays = {"waveforms": waveforms, "faces": faces}
    shard._by_speaker, shard._own_first, shard._own_count = own_spans(shard.speaker_ids)
    return shard


class DeviceBatches:
    """Iterates like the training DataLoader (drop_last): (condition, faces, speaker ids,
    wrong faces), already on `device`. Call `order.start(epoch, pairs_done)` first, as for
    the DataLoader. With a ShardOrder only its stripe of rows is read and held."""

    def __init__(self, dataset: SpeechFaceDataset, order, batch_size: int, device: torch.device):
        if getattr(order, "rows", None) is not None:
            dataset = shard_of(dataset, order.rows)
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
