"""Evaluation metrics on real inputs: the wav2pix-mini faces, noise, the demo set, real
checkpoints scored through the command line, and training with --eval_every."""
from __future__ import annotations

import json
from pathlib import Path

import numpy as np
import pytest
import torch

import runtime
from data.dataset import read_faces
from data.schema import validate_pair_file, write_pair_file
from models import ModelArgs, SpeechToFace
from models.metrics import METRICS, best_metric, parse_metric_names
from models.metrics.distances import (frechet_distance, matching_1v2, recall_at_k,
                                      similarity_to_speakers, top_k_accuracy)
from models.metrics.face_analysis import DlibFaces, HaarFaces
from models.metrics.identity_classifier import cache_path, classify, file_sha256, identity_classifier_for
from models.metrics.registry import registered
from tests.conftest import FIXTURE, make_pairs
from utils import UserError, load_checkpoint, save_checkpoint_file


# ---------------------------------------------------------------- scores on hand-made vectors

def test_frechet_distance_matches_the_closed_form():
    rng = np.random.default_rng(0)
    real = rng.normal(0, 1, (4000, 1))
    fake = rng.normal(0, 1, (4000, 1)) * 3 + 2
    expected = (real.mean() - fake.mean()) ** 2 + (real.std(ddof=1) - fake.std(ddof=1)) ** 2
    assert frechet_distance(real, fake) == pytest.approx(expected, rel=1e-6)
    # Axis-aligned points: diagonal covariances, so the trace term is per dimension.
    a = np.array([[1.0, 0], [-1, 0], [0, 2], [0, -2]])
    b = np.array([[3.0, 0], [-3, 0], [0, 1], [0, -1]]) + 5
    var_a, var_b = np.var(a, axis=0, ddof=1), np.var(b, axis=0, ddof=1)
    expected = 50 + np.sum(var_a + var_b - 2 * np.sqrt(var_a * var_b))
    assert frechet_distance(a, b) == pytest.approx(expected)
    many = rng.normal(0, 1, (500, 16))
    assert abs(frechet_distance(many, many)) < 1e-8
    assert frechet_distance(many, many + 1) == pytest.approx(16, rel=1e-6)


def test_matching_recall_and_accuracy_on_hand_made_descriptors():
    rng = np.random.default_rng(1)
    centres = rng.normal(0, 1, (4, 128))
    real_ids = np.repeat(np.arange(4), 5)
    real = centres[real_ids] + rng.normal(0, 0.05, (20, 128))
    fake_ids = np.repeat(np.arange(4), 3)
    own = centres[fake_ids] + rng.normal(0, 0.05, (12, 128))
    assert matching_1v2(own, fake_ids, real, real_ids) == 1.0
    assert recall_at_k(own, fake_ids, real, real_ids, (1, 4)) == {1: 1.0, 4: 1.0}
    same_face = np.tile(rng.normal(0, 1, 128), (12, 1))      # one face whatever the voice
    assert matching_1v2(same_face, fake_ids, real, real_ids) == 0.5
    assert recall_at_k(same_face, fake_ids, real, real_ids, (1, 2)) == {1: 0.25, 2: 0.5}
    wrong = centres[(fake_ids + 1) % 4]
    assert matching_1v2(wrong, fake_ids, real, real_ids) == pytest.approx(1 / 3)
    scores = similarity_to_speakers(own, fake_ids, real, real_ids)
    assert scores["cosine_same"] > 0.99 > scores["cosine_other"]
    assert scores["euclidean_same"] < scores["euclidean_other"]
    # two speakers on one ray, at 1 and 3: cosine cannot tell them apart, distance can
    line_ids = np.array([0, 1])
    on_a_ray = np.array([[1.0, 1.0], [3.0, 3.0]])
    assert matching_1v2(on_a_ray, line_ids, on_a_ray, line_ids) == 0.5
    assert matching_1v2(on_a_ray, line_ids, on_a_ray, line_ids, "euclidean") == 1.0
    assert recall_at_k(on_a_ray[::-1], line_ids, on_a_ray, line_ids, (1,), "euclidean") == {1: 0.0}
    logits = np.array([[3.0, 2, 1], [0, 1, 2]])
    assert top_k_accuracy(logits, np.array([1, 2]), 1) == 0.5
    assert top_k_accuracy(logits, np.array([1, 2]), 2) == 1.0


def test_best_checkpoint_figure_follows_the_metrics_scored():
    assert best_metric(["identity", "matching", "attributes"]) == "identity_top1"
    assert best_metric(["matching", "attributes"]) == "matching_1v2_labels"   # unseen, labelled
    assert best_metric(["matching"]) == "matching_1v2"
    assert best_metric(["l1"]) is None


def test_metric_registry_is_checked_when_options_are_parsed(capsys):
    assert parse_metric_names("all") == list(METRICS)
    assert parse_metric_names("matching, l1") == ["l1", "matching"]
    with pytest.raises(UserError, match="unknown metric fid"):
        parse_metric_names("l1,fid")
    assert all(callable(registered()[name].score) for name in METRICS)
    assert runtime.main(["--evaluate", "--metrics", "identity,bogus"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --metrics: unknown metric bogus; choose from all,")
    assert "\n" not in err


BAD_OPTIONS = {
    ("--evaluate", "--inference"): "separate modes",
    ("--eval_every", "-1"): "--eval_every must not be negative",
    ("--eval_samples", "1"): "--eval_samples must be at least 2",
    ("--inception", "/no/inception.pt"): "no such file",
    ("--evaluate", "--pre_trained_gen", "/no/such.pt"): "no such checkpoint",
}


@pytest.mark.parametrize("args", sorted(BAD_OPTIONS))
def test_bad_evaluation_options_are_one_line_exit_2(args, capsys, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert runtime.main(list(args)) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: ") and "\n" not in err and BAD_OPTIONS[args] in err


# ---------------------------------------------------------------- real faces: the fixture

@pytest.fixture(scope="session")
def mini_pairs(tmp_path_factory):
    """The wav2pix-mini fixture as a pair file (2 speakers, 72 train / 20 test real faces)."""
    if not (FIXTURE / "train").is_dir():
        pytest.skip(f"wav2pix-mini fixture not found at {FIXTURE} (it lives beside the clone in CI)")
    from data import prepare
    out = tmp_path_factory.mktemp("mini") / "mini.h5"
    assert prepare.main(["wav2pix", str(FIXTURE), str(out), "--face_size", "64"]) == 0
    return validate_pair_file(out)


@pytest.fixture(scope="session")
def dlib_faces():
    return DlibFaces()


def test_detectors_find_real_faces_and_not_noise(mini_pairs, dlib_faces):
    faces = np.concatenate([read_faces(mini_pairs, "train")[0], read_faces(mini_pairs, "test")[0]])
    rng = np.random.default_rng(0)
    noise = rng.integers(0, 256, (40, 64, 64, 3), dtype=np.uint8)
    blotches = np.repeat(np.repeat(rng.integers(0, 256, (40, 8, 8, 3), dtype=np.uint8), 8, 1), 8, 2)
    haar = HaarFaces()
    found, _ = dlib_faces.analyse(faces, descriptors=False)
    assert found.mean() >= 0.9, found.mean()          # a face AND all 68 landmarks
    assert haar.found(faces).mean() >= 0.8
    for fake in (noise, blotches):
        assert dlib_faces.analyse(fake, descriptors=False)[0].mean() <= 0.05
        assert haar.found(fake).mean() <= 0.05


def test_dlib_descriptors_tell_the_two_real_speakers_apart(mini_pairs, dlib_faces):
    faces, ids = read_faces(mini_pairs, "test")
    _, descriptors = dlib_faces.analyse(faces)
    assert descriptors.shape == (20, 128)
    half = np.arange(len(ids)) % 2 == 0                  # one half as gallery, one as probes
    assert matching_1v2(descriptors[~half], ids[~half], descriptors[half], ids[half]) >= 0.9


def test_identity_classifier_learns_the_real_speakers_and_is_cached(mini_pairs, capsys):
    classifier = identity_classifier_for(mini_pairs.path, lambda: read_faces(mini_pairs, "train"),
                                         2, torch.device("cpu"))
    cached = cache_path(mini_pairs.path, file_sha256(mini_pairs.path))
    assert cached.is_file() and "training the identity classifier on 72" in capsys.readouterr().out
    faces, ids = read_faces(mini_pairs, "test")
    logits, features = classify(classifier, faces, "cpu")
    assert top_k_accuracy(logits, ids, 1) >= 0.9 and features.shape == (20, 128)

    def must_not_train():
        raise AssertionError("the cached classifier should have been used")
    again = identity_classifier_for(mini_pairs.path, must_not_train, 2, torch.device("cpu"))
    assert np.allclose(classify(again, faces, "cpu")[0], logits, atol=1e-5)


def test_a_changed_pair_file_gets_its_own_classifier(tmp_path):
    rng = np.random.default_rng(0)
    first = write_pair_file(tmp_path / "a.h5", {"train": make_pairs(rng, 8, 4000, 32, 2)}, ["x", "y"])
    sha = file_sha256(first)
    write_pair_file(first, {"train": make_pairs(rng, 8, 4000, 32, 2)}, ["x", "y"])
    assert cache_path(first, file_sha256(first)) != cache_path(first, sha)


# ---------------------------------------------------------------- the evaluate command

FAST = ["--audio_seconds", "0.3", "--batch_size", "4", "--num_workers", "0"]


def untrained_checkpoint(path, num_speakers: int, audio_samples: int = 4800, seed: int = 0):
    """A checkpoint of freshly initialised networks, as a run writes it before any step."""
    torch.manual_seed(seed)
    path.parent.mkdir(parents=True, exist_ok=True)
    args = ModelArgs(audio_samples=audio_samples, num_speakers=num_speakers)
    from dataclasses import asdict
    return save_checkpoint_file(path, {"model_args": asdict(args),
                                       "networks": SpeechToFace(args).state_dict(),
                                       "epoch": 0, "step": 0})


class PooledColour(torch.nn.Module):
    """Stands in for a TorchScript Inception file: same call, (N, 6) features."""

    def forward(self, images: torch.Tensor, return_features: bool = False) -> torch.Tensor:
        pixels = images.float() / 255
        return torch.cat([pixels.mean(dim=(2, 3)), pixels.std(dim=(2, 3))], dim=1)


@pytest.mark.filterwarnings("ignore::DeprecationWarning")
def test_evaluate_prints_a_table_and_writes_every_metric_beside_the_checkpoint(
        tiny_pairs_once, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    checkpoint = untrained_checkpoint(tmp_path / "run" / "untrained.pt", 3)
    inception = tmp_path / "inception.pt"
    torch.jit.script(PooledColour()).save(str(inception))
    assert runtime.main(["--evaluate", "--pre_trained_gen", str(checkpoint), "--dataset",
                         str(tiny_pairs_once), "--split", "valid", "--inception", str(inception)]) == 0
    out = capsys.readouterr().out
    assert "identity_top1" in out and "matching_1v2" in out and "metrics.json" in out
    report = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert (report["split"], report["pairs"], report["speakers"], report["mode"]) == (
        "valid", 6, 3, "seen_speakers")
    assert set(report["detectors"]) == {"detection_dlib", "detection_haar"}
    expected = {"detection_dlib", "detection_haar", "identity_top1", "identity_top5",
                "identity_top1_real", "dlib_cosine_same", "dlib_cosine_other",
                "dlib_euclidean_same", "dlib_euclidean_other", "frechet_classifier",
                "frechet_dlib", "fid_inception", "l1", "matching_1v2", "recall_at_1",
                "recall_at_5", "recall_at_10", "grid_2", "grid_4", "grid_8", "checkerboard",
                "grid_4_real", "sharpness", "hf_power", "hf_power_real"}
    metrics = report["metrics"]
    assert expected <= metrics.keys()
    # mouth sync needs lip landmarks, which dlib finds on none of these coloured squares
    assert metrics["mouth_measured"] == 0 and np.isnan(metrics["mouth_sync"])
    assert all(np.isfinite(v) for k, v in metrics.items() if not k.startswith("mouth_"))
    assert metrics["fid_inception"] >= 0 and 0 < metrics["l1"] <= 2


def test_evaluate_with_resume_scores_the_checkpoint_it_names(tiny_pairs_once, tmp_path,
                                                              monkeypatch):
    """--resume CHECKPOINT --evaluate scores that checkpoint, not the run's latest.pt."""
    monkeypatch.chdir(tmp_path)
    run = ["--dataset", str(tiny_pairs_once), "--audio_seconds", "0.3", "--batch_size", "2",
           "--num_workers", "0", "--no_visdom", "--save_path", "run", "--epochs", "2",
           "--checkpoint_every", "1"]
    assert runtime.main(run) == 0
    first = tmp_path / "checkpoints" / "run" / "checkpoint_epoch0001.pt"
    assert first.is_file() and load_checkpoint(first)["epoch"] != load_checkpoint(
        tmp_path / "checkpoints" / "run" / "latest.pt")["epoch"]
    assert runtime.main(["--evaluate", "--resume", str(first), "--metrics", "l1"]) == 0
    report = json.loads((first.parent / "metrics.json").read_text())
    assert (Path(report["checkpoint"]), report["epoch"]) == (first, 1)


def test_unseen_speakers_are_scored_by_matching_and_recall_only(tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    rng = np.random.default_rng(0)
    held_out = make_pairs(rng, 8, 8000, 40, 2)
    pairs = write_pair_file(tmp_path / "disjoint.h5", {
        "train": make_pairs(rng, 9, 8000, 40, 3),
        "test": (held_out[0], held_out[1], held_out[2] + 3)}, ["a", "b", "c", "d", "e"])
    checkpoint = untrained_checkpoint(tmp_path / "untrained.pt", 5)
    assert runtime.main(["--evaluate", "--pre_trained_gen", str(checkpoint), "--dataset",
                         str(pairs), "--metrics", "identity,matching"]) == 0
    assert "identity accuracy is undefined" in capsys.readouterr().out
    report = json.loads((tmp_path / "metrics.json").read_text())
    assert report["mode"] == "unseen_speakers"
    # by dlib's descriptors and in the identity classifier's space (trained on the train
    # speakers, it serves as a face embedding for the unseen ones)
    assert {k for k in report["metrics"] if not k.endswith("_chance")} == {
        f"{figure}{space}" for space in ("", "_classifier")
        for figure in ("matching_1v2", "recall_at_1", "recall_at_5", "recall_at_10")}


def test_unusable_evaluation_inputs_are_one_line(tiny_pairs_once, tmp_path, monkeypatch, capsys):
    monkeypatch.chdir(tmp_path)
    checkpoint = untrained_checkpoint(tmp_path / "untrained.pt", 3)
    garbage = tmp_path / "garbage.pt"
    garbage.write_bytes(b"not a model")
    only_train = write_pair_file(tmp_path / "train_only.h5", {
        "train": make_pairs(np.random.default_rng(0), 6, 8000, 40, 3)}, ["a", "b", "c"])
    cases = {("--dataset", str(tiny_pairs_once), "--inception", str(garbage)): "not a TorchScript model",
             ("--dataset", str(only_train)): "has no 'test' split"}
    for args, expected in cases.items():
        assert runtime.main(["--evaluate", "--pre_trained_gen", str(checkpoint), *args]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and "\n" not in err and expected in err, err


# ---------------------------------------------------------------- --eval_every during training

def test_eval_every_logs_the_metrics_and_keeps_the_best_checkpoint(tiny_pairs_once, tmp_path,
                                                                   monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert runtime.main(["--dataset", str(tiny_pairs_once), "--save_path", "ev", "--epochs", "2",
                         "--eval_every", "1", "--metrics", "identity,matching,detection_dlib,l1",
                         *FAST]) == 0
    run = tmp_path / "checkpoints" / "ev"
    lines = [json.loads(line) for line in (run / "log.jsonl").read_text().splitlines()]
    records = [r for r in lines if "eval_identity_top1" in r]
    assert [r["epoch"] for r in records] == [1, 2]
    for record in records:
        assert {"eval_matching_1v2", "eval_detection_dlib", "eval_recall_at_1",
                "eval_l1"} <= record.keys()
    scores = [r["eval_identity_top1"] for r in records]
    best = load_checkpoint(run / "best.pt")
    assert best["best"] == {"metric": "identity_top1", "value": max(scores)}
    assert best["epoch"] == 1 + scores.index(max(scores))
    assert (run / "latest.pt").is_file() and not list(run.glob(".*partial"))


# ---------------------------------------------------------------- the demo set: chance and above

@pytest.fixture(scope="session")
def demo_pairs():
    from data.demo import demo_dataset_path
    return demo_dataset_path()


def evaluate_on_demo(checkpoint, demo_pairs, samples: int,
                     metrics: str = "identity,matching,l1") -> dict:
    assert runtime.main(["--evaluate", "--pre_trained_gen", str(checkpoint), "--dataset",
                         str(demo_pairs), "--eval_samples", str(samples),
                         "--metrics", metrics]) == 0
    return json.loads((checkpoint.parent / "metrics.json").read_text())["metrics"]


def test_an_untrained_generator_scores_near_chance(demo_pairs, tmp_path):
    metrics = evaluate_on_demo(untrained_checkpoint(tmp_path / "untrained.pt", 8), demo_pairs, 32)
    assert metrics["identity_top1_real"] >= 0.95          # the classifier knows the real faces
    assert metrics["identity_top1"] <= 0.25               # chance: 1/8
    assert abs(metrics["matching_1v2"] - 0.5) <= 0.15
    assert abs(metrics["matching_1v2_classifier"] - 0.5) <= 0.15


def test_the_demo_command_learns_who_is_speaking(demo_pairs, tmp_path, monkeypatch):
    """The README's demo training (2 epochs of batch 16, 200 steps, G's learning rate
    doubled, the hybrid generator, drawn by its average) in fp32, whatever this CPU's bf16:
    measured identity top-1 0.970 / 0.960 and classifier-space 1:2 matching 0.984 / 0.981
    on the 200 test pairs (seeds 0 and 1, 95 s on 2 AVX2 cores), with no grid left: mosaic
    (grid_4) 1.025 against the real faces' 1.004 (1.065 / 1.093 with the resize generator),
    no checkerboard peak (1.85; the real faces' 1.32; 24 for alternate pixels one grey level
    apart). dlib's own matching is not asserted: its descriptors hardly separate these
    cartoon faces (README, Evaluating)."""
    monkeypatch.chdir(tmp_path)
    assert runtime.main(["--dataset", str(demo_pairs), "--save_path", "short", "--epochs", "2",
                         "--batch_size", "16", "--lr_G", "0.0002", "--generator", "hybrid",
                         "--ema", "--precision", "fp32", "--num_workers", "0",
                         "--no_visdom"]) == 0
    metrics = evaluate_on_demo(tmp_path / "checkpoints" / "short" / "latest.pt", demo_pairs, 200,
                               "identity,matching,l1,grid")
    assert metrics["identity_top1"] >= 0.90               # chance: 1/8
    assert metrics["matching_1v2_classifier"] >= 0.95     # chance: 0.5
    assert metrics["grid_4"] <= metrics["grid_4_real"] + 0.05
    assert metrics["checkerboard"] <= 4
