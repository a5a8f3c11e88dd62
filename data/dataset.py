"""PyTorch dataset over one split of a pair file: (waveform, face, speaker_id, wrong_face)."""
from __future__ import annotations

import h5py
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from data.audio import prepare_waveform
from data.schema import PairFileError, PairFileInfo

IN_MEMORY_LIMIT_BYTES = 2 << 30   # a split this small is read once instead of every batch


class SpeechFaceDataset(Dataset):
    """One split of a validated pair file.

    Each item is (waveform (1, T) float32, face (3, S, S) in [-1, 1], speaker_id int64,
    wrong_face (3, S, S)): the wrong face is a frame of another speaker, the "mismatched
    pair" of GAN-CLS (Reed et al. 2016). Training takes a random T-sample crop of the
    stored window; evaluation takes the centre. The crop and the wrong face of an item are
    drawn from (seed, epoch, index) alone (see `item_random`). The HDF5 file is opened
    lazily, once per DataLoader worker, since h5py handles must not cross a fork.
    """

    def __init__(self, info: PairFileInfo, split: str, audio_samples: int, image_size: int,
                 train: bool, in_memory: bool | None = None, seed: int = 0):
        if split not in info.splits:
            raise PairFileError(f"{info.path}: has no '{split}' split (it has "
                                f"{', '.join(info.splits)})")
        split_info = info.splits[split]
        if split_info.window_samples < audio_samples:
            raise PairFileError(
                f"{info.path}: its speech windows hold {split_info.window_samples} samples "
                f"({split_info.window_samples / info.sample_rate:.2f} s) but the model reads "
                f"{audio_samples}; lower --audio_seconds or rebuild the file with longer windows")
        self.path, self.split, self.train = info.path, split, train
        self.audio_samples, self.image_size = audio_samples, image_size
        self.seed, self.epoch = seed, 0
        self._file, self._arrays = None, None
        with h5py.File(self.path, "r") as f:
            self.speaker_ids = f[split]["speaker_ids"][()].astype(np.int64)
            size = f[split]["waveforms"].nbytes + f[split]["faces"].nbytes
            if in_memory or (in_memory is None and size <= IN_MEMORY_LIMIT_BYTES):
                self._arrays = {key: f[split][key][()] for key in ("waveforms", "faces")}
        everyone = np.arange(len(self.speaker_ids))
        self._other_rows = {s: everyone[self.speaker_ids != s] for s in np.unique(self.speaker_ids)}

    def __len__(self) -> int:
        return len(self.speaker_ids)

    def __getstate__(self):
        state = self.__dict__.copy()
        state["_file"] = None
        return state

    def _rows(self):
        if self._arrays is not None:
            return self._arrays
        if self._file is None:
            self._file = h5py.File(self.path, "r")
        return self._file[self.split]

    def set_epoch(self, epoch: int) -> None:
        """New crops and wrong faces each epoch; DataLoader workers see it when next forked."""
        self.epoch = epoch

    def item_random(self, index: int) -> np.random.Generator:
        """The random draws of one item, from (seed, epoch, index) alone.

        So an item is the same whichever process or DataLoader worker reads it: an
        N-process run sees the very pairs of a one-process run, whatever --num_workers.
        """
        return np.random.default_rng((self.seed, self.epoch, index))

    def _crop_start(self, window_length: int, rng: np.random.Generator) -> int:
        spare = window_length - self.audio_samples
        if self.train:
            return int(rng.integers(spare + 1))
        return spare // 2

    def waveform(self, index: int, rng: np.random.Generator | None = None) -> torch.Tensor:
        window = self._rows()["waveforms"][index]
        rng = self.item_random(index) if rng is None else rng
        start = self._crop_start(len(window), rng)
        speech = window[start:start + self.audio_samples].astype(np.float32) / 32768.0
        return torch.from_numpy(prepare_waveform(speech))[None]          # (1, T)

    def face(self, index: int) -> torch.Tensor:
        return face_tensor(self._rows()["faces"][index], self.image_size)

    def wrong_row(self, index: int, rng: np.random.Generator | None = None) -> int:
        """A random row of another speaker; of another pair where the split has one speaker."""
        rng = self.item_random(index) if rng is None else rng
        others = self._other_rows[self.speaker_ids[index]]
        if len(others):
            return int(others[rng.integers(len(others))])
        row = int(rng.integers(max(len(self) - 1, 1)))
        return row + 1 if len(self) > 1 and row >= index else row

    def __getitem__(self, index: int):
        rng = self.item_random(index)
        wrong = self.wrong_row(index, rng)
        return (self.waveform(index, rng), self.face(index),
                torch.tensor(self.speaker_ids[index]), self.face(wrong))


def face_tensor(face: np.ndarray, image_size: int) -> torch.Tensor:
    """uint8 (S, S, 3) -> float (3, image_size, image_size) in [-1, 1], resized when S differs."""
    tensor = torch.from_numpy(np.ascontiguousarray(face)).permute(2, 0, 1).float()
    if tensor.shape[-1] != image_size:
        tensor = F.interpolate(tensor[None], size=(image_size, image_size), mode="bilinear",
                               antialias=True, align_corners=False)[0].clamp(0, 255)
    return tensor / 127.5 - 1.0

