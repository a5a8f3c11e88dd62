"""`--shard K/N`: which videos each of N machines (or job array tasks) prepares.

The shares are a pure function of the sorted video list and each video's weight: the
heaviest video goes first to the shard with the least weight so far (ties to the lower
shard), so every shard computes the same split on any machine, at any time, without
talking to the others, and the shares cover the list once, within one video of each other.

The weight (`--shard_by`) stands in for the time a video takes to prepare:
- `duration` (the default): its length in tenths of a second, from the container's header
  (4 ms a file here, every shard reading every header: 0.2 s for 39 clips, about an hour for a
  million). Work grows with duration whatever the encoding: on realvids-dev two byte-balanced
  shares held 114 s and 177 s of video (benchmarks/README.md#prepare_shardspy).
- `bytes`: the file's size, read without opening it. Right for large sets of one encoding
  (VoxCeleb's mp4s), where bytes track duration and a million headers would cost an hour.
"""
from __future__ import annotations

import argparse
import heapq
import os

import av

SHARD_FORM = "K/N with 1 <= K <= N, e.g. 1/4"
SHARD_BY = ("duration", "bytes")


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


def tenths_of_a_second(source) -> int | None:
    """The video's length from its header, rounded to 0.1 s (so decoders' rounding never
    moves a video between shares); None where the header gives none or does not open."""
    try:
        with av.open(str(source.path)) as container:
            if container.duration:
                return round(container.duration / av.time_base * 10)
            seconds = [float(stream.duration * stream.time_base) for stream in container.streams
                       if stream.duration and stream.time_base]
            return round(max(seconds) * 10) if seconds else None
    except (av.FFmpegError, OSError, ValueError):
        return None


def weights(sources: list, shard_by: str) -> dict:
    """label -> the video's weight. A video whose length is unknown (no length in its
    header, or a file that does not open, which its shard reports broken) weighs its bytes
    at the set's tenths of a second per byte."""
    sizes = {source.label: file_size(source) for source in sources}
    if shard_by == "bytes":
        return sizes
    lengths = {source.label: tenths_of_a_second(source) for source in sources}
    known = [label for label, length in lengths.items() if length is not None]
    per_byte = sum(lengths[label] for label in known) / max(1, sum(sizes[label] for label in known))
    return {label: length if length is not None else round(sizes[label] * per_byte)
            for label, length in lengths.items()}


def shard_owners(weight: dict, count: int) -> dict:
    """label -> the shard (1..count) that prepares the video, from label -> weight."""
    loads = [(0, shard) for shard in range(1, count + 1)]  # (weight so far, shard): a heap
    owners = {}
    for label in sorted(weight, key=lambda label: (-weight[label], label)):
        load, shard = heapq.heappop(loads)
        owners[label] = shard
        heapq.heappush(loads, (load + weight[label], shard))
    return owners


def describe(weight: dict, labels, shard_by: str) -> str:
    """How much of the whole `labels` weigh: '114.0 of 291.0 s of video'."""
    unit, scale = ("s of video", 10) if shard_by == "duration" else ("MB", 1e6)
    share = sum(weight[label] for label in labels) / scale
    return f"{share:.1f} of {sum(weight.values()) / scale:.1f} {unit}"
