"""`python -m data.prepare demo`: the demo speakers as a labelled pair file, optionally with
held-out speakers (an unseen-speaker benchmark). The synthesis is data/unseen_demo.py's."""
from __future__ import annotations

from pathlib import Path

from data.prepare_common import HelpFormatter, bounded, check_output
from data.unseen_demo import check_layout, write_demo_file
from utils import UserError

DEMO_HELP = """\
Synthesise the demo speakers (data/demo.py) into a pair file with attribute labels
(<split>/attributes: beard class, face width and height, jaw, eye size, brow thickness,
which the voice decides, and glasses, which it does not).

Speaker i of --speakers has voice depth i/(N-1). --held_out K speakers are kept out of
train for test, and --valid_speakers V others for valid (all of each one's pairs), so a
checkpoint chosen on valid has never heard a test voice (V = 0: valid and test share the
K, half of each one's pairs each). --extrapolated of the K take the deepest and highest
voices, beyond every train voice ("extrap"); the rest, and the V, lie between train voices
("interp"). The root attribute speaker_groups records which is which. With --held_out 0
the splits are the standard demo's (80/10/10 per speaker)."""


def add_parser(commands):
    parser = commands.add_parser("demo", help="the synthetic demo speakers, labelled, with "
                                 "held-out speakers", description=DEMO_HELP,
                                 formatter_class=HelpFormatter)
    parser.add_argument("out", metavar="OUT.h5", help="the HDF5 pair file to write")
    parser.add_argument("--speakers", type=bounded(int, 2, 1000), default=40, metavar="N",
                        help="speakers, deepest voice first (default: %(default)s)")
    parser.add_argument("--held_out", type=bounded(int, 0, 998), default=8, metavar="K",
                        help="speakers only test holds (default: %(default)s)")
    parser.add_argument("--valid_speakers", type=bounded(int, 0, 998), default=None,
                        metavar="V", help="other speakers only valid holds; 0: valid and "
                        "test share the K (default: K // 2)")
    parser.add_argument("--extrapolated", type=bounded(int, 0, 998), default=None, metavar="E",
                        help="of the held-out speakers, those beyond the train voices, "
                             "split between both ends (default: K // 4)")
    parser.add_argument("--seed", type=int, default=0,
                        help="seed of the synthesis and of the interpolated speakers' places "
                             "(default: %(default)s)")
    parser.add_argument("--pairs_per_speaker", type=bounded(int, 3, 100000), default=80,
                        metavar="P", help="pairs synthesised per speaker (default: %(default)s)")
    parser.add_argument("--face_size", type=bounded(int, 16, 512), default=64, metavar="PIXELS",
                        help="side of the stored faces, even (default: %(default)s)")
    parser.add_argument("--window_seconds", type=bounded(float, 0.5, 10), default=2.0,
                        metavar="SECONDS", help="speech per pair (default: %(default)s)")
    parser.add_argument("--overwrite", action="store_true",
                        help="replace an existing OUT, only once the new file is complete")
    return parser


def run(options) -> None:
    """The demo file at OUT; prints which speakers test and valid hold out."""
    out = Path(options.out)
    extrapolated = options.held_out // 4 if options.extrapolated is None else options.extrapolated
    valid = options.held_out // 2 if options.valid_speakers is None else options.valid_speakers
    problem = check_layout(options.speakers, options.held_out, extrapolated, valid)
    if problem:
        raise UserError(problem)
    if options.face_size % 2:
        raise UserError(f"--face_size is {options.face_size}; use an even size (64 or 128)")
    check_output(out, options.overwrite)
    layout = write_demo_file(out, options.speakers, options.held_out, extrapolated,
                             options.seed, options.pairs_per_speaker, options.face_size,
                             options.window_seconds, valid)
    for group in ("interp", "extrap"):
        members = sorted(i for i, g in layout.held_out.items()
                         if g == group and i not in layout.valid)
        if members:
            print(f"test ({group}): speakers {', '.join(map(str, members))}")
    if layout.valid:
        print(f"valid (interp): speakers {', '.join(map(str, sorted(layout.valid)))}")
