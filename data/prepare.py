"""Make the HDF5 pair file (data/schema.py) from a user's data: the way real data gets in.

    python -m data.prepare wav2pix SRC OUT.h5     a data set in wav2pix's folder layout
    python -m data.prepare videos SRC OUT.h5      raw videos, one folder per speaker,
                                                  or a CSV manifest of path,speaker
    python -m data.prepare demo OUT.h5            the synthetic demo speakers, labelled,
                                                  some held out (unseen speakers)

wav2pix and videos stream pairs to disk in chunks (memory stays flat), report every pair they drop
and why, and print a summary table per speaker at the end.
"""
from __future__ import annotations

import argparse
import random
import sys
import tempfile
from collections import Counter
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
from tqdm import tqdm

from data import video as videos
from data import video_parts as parts
from data import video_workers
from data.faces import DETECTORS, FaceCropper, FaceSettings
from data.speech_activity import VADS
from data import wav2pix_import as wav2pix
from data import demo_command
from data.schema import SAMPLE_RATE, SPLITS, PairWriter, validate_pair_file
from utils import OneLineParser, UserError

CHUNK_PAIRS = 256  # pairs held in memory before a write: about 20 MB at 128 px, 1 s


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


def open_writer(out: Path, speakers, window_samples: int, face_size: int) -> PairWriter:
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        with tempfile.TemporaryFile(dir=out.parent):  # h5py's own refusal is a paragraph
            pass
        return PairWriter(out, speakers, window_samples, face_size)
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


# ---------------------------------------------------------------- wav2pix layout

def import_wav2pix(options) -> PrepareReport:
    """SRC/<split>/<speaker>/{preprocessed_frame,cropped_face_frame}_<N> -> OUT."""
    out = Path(options.out)
    layout = wav2pix.scan_layout(options.src)
    check_output(out, options.overwrite)
    pairs = layout.pairs
    if not any(p.split == "valid" for p in pairs):
        pairs = wav2pix.carve_valid(pairs, options.valid_fraction)
    report = PrepareReport(lone_files=layout.lone_files, notes=layout.ignored)
    window_samples = round(options.window_seconds * SAMPLE_RATE)
    aligner = FaceCropper(FaceSettings("hog", True, options.face_size, 0.0)) if options.align else None
    with open_writer(out, layout.speakers, window_samples, options.face_size) as writer:
        sink = PairSink(writer, layout.speakers, report)
        for pair in tqdm(pairs, desc="pairs", unit="pair"):
            try:
                face = _wav2pix_face(pair, options, aligner)
                waveform = wav2pix.read_window(pair.speech_path, window_samples)
            except wav2pix.UnusablePair as unusable:
                report.dropped[pair.speaker, unusable.cause] += 1
                continue
            sink.add(pair.split, pair.speaker, waveform, face, pair.name)
        finish(sink, report, out)
    return report


def _wav2pix_face(pair, options, aligner) -> np.ndarray:
    """The stored face, or with --align the face warped onto the eye template (wav2pix's
    framing); a face the detector misses is dropped."""
    if aligner is None:
        return wav2pix.read_face(pair.face_path, options.face_size, not options.no_bgr_swap)
    image = wav2pix.read_image(pair.face_path, not options.no_bgr_swap)
    face, dropped = aligner.align_still(image)
    if dropped:
        raise wav2pix.UnusablePair(dropped, str(pair.face_path))
    return face


# ---------------------------------------------------------------- raw videos

def assign_splits(sources, split_by: str, test_fraction: float, valid_fraction: float,
                  seed: int) -> dict:
    """Map each video's label to a split. By video: each speaker's videos are shared out,
    so test speech comes from videos never trained on. By speaker: whole speakers are."""
    rng = random.Random(seed)
    by_speaker = {}
    for source in sources:
        by_speaker.setdefault(source.speaker, []).append(source.label)
    if split_by == "speaker":
        speakers = sorted(by_speaker)
        rng.shuffle(speakers)
        shares = _share_out(speakers, test_fraction, valid_fraction)
        return {label: shares[s] for s, labels in by_speaker.items() for label in labels}
    splits = {}
    for speaker in sorted(by_speaker):
        labels = sorted(by_speaker[speaker])
        rng.shuffle(labels)
        splits.update(_share_out(labels, test_fraction, valid_fraction))
    return splits


def _share_out(items: list, test_fraction: float, valid_fraction: float) -> dict:
    """First items to test, next to valid, the rest to train; train always keeps one, and
    a fraction above 0 takes at least one item while there are enough to go round."""
    count = len(items)
    test = round(count * test_fraction) or int(test_fraction > 0 and count >= 2)
    test = min(test, count - 1)
    valid = round(count * valid_fraction) or int(valid_fraction > 0 and count - test >= 2)
    valid = min(valid, count - test - 1)
    return {item: "test" if i < test else "valid" if i < test + valid else "train"
            for i, item in enumerate(items)}


def prepare_videos(options) -> PrepareReport:
    """Videos -> sampled frames with the speaker's face, each paired with the speech
    centred on it. Each video is prepared into OUT.parts/ (resumable, in parallel with
    --workers), then OUT is assembled from the parts in the videos' sorted order."""
    out = Path(options.out)
    sources, notes = videos.find_videos(options.src)
    check_output(out, options.overwrite)
    report = PrepareReport(notes=notes, videos_read=Counter())
    sources = readable_videos(sources, report)
    speakers = sorted({source.speaker for source in sources})
    splits = assign_splits(sources, options.split_by, options.test_fraction,
                           options.valid_fraction, options.seed)
    settings = window_settings(options)
    store = parts.PartStore(out, settings)
    note = store.open()
    if note:
        report.notes.append(note)
    summaries = prepare_parts(sources, store, settings, options.workers)
    with open_writer(out, speakers, settings.window_samples, settings.face_size) as writer:
        for source in sources:
            _merge_part(source, summaries[source.label], splits[source.label], store, writer,
                        speakers, report)
        finish(PairSink(writer, speakers, report), report, out)
    store.remove()
    return report


def window_settings(options) -> videos.WindowSettings:
    return videos.WindowSettings(
        window_samples=round(options.window_seconds * SAMPLE_RATE),
        frames_per_second=options.frames_per_second, face_size=options.face_size,
        margin=options.margin, silence_dbfs=options.silence_dbfs, detector=options.detector,
        align=not options.no_align, vad=options.vad, speech_fraction=options.speech_fraction)


class Interrupted(KeyboardInterrupt):
    """Ctrl-C during video preparation: says what is kept for the next run."""


def prepare_parts(sources, store, settings, workers: int) -> dict:
    """label -> PartSummary for every video: finished parts are reused, the rest made."""
    summaries = {s.label: store.finished(s) for s in sources}
    todo = [s for s in sources if summaries[s.label] is None]
    progress = tqdm(total=len(sources), initial=len(sources) - len(todo), desc="videos", unit="video")
    pairs = sum(s.pairs for s in summaries.values() if s)
    progress.set_postfix(pairs=pairs)
    try:
        for summary in video_workers.make_parts(todo, store, settings, workers):
            summaries[summary.label] = summary
            pairs += summary.pairs
            progress.update()
            progress.set_postfix(pairs=pairs)
    except KeyboardInterrupt:
        done = sum(s is not None for s in summaries.values())
        raise Interrupted(f"interrupted; the {done} of {len(sources)} videos finished are kept in "
                          f"{store.folder}: run the same command again to go on") from None
    finally:
        progress.close()
    return summaries


def _merge_part(source, summary, split: str, store, writer, speakers, report) -> None:
    """Copy one video's part into OUT and count what it kept and dropped."""
    for cause, count in summary.dropped.items():
        report.dropped[source.speaker, cause] += count
    if summary.broken:
        report.broken.append((source.label, summary.broken))
    else:
        report.videos_read[source.speaker] += 1
    speaker_id = speakers.index(source.speaker)
    for waveforms, faces, names in parts.read_part(store.path(source)):
        writer.append(split, waveforms, faces, [speaker_id] * len(names), names)
        report.kept[source.speaker, split] += len(names)


def readable_videos(sources, report: PrepareReport) -> list:
    """The videos whose header opens with both tracks; the others are reported broken."""
    readable = []
    for source in tqdm(sources, desc="opening", unit="video", leave=False):
        reason = videos.probe(source.path)
        if reason:
            report.broken.append((source.label, reason))
        else:
            readable.append(source)
    if not readable:
        print(format_summary(report))
        raise PrepareError(f"none of the {len(sources)} videos could be read; "
                           "see the list of broken files above")
    return readable


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
    lines += _listing("broken files skipped", [f"{f}: {why}" for f, why in report.broken])
    lines += _listing("files without a partner", [str(p) for p in report.lone_files])
    lines += _listing("passed over", report.notes)
    return "\n".join(lines)


def _table(header: list, rows: list) -> list[str]:
    widths = [max(len(str(r[i])) for r in [header] + rows) for i in range(len(header))]
    return ["  ".join(str(cell).ljust(w) if i == 0 else str(cell).rjust(w)
                      for i, (cell, w) in enumerate(zip(r, widths))) for r in [header] + rows]


def _listing(title: str, items: list, shown: int = 10) -> list[str]:
    if not items:
        return []
    lines = [f"{title}: {len(items)}"] + [f"  {item}" for item in items[:shown]]
    return lines + ([f"  ... and {len(items) - shown} more"] if len(items) > shown else [])


# ---------------------------------------------------------------- command line

class HelpFormatter(argparse.RawDescriptionHelpFormatter):
    """Keeps the layout drawings in the descriptions as written."""


def _bounded(kind, low, high, low_open=False):
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


def _add_common(parser, valid_help: str) -> None:
    parser.add_argument("out", metavar="OUT.h5", help="the HDF5 pair file to write")
    parser.add_argument("--face_size", type=_bounded(int, 16, 1024), default=128, metavar="PIXELS",
                        help="side of the stored square faces (default: %(default)s)")
    parser.add_argument("--window_seconds", type=_bounded(float, 0, 10, low_open=True),
                        default=1.0, metavar="SECONDS",
                        help="speech stored per pair, at 16 kHz (default: %(default)s)")
    parser.add_argument("--valid_fraction", type=_bounded(float, 0, 0.9), default=0.1,
                        metavar="FRACTION", help=valid_help + " (default: %(default)s)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing OUT, only once the new file is complete")


WAV2PIX_HELP = """\
Import a data set in wav2pix's folder layout:

    SRC/<split>/<speaker>/preprocessed_frame_<N>.wav
    SRC/<split>/<speaker>/cropped_face_frame_<N>.png

<split> is train, test and optionally valid. Speech and face are paired by N; a file
without its partner is listed, not imported. Faces may be any image format whatever
their suffix (wav2pix's .png files hold JPEG bytes) and are stored BGR, so their
channels are swapped to true colour unless --no_bgr_swap. Speech is centre-cropped to
the window; a shorter file is dropped. Without valid/, the last --valid_fraction of
each speaker's train numbers becomes the valid split (a contiguous range, so
neighbouring seconds of one video do not end up on both sides)."""

VIDEOS_HELP = """\
Make pairs from raw videos (.mp4 .mkv .webm .avi .mov):

    SRC/<speaker>/<any name>.mp4        one folder per speaker (subfolders allowed), or
    SRC.csv                             a manifest with rows path,speaker

Every 1/--frames_per_second s a frame is taken and its faces found (--detector, dlib's
HOG by default); the speaker's face is followed through the clip, its eyes (dlib's 68
landmarks) warped onto a fixed template (unless --no_align) and the crop resized to
--face_size; it is paired with the --window_seconds of speech centred on it (16 kHz
mono). A pair is dropped, and counted, when the frame has no face, the face jumped (a
cut) or another face is larger, the landmarks fail, the window runs outside the audio,
is quieter than --silence_dbfs, or holds too little voice (--vad, --speech_fraction).
A broken video is skipped and reported. Each finished video is kept in OUT.parts/, so
a rerun after a crash or Ctrl-C skips it; --workers N prepares N videos at once.
Splits are made by video (test speech comes from unseen videos of known speakers)
or, with --split_by speaker, by speaker (unseen speakers)."""


def build_parser() -> argparse.ArgumentParser:
    parser = OneLineParser(prog="python -m data.prepare", description=__doc__,
                           formatter_class=HelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True,
                                     metavar="{wav2pix,videos,demo}")
    importer = commands.add_parser("wav2pix", help="import wav2pix's folder layout",
                                   description=WAV2PIX_HELP, formatter_class=HelpFormatter)
    importer.add_argument("src", metavar="SRC", help="folder holding train/ and test/")
    _add_common(importer, "share of each speaker's train numbers that becomes the valid "
                          "split when SRC has no valid/")
    importer.add_argument("--no_bgr_swap", action="store_true",
                          help="keep the channel order: the faces are already RGB")
    importer.add_argument("--align", action="store_true",
                          help="warp each face so its eyes (dlib's landmarks) sit on a fixed "
                               "template; faces dlib's HOG detector misses are dropped")
    importer.set_defaults(run=import_wav2pix)
    maker = commands.add_parser("videos", help="make pairs from raw videos",
                                description=VIDEOS_HELP, formatter_class=HelpFormatter)
    maker.add_argument("src", metavar="SRC_FOLDER_OR_MANIFEST.csv",
                       help="folder of <speaker>/<video> files, or a CSV of path,speaker")
    _add_common(maker, "share of each speaker's videos (or of the speakers) held out "
                       "for validation")
    _add_video_options(maker)
    maker.set_defaults(run=prepare_videos)
    demo_command.add_parser(commands, _bounded, HelpFormatter)
    return parser


def _add_video_options(parser) -> None:
    parser.add_argument("--frames_per_second", type=_bounded(float, 0, 30, low_open=True),
                        default=2.0, metavar="RATE",
                        help="frames sampled, and pairs made, per second of video (default: %(default)s)")
    parser.add_argument("--test_fraction", type=_bounded(float, 0, 0.9), default=0.1,
                        metavar="FRACTION", help="share of each speaker's videos (or of the "
                        "speakers) held out for testing (default: %(default)s)")
    parser.add_argument("--split_by", choices=("video", "speaker"), default="video",
                        help="hold out whole videos of known speakers, or whole speakers "
                             "(unseen speakers) (default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the draw of held-out videos or speakers (default: %(default)s)")
    parser.add_argument("--margin", type=_bounded(float, 0, 1), default=0.1, metavar="FRACTION",
                        help="border added on each side of the detected face, as a fraction of "
                             "its side; 0 frames faces as wav2pix's crops (default: %(default)s)")
    parser.add_argument("--silence_dbfs", type=_bounded(float, -120, 0), default=-50.0, metavar="DB",
                        help="windows quieter than this RMS level are dropped as silent "
                             "(default: %(default)s)")
    parser.add_argument("--detector", choices=DETECTORS, default="hog",
                        help="face detector: dlib's HOG or OpenCV's Haar cascade (default: %(default)s)")
    parser.add_argument("--no_align", action="store_true",
                        help="crop the detector's square box instead of warping the eyes onto "
                             "the template")
    parser.add_argument("--vad", choices=VADS, default="silero",
                        help="voice activity detector that must hear speech in a window "
                             "(default: %(default)s)")
    parser.add_argument("--speech_fraction", type=_bounded(float, 0, 1), default=0.5,
                        metavar="FRACTION", help="share of a window's frames the voice detector "
                        "must hear speech in (default: %(default)s)")
    parser.add_argument("--workers", type=_bounded(int, 1, 256), default=1, metavar="N",
                        help="videos decoded in parallel processes (default: %(default)s)")


def main(argv=None) -> int:
    parser = build_parser()
    try:
        options = parser.parse_args(argv)
        if getattr(options, "test_fraction", 0) + getattr(options, "valid_fraction", 0) >= 1:
            parser.error("--test_fraction plus --valid_fraction must stay below 1")
        options.run(options)
        info = validate_pair_file(options.out)
    except UserError as error:
        print(f"error: {error}", file=sys.stderr)
        return 2
    except KeyboardInterrupt as interrupt:
        print(f"error: {interrupt or f'interrupted; {options.out} was not written'}", file=sys.stderr)
        return 130
    counts = ", ".join(f"{s} {i.num_pairs}" for s, i in info.splits.items())
    print(f"wrote {info.path}: {counts} pairs; {len(info.speaker_names)} speakers; "
          f"{info.window_samples} samples of speech and {info.face_size} px faces per pair")
    return 0


if __name__ == "__main__":
    sys.exit(main())
