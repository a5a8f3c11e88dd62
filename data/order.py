"""The order training reads pairs in, made resumable: epoch e of a run is a pure function of
(seed, e), and each pair's random choices (its speech crop, its wrong face) are a pure function
of (seed, e, position in the epoch).

So a run can stop after any batch and start again in another process, with any number of
DataLoader workers, and read exactly the pairs, crops and wrong faces it would have read:
nothing depends on which worker loaded a pair or on what a worker's generator did before.

Under torchrun every process computes the same permutation and takes every world_size-th
position of it (as DistributedSampler does), so step k's batches of all processes together
are the single process's step-k batch of world_size times the size; item seeds come from the
global position, so they do not depend on the number of processes either. The epoch keys the
permutation, which is what DistributedSampler.set_epoch does, and a stopped run resumes
exactly, inside an epoch too, which DistributedSampler cannot.
"""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Sampler

from utils import UserError


def derive_seed(*parts: int) -> int:
    """A well-mixed 63-bit seed from integers (numpy's SeedSequence hashing)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, np.uint64)[0] >> 1)


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
        order = self.permutation(self.epoch).tolist()
        for index in range(self.pairs_done // self.world_size, self.share):
            position = index * self.world_size + self.rank       # in the global order
            yield order[position], derive_seed(self.seed, self.epoch, position)


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


def training_order(num_rows: int, batch_size: int, seed: int, rank: int = 0,
                   processes: int = 1, draws: int | None = None) -> EpochOrder:
    """This process's resumable order over a train split of `num_rows` pairs: with `draws`
    (fine-tuning a handful of pairs) epochs of that many draws with replacement, else
    shuffles of the split, which must then hold a batch for every process."""
    if draws:
        return EpochDraws(num_rows, seed, draws, rank, processes)
    if batch_size > num_rows // processes:
        share = (f", {num_rows // processes} for each of {processes} processes"
                 if processes > 1 else "")
        raise UserError(f"--batch_size {batch_size} is larger than the train split "
                        f"({num_rows} pairs{share}); lower --batch_size")
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
