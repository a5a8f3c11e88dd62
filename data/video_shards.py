"""`--shard K/N`: which videos each of N machines (or job array tasks) prepares.

The shares are a pure function of the sorted video list and the files' sizes: the largest
file goes first to the shard with the fewest bytes so far (ties to the lower shard), so
every shard computes the same split on any machine, at any time, without talking to the
others, and the shares cover the list once, in byte loads within one file of each other.
Bytes stand in for decoding time without opening a single video.
"""
from __future__ import annotations

import argparse
import heapq
import os

SHARD_FORM = "K/N with 1 <= K <= N, e.g. 1/4"


def parse_shard(text: str) -> tuple[int, int]:
    """An argparse type: `K/N` -> (K, N), K counted from 1 as SLURM's `--array=1-N` does."""
    index, _, count = text.partition("/")
    try:
        index, count = int(index), int(count)
    except ValueError:
        raise argparse.ArgumentTypeError(f"{text!r} is not {SHARD_FORM}") from None
    if not 1 <= index <= count:
        raise argparse.ArgumentTypeError(f"{text!r} is not {SHARD_FORM} (K counts from 1)")
    return index, count


parse_shard.__name__ = "shard"


def file_size(source) -> int:
    try:
        return os.stat(source.path).st_size
    except OSError:
        return 0  # a missing file is reported broken by the shard that holds it


def shard_owners(sources: list, count: int) -> dict:
    """label -> the shard (1..count) that prepares the video."""
    sizes = {source.label: file_size(source) for source in sources}
    loads = [(0, shard) for shard in range(1, count + 1)]  # (bytes so far, shard): a heap
    owners = {}
    for label in sorted(sizes, key=lambda label: (-sizes[label], label)):
        load, shard = heapq.heappop(loads)
        owners[label] = shard
        heapq.heappush(loads, (load + sizes[label], shard))
    return owners


def share_of(sources: list, index: int, count: int) -> list:
    """The videos of shard `index` of `count`, in the list's order."""
    owners = shard_owners(sources, count)
    return [source for source in sources if owners[source.label] == index]
