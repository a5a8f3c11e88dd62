"""What every `python -m data.prepare` command shares: the pair file it streams to, the
closing summary of what it kept and dropped, and the options each command takes."""
from __future__ import annotations

import argparse
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from data.schema import SPLITS, PairWriter
from utils import UserError

CHUNK_PAIRS = 256  # pairs held in memory before a write: about 20 MB at 128 px, 1 s
PARTS_ONLY = "parts only"  # what a command's run returns when it prepared parts, not OUT


class PrepareError(UserError):
    """An output that cannot be written, or a run that kept no training pairs."""


# ---------------------------------------------------------------- bookkeeping

@dataclass
class PrepareReport:
    """What a run kept and dropped, per speaker, for the closing summary."""
    kept: Counter = field(default_factory=Counter)          # (speaker, split) -> pairs
    dropped: Counter = field(default_factory=Counter)       # (speaker, cause) -> pairs
    videos_read: Counter | None = None                      # speaker -> videos (videos only)
    broken: list = field(default_factory=list)              # (file, reason)
    lone_files: list = field(default_factory=list)          # paths without a partner
    notes: list = field(default_factory=list)               # things passed over
    skipped: list = field(default_factory=list)             # (file, why): not read for its suffix
    unread_speakers: list = field(default_factory=list)     # speakers none of whose files is read

    def split_total(self, split: str) -> int:
        return sum(n for (_, s), n in self.kept.items() if s == split)


def to_int16(waveform: np.ndarray) -> np.ndarray:
    """float speech in [-1, 1) to int16 with the scale soundfile reads int16 wavs with,
    so a 16-bit wav comes back sample for sample."""
    return np.clip(np.round(waveform * 32768.0), -32768, 32767).astype(np.int16)


class PairSink:
    """Buffers pairs per split and appends them to the writer a chunk at a time."""

    def __init__(self, writer: PairWriter, speakers: list[str], report: PrepareReport):
        self.writer, self.report = writer, report
        self.speaker_ids = {name: i for i, name in enumerate(speakers)}
        self.chunks = {split: [] for split in SPLITS}

    def add(self, split: str, speaker: str, waveform: np.ndarray, face: np.ndarray, name: str):
        chunk = self.chunks[split]
        chunk.append((to_int16(waveform), face, self.speaker_ids[speaker], name))
        self.report.kept[speaker, split] += 1
        if len(chunk) >= CHUNK_PAIRS:
            self.flush(split)

    def flush(self, split: str) -> None:
        chunk = self.chunks[split]
        if chunk:
            waveforms, faces, ids, names = zip(*chunk)
            self.writer.append(split, np.stack(waveforms), np.stack(faces), ids, names)
            chunk.clear()

    def close(self) -> None:
        for split in SPLITS:
            self.flush(split)


# ---------------------------------------------------------------- the output file

def check_output(out: Path, overwrite: bool) -> None:
    """Refuse an output that would clobber something, before any slow work starts."""
    if out.is_dir():
        raise PrepareError(f"{out}: is a folder; OUT is the HDF5 file to write, e.g. {out / 'pairs.h5'}")
    if out.exists() and not overwrite:
        raise PrepareError(f"{out}: already exists; pass --overwrite to replace it "
                           "(it is replaced only once the new file is complete)")
    folder = out.parent
    while not folder.exists():  # the writer makes missing folders; their root must be one
        folder = folder.parent
    if not folder.is_dir():
        raise PrepareError(f"{out}: {folder} is a file, not a folder; choose another place for OUT")


def open_writer(out: Path, speakers, window_samples: int, face_size: int,
                source: str) -> PairWriter:
    """The pair file's writer; `source` names the importer (the file's `source` attribute)."""
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out.parent):  # h5py's own refusal is a paragraph
            pass
        return PairWriter(out, speakers, window_samples, face_size, source=source)
    except OSError as error:
        reason = error.strerror or str(error)
        raise PrepareError(f"{out}: cannot write there ({reason}); choose a writable "
                           "folder for OUT") from None


def finish(sink: PairSink, report: PrepareReport, out: Path) -> None:
    """Write what is buffered, print the summary, and refuse a file with no train pairs."""
    sink.close()
    print(format_summary(report))
    if report.split_total("train") == 0:
        raise PrepareError(f"kept no training pairs, so {out} was not written; "
                           "see the summary above for why pairs were dropped")


# ---------------------------------------------------------------- the summary

def format_summary(report: PrepareReport) -> str:
    """A table per speaker: videos read, pairs kept per split, pairs dropped per cause."""
    speakers = sorted({s for s, _ in report.kept} | {s for s, _ in report.dropped}
                      | set(report.videos_read or ()))
    causes = sorted({cause for _, cause in report.dropped})
    from_videos = report.videos_read is not None
    columns = (["videos read"] if from_videos else []) + list(SPLITS) \
        + [f"dropped: {c}" for c in causes]

    def row(speaker):
        counts = [report.kept[speaker, s] for s in SPLITS] + [report.dropped[speaker, c] for c in causes]
        return ([report.videos_read[speaker]] if from_videos else []) + counts

    rows = [[s] + row(s) for s in speakers]
    rows.append(["all"] + [sum(r[i] for r in rows) for i in range(1, len(columns) + 1)])
    lines = _table(["speaker"] + columns, rows)
    lines += listing("broken files skipped", [f"{f}: {why}" for f, why in report.broken])
    lines += listing("files without a partner", [str(p) for p in report.lone_files])
    lines += listing("files skipped for their suffix", [f"{f}: {why}" for f, why in report.skipped])
    lines += listing("speakers with no video read (every file skipped for its suffix)",
                      report.unread_speakers)
    lines += listing("passed over", report.notes)
    return "\n".join(lines)


def _table(header: list, rows: list) -> list[str]:
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    return ["  ".join(str(cell).ljust(w) if i == 0 else str(cell).rjust(w)
                      for i, (cell, w) in enumerate(zip(r, widths))) for r in [header] + rows]


def listing(title: str, items: list, shown: int = 10) -> list[str]:
    if not items:
        return []
    lines = [f"{title}: {len(items)}"] + [f"  {item}" for item in items[:shown]]
    return lines + ([f"  ... and {len(items) - shown} more"] if len(items) > shown else [])


# ---------------------------------------------------------------- command line

class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the layout drawings in the descriptions as written."""


def bounded(kind, low, high, low_open=False):
    """An argparse type: a number of `kind` in [low, high] ((low, high] if low_open)."""
    def parse(text):
        try:
            value = kind(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"{text!r} is not a {kind.__name__}") from None
        if value < low or value > high or (low_open and value == low):
            bracket = "(" if low_open else "["
            raise argparse.ArgumentTypeError(f"{text} is outside {bracket}{low}, {high}]")
        return value
    parse.__name__ = kind.__name__
    return parse


def add_common_options(parser, valid_help: str) -> None:
    """OUT and the options of every importer that reads real speech and faces."""
    parser.add_argument("out", metavar="OUT.h5", help="the HDF5 pair file to write")
    parser.add_argument("--face_size", type=bounded(int, 16, 1024), default=128, metavar="PIXELS",
                        help="side of the stored square faces (default: %(default)s)")
    parser.add_argument("--window_seconds", type=bounded(float, 0, 10, low_open=True),
                        default=1.0, metavar="SECONDS",
                        help="speech stored per pair, at 16 kHz (default: %(default)s)")
    parser.add_argument("--valid_fraction", type=bounded(float, 0, 0.9), default=0.1,
                        metavar="FRACTION", help=valid_help + " (default: %(default)s)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing OUT, only once the new file is complete")
