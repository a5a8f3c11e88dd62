"""PyTorch dataset over one split of a pair file: (condition, face, speaker_id, wrong_face)."""
from __future__ import annotations

from pathlib import Path

import h5py
import numpy as np
import torch
import torch.nn.functional as F
from torch.utils.data import Dataset

from data.audio import SAMPLE_RATE, prepare_waveform
from data.order import below, item_draws
from data.schema import PairFileError, PairFileInfo, require_embeddings

IN_MEMORY_LIMIT_BYTES = 2 << 30   # a split this small is read once instead of every batch,
IN_MEMORY_SHARE = 0.5             # if it takes at most this share of the memory available


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

    An item key is a row, or (row, item_seed) from data.order.EpochOrder: then the wrong face
    and the crop are a pure function of the item seed (`item_choices`, which
    data.device_batches draws a whole batch with), so they do not depend on which worker
    loads it (exact resume). A plain row draws them from torch's global generator.
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
        self.window_samples = split_info.window_samples
        self.audio_samples, self.image_size = audio_samples, image_size
        self._file, self._arrays, self.condition_kind = None, None, condition
        self.block_rows = 0     # set to a BlockOrder's block_rows to read batches by block
        # False: an item's wrong face is its own face, not read (`--wrong_faces batch` takes
        # the wrong pairs from the batch), saving one of a pair's three HDF5 reads
        self.wrong_faces = True
        if condition == "embedding":
            require_embeddings(info)
        try:
            with h5py.File(self.path, "r") as f:
                self.speaker_ids = f[split]["speaker_ids"][()].astype(np.int64)
                if condition == "embedding":
                    self._embeddings = f[split]["embeddings"][()].astype(np.float32)
                size = f[split]["waveforms"].nbytes + f[split]["faces"].nbytes
                if in_memory or (in_memory is None and fits_in_memory(size)):
                    self._arrays = {key: f[split][key][()] for key in ("waveforms", "faces")}
        except (OSError, RuntimeError, KeyError, ValueError) as error:
            raise PairFileError(f"{info.path}: split '{split}' cannot be read, the file is "
                                f"damaged ({str(error).splitlines()[0][:100]}); rebuild it with "
                                "`python -m data.prepare` or copy it again") from None
        if speaker_map is not None:
            self.speaker_ids = np.asarray(speaker_map, dtype=np.int64)[self.speaker_ids]
        self._by_speaker, self._own_first, self._own_count = own_spans(self.speaker_ids)

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

    def crop_starts(self, draws: np.ndarray) -> np.ndarray:
        """int64 (N,): the first samples of the model's crops for 64-bit `draws`: uniform over
        the stored window in training, its centre at evaluation."""
        spare = self.window_samples - self.audio_samples
        return below(draws, spare + 1) if self.train else np.full(len(draws), spare // 2)

    def _crop_start(self, generator: torch.Generator | None = None) -> int:
        """One crop start drawn from `generator` (torch's global one by default); evaluation
        draws nothing."""
        draws = torch_draws(1, generator) if self.train else np.zeros(1, np.uint64)
        return int(self.crop_starts(draws)[0])

    def _speech(self, index: int, start: int | None = None) -> np.ndarray:
        """The model's T samples of pair `index` from `start` (by default a random crop in
        training, else the centre), float32 in [-1, 1]."""
        window = self._rows()["waveforms"][index]
        start = self._crop_start() if start is None else start
        return window[start:start + self.audio_samples].astype(np.float32) / 32768.0

    def waveform(self, index: int, start: int | None = None) -> torch.Tensor:
        return torch.from_numpy(prepare_waveform(self._speech(index, start)))[None]  # (1, T)

    def centre_loudness(self, index: int, seconds: float = 0.5) -> float:
        """dB (full scale) of the centre `seconds` of the model's input window, as evaluation
        crops it: what a frame's mouth at that instant would follow."""
        speech = self._speech(index)
        half = min(len(speech), round(seconds * SAMPLE_RATE)) // 2
        centre = speech[len(speech) // 2 - half: len(speech) // 2 + half]
        return float(10 * np.log10(np.mean(centre ** 2) + 1e-10))

    def condition(self, index: int, start: int | None = None) -> torch.Tensor:
        """The model's input for pair `index`: its speech (1, T) from `start`, its vector (E,),
        or (0,)."""
        if self.condition_kind == "speech":
            return self.waveform(index, start)
        if self.condition_kind == "embedding":
            return torch.from_numpy(self._embeddings[index])
        return torch.zeros(0)

    def face(self, index: int) -> torch.Tensor:
        return face_tensor(self._rows()["faces"][index], self.image_size)

    def batch(self, rows, generator: torch.Generator | None = None
              ) -> tuple[torch.Tensor, torch.Tensor]:
        """The conditions (N, ...) and faces (N, 3, S, S) of `rows`, stacked in their order;
        training crops drawn from `generator` (torch's global one by default)."""
        return (torch.stack([self.condition(i, self._crop_start(generator)) for i in rows]),
                torch.stack([self.face(i) for i in rows]))

    def wrong_rows(self, rows: np.ndarray, draws: np.ndarray) -> np.ndarray:
        """int64 (N,): for each of `rows` the row of another speaker that its 64-bit draw picks
        (of another pair where the split has one speaker), each candidate equally likely."""
        first, count = self._own_first[rows], self._own_count[rows]
        k = below(draws, len(self) - count)        # the k-th row outside the excluded span
        return self._by_speaker[np.where(k < first, k, k + count)]

    def wrong_row(self, index: int) -> int:
        """A wrong row for pair `index` drawn from torch's global generator."""
        return int(self.wrong_rows(np.array([index]), torch_draws(1))[0])

    def item_choices(self, rows: np.ndarray, item_seeds: np.ndarray
                     ) -> tuple[np.ndarray, np.ndarray]:
        """The wrong rows and crop starts, int64 (N,) each, of pairs `rows` with `item_seeds`
        (uint64, data.order.item_seeds): a pure function of each pair's (row, item seed)."""
        wrong_draws, crop_draws = item_draws(item_seeds, 2)
        return self.wrong_rows(rows, wrong_draws), self.crop_starts(crop_draws)

    def __getitems__(self, keys: list) -> list:
        """The DataLoader's batch fetch: per item, or with `block_rows` set (a
        data.order.BlockOrder's keys) one read per block of the file and column, the wrong
        faces drawn among the batch's other speakers (GAN-CLS's mismatched pairs from
        the batch, as `--wrong_faces batch` does in the model): a pure function of the
        batch's keys."""
        if not self.block_rows or not keys or not isinstance(keys[0], tuple):
            return [self[key] for key in keys]
        rows, seeds = np.array(keys, dtype=np.uint64).T
        rows = rows.astype(np.int64)
        waveforms, faces = read_by_block(self._rows(), rows, self.block_rows)
        wrong_draws, crop_draws = item_draws(seeds, 2)
        by_speaker, first, count = own_spans(self.speaker_ids[rows])
        pick = below(wrong_draws, len(rows) - count)
        wrong = by_speaker[np.where(pick < first, pick, pick + count)]
        starts = self.crop_starts(crop_draws)
        return [(self._condition_of(waveforms[i], starts[i], row),
                 face_tensor(faces[i], self.image_size), torch.tensor(self.speaker_ids[row]),
                 face_tensor(faces[wrong[i]], self.image_size)) for i, row in enumerate(rows)]

    def _condition_of(self, stored: np.ndarray, start: int, row: int) -> torch.Tensor:
        """Pair `row`'s condition, its speech cut from its `stored` window at `start`."""
        if self.condition_kind != "speech":
            return self.condition(row)
        speech = stored[start:start + self.audio_samples].astype(np.float32) / 32768.0
        return torch.from_numpy(prepare_waveform(speech))[None]

    def __getitem__(self, key):
        if isinstance(key, tuple):                      # (row, item_seed) from EpochOrder
            index, item_seed = key
            (wrong,), (start,) = self.item_choices(np.array([index]),
                                                   np.array([item_seed], dtype=np.uint64))
        else:
            index, wrong, start = key, self.wrong_row(key), None
        face = self.face(index)
        return (self.condition(index, start), face, torch.tensor(self.speaker_ids[index]),
                self.face(wrong) if self.wrong_faces else face)


def read_by_block(split, rows: np.ndarray, block_rows: int) -> tuple[np.ndarray, np.ndarray]:
    """The stored waveforms and faces of `rows` (any order) of an open split group: one
    slice read per block of `block_rows` consecutive rows they fall in, up to the last of
    them in that block."""
    order = np.argsort(rows, kind="stable")
    ordered = rows[order]
    waveforms = np.empty((len(rows), *split["waveforms"].shape[1:]), np.int16)
    faces = np.empty((len(rows), *split["faces"].shape[1:]), np.uint8)
    for block in np.unique(ordered // block_rows):
        start = block * block_rows
        low, high = np.searchsorted(ordered, [start, start + block_rows])
        span, offsets = slice(start, ordered[high - 1] + 1), ordered[low:high] - start
        waveforms[order[low:high]] = split["waveforms"][span][offsets]
        faces[order[low:high]] = split["faces"][span][offsets]
    return waveforms, faces


def fits_in_memory(size: int) -> bool:
    """Whether a split of `size` bytes is read into memory: at most IN_MEMORY_LIMIT_BYTES and
    IN_MEMORY_SHARE of what this process may still take (forked DataLoader workers share the
    arrays; the rest is for torch, the model and the batches). A limit below the machine's, a
    container's or a scheduler's memory cgroup, kills a process that reads past it."""
    return size <= min(IN_MEMORY_LIMIT_BYTES, IN_MEMORY_SHARE * available_memory())


def available_memory() -> int:
    """Bytes this process may still take: the machine's MemAvailable, and under a cgroup
    memory limit (v1 or v2) that limit less the group's usage without its page cache, which
    the kernel reclaims before it kills."""
    available = _meminfo_available()
    for limit, usage in _cgroup_memory():
        available = min(available, max(limit - usage, 0))
    return available


def _meminfo_available() -> int:
    for line in Path("/proc/meminfo").read_text().splitlines():
        if line.startswith("MemAvailable:"):
            return int(line.split()[1]) * 1024
    return 1 << 62


def _cgroup_memory() -> list[tuple[int, int]]:
    """(limit, usage less page cache) in bytes of each memory cgroup limit over this process
    (the v1 group's hierarchical limit; v2's group and each parent with a memory.max)."""
    found = []
    try:
        lines = Path("/proc/self/cgroup").read_text().splitlines()
    except OSError:
        return found
    for hierarchy, controllers, group in (line.split(":", 2) for line in lines if line.count(":") >= 2):
        if "memory" in controllers.split(","):
            folder = Path("/sys/fs/cgroup/memory") / group.lstrip("/")
            stat = _stat(folder / "memory.stat")
            usage = _number(folder / "memory.usage_in_bytes")
            if stat and usage is not None:
                limit = stat.get("hierarchical_memory_limit", 1 << 62)
                found.append((limit, usage - stat.get("total_cache", stat.get("cache", 0))))
        elif hierarchy == "0" and controllers == "":
            folder = Path("/sys/fs/cgroup") / group.lstrip("/")
            while folder != Path("/sys/fs/cgroup").parent and (folder / "memory.max").exists():
                limit, usage = _number(folder / "memory.max"), _number(folder / "memory.current")
                if limit is not None and usage is not None:
                    found.append((limit, usage - _stat(folder / "memory.stat").get("file", 0)))
                folder = folder.parent
    return found


def _number(path: Path) -> int | None:
    """An integer cgroup file's value; None where it is missing or says 'max'."""
    try:
        text = path.read_text().strip()
    except OSError:
        return None
    return int(text) if text.isdigit() else None


def _stat(path: Path) -> dict[str, int]:
    try:
        return {key: int(value) for key, value in
                (line.split() for line in path.read_text().splitlines() if line.count(" ") == 1)}
    except (OSError, ValueError):
        return {}


def own_spans(speaker_ids: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """The rows sorted by speaker (stably), and for each row the span [first, first + count)
    of that order a wrong row must avoid: its speaker's rows; where the split has one
    speaker, the row itself; where it has one pair, nothing."""
    by_speaker = np.argsort(speaker_ids, kind="stable")
    speakers, first, count = np.unique(speaker_ids[by_speaker], return_index=True,
                                       return_counts=True)
    if len(speakers) > 1:
        own = np.searchsorted(speakers, speaker_ids)
        return by_speaker, first[own], count[own]
    rows = len(speaker_ids)
    return by_speaker, np.arange(rows), np.full(rows, int(rows > 1))


def torch_draws(count: int, generator: torch.Generator | None = None) -> np.ndarray:
    """uint64 (count,): 64-bit draws from torch's `generator` (its global one by default)."""
    return torch.randint(-2**63, 2**63 - 1, (count,), generator=generator).numpy().view(np.uint64)


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


def held_out_split(info: PairFileInfo) -> str:
    """The split held-out scores and renders come from: valid, else test, else train."""
    for split in ("valid", "test", "train"):
        if split in info.splits:
            return split
