"""Several training processes under torchrun: the process group, DDP, and who writes.

    torchrun --nproc_per_node=N runtime.py ...     # N processes, one per GPU (or CPU share)

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK (and the rendezvous address) in each
process's environment; without them the run is one process and nothing here does any
communication. NCCL joins CUDA processes, gloo CPU ones.
"""
from __future__ import annotations

import os
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Callable, Iterator

import torch
import torch.distributed as dist
from torch import nn
from torch.nn.parallel import DistributedDataParallel

from utils import UserError


@dataclass(frozen=True)
class Ranks:
    """Where this process stands among the run's processes (rank 0 of 1 when alone)."""
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0

    @property
    def is_main(self) -> bool:
        """Only the main process writes logs, grids, checkpoints and progress bars."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def wrap(self, module: nn.Module, device: torch.device) -> nn.Module:
        """DDP when there are several processes (it broadcasts rank 0's weights now and
        averages gradients in backward); the module itself when alone, so one code path."""
        if not self.distributed:
            return module
        return DistributedDataParallel(module, device_ids=[device.index] if device.type == "cuda"
                                       else None)

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def main_first(self, make: Callable, *args):
        """Run `make`, which may write a cache file, on rank 0 first; then on the first
        process of every other machine (whose own disk may lack the cache); then on the rest."""
        turn = 0 if self.is_main else 1 if self.local_rank == 0 else 2
        for current in range(3):
            if current == turn:
                result = make(*args)
            self.barrier()
        return result

    def mean(self, values: dict[str, float], device: torch.device) -> dict[str, float]:
        """Average figures over the processes, so the main one logs the whole global batch."""
        if not self.distributed or not values:
            return values
        stacked = torch.tensor(list(values.values()), dtype=torch.float64, device=device)
        dist.all_reduce(stacked)
        return dict(zip(values, (stacked / self.world_size).tolist()))


SINGLE_PROCESS = Ranks()


def ranks_from_environment() -> Ranks:
    """Read torchrun's variables; a run started with plain python is one process."""
    try:
        return Ranks(rank=int(os.environ.get("RANK", 0)),
                     world_size=int(os.environ.get("WORLD_SIZE", 1)),
                     local_rank=int(os.environ.get("LOCAL_RANK", 0)))
    except ValueError:
        raise UserError("RANK, WORLD_SIZE and LOCAL_RANK must be integers; start several "
                        "processes with torchrun, which sets them") from None


def process_device(ranks: Ranks, device: torch.device) -> torch.device:
    """One GPU per process: local rank i takes cuda:i on its machine."""
    if device.type != "cuda" or not ranks.distributed:
        return device
    count = torch.cuda.device_count()
    if ranks.local_rank >= count:
        raise UserError(f"torchrun started more processes on this machine than it has GPUs "
                        f"({count}); use --nproc_per_node {count} or fewer")
    torch.cuda.set_device(ranks.local_rank)
    return torch.device("cuda", ranks.local_rank)


@contextmanager
def process_group(device: torch.device) -> Iterator[tuple[Ranks, torch.device]]:
    """Join torchrun's process group for the duration of a training run."""
    ranks = ranks_from_environment()
    if not ranks.distributed:
        yield ranks, device
        return
    device = process_device(ranks, device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                            device_id=device if device.type == "cuda" else None)
    try:
        yield ranks, device
        dist.barrier()    # nobody leaves while rank 0 still writes its last checkpoint
    finally:
        dist.destroy_process_group()
