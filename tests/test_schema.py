import h5py
import numpy as np
import pytest

from data.dataset import SpeechFaceDataset
from data.schema import PairFileError, PairWriter, validate_pair_file
from tests.conftest import make_pairs


def test_pair_file_round_trips(tiny_pairs):
    info = validate_pair_file(tiny_pairs)
    assert info.speaker_names == ["anna", "bert", "carl"]
    assert info.sample_rate == 16000
    assert {s: i.num_pairs for s, i in info.splits.items()} == {"train": 12, "valid": 6, "test": 3}
    assert info.window_samples == 8000 and info.face_size == 40
    with h5py.File(tiny_pairs) as f:
        waveforms, faces, ids = make_pairs(np.random.default_rng(0), 12, 8000, 40, 3)
        np.testing.assert_array_equal(f["train/waveforms"][()], waveforms)
        np.testing.assert_array_equal(f["train/faces"][()], faces)
        np.testing.assert_array_equal(f["train/speaker_ids"][()], ids)


def test_streaming_writer_appends_and_leaves_no_file_on_error(tmp_path):
    rng = np.random.default_rng(1)
    with PairWriter(tmp_path / "ok.h5", ["a", "b"], 4000, 16) as writer:
        for _ in range(3):
            writer.append("train", *make_pairs(rng, 5, 4000, 16, 2))
    assert validate_pair_file(tmp_path / "ok.h5").splits["train"].num_pairs == 15
    with pytest.raises(RuntimeError):
        with PairWriter(tmp_path / "broken.h5", ["a"], 4000, 16) as writer:
            writer.append("train", *make_pairs(rng, 2, 4000, 16, 1))
            raise RuntimeError("crash mid-write")
    assert not (tmp_path / "broken.h5").exists()
    assert not list(tmp_path.glob("*.partial"))


def _corrupt(path, action):
    with h5py.File(path, "a") as f:
        action(f)
    return path



def replace(group, name: str, data) -> None:
    """Put `data` in place of the dataset `name` of `group`."""
    del group[name]
    group.create_dataset(name, data=data)


MALFORMED = {
    "no train split": lambda f: f.__delitem__("train"),
    "a missing key": lambda f: f["train"].__delitem__("faces"),
    "wrong waveform dtype": lambda f: replace(f["train"], "waveforms", np.zeros((12, 8000), np.float32)),
    "faces not square": lambda f: replace(f["train"], "faces", np.zeros((12, 40, 30, 3), np.uint8)),
    "counts disagree": lambda f: (f["train"].__delitem__("speaker_ids"),
                                  f["train"].create_dataset("speaker_ids", data=np.zeros(11, np.int64))),
    "speaker out of range": lambda f: f["train/speaker_ids"].__setitem__(0, 7),
    "negative speaker": lambda f: f["train/speaker_ids"].__setitem__(0, -1),
    "sample rate 44100": lambda f: f.attrs.__setitem__("sample_rate", 44100),
    "another format": lambda f: f.attrs.__setitem__("format", "something-else"),
    "future version": lambda f: f.attrs.__setitem__("version", 99),
    "no speaker names": lambda f: f.attrs.__delitem__("speaker_names"),
    "silent speech": lambda f: f["train/waveforms"].__setitem__(slice(None), 0),
    "empty split": lambda f: (f.__delitem__("test"),
                              f.create_group("test").create_dataset("waveforms",
                                                                    data=np.zeros((0, 8000), np.int16)),
                              f["test"].create_dataset("faces", data=np.zeros((0, 40, 40, 3), np.uint8)),
                              f["test"].create_dataset("speaker_ids", data=np.zeros(0, np.int64))),
}


@pytest.mark.parametrize("case", sorted(MALFORMED))
def test_malformed_files_are_rejected_with_one_line(tiny_pairs, case):
    _corrupt(tiny_pairs, MALFORMED[case])
    with pytest.raises(PairFileError) as raised:
        validate_pair_file(tiny_pairs)
    assert "\n" not in str(raised.value)
    assert str(tiny_pairs) in str(raised.value)


def test_missing_and_non_hdf5_files_are_rejected(tmp_path):
    with pytest.raises(PairFileError, match="no such file"):
        validate_pair_file(tmp_path / "absent.h5")
    (tmp_path / "text.h5").write_text("not hdf5")
    with pytest.raises(PairFileError, match="not a readable HDF5"):
        validate_pair_file(tmp_path / "text.h5")
    with pytest.raises(PairFileError, match="folder"):
        validate_pair_file(tmp_path)


def test_dataset_crops_resizes_and_draws_wrong_faces(tiny_pairs):
    info = validate_pair_file(tiny_pairs)
    train = SpeechFaceDataset(info, "train", 4800, 64, train=True)
    waveform, face, speaker, wrong = train[4]
    assert waveform.shape == (1, 4800) and face.shape == (3, 64, 64) and wrong.shape == (3, 64, 64)
    assert face.min() >= -1 and face.max() <= 1
    assert abs(waveform).max() <= 2.0          # peak-normalised, then pre-emphasised
    assert all(train.speaker_ids[train.wrong_row(4)] != speaker for _ in range(20))
    starts = {train._crop_start() for _ in range(20)}
    assert len(starts) > 1                      # random crops in training
    held_out = SpeechFaceDataset(info, "valid", 4800, 64, train=False)
    assert held_out._crop_start() == 1600   # the centre at evaluation
    assert held_out._arrays is not None         # a small file is read into memory once


def test_dataset_reads_lazily_from_hdf5_when_not_in_memory(tiny_pairs):
    info = validate_pair_file(tiny_pairs)
    streamed = SpeechFaceDataset(info, "train", 4800, 40, train=False, in_memory=False)
    cached = SpeechFaceDataset(info, "train", 4800, 40, train=False, in_memory=True)
    assert streamed._file is None
    assert all(a.equal(b) for a, b in zip(streamed[3][:3], cached[3][:3]))


def test_windows_shorter_than_the_model_input_are_refused(tiny_pairs):
    info = validate_pair_file(tiny_pairs)
    with pytest.raises(PairFileError, match="lower --audio_seconds"):
        SpeechFaceDataset(info, "train", 16000, 64, train=True)
