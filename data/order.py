"""The order training reads pairs in, made resumable: epoch e of a run is a pure function of
(seed, e), and each pair's random choices (its speech crop, its wrong face) are a pure function
of (seed, e, position in the epoch).

So a run can stop after any batch and start again in another process, with any number of
DataLoader workers, and read exactly the pairs, crops and wrong faces it would have read:
nothing depends on which worker loaded a pair or on what a worker's generator did before.
"""
from __future__ import annotations

import numpy as np
import torch
from torch.utils.data import Sampler


def derive_seed(*parts: int) -> int:
    """A well-mixed 63-bit seed from integers (numpy's SeedSequence hashing)."""
    return int(np.random.SeedSequence([int(p) for p in parts]).generate_state(1, np.uint64)[0] >> 1)


class EpochOrder(Sampler):
    """Yields (row, item_seed) for one epoch, starting `pairs_done` positions in.

    Call `start(epoch, pairs_done)` before iterating the DataLoader; with drop_last the
    last len % batch_size positions of each permutation are never read, as before.
    """

    def __init__(self, num_rows: int, seed: int):
        self.num_rows, self.seed = num_rows, seed
        self.epoch, self.pairs_done = 0, 0

    @property
    def epoch_length(self) -> int:
        return self.num_rows

    def start(self, epoch: int, pairs_done: int = 0) -> None:
        self.epoch, self.pairs_done = epoch, pairs_done

    def permutation(self, epoch: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(derive_seed(self.seed, epoch))
        return torch.randperm(self.num_rows, generator=generator)

    def __len__(self) -> int:
        return self.epoch_length - self.pairs_done

    def __iter__(self):
        order = self.permutation(self.epoch).tolist()
        for position in range(self.pairs_done, self.epoch_length):
            yield order[position], derive_seed(self.seed, self.epoch, position)


class EpochDraws(EpochOrder):
    """An epoch of `draws` rows drawn with replacement, as resumable as EpochOrder: fine-tuning
    reads a handful of pairs many times (and batches may be larger than the split)."""

    def __init__(self, num_rows: int, seed: int, draws: int):
        super().__init__(num_rows, seed)
        self.draws = draws

    @property
    def epoch_length(self) -> int:
        return self.draws

    def permutation(self, epoch: int) -> torch.Tensor:
        generator = torch.Generator().manual_seed(derive_seed(self.seed, epoch))
        return torch.randint(self.num_rows, (self.draws,), generator=generator)


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
