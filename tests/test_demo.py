"""The embedded demo data set: deterministic, well formed, and voices that determine faces."""
import numpy as np
import pytest

import data.demo as demo
import data.demo_faces as demo_faces
from data.demo import DEMO_SPEAKERS, demo_dataset_path, demo_speakers, synthesize_demo
from data.schema import SAMPLE_RATE, validate_pair_file

PAIRS = 40  # per speaker: enough for statistics, small enough for a fast test


@pytest.fixture(scope="module")
def small_demo():
    return synthesize_demo(seed=0, pairs_per_speaker=PAIRS)


def _all_pairs(splits):
    waveforms, faces, ids = (np.concatenate(arrays) for arrays in zip(*splits.values()))
    return waveforms, faces, ids


def _median_f0(waveforms: np.ndarray) -> float:
    """Median autocorrelation pitch over the loud 64 ms frames of some windows."""
    frames = waveforms.astype(np.float64).reshape(-1, 1024)
    energy = np.sqrt(np.mean(frames ** 2, axis=1))
    frames = frames[energy > np.percentile(energy, 60)]
    frames -= frames.mean(axis=1, keepdims=True)
    spectrum = np.fft.rfft(frames, n=2048, axis=1)
    autocorrelation = np.fft.irfft(np.abs(spectrum) ** 2, axis=1)
    shortest, longest = SAMPLE_RATE // 400, SAMPLE_RATE // 60
    lag = shortest + np.argmax(autocorrelation[:, shortest:longest], axis=1)
    return float(np.median(SAMPLE_RATE / lag))


def test_same_seed_gives_identical_arrays_and_another_seed_does_not():
    first, names = synthesize_demo(seed=7, num_speakers=3, pairs_per_speaker=5)
    again, names_again = synthesize_demo(seed=7, num_speakers=3, pairs_per_speaker=5)
    other, _ = synthesize_demo(seed=8, num_speakers=3, pairs_per_speaker=5)
    assert names == names_again
    for split in first:
        for array, same, different in zip(first[split], again[split], other[split]):
            assert array.tobytes() == same.tobytes()
        assert first[split][0].tobytes() != other[split][0].tobytes()   # waveforms
        assert first[split][1].tobytes() != other[split][1].tobytes()   # faces


def test_shapes_dtypes_and_splits(small_demo):
    splits, names = small_demo
    assert len(names) == DEMO_SPEAKERS == 8
    assert names == sorted(names) and len(set(names)) == len(names)
    assert set(splits) == {"train", "valid", "test"}
    for split, expected in (("train", 32), ("valid", 4), ("test", 4)):
        waveforms, faces, ids = splits[split]
        assert waveforms.dtype == np.int16 and waveforms.shape == (expected * 8, 2 * SAMPLE_RATE)
        assert faces.dtype == np.uint8 and faces.shape == (expected * 8, 64, 64, 3)
        assert ids.dtype == np.int64
        assert np.array_equal(np.bincount(ids, minlength=8), np.full(8, expected))


def test_options_change_face_size_and_window():
    splits, names = synthesize_demo(num_speakers=2, pairs_per_speaker=3, face_size=128,
                                    window_seconds=1.0)
    waveforms, faces, _ = splits["train"]
    assert len(names) == 2
    assert waveforms.shape[1] == SAMPLE_RATE and faces.shape[1:] == (128, 128, 3)
    with pytest.raises(ValueError, match="pairs_per_speaker"):
        synthesize_demo(pairs_per_speaker=2)


def test_demo_dataset_path_writes_a_valid_file_once(tmp_path, monkeypatch):
    calls = []

    def tiny_demo(seed):  # the real synthesis, small, so the test stays fast
        calls.append(seed)
        return synthesize_demo(seed, num_speakers=3, pairs_per_speaker=4)

    monkeypatch.setattr(demo, "synthesize_demo", tiny_demo)
    path = demo_dataset_path(seed=3, cache_dir=tmp_path)
    assert path.parent == tmp_path and "seed3" in path.name and f"v{demo.DEMO_VERSION}" in path.name
    info = validate_pair_file(path)
    assert info.speaker_names == [speaker.name for speaker in demo_speakers(3)]
    assert info.window_samples == 2 * SAMPLE_RATE and info.face_size == 64
    assert set(info.splits) == {"train", "valid", "test"}
    modified = path.stat().st_mtime_ns
    assert demo_dataset_path(seed=3, cache_dir=tmp_path) == path
    assert calls == [3] and path.stat().st_mtime_ns == modified
    assert [p.name for p in tmp_path.iterdir()] == [path.name]  # no .partial left behind


def test_every_speaker_has_a_face_of_its_own(small_demo):
    _, faces, ids = _all_pairs(small_demo[0])
    faces = faces.astype(np.float32)
    means = np.stack([faces[ids == s].mean(axis=0) for s in range(8)])
    distance = np.sqrt(((means[:, None] - means[None]) ** 2).mean(axis=(2, 3, 4)))
    assert distance[~np.eye(8, dtype=bool)].min() > 20  # grey levels RMS; measured ~26
    # Nearest mean face names the speaker of every frame: the face carries the identity.
    to_means = ((faces[:, None] - means[None]) ** 2).mean(axis=(2, 3, 4))
    assert np.mean(np.argmin(to_means, axis=1) == ids) == 1.0


def test_every_speaker_has_a_voice_of_its_own(small_demo):
    waveforms, _, ids = _all_pairs(small_demo[0])
    pitches = [_median_f0(waveforms[ids == s][:8]) for s in range(8)]
    targets = [speaker.voice.f0_hz for speaker in demo_speakers()]
    assert np.allclose(pitches, targets, rtol=0.06), (pitches, targets)
    assert np.all(np.diff(pitches) / pitches[:-1] > 0.1)  # neighbours ~3 semitones apart


def test_deeper_voices_get_beards_and_wider_faces():
    speakers = demo_speakers()
    bearded = [s.voice.f0_hz for s in speakers if s.look.beard != "none"]
    shaven = [s.voice.f0_hz for s in speakers if s.look.beard == "none"]
    assert bearded and shaven and max(bearded) < min(shaven)
    widths = [s.look.face_width for s in speakers]
    assert widths == sorted(widths, reverse=True)


def test_mouth_opens_with_loudness(small_demo):
    waveforms, faces, ids = _all_pairs(small_demo[0])
    centre = waveforms.shape[1] // 2
    middle = waveforms[:, centre - 4000:centre + 4000].astype(np.float64)  # the centre 0.5 s
    loudness = np.sqrt(np.mean(middle ** 2, axis=1))
    row = int((demo_faces.MOUTH_Y * demo_faces.FACE_ZOOM + 1) / 2 * 64)  # the mouth in 64x64 frames
    mouth = faces[:, row - 5:row + 6, 26:39].astype(np.float64)  # with room for the jitter
    for s in range(8):
        own = ids == s
        closed = mouth[own][np.argsort(loudness[own])[:5]].mean(axis=0)
        opening = np.abs(mouth[own] - closed).mean(axis=(1, 2, 3))
        # measured 0.77-0.91 per speaker
        assert np.corrcoef(loudness[own], opening)[0, 1] > 0.5, demo_speakers()[s].name


def test_speech_is_audible_and_not_clipped(small_demo):
    waveforms, _, _ = _all_pairs(small_demo[0])
    peaks = np.abs(waveforms.astype(np.int32)).max(axis=1) / 32767
    rms = np.sqrt(np.mean(waveforms.astype(np.float64) ** 2, axis=1)) / 32767
    assert peaks.min() > 0.1 and peaks.max() <= 0.9 and np.median(peaks) > 0.3
    assert rms.min() > 0.01
    assert not np.any(np.abs(waveforms.astype(np.int32)) >= 32767)


def test_every_frame_differs(small_demo):
    _, faces, ids = _all_pairs(small_demo[0])
    for s in range(8):
        own = faces[ids == s].reshape(np.sum(ids == s), -1)
        assert len(np.unique(own, axis=0)) == len(own)
