"""`python -m data.prepare videos SRC OUT.h5`: pairs made from raw videos (data/video.py
decodes them and finds the faces), each video prepared on its own into OUT.parts/
(data/video_parts.py, in parallel by data/video_workers.py), then assembled into OUT."""
from __future__ import annotations

import argparse
import shlex
from collections import Counter
from pathlib import Path

import numpy as np
from tqdm import tqdm

from data import video as videos
from data import video_parts as parts
from data import video_workers
from data.faces import DETECTORS
from data.prepare_common import (PARTS_ONLY, HelpFormatter, PairSink, PrepareError,
                                 PrepareReport, add_common_options, bounded, check_output,
                                 finish, format_summary, listing, open_writer)
from data.schema import SAMPLE_RATE, SPLITS
from data.speech_activity import VADS
from data.video_shards import SHARD_BY, describe, parse_shard, shard_owners, weights
from data.video_splits import BETWEEN_SPLITS, BY_TIME, SPLIT_BY, TimeSplit, assign_splits

VIDEOS_HELP = """\
Make pairs from raw videos, in any container FFmpeg reads (.mp4 .mkv .webm .avi .mov
.mpg .ts .mts .flv .wmv .3gp .ogv ...; docs/data.md lists them):

    SRC/<speaker>/<any name>.mp4        one folder per speaker (subfolders allowed), or
    SRC.csv                             a manifest with rows path,speaker[,split]

Every 1/--frames_per_second s a frame is taken and its faces found (--detector, dlib's
HOG by default); the speaker's face is followed through the clip, its eyes (dlib's 68
landmarks) warped onto a fixed template (unless --no_align) and the crop resized to
--face_size; it is paired with the --window_seconds of speech centred on it (16 kHz
mono). A pair is dropped, and counted, when the frame has no face, the face jumped (a
cut) or another face is larger, the landmarks fail, the window runs outside the audio,
is quieter than --silence_dbfs, or holds too little voice (--vad, --speech_fraction).
A broken video, and a file without a video suffix, is skipped and reported. Each
finished video is kept in OUT.parts/, so a rerun after a crash or Ctrl-C skips it;
--workers N prepares N videos at once. Splits are made by video (test speech comes from
unseen videos of known speakers), with --split_by speaker by speaker (unseen speakers),
or with --split_by time by each video's last seconds (one window apart, so no speech
is in two splits). A manifest's split column (train, valid, test) fixes a video's split.
On a cluster, --shard K/N prepares one of N shares of the videos, and `python -m
data.prepare assemble` with the same options then writes OUT (docs/data.md)."""


def add_parser(commands):
    parser = commands.add_parser("videos", help="make pairs from raw videos",
                                 description=VIDEOS_HELP, formatter_class=HelpFormatter)
    add_arguments(parser)
    parser.add_argument("--workers", type=bounded(int, 1, 256), default=1, metavar="N",
                        help="videos decoded in parallel processes (default: %(default)s)")
    parser.add_argument("--shard", type=parse_shard, metavar="K/N",
                        help="prepare only the K-th of N shares of the videos (K from 1 to N) "
                             "into OUT.parts/, and write no OUT: run all N, at once on many "
                             "machines if you like, then `python -m data.prepare assemble` "
                             "with the other options unchanged")
    parser.add_argument("--shard_by", choices=SHARD_BY, default="duration",
                        help="what the shares balance: the videos' durations (every shard reads "
                             "every header, about 4 ms each) or their file sizes (no header "
                             "read: for a million files of one encoding) (default: %(default)s)")
    return parser


def add_arguments(parser) -> None:
    """SRC, OUT and every option that decides what OUT holds: what assemble takes too."""
    parser.add_argument("src", metavar="SRC_FOLDER_OR_MANIFEST.csv",
                        help="folder of <speaker>/<video> files, or a CSV of path,speaker")
    add_common_options(parser, "share of each speaker's videos (of the speakers, or of each "
                               "video's span with --split_by time) held out for validation")
    _add_video_options(parser)


def command_line(options, command: str, *extra: str) -> str:
    """The `python -m data.prepare` line that runs `command` on these videos with these
    options (those at their defaults left out): what a shard and assemble say to run next."""
    parser = argparse.ArgumentParser(add_help=False)
    add_arguments(parser)
    words = ["python", "-m", "data.prepare", command]
    for action in parser._actions:
        value = getattr(options, action.dest)
        if not action.option_strings:
            words.append(str(value))
        elif value != action.default:
            words += [action.option_strings[0]] + ([str(value)] if action.nargs != 0 else [])
    return shlex.join(words + list(extra))


def _add_video_options(parser) -> None:
    parser.add_argument("--frames_per_second", type=bounded(float, 0, 30, low_open=True),
                        default=2.0, metavar="RATE",
                        help="frames sampled, and pairs made, per second of video (default: %(default)s)")
    parser.add_argument("--test_fraction", type=bounded(float, 0, 0.9), default=0.1,
                        metavar="FRACTION", help="share of each speaker's videos (of the "
                        "speakers, or of each video's span with --split_by time) held out for "
                        "testing (default: %(default)s)")
    parser.add_argument("--split_by", choices=SPLIT_BY, default="video",
                        help="hold out whole videos of known speakers, whole speakers (unseen "
                             "speakers), or the end of every video, one speech window apart "
                             "(default: %(default)s)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the draw of held-out videos or speakers (default: %(default)s)")
    parser.add_argument("--margin", type=bounded(float, 0, 1), default=0.1, metavar="FRACTION",
                        help="border added on each side of the detected face, as a fraction of "
                             "its side; 0 frames faces as wav2pix's crops (default: %(default)s)")
    parser.add_argument("--silence_dbfs", type=bounded(float, -120, 0), default=-50.0, metavar="DB",
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
    parser.add_argument("--speech_fraction", type=bounded(float, 0, 1), default=0.5,
                        metavar="FRACTION", help="share of a window's frames the voice detector "
                        "must hear speech in (default: %(default)s)")


# ---------------------------------------------------------------- preparing

def run(options) -> PrepareReport:
    """Videos -> sampled frames with the speaker's face, each paired with the speech
    centred on it. Each video is prepared into OUT.parts/ (resumable, in parallel with
    --workers), then OUT is assembled from the parts in the videos' sorted order. With
    --shard, only the shard's share is prepared (run_shard)."""
    if options.shard:
        return run_shard(options)
    out, found, report = begin(options)
    sources = require_readable(probe_each(found.videos, report), report)
    settings = window_settings(options)
    store = parts.PartStore(out, settings)
    note = store.open()
    if note:
        report.notes.append(note)
    summaries = prepare_parts(sources, store, settings, options.workers)
    return assemble(options, sources, summaries, store, report)


def begin(options) -> tuple:
    """(OUT, the videos found, the report that starts with what was passed over), once
    OUT is known to be writable."""
    out = Path(options.out)
    found = videos.find_videos(options.src)
    check_output(out, options.overwrite)
    report = PrepareReport(notes=found.notes, videos_read=Counter(), skipped=found.skipped,
                           unread_speakers=found.unread_speakers)
    for speaker in found.unread_speakers:
        report.videos_read[speaker] = 0  # its row in the table says so
    return out, found, report


def assemble(options, sources, summaries: dict, store, report: PrepareReport) -> PrepareReport:
    """OUT from the part of each of `sources` (sorted, readable) in turn, the splits drawn
    here; the parts are removed once OUT is written. The same calls in the same order,
    and HDF5 stamps no times on datasets (h5py's default), so OUT is byte-reproducible."""
    out = Path(options.out)
    speakers = sorted({source.speaker for source in sources})
    splits = assign_splits(sources, options.split_by, options.test_fraction,
                           options.valid_fraction, options.seed)
    settings = window_settings(options)
    by_time = TimeSplit(options.test_fraction, options.valid_fraction, settings.window_samples)
    with open_writer(out, speakers, settings.window_samples, settings.face_size,
                     source="videos") as writer:
        merge = PartMerger(store, writer, speakers, report, by_time)
        for source in sources:
            merge(source, summaries[source.label], splits[source.label])
        merge.note_short_videos()
        finish(PairSink(writer, speakers, report), report, out)
    store.remove()
    return report


def run_shard(options) -> str:
    """--shard K/N: this shard's share of the videos into OUT.parts/, and what to run next."""
    index, count = options.shard
    out, found, report = begin(options)
    weight = weights(found.videos, options.shard_by)
    owners = shard_owners(weight, count)
    share = [source for source in found.videos if owners[source.label] == index]
    settings = window_settings(options)
    store = parts.PartStore(out, settings)
    store.open(shards=count, shard_by=options.shard_by)
    sources = probe_each(share, report)
    summaries = prepare_parts(sources, store, settings, options.workers)
    report.broken += [(s.label, s.broken) for s in summaries.values() if s.broken]
    print(f"shard {index}/{count}: prepared {len(sources)} of its {len(share)} videos "
          f"({describe(weight, [s.label for s in share], options.shard_by)}, "
          f"all {len(found.videos)} videos), "
          f"{sum(s.pairs for s in summaries.values())} pairs, into {store.folder}")
    for line in listing("broken files skipped", [f"{f}: {why}" for f, why in report.broken]):
        print(line)
    print(f"next, once all {count} shards are done: {command_line(options, 'assemble')}")
    return PARTS_ONLY


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


class PartMerger:
    """Copies each video's part into OUT, to its split or, by time, each pair to the share
    of the video its speech window lies in, and counts what it kept and dropped."""

    def __init__(self, store, writer, speakers: list, report: PrepareReport, by_time: TimeSplit):
        self.store, self.writer, self.speakers, self.report = store, writer, speakers, report
        self.by_time, self.short, self.timed = by_time, 0, 0

    def __call__(self, source, summary, split) -> None:
        report = self.report
        for cause, count in summary.dropped.items():
            report.dropped[source.speaker, cause] += count
        if summary.broken:
            report.broken.append((source.label, summary.broken))
        else:
            report.videos_read[source.speaker] += 1
        if split is BY_TIME and summary.span is not None:
            self.timed += 1
            self.short += self.by_time.too_short(summary.span)
        speaker_id = self.speakers.index(source.speaker)
        for waveforms, faces, names, starts in parts.read_part(self.store.path(source)):
            if split is not BY_TIME:
                self._append(split, source.speaker, speaker_id, waveforms, faces, names)
                continue
            chosen = self.by_time.splits_of(starts, summary.span)
            for name in SPLITS:
                keep = np.flatnonzero(chosen == name)
                if len(keep):
                    self._append(name, source.speaker, speaker_id, waveforms[keep], faces[keep],
                                 [names[i] for i in keep])
            between = int(np.sum(chosen == BETWEEN_SPLITS))
            if between:
                report.dropped[source.speaker, BETWEEN_SPLITS] += between

    def _append(self, split, speaker, speaker_id, waveforms, faces, names) -> None:
        self.writer.append(split, waveforms, faces, [speaker_id] * len(names), names)
        self.report.kept[speaker, split] += len(names)

    def note_short_videos(self) -> None:
        if self.short:
            seconds = self.by_time.window_samples / SAMPLE_RATE
            self.report.notes.append(
                f"--split_by time: {self.short} of {self.timed} videos are too short to hold a "
                f"whole {seconds:g} s window in every split's share (and the {seconds:g} s gaps), "
                f"so some splits got none of their pairs (see dropped: {BETWEEN_SPLITS})")


def probe_each(sources, report: PrepareReport) -> list:
    """The videos whose header opens with both tracks; the others are reported broken."""
    readable = []
    for source in tqdm(sources, desc="opening", unit="video", leave=False):
        reason = videos.probe(source.path)
        if reason:
            report.broken.append((source.label, reason))
        else:
            readable.append(source)
    return readable


def require_readable(readable: list, report: PrepareReport) -> list:
    if not readable:
        print(format_summary(report))
        raise PrepareError(f"none of the {len(report.broken)} videos could be read; "
                           "see the list of broken files above")
    return readable
