"""Seeds, and every global random generator saved into a checkpoint and restored from it."""
from __future__ import annotations

import random

import numpy as np
import torch


def seed_everything(seed: int) -> torch.Generator:
    """Seed python, numpy and torch; return a generator for the DataLoader's order."""
    random.seed(seed)
    np.random.seed(seed % 2**32)
    torch.manual_seed(seed)
    return torch.Generator().manual_seed(seed)


def rng_states() -> dict:
    """Every global generator a training step can touch, in a form weights_only can load."""
    kind, keys, position, has_gauss, cached = np.random.get_state()
    states = {"python": list(random.getstate()[1]), "torch": torch.get_rng_state(),
              "numpy": {"keys": torch.from_numpy(keys.astype(np.int64)), "position": int(position),
                        "has_gauss": int(has_gauss), "cached_gaussian": float(cached)}}
    if torch.cuda.is_available():
        states["cuda"] = torch.cuda.get_rng_state_all()
    return states


def restore_rng_states(states: dict) -> None:
    random.setstate((3, tuple(states["python"]), None))
    numpy = states["numpy"]
    np.random.set_state(("MT19937", numpy["keys"].numpy().astype(np.uint32), numpy["position"],
                         numpy["has_gauss"], numpy["cached_gaussian"]))
    torch.set_rng_state(states["torch"])
    if "cuda" in states and torch.cuda.is_available():
        if len(states["cuda"]) == torch.cuda.device_count():
            torch.cuda.set_rng_state_all(states["cuda"])
        else:
            print(f"note: the checkpoint holds {len(states['cuda'])} CUDA generator states for "
                  f"{torch.cuda.device_count()} devices; CUDA randomness will differ")


def restore_rank_rng_states(state: dict, rank: int, world_size: int) -> None:
    """A checkpoint's generators for process `rank` of `world_size`: rank 0 (or the one
    process) takes the saved ones; rank r of a run saved with as many processes takes its
    own, else it keeps its fresh seed + rank."""
    others = state.get("rng_other_ranks", [])
    if rank == 0:
        restore_rng_states(state["rng"])
        if len(others) + 1 < world_size:
            print(f"note: the checkpoint holds the random generators of {len(others) + 1} "
                  "processes; the others start from --seed + rank, so their noise differs")
    elif rank <= len(others):
        restore_rng_states(others[rank - 1])
