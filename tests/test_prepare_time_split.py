"""data.prepare videos: `--split_by time`, the manifest's split column, and every container
FFmpeg reads. Real videos encoded here from the wav2pix-mini fixture's faces (the real
detector and landmarks find them), or the realvids-dev clips; each test skips without its
fixture."""
from __future__ import annotations

import csv
import re
from pathlib import Path

import av
import h5py
import numpy as np
import pytest

from data import prepare, video_parts, video_workers, videos_command
from data import video as videos
from data.audio import resample
from data.schema import SAMPLE_RATE, validate_pair_file
from data.video_splits import TimeSplit, assign_splits
from tests.media import encode_video
from tests.test_prepare_videos import drop_count, fixture_pairs, run_cli, scene

REALVIDS = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "realvids-dev"
NOISE = 0.2  # white noise: loud enough for --silence_dbfs, and unique at every offset


def need_realvids() -> Path:
    if not (REALVIDS / "README.md").is_file():
        pytest.skip(f"realvids-dev fixture not found at {REALVIDS} (it lives beside the clone in CI)")
    return REALVIDS


def read_pairs(path) -> dict:
    """split -> (waveforms int16 (N, L), pair names)."""
    with h5py.File(path, "r") as f:
        return {split: (f[split]["waveforms"][()], [n.decode() for n in f[split]["pair_names"][()]])
                for split in ("train", "valid", "test") if split in f}


def name_time(name: str) -> float:
    return float(name.rsplit("@", 1)[1].rstrip("s"))


def talking_video(path: Path, seconds: int, sound: np.ndarray, fps: int = 10, **codec) -> Path:
    """One fixture face per second, framed as a talking head on a 640x360 wall."""
    faces, _ = fixture_pairs(seconds)
    frames = [scene([(face, 320, 180, 220, 0)]) for face in faces for _ in range(fps)]
    return encode_video(path, frames, sound, frames_per_second=fps, **codec)


def source_offsets(waveforms: np.ndarray, source: np.ndarray) -> np.ndarray:
    """Where in `source` each stored window (N, L) starts, by cross-correlation: white noise
    matches itself at one offset only, so this reads each pair's time from its speech."""
    length = waveforms.shape[1]
    size = 1 << int(np.ceil(np.log2(len(source) + length)))
    spectrum = np.fft.rfft(source, size)
    offsets = []
    for window in waveforms.astype(np.float64):
        correlation = np.fft.irfft(spectrum * np.conj(np.fft.rfft(window, size)), size)
        offsets.append(int(np.argmax(correlation[:len(source) - length + 1])))
    return np.asarray(offsets)


# ---------------------------------------------------------------- by time

def test_time_split_leaves_a_window_between_splits(tmp_path, capsys):
    seconds, window = 12, SAMPLE_RATE
    noise = NOISE * np.random.default_rng(0).standard_normal(seconds * SAMPLE_RATE).astype(np.float32)
    talking_video(tmp_path / "v" / "jaime" / "talk.mp4", seconds, noise)
    out = tmp_path / "pairs.h5"
    code, stdout, stderr = run_cli(["videos", tmp_path / "v", out, "--split_by", "time",
                                    "--test_fraction", 0.25, "--valid_fraction", 0.25,
                                    "--frames_per_second", 5, "--vad", "off"], capsys)
    assert code == 0, stderr
    pairs = read_pairs(out)
    assert sorted(pairs) == ["test", "train", "valid"]
    starts = {split: source_offsets(w, noise) for split, (w, _) in pairs.items()}
    for split, (_, names) in pairs.items():  # the speech is where the pair's name says
        expected = np.array([round(name_time(n) * SAMPLE_RATE) - window // 2 for n in names])
        assert np.abs(starts[split] - expected).max() <= 16, split  # 1 ms: AAC's framing
    # every train window ends a whole window before every valid window starts, and so on
    assert starts["train"].max() + window + window <= starts["valid"].min() + 16
    assert starts["valid"].max() + window + window <= starts["test"].min() + 16
    # test is the last quarter (9-12 s), valid the quarter before it less the gap (6-8 s)
    assert starts["test"].min() >= 9 * SAMPLE_RATE - 16
    assert starts["valid"].min() >= 6 * SAMPLE_RATE - 16
    assert starts["valid"].max() + window <= 8 * SAMPLE_RATE + 16
    assert starts["train"].max() + window <= 5 * SAMPLE_RATE + 16
    counts = {split: len(names) for split, (_, names) in pairs.items()}
    assert counts["train"] >= 18 and counts["valid"] >= 4 and counts["test"] >= 9, counts
    # the windows in a gap or across a boundary are dropped and counted, not lost silently
    assert drop_count(stdout, "between splits") >= 10


def test_time_split_shares_are_exact():
    by_time = TimeSplit(test_fraction=0.2, valid_fraction=0.1, window_samples=100)
    assert by_time.shares([0, 10_000]) == [("train", -np.inf, 6_900), ("valid", 7_000, 7_900),
                                           ("test", 8_000, np.inf)]
    starts = np.array([0, 6_800, 6_801, 6_950, 7_000, 7_800, 7_801, 7_950, 8_000, 9_950])
    assert list(by_time.splits_of(starts, [0, 10_000])) == [
        "train", "train", "between splits", "between splits", "valid", "valid",
        "between splits", "between splits", "test", "test"]
    assert not by_time.too_short([0, 10_000]) and by_time.too_short([0, 1_000])
    # without valid there is one gap; with no held-out share there is none
    assert TimeSplit(0.2, 0.0, 100).shares([0, 1_000]) == [("train", -np.inf, 700), ("test", 800, np.inf)]
    assert TimeSplit(0.0, 0.0, 100).shares([0, 1_000]) == [("train", -np.inf, np.inf)]


def test_time_split_resumes_from_parts_on_real_clips(tmp_path, capsys):
    """Real speech (the realvids-dev clips): the time split is drawn when OUT is assembled,
    from what each part records, so parts made earlier give the file a fresh run gives."""
    realvids = need_realvids()
    src = tmp_path / "v"
    clips = ("KristiNoem/KristiNoem.mkv", "feifeili/feifeili_clip3.mkv")
    for clip in clips:
        (src / clip).parent.mkdir(parents=True)
        (src / clip).symlink_to(realvids / clip)
    args = ["--split_by", "time", "--test_fraction", 0.2, "--valid_fraction", 0.2]
    code, stdout, stderr = run_cli(["videos", src, tmp_path / "fresh.h5", *args], capsys)
    assert code == 0, stderr
    pairs = read_pairs(tmp_path / "fresh.h5")
    assert all(len(pairs[split][1]) for split in ("train", "valid", "test")), stdout
    for clip in clips:
        times = {split: [name_time(n) for n in names if n.startswith(clip)]
                 for split, (_, names) in pairs.items()}
        ordered = [times[split] for split in ("train", "valid", "test") if times[split]]
        for before, after in zip(ordered, ordered[1:]):  # window centres 2 windows apart
            assert max(before) + 2.0 <= min(after) + 1e-6, (clip, times)
    # the same run from parts made beforehand (as a crashed run leaves them)
    options = prepare.build_parser().parse_args(["videos", str(src), str(tmp_path / "resumed.h5"),
                                                 *map(str, args)])
    settings = videos_command.window_settings(options)
    store = video_parts.PartStore(tmp_path / "resumed.h5", settings)
    store.open()
    sources = videos.find_videos(src).videos
    assert len(list(video_workers.make_parts(sources, store, settings, 1))) == 2
    code, _, stderr = run_cli(["videos", src, tmp_path / "resumed.h5", *args], capsys)
    assert code == 0, stderr
    first = re.search(r"videos:\s+(\d+)%", stderr)
    assert first and first.group(1) == "100", stderr[-300:]  # both parts reused
    assert (tmp_path / "resumed.h5").read_bytes() == (tmp_path / "fresh.h5").read_bytes()


def clip_speech(path: Path) -> tuple[float, np.ndarray]:
    """(clock time of the first sample, mono float speech at 16 kHz) decoded on their own:
    all frames at the clip's own rate, channels averaged, then resampled (torchaudio)."""
    with av.open(str(path)) as container:
        frames = list(container.decode(audio=0))
    rate = frames[0].sample_rate
    sound = np.concatenate([f.to_ndarray().reshape(f.layout.nb_channels, -1) if f.format.is_planar
                            else f.to_ndarray().reshape(-1, f.layout.nb_channels).T for f in frames], 1)
    if sound.dtype.kind == "i":
        sound = sound / float(np.iinfo(sound.dtype).max + 1)
    return frames[0].time, resample(sound.mean(axis=0).astype(np.float32), rate, SAMPLE_RATE)


@pytest.mark.parametrize("clip", ["grid_manA/bbaf2n.mpg",                       # MPEG-1, mp2 44.1 kHz stereo
                                  "mead_M003/M003_level_1_disgusted_015.mp4",   # 1080p, AAC 48 kHz stereo
                                  "lrs2_00009/00009.mp4"])                      # MPEG-4, AAC 16 kHz mono
def test_real_clips_of_every_kind_give_their_own_speech(tmp_path, capsys, clip):
    """Each fixture clip gives pairs, and the speech of each is the clip's own at the
    pair's time, whatever its rate and channels (FFmpeg resamples and we average)."""
    source = need_realvids() / clip
    (tmp_path / "v" / clip).parent.mkdir(parents=True)
    (tmp_path / "v" / clip).symlink_to(source)
    out = tmp_path / "pairs.h5"
    code, stdout, stderr = run_cli(["videos", tmp_path / "v", out, "--frames_per_second", 5], capsys)
    assert code == 0, stderr
    waveforms, names = read_pairs(out)["train"]
    assert len(names) >= 5, stdout
    first_time, speech = clip_speech(source)
    for stored, name in zip(waveforms / 32768.0, names):
        start = round((name_time(name) - first_time) * SAMPLE_RATE) - len(stored) // 2
        mine = speech[start:start + len(stored)]
        agreement = np.dot(stored, mine) / (np.linalg.norm(stored) * np.linalg.norm(mine))
        assert agreement > 0.99, (name, agreement)  # measured 0.9996-1.0


# ---------------------------------------------------------------- the manifest's split column

def test_manifest_split_column_fixes_a_videos_split(tmp_path, capsys):
    _, speech = fixture_pairs(3)
    for name in ("ann/1.mp4", "ann/2.mp4", "ben/1.mp4", "ben/2.mp4"):
        talking_video(tmp_path / "v" / name, 3, np.concatenate(speech))
    manifest = tmp_path / "videos.csv"
    with open(manifest, "w", newline="") as handle:
        csv.writer(handle).writerows([["path", "speaker", "split"], ["v/ann/1.mp4", "ann", "test"],
                                      ["v/ann/2.mp4", "ann", ""], ["v/ben/1.mp4", "ben", "Valid"],
                                      ["v/ben/2.mp4", "ben"]])
    out = tmp_path / "pairs.h5"
    code, stdout, stderr = run_cli(["videos", manifest, out, "--test_fraction", 0,
                                    "--valid_fraction", 0, "--vad", "off"], capsys)
    assert code == 0, stderr
    sources = {split: {n.rsplit("@", 1)[0] for n in names} for split, (_, names) in read_pairs(out).items()}
    assert sources == {"train": {"v/ann/2.mp4", "v/ben/2.mp4"}, "valid": {"v/ben/1.mp4"},
                       "test": {"v/ann/1.mp4"}}
    # a misspelt split is refused before any work, naming the row
    with open(manifest, "a", newline="") as handle:
        csv.writer(handle).writerow(["v/ben/2.mp4", "ben", "tset"])
    code, _, stderr = run_cli(["videos", manifest, tmp_path / "bad.h5"], capsys)
    assert code == 2 and stderr.count("\n") == 1, stderr
    assert "line 6" in stderr and "'tset'" in stderr and not (tmp_path / "bad.h5").exists()


def test_fixed_splits_leave_the_draw_of_the_others_alone():
    free = [videos.VideoSource(Path(f"{s}/{i}.mp4"), s, f"{s}/{i}.mp4") for s in "abcdef" for i in range(3)]
    fixed = [videos.VideoSource(Path(f"z/{i}.mp4"), "z", f"z/{i}.mp4", "test") for i in range(2)]
    for split_by in ("video", "speaker"):
        alone = assign_splits(free, split_by, 0.34, 0.2, seed=1)
        assert assign_splits(free + fixed, split_by, 0.34, 0.2, seed=1) == {**alone, "z/0.mp4": "test",
                                                                           "z/1.mp4": "test"}
    by_time = assign_splits(free + fixed, "time", 0.1, 0.1, seed=1)
    assert by_time["z/0.mp4"] == "test" and by_time["a/0.mp4"] is None


# ---------------------------------------------------------------- containers

VP8_QUICKLY = {"deadline": "realtime", "cpu-used": "16", "threads": "1"}  # else 3-5 s a second of video
CONTAINERS = {  # suffix: codecs and speech rate, each a container FFmpeg reads
    "mpg": dict(video_codec="mpeg1video", audio_codec="mp2", speech_rate=44100),  # GRID's
    "vob": dict(video_codec="mpeg2video", audio_codec="ac3", speech_rate=48000, container_format="vob"),
    "ts": dict(video_codec="mpeg2video", audio_codec="mp2", speech_rate=48000),
    "mts": dict(video_codec="libx264", audio_codec="ac3", speech_rate=48000, container_format="mpegts"),
    "flv": dict(video_codec="flv", audio_codec="libmp3lame", speech_rate=44100),
    "wmv": dict(video_codec="wmv2", audio_codec="wmav2", speech_rate=44100, container_format="asf",
                audio_bit_rate=128_000),
    "webm": dict(video_codec="libvpx", audio_codec="libopus", speech_rate=48000,
                 video_options=VP8_QUICKLY),
    "ogv": dict(video_codec="libvpx", audio_codec="libopus", speech_rate=48000, container_format="ogg",
                video_options=VP8_QUICKLY),
    "3gp": dict(speech_rate=16000),
    "m4v": dict(speech_rate=22050, container_format="mp4"),
    "avi": dict(video_codec="mpeg4", audio_codec="libmp3lame", speech_rate=44100),
}


def test_every_container_is_read_and_other_files_are_listed(tmp_path, capsys):
    _, speech = fixture_pairs(3)
    sound = np.concatenate(speech)
    for suffix, codec in CONTAINERS.items():
        rate = codec["speech_rate"]
        stereo = np.stack([resample(sound, SAMPLE_RATE, rate)] * 2)  # (2, T) at the codec's rate
        talking_video(tmp_path / "v" / f"by_{suffix}" / f"clip.{suffix}", 3, stereo, fps=25, **codec)
    (tmp_path / "v" / "by_mpg" / "transcript.txt").write_text("bin blue at f two now")
    (tmp_path / "v" / "only_odd").mkdir()
    (tmp_path / "v" / "only_odd" / "clip.xyz").write_bytes(b"\x00" * 64)
    (tmp_path / "v" / "only_odd" / "clip").write_bytes(b"\x00" * 64)
    out = tmp_path / "pairs.h5"
    code, stdout, stderr = run_cli(["videos", tmp_path / "v", out, "--test_fraction", 0,
                                    "--valid_fraction", 0, "--vad", "off"], capsys)
    assert code == 0, stderr
    kept = {n.split("/")[0] for n in read_pairs(out)["train"][1]}
    assert kept == {f"by_{suffix}" for suffix in CONTAINERS}, stdout
    assert "broken" not in stdout
    assert "files skipped for their suffix: 3" in stdout
    assert "by_mpg/transcript.txt: .txt is not a video container" in stdout
    assert "only_odd/clip: a name without a suffix is not a video container" in stdout
    # the speaker none of whose files is read has a row of zeros and a line saying why
    assert "speakers with no video read (every file skipped for its suffix): 1\n  only_odd" in stdout
    row = next(line for line in stdout.splitlines() if line.startswith("only_odd "))
    assert set(row.split()[1:]) == {"0"}, row
    assert "only_odd" not in validate_pair_file(out).speaker_names


def test_a_folder_of_unread_files_is_one_line(tmp_path, capsys):
    (tmp_path / "v" / "ann").mkdir(parents=True)
    (tmp_path / "v" / "ann" / "talk.xyz").write_bytes(b"\x00" * 64)
    code, _, stderr = run_cli(["videos", tmp_path / "v", tmp_path / "o.h5"], capsys)
    assert code == 2 and stderr.count("\n") == 1, stderr
    assert "(1 file skipped for their suffix, e.g. ann/talk.xyz)" in stderr
