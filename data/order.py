"""The order training reads pairs in, made resumable: epoch e of a run is a pure function of
(seed, e), and each pair's random choices (its speech crop, its wrong face) are a pure function
of (seed, e, position in the epoch): the pair's item seed is that position's output of a
splitmix64 stream keyed by (seed, e), and its choices are the next outputs of a stream started
at the item seed (`item_seeds`, `item_draws`), integer arithmetic a batch does in a few numpy
operations.

So a run can stop after any batch and start again in another process, with any number of
DataLoader workers, and read exactly the pairs, crops and wrong faces it would have read:
nothing depends on which worker loaded a pair or on what a worker's generator did before.

Under torchrun every process computes the same permutation and takes every world_size-th
position of it (as DistributedSampler does), so step k's batches of all processes together
are the single process's step-k batch of world_size times the size; item seeds come from the
global position, so they do not depend on the number of processes either. The epoch keys the
permutation, which is what DistributedSampler.set_epoch does, and a stopped run resumes
exactly, inside an epoch too, which DistributedSampler cannot.

ShardOrder is the order of a process that holds only its share of the split on its device
(--data_on_device shard): each rank keeps a fixed stripe of the rows, a pure function of
(seed, rank, world size), and shuffles that stripe every epoch, so it differs from the order
above (a pair meets only its stripe in a batch, and N processes do not read the single
process's batches); item seeds still come from global positions, and resume stays exact.
"""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Sampler

from utils import UserError


GOLDEN_GAMMA = np.uint64(0x9E3779B97F4A7C15)   # splitmix64's step: 2**64 / the golden ratio
SHARD_STREAM = 2**40    # keys the stripes' shuffle apart from every epoch number's
BALANCE_STREAM = 2**41  # keys --balance speakers' draws apart from the plain shuffle's


def derive_seed(*parts: int) -> int:
    """A well-mixed 63-bit seed from integers (numpy's SeedSequence hashing)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, np.uint64)[0] >> 1)


def mix64(values: np.ndarray) -> np.ndarray:
    """splitmix64's finaliser (Steele, Lea & Flood 2014): a bijection of uint64 in which every
    output bit depends on every input bit; the products wrap modulo 2**64."""
    values = (values ^ (values >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
    values = (values ^ (values >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
    return values ^ (values >> np.uint64(31))


def splitmix64(states, steps) -> np.ndarray:
    """Output number `steps` (0, 1, ...) of the splitmix64 generator started at `states`, for
    any broadcastable uint64 states and steps: a pure function, no generator object."""
    steps = np.asarray(steps, dtype=np.uint64) + np.uint64(1)
    return mix64(np.asarray(states, dtype=np.uint64) + GOLDEN_GAMMA * steps)


def item_seeds(seed: int, epoch: int, positions) -> np.ndarray:
    """uint64 (N,): the item seeds of the pairs at `positions` of an epoch (global positions,
    so a process's share gets the single process's seeds)."""
    return splitmix64(derive_seed(seed, epoch), positions)


def item_draws(seeds: np.ndarray, count: int) -> np.ndarray:
    """uint64 (count, N): `count` independent 64-bit draws for each item seed."""
    return splitmix64(seeds, np.arange(count)[:, None])


def below(draws: np.ndarray, bounds) -> np.ndarray:
    """64-bit `draws` mapped to int64 in [0, bounds) by modulo, whose bias (at most
    bounds / 2**64) is negligible."""
    return (draws % np.asarray(bounds, dtype=np.uint64)).astype(np.int64)


class EpochOrder(Sampler):
    """Yields (row, item_seed) for this process's share of one epoch, starting `pairs_done`
    positions (of all processes together) in.

    Call `start(epoch, pairs_done)` before iterating the DataLoader; with drop_last the
    last len % global batch positions of each permutation are never read, as before.
    """

    def __init__(self, num_rows: int, seed: int, rank: int = 0, world_size: int = 1):
        self.num_rows, self.seed = num_rows, seed
        self.rank, self.world_size = rank, world_size
        self.epoch, self.pairs_done = 0, 0

    @property
    def epoch_length(self) -> int:
        """Positions in an epoch, all processes together."""
        return self.num_rows

    @property
    def share(self) -> int:
        """Positions each process reads: the epoch cut to a multiple of the process count,
        so every process takes as many steps."""
        return self.epoch_length // self.world_size

    def start(self, epoch: int, pairs_done: int = 0) -> None:
        self.epoch, self.pairs_done = epoch, pairs_done

    def permutation(self, epoch: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(derive_seed(self.seed, epoch))
        return torch.randperm(self.num_rows, generator=generator)

    def __len__(self) -> int:
        return self.share - self.pairs_done // self.world_size

    def __iter__(self):
        indices = np.arange(self.pairs_done // self.world_size, self.share)
        positions = indices * self.world_size + self.rank       # in the global order
        rows = self.permutation(self.epoch).numpy()[positions]
        yield from zip(rows.tolist(), item_seeds(self.seed, self.epoch, positions).tolist())


class EpochDraws(EpochOrder):
    """An epoch of `draws` rows drawn with replacement, as resumable as EpochOrder: fine-tuning
    reads a handful of pairs many times (and batches may be larger than the split)."""

    def __init__(self, num_rows: int, seed: int, draws: int, rank: int = 0, world_size: int = 1):
        super().__init__(num_rows, seed, rank, world_size)
        self.draws = draws

    @property
    def epoch_length(self) -> int:
        return self.draws

    def permutation(self, epoch: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(derive_seed(self.seed, epoch))
        return torch.randint(self.num_rows, (self.draws,), generator=generator)


def shard_rows(num_rows: int, seed: int, rank: int, world_size: int) -> np.ndarray:
    """int64 (num_rows // world_size,), sorted: the rows rank `rank` of `world_size` holds,
    every world_size-th of one shuffle keyed by the seed alone (so each stripe spans the
    speakers, stays the same every epoch and after any resume); the stripes are disjoint,
    equally long, and leave out the shuffle's last num_rows % world_size rows."""
    generator = torch.Generator().manual_seed(derive_seed(seed, SHARD_STREAM))
    share = num_rows // world_size
    shuffled = torch.randperm(num_rows, generator=generator).numpy()
    return np.sort(shuffled[rank:share * world_size:world_size])


class ShardOrder(EpochOrder):
    """Yields (index into this rank's stripe `rows`, item_seed): each epoch a shuffle of the
    stripe keyed by (seed, epoch, rank, world size); `pairs_done` counts all processes'
    pairs, as for EpochOrder, and item seeds come from the same global positions."""

    def __init__(self, num_rows: int, seed: int, rank: int = 0, world_size: int = 1):
        super().__init__(num_rows, seed, rank, world_size)
        self.rows = shard_rows(num_rows, seed, rank, world_size)

    @property
    def epoch_length(self) -> int:
        return len(self.rows) * self.world_size

    def permutation(self, epoch: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(
            derive_seed(self.seed, epoch, self.rank, self.world_size))
        return torch.randperm(len(self.rows), generator=generator)

    def __iter__(self):
        indices = np.arange(self.pairs_done // self.world_size, self.share)
        positions = indices * self.world_size + self.rank
        local = self.permutation(self.epoch).numpy()[indices]
        yield from zip(local.tolist(), item_seeds(self.seed, self.epoch, positions).tolist())


class BlockOrder(EpochOrder):
    """EpochOrder whose shuffle moves blocks of `block_rows` consecutive rows (aligned at
    multiples of it): a batch of B pairs is B / block_rows runs of the file, which
    SpeechFaceDataset.__getitems__ reads with one HDF5 read per run and column instead of
    one per pair. Fewer places of the file meet in a batch (a run is mostly one speaker's,
    often one video's), the price of 3-6 times the pairs/s from a file larger than memory
    (benchmarks/loader_scale.py); a pure function of (seed, epoch) like EpochOrder, so
    resume stays exact.

    Under N processes each takes whole blocks, every N-th of the shuffle, so no two read
    the same block and none reads a row it does not use (taking every N-th row, as
    EpochOrder does, would make each read whole blocks for 1/N of their rows). The last,
    partial block is completed from the split's first rows and the shuffle from its first
    blocks, as DistributedSampler pads, so every process has as many rows: an epoch repeats
    fewer than N x block_rows pairs. Step k's batches together are then not the single
    process's step-k batch, unlike EpochOrder's."""

    def __init__(self, num_rows: int, seed: int, block_rows: int, rank: int = 0,
                 world_size: int = 1):
        super().__init__(num_rows, seed, rank, world_size)
        self.block_rows = block_rows
        self.blocks = -(-num_rows // block_rows)

    @property
    def epoch_length(self) -> int:
        if self.world_size == 1:
            return self.num_rows
        return -(-self.blocks // self.world_size) * self.world_size * self.block_rows

    def permutation(self, epoch: int) -> torch.Tensor:
        """The single process's rows of epoch `epoch`: every block once, shuffled."""
        rows = self._rows_of(self._shuffled_blocks(epoch))
        return rows[rows < self.num_rows]

    def _shuffled_blocks(self, epoch: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(derive_seed(self.seed, epoch))
        return torch.randperm(self.blocks, generator=generator)

    def _rows_of(self, blocks: torch.Tensor) -> torch.Tensor:
        return (blocks[:, None] * self.block_rows + torch.arange(self.block_rows)).flatten()

    def process_rows(self, epoch: int) -> np.ndarray:
        """This process's rows of epoch `epoch`, `share` of them, in runs of whole blocks."""
        if self.world_size == 1:
            return self.permutation(epoch).numpy()
        blocks = self._shuffled_blocks(epoch)
        padded = torch.cat([blocks, blocks[:-len(blocks) % self.world_size]])
        return (self._rows_of(padded[self.rank::self.world_size]) % self.num_rows).numpy()

    def __iter__(self):
        indices = np.arange(self.pairs_done // self.world_size, self.share)
        positions = indices * self.world_size + self.rank       # as EpochOrder numbers them
        rows = self.process_rows(self.epoch)[indices]
        yield from zip(rows.tolist(), item_seeds(self.seed, self.epoch, positions).tolist())


class SpeakerBalancedOrder(EpochOrder):
    """--balance speakers: epochs as long as the split, in which every speaker takes an equal
    share of the positions (the remainder one more each for speakers the epoch picks), its
    rows cycled through in fresh shuffles: a speaker with 30 pairs is seen as often as one
    with 300, each of its pairs ten times as often. A pure function of (seed, epoch), read
    by processes as EpochOrder's permutation is, so resume stays exact."""

    def __init__(self, speaker_ids: np.ndarray, seed: int, rank: int = 0, world_size: int = 1):
        super().__init__(len(speaker_ids), seed, rank, world_size)
        self.speaker_rows = [np.flatnonzero(speaker_ids == s) for s in np.unique(speaker_ids)]

    def permutation(self, epoch: int) -> torch.Tensor:
        rng = np.random.default_rng(derive_seed(self.seed, epoch, BALANCE_STREAM))
        speakers = len(self.speaker_rows)
        quota = np.full(speakers, self.num_rows // speakers)
        quota[rng.permutation(speakers)[:self.num_rows % speakers]] += 1
        picks = [np.concatenate([rng.permutation(rows) for _ in range(-(-count // len(rows)))])
                 [:count] for rows, count in zip(self.speaker_rows, quota)]
        order = np.concatenate(picks)
        return torch.from_numpy(order[rng.permutation(len(order))])


def training_order(num_rows: int, batch_size: int, seed: int, rank: int = 0,
                   processes: int = 1, draws: int | None = None,
                   sharded: bool = False, block_rows: int = 0,
                   balanced_ids: np.ndarray | None = None) -> EpochOrder:
    """This process's resumable order over a train split of `num_rows` pairs: with `draws`
    (fine-tuning a handful of pairs) epochs of that many draws with replacement, else
    shuffles of the split (of this process's stripe of it when `sharded`, of blocks of
    `block_rows` consecutive rows with `block_rows`, speaker-balanced over `balanced_ids`,
    the split's speaker ids, when given), which must then hold a batch for every process."""
    if balanced_ids is not None and (draws or sharded or block_rows):
        used = "--finetune" if draws else "--data_on_device shard" if sharded else "--read_blocks"
        raise UserError(f"--balance speakers draws its own order; it cannot be combined with "
                        f"{used}: drop one of them")
    if draws:
        return EpochDraws(num_rows, seed, draws, rank, processes)
    if batch_size > num_rows // processes:
        share = (f", {num_rows // processes} for each of {processes} processes"
                 if processes > 1 else "")
        raise UserError(f"--batch_size {batch_size} is larger than the train split "
                        f"({num_rows} pairs{share}); lower --batch_size")
    if sharded:
        return ShardOrder(num_rows, seed, rank, processes)
    if block_rows:
        return BlockOrder(num_rows, seed, block_rows, rank, processes)
    if balanced_ids is not None:
        return SpeakerBalancedOrder(balanced_ids, seed, rank, processes)
    return EpochOrder(num_rows, seed, rank, processes)


def seed_worker(worker_id: int) -> None:
    """DataLoader worker start: python and numpy seeded from the worker's torch seed, and
    SIGINT/SIGTERM left to the main process, which saves a checkpoint and then stops the
    workers (a Ctrl-C or a scheduler's SIGTERM reaches the whole process group)."""
    import random
    import signal
    seed = torch.initial_seed() % 2**32
    random.seed(seed)
    np.random.seed(seed)
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    signal.signal(signal.SIGTERM, signal.SIG_IGN)
