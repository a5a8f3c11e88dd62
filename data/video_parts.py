"""One finished video per file in `OUT.parts/`: what makes video preparation resumable.

Each video's pairs (and its drop counts) go to their own small HDF5 file, written under a
temporary name, flushed and renamed when the video is done, so a crash, a kill or Ctrl-C
leaves only whole parts. A rerun with the same settings skips the videos that have one;
OUT is then assembled from the parts in the videos' sorted order, so a resumed run writes
the same file as an uninterrupted one, whatever `--workers` was. A part keeps each pair's
speech window start and the clip's span beside the pairs, so the splits (`--split_by
time` included) are drawn when OUT is assembled and a part serves any of them. Shards
(`--shard K/N`, data/video_shards.py) write the parts of disjoint shares of the videos into
one folder, each under names only its process writes, and `assemble` makes OUT from them.
"""
from __future__ import annotations

import dataclasses
import hashlib
import json
import os
import secrets
import shutil
from dataclasses import dataclass, field
from pathlib import Path
from typing import Iterator

import h5py
import numpy as np

from data import video as videos
from data.prepare_common import CHUNK_PAIRS, PrepareError, to_int16

PART_VERSION = 2  # 2: window starts and the clip's span
_STRING = h5py.string_dtype("utf-8")


@dataclass
class PartSummary:
    """What one video gave: pairs kept, pairs dropped per cause, and why it broke off."""
    label: str
    speaker: str
    pairs: int = 0
    dropped: dict = field(default_factory=dict)  # cause -> pairs
    broken: str | None = None
    span: list | None = None  # [start, end) where picture and speech both run (ClipSpan)


def _stamp(source) -> str:
    """Identifies the file a part was made from: a changed video is prepared again."""
    try:
        stat = os.stat(source.path)
        return f"{source.path}|{stat.st_size}|{stat.st_mtime_ns}"
    except OSError:
        return f"{source.path}|missing"


class PartStore:
    """The folder of parts beside OUT, valid for one set of window settings.

    Its record (settings.json) holds the settings and, from shards, how many there are.
    Shards may start at once on machines sharing the folder: the first record written is
    the one every shard checks itself against, and none ever discards a part."""

    def __init__(self, out: Path, settings: videos.WindowSettings):
        self.folder = out.with_name(out.name + ".parts")
        self.record = self.folder / "settings.json"
        self.settings = {"part_version": PART_VERSION, **dataclasses.asdict(settings)}

    def open(self, shards: int | None = None, shard_by: str = "duration") -> str | None:
        """Make the folder, or reuse it. A run alone (`shards` None) starts over where the
        parts were made with other settings and returns a note saying so; one of `shards`
        shards (shared out by `shard_by`) refuses instead, as the others may be writing there."""
        sharding = {"shards": shards, "shard_by": shard_by} if shards else {}
        wanted = {**self.settings, **sharding}
        self.folder.mkdir(parents=True, exist_ok=True)
        changed = self.changed(_create_once(self.record, wanted), sharding)
        if changed and shards:
            raise PrepareError(f"{self.folder}: made with other settings ({changed}); give every "
                               "shard the same options, or remove that folder to start over")
        note = None
        if changed:
            shutil.rmtree(self.folder)
            self.folder.mkdir(parents=True)
            _create_once(self.record, wanted)
            note = f"{self.folder}: made with other settings ({changed}); started over"
        if not shards:  # alone, no other run is writing one
            for stale in self.folder.glob("*.tmp"):  # a part a crash left half written
                stale.unlink()
        return note

    def kept_record(self) -> dict:
        """The record the parts were made under (for assembly, which writes nothing)."""
        try:
            return json.loads(self.record.read_text())
        except (OSError, ValueError):
            raise PrepareError(f"{self.folder}: no parts to assemble (no readable {self.record.name}); "
                               "prepare the videos first with `videos ... --shard K/N`") from None

    def changed(self, kept: dict, sharding: dict | None = None) -> str:
        """The settings the record holds other values of (their names), '' if none; the
        sharding differs only where both give one (a record from before --shard_by was
        shared out by bytes)."""
        names = [k for k in self.settings if kept.get(k) != self.settings[k]]
        if sharding and kept.get("shards", sharding["shards"]) != sharding["shards"]:
            names.append(f"{kept['shards']} shards there, {sharding['shards']} here")
        elif sharding and "shards" in kept and kept.get("shard_by", "bytes") != sharding["shard_by"]:
            names.append(f"shared out by {kept.get('shard_by', 'bytes')} there, "
                         f"by {sharding['shard_by']} here")
        return ", ".join(names)

    def path(self, source) -> Path:
        return self.folder / (hashlib.sha1(source.label.encode()).hexdigest()[:20] + ".h5")

    def finished(self, source) -> PartSummary | None:
        """The summary of the video's part when it exists and was made from this file."""
        path = self.path(source)
        try:
            with h5py.File(path, "r") as part:
                if part.attrs["stamp"] != _stamp(source) or part.attrs["label"] != source.label:
                    return None
                return PartSummary(**json.loads(part.attrs["summary"]))
        except (OSError, KeyError, ValueError):
            return None

    def foreign(self, sources: list) -> list[str]:
        """`<video> (<part file>)` of each part that belongs to none of `sources`: made from
        another list of videos."""
        ours = {self.path(source).name for source in sources}
        return [f"{_label_of(path)} ({path.name})" for path in sorted(self.folder.glob("*.h5"))
                if path.name not in ours]

    def remove(self) -> None:
        shutil.rmtree(self.folder, ignore_errors=True)


def _label_of(path: Path) -> str:
    try:
        with h5py.File(path, "r") as part:
            return str(part.attrs["label"])
    except (OSError, KeyError):
        return "an unreadable part"


def _private(path: Path, suffix: str) -> Path:
    """A name beside `path` that only this process writes, on whichever machine."""
    return path.with_name(f"{path.stem}.{os.getpid()}.{secrets.token_hex(4)}{suffix}")


def _create_once(path: Path, record: dict) -> dict:
    """The record at `path`: `record`, written now if there was none, else the one another
    process wrote first. Written whole under a private name and hard-linked into place (a
    link fails where the name exists, on NFS too), so two shards starting at once never
    read half a record, and only the first one counts."""
    private = _private(path, ".json")
    private.write_text(json.dumps(record, sort_keys=True))
    try:
        os.link(private, path)
    except FileExistsError:
        pass
    except OSError:  # a filesystem without hard links: exclusive create, written in one call
        try:
            with open(path, "x") as handle:
                handle.write(private.read_text())
        except FileExistsError:
            pass
    finally:
        private.unlink()
    try:
        return json.loads(path.read_text())
    except ValueError:  # a record cut short by a crash of an older version: matches nothing
        return {}


def write_part(path: Path, source, inspector, chunk_pairs: int = CHUNK_PAIRS) -> PartSummary:
    """Prepare one video into its part file; the file appears only once it is complete."""
    settings, summary = inspector.settings, PartSummary(source.label, source.speaker)
    temporary = _private(path, ".tmp")
    span = videos.ClipSpan()
    with h5py.File(temporary, "w") as part:
        columns = _create_columns(part, settings)
        chunk = []
        try:
            for window in videos.frame_windows(source.path, settings, inspector, span):
                if window.dropped:
                    summary.dropped[window.dropped] = summary.dropped.get(window.dropped, 0) + 1
                    continue
                chunk.append((to_int16(window.waveform), window.face,
                              f"{source.label}@{window.time:.2f}s", window.window_start))
                if len(chunk) >= chunk_pairs:
                    summary.pairs += _append(columns, chunk)
        except videos.BrokenVideo as broken:
            summary.broken = broken.reason
        summary.pairs += _append(columns, chunk)
        summary.span = span.bounds()
        part.attrs["label"], part.attrs["stamp"] = source.label, _stamp(source)
        part.attrs["summary"] = json.dumps(dataclasses.asdict(summary))
        part.flush()
        os.fsync(part.id.get_vfd_handle())
    os.replace(temporary, path)
    return summary


def _create_columns(part: h5py.File, settings) -> dict:
    length, size = settings.window_samples, settings.face_size
    return {
        "waveforms": part.create_dataset("waveforms", (0, length), np.int16, maxshape=(None, length),
                                         chunks=(16, length)),
        "faces": part.create_dataset("faces", (0, size, size, 3), np.uint8,
                                     maxshape=(None, size, size, 3), chunks=(16, size, size, 3)),
        "names": part.create_dataset("names", (0,), _STRING, maxshape=(None,), chunks=(256,)),
        "window_starts": part.create_dataset("window_starts", (0,), np.int64, maxshape=(None,),
                                             chunks=(256,)),
    }


def _append(columns: dict, chunk: list) -> int:
    """Write the buffered pairs and empty the buffer; returns how many were written."""
    count = len(chunk)
    if count:
        start = columns["names"].shape[0]
        for key, values in zip(("waveforms", "faces", "names", "window_starts"), zip(*chunk)):
            columns[key].resize(start + count, axis=0)
            columns[key][start:] = list(values) if key == "names" else np.stack(values)
        chunk.clear()
    return count


def read_part(path: Path, chunk_pairs: int = CHUNK_PAIRS) -> Iterator[tuple]:
    """(waveforms int16 (n, L), faces uint8 (n, S, S, 3), names, window starts int64 (n,))
    a chunk at a time."""
    with h5py.File(path, "r") as part:
        total = part["names"].shape[0]
        for start in range(0, total, chunk_pairs):
            stop = min(start + chunk_pairs, total)
            names = [n.decode() for n in part["names"][start:stop]]
            yield (part["waveforms"][start:stop], part["faces"][start:stop], names,
                   part["window_starts"][start:stop])
