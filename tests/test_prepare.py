"""data.prepare on real files: the wav2pix fixture, and real mp4 videos encoded here.

Tests marked by `fixture` use shared/fixtures/wav2pix-mini (real faces, real speech) and
skip without it. The always-run video tests use drawn frames, which OpenCV's Haar
cascade does not reliably take for faces, so they stand a fixed centre box in for the
detector; the fixture test runs the real detector on real faces.
"""
from __future__ import annotations

import csv
import json
import os
import subprocess
import sys
from pathlib import Path

import h5py
import numpy as np
import pytest
import soundfile
from PIL import Image

from data import faces as faces_module
from data import prepare
from data import video as videos
from data import wav2pix_import as wav2pix
from data.schema import validate_pair_file
from data.video_splits import assign_splits
from tests.media import encode_video

REPO = Path(__file__).resolve().parents[1]
FIXTURE = Path(__file__).resolve().parents[2] / "shared" / "fixtures" / "wav2pix-mini"
RATE = 16000
VIDEO_FPS = 10


def need_fixture() -> Path:
    if not (FIXTURE / "train").is_dir():
        pytest.skip(f"wav2pix-mini fixture not found at {FIXTURE} (it lives beside the clone in CI)")
    return FIXTURE


def run_cli(args, capsys):
    """Run the command in-process; returns (exit status, stdout, stderr)."""
    try:
        code = prepare.main([str(a) for a in args])
    except SystemExit as done:  # argparse exits on bad options
        code = done.code
    captured = capsys.readouterr()
    return code, captured.out, captured.err


def skin_red_minus_blue(faces: np.ndarray) -> np.ndarray:
    """Red minus blue mean over the centre of each face (N, S, S, 3), where the skin is."""
    size = faces.shape[1]
    centre = faces[:, size // 4: 3 * size // 4, size // 4: 3 * size // 4].astype(np.float64)
    return centre[..., 0].mean(axis=(1, 2)) - centre[..., 2].mean(axis=(1, 2))


def read_split(path, split):
    with h5py.File(path, "r") as f:
        group = f[split]
        names = [n.decode() for n in group["pair_names"][()]]
        return group["waveforms"][()], group["faces"][()], group["speaker_ids"][()], names


# ---------------------------------------------------------------- wav2pix layout

def test_fixture_import_counts_colours_speakers_and_splits(tmp_path, capsys):
    source = need_fixture()
    out = tmp_path / "pairs.h5"
    code, stdout, stderr = run_cli(["wav2pix", source, out], capsys)
    assert code == 0, stderr
    info = validate_pair_file(out)
    assert info.speaker_names == ["jaimealtozano", "javiermuniz"] and info.source == "wav2pix"
    assert {s: i.num_pairs for s, i in info.splits.items()} == {"train": 72, "valid": 8, "test": 20}
    assert (info.window_samples, info.face_size) == (16000, 128)
    for split in ("train", "valid", "test"):
        waveforms, faces, ids, names = read_split(out, split)
        red_minus_blue = skin_red_minus_blue(faces)
        # one train face is a near-monochrome shot with a cool cast; all others are warm
        assert np.mean(red_minus_blue > 0) >= 0.95 and red_minus_blue.mean() > 20, \
            f"{split}: the faces are blue, the BGR swap is missing"
        assert sorted(set(ids)) == [0, 1]
        assert all(n.split("/")[1] == info.speaker_names[i] for n, i in zip(names, ids))
    # valid is the top of each speaker's train numbers, and names point at the source files
    _, _, _, train_names = read_split(out, "train")
    _, _, _, valid_names = read_split(out, "valid")
    for speaker in info.speaker_names:
        train_numbers = [int(n.split("/")[2]) for n in train_names if f"/{speaker}/" in n]
        valid_numbers = [int(n.split("/")[2]) for n in valid_names if f"/{speaker}/" in n]
        assert len(valid_numbers) == 4 and min(valid_numbers) > max(train_numbers)
    assert all(n.startswith("train/") for n in valid_names)
    # speech is stored sample for sample
    waveforms, _, _, names = read_split(out, "test")
    split, speaker, number = names[0].split("/")
    original, _ = soundfile.read(source / split / speaker / f"preprocessed_frame_{number}.wav", dtype="int16")
    np.testing.assert_array_equal(waveforms[0], original)
    assert "jaimealtozano" in stdout and "all" in stdout


def test_fixture_no_bgr_swap_keeps_stored_channels(tmp_path, capsys):
    source = need_fixture()
    out = tmp_path / "raw.h5"
    code, _, stderr = run_cli(["wav2pix", source, out, "--no_bgr_swap", "--face_size", "64"], capsys)
    assert code == 0, stderr
    _, faces, _, _ = read_split(out, "test")
    assert faces.shape[1:] == (64, 64, 3)
    assert skin_red_minus_blue(faces).mean() < -20  # still BGR: skin looks blue


def write_wav2pix_pair(folder: Path, number: int, seconds: float = 1.0, face=None):
    """One pair as wav2pix stored it: JPEG bytes in a .png, channels BGR."""
    folder.mkdir(parents=True, exist_ok=True)
    if seconds:
        t = np.arange(int(seconds * RATE)) / RATE
        speech = 0.3 * np.sin(2 * np.pi * (200 + number) * t)
        soundfile.write(folder / f"preprocessed_frame_{number}.wav", speech, RATE, subtype="PCM_16")
    if face is not False:
        if face is None:  # true colour: reddish skin, so stored BGR it reads bluish
            face = np.zeros((90 + number % 7, 90 + number % 7, 3), np.uint8)
            face[..., 0], face[..., 1], face[..., 2] = 200, 140, 90 + number % 5
        Image.fromarray(np.ascontiguousarray(face[..., ::-1])).save(
            folder / f"cropped_face_frame_{number}.png", format="JPEG")


def test_import_reports_lone_files_and_short_speech_and_centre_crops(tmp_path, capsys):
    source = tmp_path / "set"
    for number in range(10, 20):
        write_wav2pix_pair(source / "train" / "zoe", number)
    write_wav2pix_pair(source / "train" / "adam", 1, seconds=1.5)   # longer: centre crop
    write_wav2pix_pair(source / "train" / "adam", 2, seconds=0.5)   # shorter: dropped
    write_wav2pix_pair(source / "train" / "adam", 3, face=False)    # speech alone
    write_wav2pix_pair(source / "train" / "adam", 4, seconds=0)     # face alone
    write_wav2pix_pair(source / "test" / "zoe", 30)
    out = tmp_path / "pairs.h5"
    code, stdout, stderr = run_cli(["wav2pix", source, out, "--face_size", "32"], capsys)
    assert code == 0, stderr
    info = validate_pair_file(out)
    assert info.speaker_names == ["adam", "zoe"]  # sorted, whatever the folder order
    assert {s: i.num_pairs for s, i in info.splits.items()} == {"train": 10, "valid": 1, "test": 1}
    waveforms, faces, ids, names = read_split(out, "train")
    assert names[0] == "train/adam/1" and ids[0] == 0
    t = (np.arange(16000) + 4000) / RATE  # the centre second of 1.5 s
    expected = np.round(0.3 * np.sin(2 * np.pi * 201 * t) * 32767)
    assert np.abs(waveforms[0] - expected).max() <= 2
    assert np.all(skin_red_minus_blue(faces) > 50)
    assert "dropped: speech shorter than window" in stdout
    assert "files without a partner: 2" in stdout
    assert "preprocessed_frame_3.wav" in stdout and "cropped_face_frame_4.png" in stdout


def test_valid_cut_keeps_numbers_sharing_a_face_together(tmp_path):
    folder = tmp_path / "set" / "train" / "zoe"
    shared_face = np.full((64, 64, 3), 120, np.uint8)
    for number in range(10):
        write_wav2pix_pair(folder, number, face=shared_face if number in (7, 8) else None)
    layout = wav2pix.scan_layout(tmp_path / "set")
    pairs = wav2pix.carve_valid(layout.pairs, 0.2)  # would cut between 7 and 8
    assert [p.number for p in pairs if p.split == "valid"] == [7, 8, 9]
    assert [p.number for p in pairs if p.split == "train"] == list(range(7))


# ---------------------------------------------------------------- videos

def speech_of(seconds: float, seed: int) -> np.ndarray:
    """Speech-like sound: a few tones whose loudness changes every 0.1 s."""
    rng = np.random.default_rng(seed)
    t = np.arange(int(seconds * RATE)) / RATE
    tones = sum(np.sin(2 * np.pi * f * t + rng.uniform(0, 6)) for f in rng.uniform(150, 2000, 4))
    envelope = np.repeat(rng.uniform(0.2, 1.0, int(np.ceil(seconds * 10))), RATE // 10)[: len(t)]
    return (0.15 * tones * envelope).astype(np.float32)


def encode_talking_video(path, face_per_second, speech):
    """An mp4 showing face_per_second[k] (or a bare wall for None) during second k."""
    frames = []
    for face in face_per_second:
        canvas = np.full((240, 320, 3), (70, 90, 110), np.uint8)
        if face is not None:
            canvas[40:200, 80:240] = np.asarray(Image.fromarray(face).resize((160, 160)))
        frames += [canvas] * VIDEO_FPS
    return encode_video(path, frames, speech, frames_per_second=VIDEO_FPS)


def check_alignment(out, split, sources: dict):
    """Each stored window matches the source speech centred on its frame's time."""
    waveforms, faces, _, names = read_split(out, split)
    for waveform, name in zip(waveforms, names):
        label, time = name.rsplit("@", 1)
        start = round(float(time.rstrip("s")) * RATE) - RATE // 2
        original = sources[label][start:start + RATE]
        assert np.corrcoef(waveform.astype(np.float64), original)[0, 1] > 0.95, name
        assert 0.9 < waveform.std() / (original * 32768).std() < 1.1, f"{name}: level changed"
    return faces


def test_videos_with_real_faces_are_found_and_aligned(tmp_path, capsys):
    source = need_fixture() / "train" / "jaimealtozano"
    numbers = sorted(int(p.stem.rsplit("_", 1)[1]) for p in source.glob("*.wav"))[:4]
    faces = [np.asarray(Image.open(source / f"cropped_face_frame_{n}.png").convert("RGB"))[..., ::-1]
             for n in numbers]
    speech = [soundfile.read(source / f"preprocessed_frame_{n}.wav", dtype="float32")[0] for n in numbers]
    # 4 s of a face speaking, 2 s of a face in silence, then 1 s of an empty room
    timeline = faces + [faces[0], faces[1], None]
    sound = np.concatenate(speech + [np.zeros(2 * RATE, np.float32), speech_of(1, 0)])
    encode_talking_video(tmp_path / "videos" / "jaime" / "talk.mp4", timeline, sound)
    out = tmp_path / "pairs.h5"
    code, stdout, stderr = run_cli(["videos", tmp_path / "videos", out, "--test_fraction", 0,
                                    "--valid_fraction", 0], capsys)
    assert code == 0, stderr
    kept = check_alignment(out, "train", {"jaime/talk.mp4": sound})
    assert np.all(skin_red_minus_blue(kept) > 0)
    _, _, _, names = read_split(out, "train")
    times = [float(n.rsplit("@", 1)[1].rstrip("s")) for n in names]
    # 0.0 lacks the speech before it, 4.5 to 5.5 hear silence, 6.0 and 6.5 see no face
    assert times == [0.5, 1.0, 1.5, 2.0, 2.5, 3.0, 3.5, 4.0]
    for cause in ("no face", "silent speech", "outside audio"):
        assert f"dropped: {cause}" in stdout


# Drawn frames hold no real face and tones no real voice: tests of splits, manifests and
# broken files on them stand a fixed centre box in for the detector, crop it unaligned
# and switch the voice detector off (the real ones are tested on real faces and speech).
DRAWN = ["--no_align", "--vad", "off"]


@pytest.fixture
def centre_box_faces(monkeypatch):
    """Stand a fixed centre box in for the detector, which drawn frames do not trigger."""
    def centre_box(self, frame):
        height, width = frame.shape[:2]
        if frame.std() < 1.0:
            return []  # a bare wall: no face
        return [(width // 2 - 80, height // 2 - 80, 160, 160)]
    monkeypatch.setattr(faces_module.FaceCropper, "boxes", centre_box)


def drawn_face(seed: int) -> np.ndarray:
    rng = np.random.default_rng(seed)
    return rng.integers(0, 255, (16, 16, 3), dtype=np.uint8).repeat(10, 0).repeat(10, 1)


def make_video_folder(root: Path) -> dict:
    """Two speakers, five short videos, one broken file; returns label -> speech."""
    sounds = {}
    for index, label in enumerate(["ann/a1.mp4", "ann/a2.mkv", "ann/a3.mov", "ben/b1.mp4", "ben/b2.mp4"]):
        sounds[label] = speech_of(3, seed=index)
        # ann's videos are stereo: what is stored is the mean of the two channels
        track = np.stack([sounds[label]] * 2) if label.startswith("ann") else sounds[label]
        encode_talking_video(root / label, [drawn_face(index)] * 3, track)
    (root / "ben" / "broken.mp4").write_bytes(np.random.default_rng(0).bytes(5000))
    (root / "ben" / "notes.txt").write_text("not a video")
    return sounds


def test_videos_folder_skips_broken_file_and_splits_by_video(tmp_path, capsys, centre_box_faces):
    sounds = make_video_folder(tmp_path / "videos")
    out = tmp_path / "pairs.h5"
    code, stdout, stderr = run_cli(["videos", tmp_path / "videos", out, "--test_fraction", 0.34,
                                    "--valid_fraction", 0, "--face_size", 64, *DRAWN], capsys)
    assert code == 0, stderr
    info = validate_pair_file(out)
    assert info.speaker_names == ["ann", "ben"] and info.face_size == 64
    assert info.source == "videos"      # what --recipe auto trains with the real-video recipe
    assert "broken files skipped: 1" in stdout and "ben/broken.mp4" in stdout
    labels = {}
    for split in info.splits:
        check_alignment(out, split, sounds)
        labels[split] = {n.rsplit("@", 1)[0] for n in read_split(out, split)[3]}
    assert labels["train"].isdisjoint(labels["test"])
    assert len(labels["train"] | labels["test"]) == 5  # every readable video was used
    # both speakers are seen in training and tested on a video never trained on
    assert {label.split("/")[0] for label in labels["test"]} == {"ann", "ben"}
    assert {label.split("/")[0] for label in labels["train"]} == {"ann", "ben"}


def test_a_video_pair_file_trains_with_the_video_recipe(tmp_path, capsys, centre_box_faces,
                                                        monkeypatch):
    import runtime
    make_video_folder(tmp_path / "videos")
    out = tmp_path / "pairs.h5"
    code, stdout, stderr = run_cli(["videos", tmp_path / "videos", out, "--face_size", 64,
                                    *DRAWN], capsys)
    assert code == 0, stderr
    assert f"train on it with: python runtime.py --dataset {out}" in stdout
    train_pairs = validate_pair_file(out).splits["train"].num_pairs
    monkeypatch.chdir(tmp_path)
    assert runtime.main(["--dataset", str(out), "--save_path", "video", "--max_steps", "1",
                         "--batch_size", "4", "--num_workers", "0", "--no_visdom",
                         "--precision", "fp32"]) == 0
    printed = capsys.readouterr().out
    assert "recipe video (the pair file was made from videos): --lr_G 0.0002" in printed
    assert f"--mouth_open_coef left at 0: {train_pairs} train pairs" in printed
    recorded = json.loads((tmp_path / "checkpoints/video/options.json").read_text())
    assert (recorded["recipe"], recorded["loss"], recorded["speech_encoder"],
            recorded["speech_augment"], recorded["ema"], recorded["mouth_coef"],
            recorded["batch_size"]) == \
        ("video", "hinge", "filterbank_centre", "shift,noise,gain", True, 20, 4)


def test_manifest_reports_missing_video_and_keeps_going(tmp_path, capsys, centre_box_faces):
    sounds = make_video_folder(tmp_path / "videos")
    manifest = tmp_path / "list.csv"
    with open(manifest, "w", newline="") as handle:
        writer = csv.writer(handle)
        writer.writerow(["path", "speaker"])
        writer.writerow(["videos/ann/a1.mp4", "ann"])
        writer.writerow([str(tmp_path / "videos" / "ben" / "b1.mp4"), "ben"])
        writer.writerow(["videos/gone.mp4", "ben"])
    out = tmp_path / "pairs.h5"
    code, stdout, stderr = run_cli(["videos", manifest, out, "--test_fraction", 0,
                                    "--frames_per_second", 4, *DRAWN], capsys)
    assert code == 0, stderr
    info = validate_pair_file(out)
    assert set(info.splits) == {"train"}  # one video per speaker: nothing to hold out
    assert "videos/gone.mp4" in stdout and "broken files skipped: 1" in stdout
    check_alignment(out, "train", {"videos/ann/a1.mp4": sounds["ann/a1.mp4"],
                                   str(tmp_path / "videos" / "ben" / "b1.mp4"): sounds["ben/b1.mp4"]})


def test_split_by_speaker_holds_out_whole_speakers():
    sources = [videos.VideoSource(Path(f"{s}/{i}.mp4"), s, f"{s}/{i}.mp4")
               for s in "abcdefghij" for i in range(3)]
    splits = assign_splits(sources, "speaker", 0.2, 0.1, seed=3)
    assert splits == assign_splits(sources, "speaker", 0.2, 0.1, seed=3)
    speaker_splits = {}
    for source in sources:
        speaker_splits.setdefault(source.speaker, set()).add(splits[source.label])
    assert all(len(s) == 1 for s in speaker_splits.values())
    held = [next(iter(s)) for s in speaker_splits.values()]
    assert (held.count("test"), held.count("valid"), held.count("train")) == (2, 1, 7)
    by_video = assign_splits(sources, "video", 0.34, 0.0, seed=3)
    for speaker in "abcdefghij":
        mine = [by_video[f"{speaker}/{i}.mp4"] for i in range(3)]
        assert sorted(mine) == ["test", "train", "train"]


def test_failed_run_keeps_the_old_file_and_leaves_no_partial(tmp_path, capsys):
    (tmp_path / "videos" / "ann").mkdir(parents=True)
    (tmp_path / "videos" / "ann" / "broken.mp4").write_bytes(b"\x00not a video" * 100)
    out = tmp_path / "pairs.h5"
    out.write_bytes(b"an older pair file")
    code, stdout, stderr = run_cli(["videos", tmp_path / "videos", out, "--overwrite"], capsys)
    assert code == 2 and "none of the 1 videos could be read" in stderr
    assert "ann/broken.mp4" in stdout
    assert out.read_bytes() == b"an older pair file"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["pairs.h5", "videos"]


# ---------------------------------------------------------------- bad input

@pytest.mark.parametrize("case", ["missing source", "empty folder", "option out of range",
                                  "out is a folder", "out exists", "out under a file",
                                  "fractions too large", "not a number"])
def test_bad_input_is_one_line_and_exit_2(tmp_path, capsys, case):
    empty = tmp_path / "empty"
    empty.mkdir()
    (tmp_path / "taken.h5").write_bytes(b"x")
    (tmp_path / "a_file").write_bytes(b"x")
    args = {
        "missing source": ["wav2pix", tmp_path / "nope", tmp_path / "o.h5"],
        "empty folder": ["videos", empty, tmp_path / "o.h5"],
        "option out of range": ["videos", empty, tmp_path / "o.h5", "--frames_per_second", "0"],
        "out is a folder": ["wav2pix", REPO / "tests", tmp_path],
        "out exists": ["videos", REPO / "tests", tmp_path / "taken.h5"],
        "out under a file": ["videos", REPO / "tests", tmp_path / "a_file" / "o.h5"],
        "fractions too large": ["videos", empty, tmp_path / "o.h5", "--test_fraction", "0.5",
                                "--valid_fraction", "0.5"],
        "not a number": ["wav2pix", empty, tmp_path / "o.h5", "--face_size", "big"],
    }[case]
    if case in ("out is a folder", "out exists", "out under a file"):
        args[1] = make_minimal_source(tmp_path, args[0])
    code, stdout, stderr = run_cli(args, capsys)
    assert code == 2
    assert stderr.startswith("error: ") and stderr.count("\n") == 1, stderr
    assert not (tmp_path / "o.h5").exists()


def make_minimal_source(tmp_path: Path, command: str) -> Path:
    """A valid input, so that only OUT is wrong."""
    if command == "wav2pix":
        write_wav2pix_pair(tmp_path / "src" / "train" / "zoe", 1)
    else:
        (tmp_path / "src" / "zoe").mkdir(parents=True)
        (tmp_path / "src" / "zoe" / "v.mp4").write_bytes(b"x")
    return tmp_path / "src"


@pytest.fixture
def unwritable_folder(tmp_path):
    """A folder no file can be made in: a locked one, or for root (who ignores modes) /sys."""
    if os.geteuid() == 0:
        sysfs = Path("/sys")
        if not sysfs.is_dir():
            pytest.skip("running as root without /sys: no unwritable folder to try")
        yield sysfs
        return
    locked = tmp_path / "locked"
    locked.mkdir()
    locked.chmod(0o555)
    yield locked
    locked.chmod(0o755)


def test_unwritable_out_folder_is_one_line(tmp_path, capsys, unwritable_folder):
    source = make_minimal_source(tmp_path, "wav2pix")
    code, _, stderr = run_cli(["wav2pix", source, unwritable_folder / "o.h5"], capsys)
    assert code == 2 and "cannot write there" in stderr and stderr.count("\n") == 1, stderr


def test_command_line_prints_no_traceback():
    done = subprocess.run([sys.executable, "-m", "data.prepare", "wav2pix", "/no/such/folder", "o.h5"],
                          cwd=REPO, capture_output=True, text=True, timeout=60)
    assert done.returncode == 2
    assert done.stderr.startswith("error: /no/such/folder") and "Traceback" not in done.stderr
    helped = subprocess.run([sys.executable, "-m", "data.prepare", "videos", "--help"],
                            cwd=REPO, capture_output=True, text=True, timeout=60)
    assert helped.returncode == 0 and "--split_by" in helped.stdout and "manifest" in helped.stdout
