"""The unseen-speaker demo file (`data.prepare demo`), per-pair attribute labels in the pair
file, and the attributes metric: scoring speakers the model never heard."""
import json
from pathlib import Path

import h5py
import numpy as np
import pytest
import torch

import runtime
from data import prepare
from data.attributes import read_attributes
from data.dataset import spread_over_speakers
from data.demo import demo_speakers, synthesize_demo
from data.schema import PairFileError, validate_pair_file
from data.unseen_demo import DEMO_ATTRIBUTES, speaker_attributes
from models.metrics.attributes import cache_path, labelled_metrics
from models.metrics.identity_classifier import file_sha256
from models.metrics.suite import format_table
from models.metrics.evaluation import metric_suite
from tests.media import read_speaker_groups

SMALL = ["--pairs_per_speaker", "8", "--face_size", "32", "--window_seconds", "0.5"]
FAST = ["--audio_seconds", "0.3", "--batch_size", "4", "--num_workers", "0"]


def make_demo(path, *args) -> Path:
    assert prepare.main(["demo", str(path), *args]) == 0
    return path


@pytest.fixture(scope="session")
def held_out_file(tmp_path_factory):
    """6 speakers, 2 held out: speaker 0 (the deepest voice, extrapolated), 1 interpolated;
    valid and test share them (--valid_speakers 0, the layout of files made before valid
    speakers existed), so valid holds both groups."""
    return make_demo(tmp_path_factory.mktemp("unseen") / "unseen.h5", "--speakers", "6",
                     "--held_out", "2", "--extrapolated", "1", "--valid_speakers", "0", *SMALL)


@pytest.fixture(scope="session")
def seen_file(tmp_path_factory):
    """8 speakers, none held out: the standard demo's splits, labelled."""
    return make_demo(tmp_path_factory.mktemp("seen") / "seen.h5", "--speakers", "8",
                     "--held_out", "0", "--pairs_per_speaker", "20", "--face_size", "32",
                     "--window_seconds", "0.5")


# ---------------------------------------------------------------- the file

def test_held_out_speakers_are_never_trained_on_and_round_trip(held_out_file):
    info = validate_pair_file(held_out_file)
    speakers = demo_speakers(6)
    assert info.speaker_names == [s.name for s in speakers]
    assert {s: i.num_pairs for s, i in info.splits.items()} == {"train": 32, "valid": 8, "test": 8}
    with h5py.File(held_out_file) as f:
        ids = {split: set(f[split]["speaker_ids"][()].tolist()) for split in info.splits}
    assert ids["valid"] == ids["test"] and len(ids["test"]) == 2
    assert not ids["train"] & ids["test"]
    groups = read_speaker_groups(held_out_file)
    assert groups == info.speaker_groups
    held = {i: groups[i] for i in ids["test"]}
    assert sorted(held.values()) == ["extrap", "interp"]
    assert all(groups[i] == "train" for i in ids["train"])
    # voice depth follows the index: extrapolated beyond the train range, interpolated inside
    low, high = min(ids["train"]), max(ids["train"])
    for index, group in held.items():
        assert (low < index < high) == (group == "interp")
    spec, labels = read_attributes(held_out_file, "test")
    assert spec == info.attributes == DEMO_ATTRIBUTES
    with h5py.File(held_out_file) as f:
        test_ids = f["test"]["speaker_ids"][()]
    np.testing.assert_array_equal(labels, np.stack([speaker_attributes(speakers[i])
                                                    for i in test_ids]))


def test_valid_speakers_are_neither_trained_on_nor_tested(tmp_path, capsys):
    """By default K // 2 more speakers are held out for valid alone, all their pairs: a
    checkpoint chosen on valid has never heard a test voice."""
    path = make_demo(tmp_path / "unseen.h5", "--speakers", "10", "--held_out", "4", *SMALL)
    info = validate_pair_file(path)
    with h5py.File(path) as f:
        ids = {split: f[split]["speaker_ids"][()] for split in info.splits}
    speakers = {split: set(values.tolist()) for split, values in ids.items()}
    assert [len(speakers[s]) for s in ("train", "valid", "test")] == [4, 2, 4]
    assert not speakers["valid"] & speakers["test"]
    assert not speakers["train"] & (speakers["valid"] | speakers["test"])
    assert {s: i.num_pairs for s, i in info.splits.items()} == {"train": 32, "valid": 16,
                                                                "test": 32}
    low, high = min(speakers["train"]), max(speakers["train"])
    assert all(low < i < high and info.speaker_groups[i] == "interp" for i in speakers["valid"])
    assert sorted(info.speaker_groups[i] for i in speakers["test"]).count("extrap") == 1
    printed = capsys.readouterr().out
    assert f"valid (interp): speakers {', '.join(map(str, sorted(speakers['valid'])))}" in printed


def test_without_held_out_speakers_the_pairs_are_the_standard_demos(tmp_path):
    path = make_demo(tmp_path / "seen.h5", "--speakers", "3", "--held_out", "0", "--seed", "4",
                     *SMALL)
    splits, names = synthesize_demo(4, 3, 8, 32, 0.5)
    assert validate_pair_file(path).speaker_names == names
    assert read_speaker_groups(path) is None
    with h5py.File(path) as f:
        for split, (waveforms, faces, ids) in splits.items():
            np.testing.assert_array_equal(f[split]["waveforms"][()], waveforms)
            np.testing.assert_array_equal(f[split]["faces"][()], faces)
            np.testing.assert_array_equal(f[split]["speaker_ids"][()], ids)
            assert f[split]["attributes"].shape == (len(ids), len(DEMO_ATTRIBUTES.names))


@pytest.mark.parametrize("args, expected", [
    (["--speakers", "5", "--held_out", "4"], "--held_out is 4"),
    (["--speakers", "6", "--held_out", "2", "--extrapolated", "3"], "--extrapolated is 3"),
    (["--speakers", "1"], "outside [2, 1000]"),
    (["--speakers", "6", "--held_out", "2", "--valid_speakers", "3"], "--valid_speakers is 3"),
    (["--speakers", "6", "--held_out", "0", "--valid_speakers", "1"], "--held_out 0"),
])
def test_impossible_layouts_are_one_line(tmp_path, capsys, args, expected):
    assert prepare.main(["demo", str(tmp_path / "x.h5"), *args, *SMALL]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and expected in err, err
    assert not (tmp_path / "x.h5").exists()


def _labels(f, split="train"):
    return f[split]["attributes"]


def _replace_labels(f, values, split="train", **attrs):
    old = dict(_labels(f, split).attrs)
    del f[split]["attributes"]
    dataset = f[split].create_dataset("attributes", data=values)
    for key, value in {**old, **attrs}.items():
        dataset.attrs[key] = value


BAD_LABELS = {
    "a class code 1.5": (lambda f: _labels(f).__setitem__((0, 0), 1.5), "codes 0, 1, 2"),
    "an infinite number": (lambda f: _labels(f).__setitem__((0, 1), np.inf), "infinite"),
    "a code past the names": (lambda f: _labels(f).__setitem__((0, 6), 2), "names 2 classes"),
    "an unknown kind": (lambda f: _labels(f).attrs.__setitem__(
        "kinds", ["class", "ordinal"] + ["number"] * 5), "'ordinal'"),
    "no names": (lambda f: _labels(f).attrs.__delitem__("names"), "'names'"),
    "a name with spaces": (lambda f: _labels(f).attrs.__setitem__(
        "names", ["Beard Class"] + list(DEMO_ATTRIBUTES.names[1:])), "lower-case"),
    "one row short": (lambda f: _replace_labels(f, _labels(f)[1:]), "one row of labels per pair"),
    "integer labels": (lambda f: _replace_labels(f, _labels(f)[()].astype(np.int64)), "float32"),
    "a split without": (lambda f: f["test"].__delitem__("attributes"), "splits disagree"),
    "groups of another count": (lambda f: f.attrs.__setitem__("speaker_groups", ["train"] * 3),
                                "one string per speaker"),
}


@pytest.mark.parametrize("case", sorted(BAD_LABELS))
def test_bad_attribute_labels_are_refused_in_one_line(held_out_file, tmp_path, case):
    path = tmp_path / "bad.h5"
    path.write_bytes(held_out_file.read_bytes())
    corrupt, expected = BAD_LABELS[case]
    with h5py.File(path, "a") as f:
        corrupt(f)
    with pytest.raises(PairFileError) as raised:
        validate_pair_file(path)
    message = str(raised.value)
    assert "\n" not in message and str(path) in message and expected in message, message


def test_unknown_labels_may_be_nan(held_out_file, tmp_path):
    path = tmp_path / "nan.h5"
    path.write_bytes(held_out_file.read_bytes())
    with h5py.File(path, "a") as f:
        f["train"]["attributes"][0, :] = np.nan
    assert validate_pair_file(path).attributes == DEMO_ATTRIBUTES


# ---------------------------------------------------------------- the metric

def test_attribute_agreement_is_at_the_ceiling_for_real_faces_and_blind_for_one_face(seen_file):
    info = validate_pair_file(seen_file)
    with h5py.File(seen_file) as f:
        faces, ids = f["test"]["faces"][()], f["test"]["speaker_ids"][()]
    rows = spread_over_speakers(ids, len(ids))
    suite = metric_suite(["attributes"], info, torch.device("cpu"), None, "test", rows)
    assert cache_path(seen_file, file_sha256(seen_file)).is_file()
    real = suite.analyse(faces[rows])
    truth = suite.score(real, real, ids[rows])
    print(format_table(truth))
    for name in DEMO_ATTRIBUTES.names:
        assert truth[f"attributes_{name}"] == truth[f"attributes_{name}_real"]
    # the predictor reads what the voice decides, well above its voice-blind baseline
    assert truth["attributes_beard"] >= 0.85 > truth["attributes_beard_blind"]
    for name in ("face_width", "face_height", "jaw", "eye_size", "brow_thickness"):
        assert truth[f"attributes_{name}"] >= 0.9, name
    # a voice-blind model: the same face for every voice
    blind = suite.score(suite.analyse(np.repeat(faces[rows][:1], len(rows), 0)), real, ids[rows])
    print(format_table(blind))
    for name, kind in zip(DEMO_ATTRIBUTES.names, DEMO_ATTRIBUTES.kinds):
        if kind == "number":
            assert blind[f"attributes_{name}"] == 0.0 == blind[f"attributes_{name}_blind"]
        else:
            labels = suite.attributes.labels[:, DEMO_ATTRIBUTES.names.index(name)]
            top_share = np.bincount(labels.astype(int)).max() / len(labels)
            assert blind[f"attributes_{name}"] <= top_share, name
    assert blind["attributes_beard"] < truth["attributes_beard"] - 0.3


def test_matching_in_the_attribute_predictors_space_tells_voices_apart_by_their_traits(seen_file):
    """1:2 matching where the face embedding is the attribute predictor's hidden layer, and
    where it is the predicted labels themselves: the real faces match their own speaker's
    mean by the traits the voice decides; one face for every voice is at chance."""
    info = validate_pair_file(seen_file)
    with h5py.File(seen_file) as f:
        faces, ids = f["test"]["faces"][()], f["test"]["speaker_ids"][()]
    rows = spread_over_speakers(ids, len(ids))
    suite = metric_suite(["matching", "attributes"], info, torch.device("cpu"), None, "test", rows)
    real = suite.analyse(faces[rows])
    assert real.extra["attributes"].features.shape == (len(rows), 128)
    truth = suite.score(real, real, ids[rows])
    assert truth["matching_1v2_attributes"] >= 0.9 and truth["recall_at_1_attributes"] >= 0.5
    assert truth["matching_1v2_labels"] >= 0.9 and truth["recall_at_1_labels"] >= 0.5
    same = suite.score(suite.analyse(np.repeat(faces[rows][:1], len(rows), 0)), real, ids[rows])
    assert same["matching_1v2_attributes"] == 0.5 == same["matching_1v2_labels"]
    table = format_table(truth)
    assert any(line.startswith("matching_1v2_attributes") and line.rstrip().endswith("0.5000")
               for line in table.splitlines())


def test_attributes_during_training_and_evaluate_report_each_group(held_out_file, tmp_path,
                                                                   monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    assert runtime.main(["--dataset", str(held_out_file), "--save_path", "unseen", "--epochs", "1",
                         "--max_steps", "2", "--eval_every", "1", "--metrics", "attributes,l1",
                         *FAST]) == 0
    run = tmp_path / "checkpoints" / "unseen"
    records = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    logged = [r for r in records if "eval_attributes_beard" in r]
    assert len(logged) == 1 and {"eval_attributes_beard_interp", "eval_attributes_face_width_extrap",
                                 "eval_attributes_beard_real", "eval_l1"} <= logged[0].keys()
    assert "attributes_beard_interp" in (run / "index.html").read_text()
    assert runtime.main(["--evaluate", "--save_path", "unseen", "--dataset", str(held_out_file),
                         "--metrics", "attributes"]) == 0
    report = json.loads((run / "metrics.json").read_text())
    assert report["mode"] == "unseen_speakers" and report["pairs"] == 8
    metrics = report["metrics"]
    for group in ("", "_interp", "_extrap"):
        for name in DEMO_ATTRIBUTES.names:
            assert {f"attributes_{name}{group}", f"attributes_{name}{group}_real",
                    f"attributes_{name}{group}_blind"} <= metrics.keys()
    # one speaker per group: accuracy is defined, correlation is not
    assert np.isnan(metrics["attributes_face_width_interp"])
    assert 0 <= metrics["attributes_beard_interp"] <= 1
    assert "attributes_beard_interp" in capsys.readouterr().out


def test_attributes_on_a_file_without_labels(tiny_pairs_once, tmp_path, monkeypatch, capsys):
    from tests.test_metrics import untrained_checkpoint
    monkeypatch.chdir(tmp_path)
    checkpoint = untrained_checkpoint(tmp_path / "untrained.pt", 3)
    assert runtime.main(["--evaluate", "--pre_trained_gen", str(checkpoint), "--dataset",
                         str(tiny_pairs_once), "--metrics", "l1,attributes"]) == 2
    err = capsys.readouterr().err.strip()
    assert "\n" not in err and "holds no attribute labels" in err, err
    # --metrics all (the default) scores what the file can: no labels, no attributes
    info = validate_pair_file(tiny_pairs_once)
    assert labelled_metrics(["l1", "attributes"], info, "all") == ["l1"]


def test_labels_added_as_the_readme_shows_validate_and_read_back(tmp_path):
    from tests.conftest import write_tiny_pairs
    path = write_tiny_pairs(tmp_path)
    with h5py.File(path, "a") as f:
        for split in f:
            n = len(f[split]["speaker_ids"])
            gender, age = np.arange(n) % 2, np.linspace(20, 60, n)
            labels = f[split].create_dataset("attributes",
                                             data=np.stack([gender, age], 1).astype("float32"))
            labels.attrs["names"], labels.attrs["kinds"] = ["gender", "age"], ["class", "number"]
            labels.attrs["class_names"] = ["female|male", ""]
    info = validate_pair_file(path)
    assert info.attributes.names == ("gender", "age") and info.speaker_groups is None
    spec, values = read_attributes(path, "valid")
    assert spec.class_names == (("female", "male"), ()) and values.shape == (6, 2)
