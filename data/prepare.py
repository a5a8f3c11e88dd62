"""Make the HDF5 pair file (data/schema.py) from a user's data: the way real data gets in.

    python -m data.prepare wav2pix SRC OUT.h5     a data set in wav2pix's folder layout
    python -m data.prepare videos SRC OUT.h5      raw videos, one folder per speaker,
                                                  or a CSV manifest of path,speaker
    python -m data.prepare assemble SRC OUT.h5    OUT from the parts of videos --shard K/N
    python -m data.prepare demo OUT.h5            the synthetic demo speakers, labelled,
                                                  some held out (unseen speakers)

wav2pix and videos stream pairs to disk in chunks (memory stays flat), report every pair they drop
and why, and print a summary table per speaker at the end.
"""
from __future__ import annotations

import sys

from data import assemble_command, demo_command, videos_command, wav2pix_command
from data.prepare_common import PARTS_ONLY, HelpFormatter
from data.schema import validate_pair_file
from utils import OneLineParser, UserError

# Each command is a module with add_parser(commands), which adds its subparser and returns
# it, and run(options), which does the work; the order is the order --help lists them in.
COMMANDS = {"wav2pix": wav2pix_command, "videos": videos_command, "assemble": assemble_command,
            "demo": demo_command}


def build_parser() -> OneLineParser:
    parser = OneLineParser(prog="python -m data.prepare", description=__doc__,
                           formatter_class=HelpFormatter)
    commands = parser.add_subparsers(dest="command", required=True,
                                     metavar="{" + ",".join(COMMANDS) + "}")
    for command in COMMANDS.values():
        command.add_parser(commands).set_defaults(run=command.run)
    return parser


def main(argv=None) -> int:
    parser = build_parser()
    try:
        options = parser.parse_args(argv)
        if getattr(options, "test_fraction", 0) + getattr(options, "valid_fraction", 0) >= 1:
            parser.error("--test_fraction plus --valid_fraction must stay below 1")
        if options.run(options) is PARTS_ONLY:  # a shard: OUT comes from assemble
            return 0
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
    if info.source == "videos":
        print(f"train on it with: python runtime.py --dataset {info.path} (a file made from "
              f"videos trains with the video recipe: docs/training.md#recipes)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
