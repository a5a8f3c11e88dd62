"""data.prepare videos --shard K/N and data.prepare assemble: shards, run one after another
or at once, give OUT byte for byte as one run writes it, and assemble refuses in one line
what it cannot make that file from. Real mp4s encoded from the wav2pix-mini fixture's faces
and speech (skipped without it)."""
from __future__ import annotations

import contextlib
import hashlib
import io
import shlex
import subprocess
import sys
from pathlib import Path
from types import SimpleNamespace

import pytest

from data import prepare, video_parts
from data import video as videos
from data.video_shards import shard_owners, weights
from tests.test_prepare_videos import REPO, video_folder

SETTINGS = ["--face_size", "64", "--test_fraction", "0.3", "--vad", "off"]


def run(args: list) -> tuple[int, str, str]:
    """(exit status, stdout, stderr) of `python -m data.prepare ARGS`, run in this process."""
    stdout, stderr = io.StringIO(), io.StringIO()
    with contextlib.redirect_stdout(stdout), contextlib.redirect_stderr(stderr):
        try:
            code = prepare.main([str(a) for a in args])
        except SystemExit as done:
            code = done.code
    return code, stdout.getvalue(), stderr.getvalue()


def sha256(path: Path) -> str:
    return hashlib.sha256(path.read_bytes()).hexdigest()


def error_line(stderr: str) -> str:
    """The one line of a refusal (progress bars redraw with carriage returns, not lines)."""
    lines = stderr.strip().split("\n")
    assert len(lines) == 1, stderr
    return lines[0].rsplit("\r", 1)[-1].strip()


@pytest.fixture(scope="module")
def clips(tmp_path_factory) -> SimpleNamespace:
    """Six 3 s talking heads of two speakers, listed whole (all.csv) and less the last
    (five.csv), and the sha256 of the file one run without --shard writes from all six."""
    root = tmp_path_factory.mktemp("shards")
    video_folder(root / "v", count=6, seconds=3)
    rows = [f"{path.relative_to(root).as_posix()},{path.parent.name}"
            for path in sorted((root / "v").rglob("*.mp4"))]
    (root / "all.csv").write_text("\n".join(rows) + "\n")
    (root / "five.csv").write_text("\n".join(rows[:5]) + "\n")
    code, _, stderr = run(["videos", root / "all.csv", root / "whole.h5", *SETTINGS])
    assert code == 0, stderr
    return SimpleNamespace(all=root / "all.csv", five=root / "five.csv", sha=sha256(root / "whole.h5"))


def shard(src: Path, out: Path, k: int, n: int, *extra) -> list:
    return ["videos", src, out, *SETTINGS, "--shard", f"{k}/{n}", *extra]


def told_to_assemble(stdout: str) -> list:
    """The arguments of the command a shard's last line says to run next."""
    told = stdout.strip().splitlines()[-1].split(": ", 1)[1]
    words = shlex.split(told)
    assert words[:4] == ["python", "-m", "data.prepare", "assemble"], told
    return words[3:]


def assemble_as_told(stdout: str) -> tuple[int, str, str]:
    return run(told_to_assemble(stdout))


# `python -m data.prepare ARGS` in a fresh process, which exits 3 if torch was imported
WITHOUT_TORCH = ("import sys; from data import prepare; code = prepare.main(sys.argv[1:]); "
                 "sys.exit(3 if 'torch' in sys.modules else code)")


# ---------------------------------------------------------------- the same file

def test_two_shards_at_once_then_assemble_write_the_file_one_run_writes(tmp_path, clips):
    out = tmp_path / "o.h5"
    commands = [[sys.executable, "-m", "data.prepare", *map(str, shard(clips.all, out, k, 2))]
                for k in (1, 2)]
    started = [subprocess.Popen(c, cwd=REPO, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
               for c in commands]  # both create the parts folder and its record at once
    finished = [process.communicate(timeout=300) for process in started]
    assert [p.returncode for p in started] == [0, 0], [err[-500:] for _, err in finished]
    assert not out.exists()  # a shard writes parts only
    assert len(list((tmp_path / "o.h5.parts").glob("*.h5"))) == 6
    assert all("next, once all 2 shards are done: python -m data.prepare assemble" in o for o, _ in finished)
    # assemble imports no torch: it starts in well under a second
    assembled = subprocess.run([sys.executable, "-c", WITHOUT_TORCH, *told_to_assemble(finished[0][0])],
                               cwd=REPO, capture_output=True, text=True, timeout=300)
    assert assembled.returncode == 0, assembled.stderr[-500:]
    assert sha256(out) == clips.sha
    assert not (tmp_path / "o.h5.parts").exists()  # removed once OUT is written


def test_three_shards_by_bytes_in_turn_then_assemble_write_the_file_one_run_writes(tmp_path, clips):
    out = tmp_path / "o.h5"
    for k in (1, 2, 3):
        code, stdout, stderr = run(shard(clips.all, out, k, 3, "--workers", 2, "--shard_by", "bytes"))
        assert code == 0, stderr
        assert f"shard {k}/3: prepared " in stdout, stdout
    code, _, stderr = assemble_as_told(stdout)
    assert code == 0, stderr
    assert sha256(out) == clips.sha


# ---------------------------------------------------------------- refusals

def test_assemble_refuses_foreign_and_missing_parts_and_loses_nothing(tmp_path, clips):
    out, parts = tmp_path / "o.h5", tmp_path / "o.h5.parts"
    for k in (1, 2):
        assert run(shard(clips.all, out, k, 2))[0] == 0
    made = sorted(parts.glob("*.h5"))

    # a list without the sixth video: its part is foreign
    code, _, stderr = run(["assemble", clips.five, out, *SETTINGS])
    assert code == 2 and not out.exists(), stderr
    line = error_line(stderr)
    assert "holds parts of 1 video not in" in line and "v/javi/clip5.mp4 (" in line, line

    # other settings than the shards had
    code, _, stderr = run(["assemble", clips.all, out, *SETTINGS, "--face_size", "32"])
    assert code == 2 and "made with other settings (face_size)" in error_line(stderr)

    # a shard started with other settings is refused, and discards nothing
    code, _, stderr = run(shard(clips.all, out, 1, 2, "--frames_per_second", "1"))
    assert code == 2 and "made with other settings (frames_per_second)" in error_line(stderr)
    code, _, stderr = run(shard(clips.all, out, 1, 3))
    assert code == 2 and "(2 shards there, 3 here)" in error_line(stderr)
    code, _, stderr = run(shard(clips.all, out, 1, 2, "--shard_by", "bytes"))
    assert code == 2 and "(shared out by duration there, by bytes here)" in error_line(stderr)
    assert sorted(parts.glob("*.h5")) == made

    # a part missing: how many, which video, which shard, and the command that makes it
    sources = videos.find_videos(clips.all).videos
    lost = sources[0]
    owner = shard_owners(weights(sources, "duration"), 2)[lost.label]
    video_parts.PartStore(out, videos.WindowSettings()).path(lost).unlink()
    code, _, stderr = run(["assemble", clips.all, out, *SETTINGS])
    assert code == 2 and not out.exists(), stderr
    line = error_line(stderr)
    assert line.startswith(f"error: 1 of 6 videos have no finished part in {parts} "
                           f"({lost.label}; of shard {owner}/2); run `python -m data.prepare videos "), line
    assert len(list(parts.glob("*.h5"))) == 5  # nothing lost

    # the command it names makes the part, and then assemble writes the one-run file
    again = shlex.split(line.split("`")[1])
    assert again[-2:] == ["--shard", f"{owner}/2"], again
    assert run(again[3:])[0] == 0
    code, _, stderr = run(["assemble", clips.all, out, *SETTINGS])
    assert code == 0, stderr
    assert sha256(out) == clips.sha


def test_assemble_without_parts_says_what_to_run_first(tmp_path, clips):
    code, _, stderr = run(["assemble", clips.all, tmp_path / "o.h5", *SETTINGS])
    assert code == 2 and "no parts to assemble" in error_line(stderr)


@pytest.mark.parametrize("value", ["0/3", "4/3", "3", "a/b", "1/0", "2/3/4", ""])
def test_bad_shard_values_are_one_line(tmp_path, value):
    code, _, stderr = run(["videos", tmp_path, tmp_path / "o.h5", "--shard", value])
    line = error_line(stderr)
    assert code == 2 and line.startswith("error: argument --shard: ") and "K/N" in line, line


# ---------------------------------------------------------------- the shares

def test_shares_cover_every_video_once_and_balance_the_weights():
    sizes = [5, 90, 7, 40, 40, 3, 61, 12, 8, 30, 1, 0]
    weight = {f"{index:02d}.mp4": size for index, size in enumerate(sizes)}
    for count in (1, 2, 3, 5, 20):
        owners = shard_owners(weight, count)
        assert owners == shard_owners(dict(reversed(weight.items())), count)  # order aside
        assert sorted(owners) == sorted(weight)
        assert set(owners.values()) <= set(range(1, count + 1))
        loads = [sum(w for label, w in weight.items() if owners[label] == k)
                 for k in range(1, count + 1)]
        assert max(loads) - min(loads) <= max(sizes), (count, loads)  # greedy's bound


def test_weights_are_tenths_of_a_second_or_bytes(tmp_path, clips):
    sources = videos.find_videos(clips.all).videos
    assert set(weights(sources, "duration").values()) == {30}  # six 3 s clips
    assert weights(sources, "bytes") == {s.label: s.path.stat().st_size for s in sources}
    # a file without a readable length weighs its bytes at the others' seconds per byte
    odd = tmp_path / "odd.mp4"
    odd.write_bytes(sources[0].path.read_bytes()[:1000])
    mixed = weights([*sources, SimpleNamespace(label="odd", path=odd)], "duration")
    assert mixed["odd"] == round(1000 * 30 * 6 / sum(s.path.stat().st_size for s in sources))
