"""`python -m data.prepare wav2pix SRC OUT.h5`: a data set in wav2pix's folder layout (read
by data/wav2pix_import.py) streamed into a pair file."""
from __future__ import annotations

from pathlib import Path

import numpy as np
from tqdm import tqdm

from data import wav2pix_import as wav2pix
from data.faces import FaceCropper, FaceSettings
from data.prepare_common import (HelpFormatter, PairSink, PrepareReport, add_common_options,
                                 check_output, finish, open_writer)
from data.schema import SAMPLE_RATE

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


def add_parser(commands):
    parser = commands.add_parser("wav2pix", help="import wav2pix's folder layout",
                                 description=WAV2PIX_HELP, formatter_class=HelpFormatter)
    parser.add_argument("src", metavar="SRC", help="folder holding train/ and test/")
    add_common_options(parser, "share of each speaker's train numbers that becomes the valid "
                               "split when SRC has no valid/")
    parser.add_argument("--no_bgr_swap", action="store_true",
                        help="keep the channel order: the faces are already RGB")
    parser.add_argument("--align", action="store_true",
                        help="warp each face so its eyes (dlib's landmarks) sit on a fixed "
                             "template; faces dlib's HOG detector misses are dropped")
    return parser


def run(options) -> PrepareReport:
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
    with open_writer(out, layout.speakers, window_samples, options.face_size,
                     source="wav2pix") as writer:
        sink = PairSink(writer, layout.speakers, report)
        for pair in tqdm(pairs, desc="pairs", unit="pair"):
            try:
                face = _face(pair, options, aligner)
                waveform = wav2pix.read_window(pair.speech_path, window_samples)
            except wav2pix.UnusablePair as unusable:
                report.dropped[pair.speaker, unusable.cause] += 1
                continue
            sink.add(pair.split, pair.speaker, waveform, face, pair.name)
        finish(sink, report, out)
    return report


def _face(pair, options, aligner) -> np.ndarray:
    """The stored face, or with --align the face warped onto the eye template (wav2pix's
    framing); a face the detector misses is dropped."""
    if aligner is None:
        return wav2pix.read_face(pair.face_path, options.face_size, not options.no_bgr_swap)
    image = wav2pix.read_image(pair.face_path, not options.no_bgr_swap)
    face, dropped = aligner.align_still(image)
    if dropped:
        raise wav2pix.UnusablePair(dropped, str(pair.face_path))
    return face
