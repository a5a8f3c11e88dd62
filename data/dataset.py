"""PyTorch dataset over one split of a pair file: (condition, face, speaker_id, wrong_face)."""
from __future__ import annotations

import h5py
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from data.audio import SAMPLE_RATE, prepare_waveform
from data.schema import PairFileError, PairFileInfo, require_embeddings

IN_MEMORY_LIMIT_BYTES = 2 << 30   # a split this small is read once instead of every batch


class SpeechFaceDataset(Dataset):
    """One split of a validated pair file.

    Each item is (condition, face (3, S, S) in [-1, 1], speaker_id int64, wrong_face
    (3, S, S)): the wrong face is a frame of another speaker, the "mismatched pair" of
    GAN-CLS (Reed et al. 2016). The condition is what the model draws from: by default the
    waveform (1, T) float32 (training takes a random T-sample crop of the stored window;
    evaluation takes the centre), with condition="embedding" the pair's stored vector (E,),
    with condition="none" an empty (0,) tensor. `speaker_map[i]` renumbers the file's
    speaker i (fine-tuning appends new speakers to a trained model's). The HDF5 file is
    opened lazily, once per DataLoader worker, since h5py handles must not cross a fork.

    An item key is a row, or (row, item_seed) from data.order.EpochOrder: then the crop and
    the wrong face come from a generator seeded for that item alone, so they do not depend
    on which worker loads it (exact resume).
    """

    def __init__(self, info: PairFileInfo, split: str, audio_samples: int, image_size: int,
                 train: bool, in_memory: bool | None = None, condition: str = "speech",
                 speaker_map: np.ndarray | None = None):
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
        self._file, self._arrays, self.condition_kind = None, None, condition
        if condition == "embedding":
            require_embeddings(info)
        try:
            with h5py.File(self.path, "r") as f:
                self.speaker_ids = f[split]["speaker_ids"][()].astype(np.int64)
                if condition == "embedding":
                    self._embeddings = f[split]["embeddings"][()].astype(np.float32)
                size = f[split]["waveforms"].nbytes + f[split]["faces"].nbytes
                if in_memory or (in_memory is None and size <= IN_MEMORY_LIMIT_BYTES):
                    self._arrays = {key: f[split][key][()] for key in ("waveforms", "faces")}
        except (OSError, RuntimeError, KeyError, ValueError) as error:
            raise PairFileError(f"{info.path}: split '{split}' cannot be read, the file is "
                                f"damaged ({str(error).splitlines()[0][:100]}); rebuild it with "
                                "`python -m data.prepare` or copy it again") from None
        if speaker_map is not None:
            self.speaker_ids = np.asarray(speaker_map, dtype=np.int64)[self.speaker_ids]
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

    def _crop_start(self, window_length: int, generator: torch.Generator | None = None) -> int:
        spare = window_length - self.audio_samples
        if self.train:
            return int(torch.randint(spare + 1, (), generator=generator).item())
        return spare // 2

    def _speech(self, index: int, generator: torch.Generator | None = None) -> np.ndarray:
        """The model's T samples of pair `index` (a random crop in training, else the centre),
        float32 in [-1, 1]."""
        window = self._rows()["waveforms"][index]
        start = self._crop_start(len(window), generator)
        return window[start:start + self.audio_samples].astype(np.float32) / 32768.0

    def waveform(self, index: int, generator: torch.Generator | None = None) -> torch.Tensor:
        return torch.from_numpy(prepare_waveform(self._speech(index, generator)))[None]  # (1, T)

    def centre_loudness(self, index: int, seconds: float = 0.5) -> float:
        """dB (full scale) of the centre `seconds` of the model's input window, as evaluation
        crops it: what a frame's mouth at that instant would follow."""
        speech = self._speech(index)
        half = min(len(speech), round(seconds * SAMPLE_RATE)) // 2
        centre = speech[len(speech) // 2 - half: len(speech) // 2 + half]
        return float(10 * np.log10(np.mean(centre ** 2) + 1e-10))

    def condition(self, index: int, generator: torch.Generator | None = None) -> torch.Tensor:
        """The model's input for pair `index`: its speech (1, T), its vector (E,), or (0,)."""
        if self.condition_kind == "speech":
            return self.waveform(index, generator)
        if self.condition_kind == "embedding":
            return torch.from_numpy(self._embeddings[index])
        return torch.zeros(0)

    def face(self, index: int) -> torch.Tensor:
        return face_tensor(self._rows()["faces"][index], self.image_size)

    def batch(self, rows, generator: torch.Generator | None = None
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """The conditions (N, ...) and faces (N, 3, S, S) of `rows`, stacked in their order."""
        return (torch.stack([self.condition(i, generator) for i in rows]),
                torch.stack([self.face(i) for i in rows]))

    def wrong_row(self, index: int, generator: torch.Generator | None = None) -> int:
        """A random row of another speaker; of another pair where the split has one speaker."""
        others = self._other_rows[self.speaker_ids[index]]
        if len(others):
            return int(others[torch.randint(len(others), (), generator=generator).item()])
        row = int(torch.randint(max(len(self) - 1, 1), (), generator=generator).item())
        return row + 1 if len(self) > 1 and row >= index else row

    def __getitem__(self, key):
        index, generator = key, None
        if isinstance(key, tuple):                      # (row, item_seed) from EpochOrder
            index, generator = key[0], torch.Generator().manual_seed(key[1])
        wrong = self.wrong_row(index, generator)
        return (self.condition(index, generator), self.face(index),
                torch.tensor(self.speaker_ids[index]), self.face(wrong))


def spread_over_speakers(speaker_ids: np.ndarray, count: int) -> list[int]:
    """Up to `count` row indices taking speakers in turn, so every speaker shows in a grid."""
    queues = [list(np.flatnonzero(speaker_ids == s)) for s in np.unique(speaker_ids)]
    rows = []
    while len(rows) < count and any(queues):
        for queue in queues:
            if queue and len(rows) < count:
                rows.append(int(queue.pop(0)))
    return rows


def in_chunks(rows, size: int = 64) -> list:
    """`rows` in consecutive pieces of at most `size`, the batches faces are drawn in."""
    return [rows[start:start + size] for start in range(0, len(rows), size)]


def face_tensor(face: np.ndarray, image_size: int) -> torch.Tensor:
    """uint8 (S, S, 3) -> float (3, image_size, image_size) in [-1, 1], resized when S differs."""
    tensor = torch.from_numpy(np.ascontiguousarray(face)).permute(2, 0, 1).float()
    if tensor.shape[-1] != image_size:
        tensor = F.interpolate(tensor[None], size=(image_size, image_size), mode="bilinear",
                               antialias=True, align_corners=False)[0].clamp(0, 255)
    return tensor / 127.5 - 1.0


def read_faces(info: PairFileInfo, split: str) -> tuple[np.ndarray, np.ndarray]:
    """All faces of a split as stored, uint8 (N, S, S, 3), and their speaker ids (N,)."""
    with h5py.File(info.path, "r") as f:
        return f[split]["faces"][()], f[split]["speaker_ids"][()].astype(np.int64)


def read_speaker_ids(info: PairFileInfo, split: str) -> np.ndarray:
    with h5py.File(info.path, "r") as f:
        return f[split]["speaker_ids"][()].astype(np.int64)
