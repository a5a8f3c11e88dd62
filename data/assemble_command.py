"""`python -m data.prepare assemble SRC OUT.h5`: OUT from the parts that the shards of
`python -m data.prepare videos SRC OUT.h5 --shard K/N` prepared into OUT.parts/."""
from __future__ import annotations

from data import video_parts as parts
from data import videos_command
from data.prepare_common import HelpFormatter, PrepareError, PrepareReport
from data.video_shards import shard_owners, weights

ASSEMBLE_HELP = """\
Write OUT from the parts that `videos SRC OUT --shard K/N` prepared, K = 1..N, into
OUT.parts/: the same file, byte for byte, that one `videos` run without --shard writes.
Give it the options the shards had (--workers and --shard aside); the splits are drawn
here, so --split_by, the fractions and --seed may differ from theirs. It refuses, and
writes nothing, while a video has no finished part (it names them and the shards to run)
or the folder holds parts made with other settings or of videos not in SRC. The parts
are removed once OUT is written."""


def add_parser(commands):
    parser = commands.add_parser("assemble", help="write OUT from the parts of videos --shard K/N",
                                 description=ASSEMBLE_HELP, formatter_class=HelpFormatter)
    videos_command.add_arguments(parser)
    return parser


def run(options) -> PrepareReport:
    """OUT from the parts, once every readable video of SRC has one and no other is there."""
    out, found, report = videos_command.begin(options)
    store = parts.PartStore(out, videos_command.window_settings(options))
    shards, shard_by = _check_folder(options, found.videos, store)
    summaries = {source.label: store.finished(source) for source in found.videos}
    unprepared = [source for source in found.videos if summaries[source.label] is None]
    missing = videos_command.probe_each(unprepared, report)  # the others are broken
    if missing:
        raise PrepareError(_missing_message(options, found.videos, missing, (shards, shard_by), store))
    sources = [source for source in found.videos if summaries[source.label] is not None]
    videos_command.require_readable(sources, report)
    return videos_command.assemble(options, sources, summaries, store, report)


def _check_folder(options, every_video: list, store) -> tuple:
    """(shard count, --shard_by) the parts were made by (None: by runs without --shard),
    once they were made with these settings and none is of a video outside `every_video`."""
    kept = store.kept_record()
    changed = store.changed(kept)
    if changed:
        raise PrepareError(f"{store.folder}: its parts were made with other settings ({changed}); "
                           "assemble with the options the shards were given")
    foreign = store.foreign(every_video)
    if foreign:
        videos = f"{len(foreign)} video{'s' * (len(foreign) > 1)}"
        raise PrepareError(f"{store.folder}: holds parts of {videos} not in {options.src}: "
                           f"{_some(foreign)}; remove those files, or assemble the list of "
                           "videos they were made from")
    return kept.get("shards"), kept.get("shard_by", "bytes")  # bytes: before --shard_by


def _missing_message(options, every_video: list, missing: list, sharding: tuple, store) -> str:
    """How many videos have no part, which, and the command that makes them."""
    shards, shard_by = sharding
    labels = _some([source.label for source in missing])
    head = f"{len(missing)} of {len(every_video)} videos have no finished part in {store.folder}"
    if not shards:  # made by runs without --shard: the plain run finishes and assembles
        return f"{head} ({labels}); run `{videos_command.command_line(options, 'videos')}`"
    owners = shard_owners(weights(every_video, shard_by), shards)
    which = sorted({owners[source.label] for source in missing})
    shard = f"{which[0]}/{shards}" if len(which) == 1 else f"K/{shards}"
    by = ["--shard_by", shard_by] if shard_by != "duration" else []
    again = videos_command.command_line(options, "videos", "--shard", shard, *by)
    for_each = "" if len(which) == 1 else f" for K in {', '.join(map(str, which))}"
    return (f"{head} ({labels}; of shard{'s' * (len(which) > 1)} "
            f"{', '.join(f'{k}/{shards}' for k in which)}); run `{again}`{for_each}, then assemble again")


def _some(names: list, shown: int = 3) -> str:
    more = f" and {len(names) - shown} more" if len(names) > shown else ""
    return ", ".join(names[:shown]) + more
