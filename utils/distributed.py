"""Several processes (torchrun).

torchrun sets RANK, WORLD_SIZE and LOCAL_RANK (and the rendezvous address) in each
process's environment; without them a run is one process and nothing here communicates.
The trainer wraps the networks in DistributedDataParallel; these are the rest.
"""
from __future__ import annotations

import datetime
import os
from contextlib import contextmanager
from dataclasses import dataclass, replace
from typing import Callable, Iterator

import torch
import torch.distributed as dist

from utils.errors import UserError

PROCESS_GROUP_TIMEOUT = datetime.timedelta(hours=1)   # the others wait while rank 0 evaluates


@dataclass(frozen=True)
class Ranks:
    """Where this process stands among the run's processes (rank 0 of 1 when alone), and
    the few collectives the training loop needs; each is a no-op in a single process."""
    rank: int = 0
    world_size: int = 1
    local_rank: int = 0
    device: torch.device = torch.device("cpu")    # where collectives' tensors live (NCCL: GPU)

    @property
    def is_main(self) -> bool:
        """Only the main process writes logs, grids, checkpoints and progress bars."""
        return self.rank == 0

    @property
    def distributed(self) -> bool:
        return self.world_size > 1

    def barrier(self) -> None:
        if self.distributed:
            dist.barrier()

    def main_first(self, make: Callable, *args):
        """Run `make`, which may write a cache file, on rank 0 first; then on the first
        process of every other machine (whose own disk may lack the cache); then on the rest."""
        turn = 0 if self.is_main else 1 if self.local_rank == 0 else 2
        result = None
        for current in range(3):
            if current == turn:
                result = make(*args)
            self.barrier()
        return result

    def sum(self, tensor: torch.Tensor) -> torch.Tensor:
        """The tensor summed over the processes (a NaN or inf anywhere stays non-finite)."""
        if not self.distributed:
            return tensor
        total = tensor.detach().to(self.device, torch.float64, copy=True)
        dist.all_reduce(total)
        return total

    def mean(self, values: dict[str, float]) -> dict[str, float]:
        """Figures averaged over the processes: each is a batch mean, so this is the mean
        over the global batch."""
        if not self.distributed or not values:
            return values
        total = self.sum(torch.tensor(list(values.values()), dtype=torch.float64))
        return dict(zip(values, (total / self.world_size).tolist()))

    def max(self, value: int) -> int:
        if not self.distributed:
            return value
        largest = torch.tensor([value], dtype=torch.int64, device=self.device)
        dist.all_reduce(largest, op=dist.ReduceOp.MAX)
        return int(largest.item())

    def broadcast(self, module: torch.nn.Module) -> None:
        """Rank 0's weights and buffers of `module` copied, in place, into every process's."""
        if self.distributed:
            for tensor in module.state_dict().values():
                dist.broadcast(tensor, src=0)

    def gather(self, value) -> list:
        """Every process's `value` (picklable), in rank order."""
        if not self.distributed:
            return [value]
        values = [None] * self.world_size
        dist.all_gather_object(values, value)
        return values


SINGLE_PROCESS = Ranks()


def ranks_from_environment() -> Ranks:
    """torchrun's variables; a run started with plain python is one process."""
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
def process_group(device: torch.device) -> Iterator[Ranks]:
    """Join torchrun's process group (NCCL on CUDA, gloo on CPU) for a training run; yields
    this process's Ranks, whose `device` is the one it trains on."""
    ranks = ranks_from_environment()
    if not ranks.distributed:
        yield replace(ranks, device=device)
        return
    device = process_device(ranks, device)
    dist.init_process_group("nccl" if device.type == "cuda" else "gloo",
                            timeout=PROCESS_GROUP_TIMEOUT,
                            device_id=device if device.type == "cuda" else None)
    try:
        yield replace(ranks, device=device)
    finally:
        dist.destroy_process_group()
