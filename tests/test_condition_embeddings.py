"""--condition embedding: the optional <split>/embeddings dataset, checked, read, trained on."""
import re

import h5py
import numpy as np
import pytest
import torch
from PIL import Image

import runtime
from data.dataset import SpeechFaceDataset
from data.schema import PairFileError, PairWriter, validate_pair_file, write_pair_file
from tests.conftest import make_pairs
from utils import load_checkpoint

FAST = ["--audio_seconds", "0.3", "--batch_size", "4", "--num_workers", "0", "--no_visdom"]
WIDTH = 6


def speaker_vectors(rng, speaker_ids, width=WIDTH):
    """A vector per pair: the speaker's one-hot code plus noise, as an embedding would be."""
    vectors = rng.normal(0, 0.1, (len(speaker_ids), width))
    vectors[np.arange(len(speaker_ids)), speaker_ids] += 1.0
    return vectors.astype(np.float32)


def write_embedding_pairs(path, width=WIDTH):
    rng = np.random.default_rng(0)
    splits = {"train": make_pairs(rng, 12, 8000, 40, 3), "valid": make_pairs(rng, 6, 8000, 40, 3),
              "test": make_pairs(rng, 3, 8000, 40, 3)}
    vectors = {split: speaker_vectors(rng, arrays[2], width) for split, arrays in splits.items()}
    return write_pair_file(path, splits, ["anna", "bert", "carl"], embeddings=vectors), vectors


@pytest.fixture
def embedding_pairs(tmp_path):
    return write_embedding_pairs(tmp_path / "embedded.h5")


def test_embeddings_round_trip_and_reach_the_dataset_items(embedding_pairs):
    path, vectors = embedding_pairs
    info = validate_pair_file(path)
    assert info.embedding_dim == WIDTH
    dataset = SpeechFaceDataset(info, "valid", 4800, 64, train=False, condition="embedding")
    condition, face, speaker_id, _ = dataset[4]
    assert torch.equal(condition, torch.from_numpy(vectors["valid"][4]))
    assert face.shape == (3, 64, 64) and speaker_id.item() == 4 % 3
    assert dataset.condition(0).dtype == torch.float32
    assert SpeechFaceDataset(info, "test", 4800, 64, False, condition="none")[0][0].shape == (0,)


def test_a_file_without_embeddings_says_so_when_the_condition_needs_them(tiny_pairs):
    info = validate_pair_file(tiny_pairs)
    assert info.embedding_dim == 0
    with pytest.raises(PairFileError, match="holds no per-pair 'embeddings'"):
        SpeechFaceDataset(info, "train", 4800, 64, train=True, condition="embedding")


BROKEN = {
    "integers": (lambda g: g.create_dataset("embeddings", data=np.ones((12, 4), np.int32)),
                 "must be float32 (12, E)"),
    "one row short": (lambda g: g.create_dataset("embeddings", data=np.ones((11, 4), np.float32)),
                      "must be float32 (12, E)"),
    "one dimension": (lambda g: g.create_dataset("embeddings", data=np.ones(12, np.float32)),
                      "must be float32 (12, E)"),
    "nan": (lambda g: g.create_dataset("embeddings", data=np.full((12, 4), np.nan, np.float32)),
            "NaN or infinite"),
}


@pytest.mark.parametrize("case", sorted(BROKEN))
def test_broken_embeddings_are_refused_in_one_line(case, tiny_pairs):
    breaks, expected = BROKEN[case]
    with h5py.File(tiny_pairs, "a") as f:
        breaks(f["train"])
    with pytest.raises(PairFileError, match=re.escape(expected)) as error:
        validate_pair_file(tiny_pairs)
    assert "\n" not in str(error.value)


def test_embeddings_in_some_splits_only_or_of_two_widths_are_refused(embedding_pairs, tiny_pairs):
    with h5py.File(tiny_pairs, "a") as f:
        f["train"].create_dataset("embeddings", data=np.ones((12, 4), np.float32))
    with pytest.raises(PairFileError, match="give every split embeddings of one width"):
        validate_pair_file(tiny_pairs)
    path, _ = embedding_pairs
    with h5py.File(path, "a") as f:
        del f["test/embeddings"]
        f["test"].create_dataset("embeddings", data=np.ones((3, WIDTH + 1), np.float32))
    with pytest.raises(PairFileError, match="give every split embeddings of one width"):
        validate_pair_file(path)


def test_the_writer_wants_embeddings_with_every_append_of_a_split(tmp_path):
    rng = np.random.default_rng(0)
    pairs = make_pairs(rng, 4, 4000, 16, 2)
    with pytest.raises(ValueError, match="every append"):
        with PairWriter(tmp_path / "mixed.h5", ["a", "b"], 4000, 16) as writer:
            writer.append("train", *pairs, embeddings=np.zeros((4, 3)))
            writer.append("train", *pairs)
    assert not (tmp_path / "mixed.h5").exists()


def test_embedding_condition_trains_and_renders(embedding_pairs, tmp_path, monkeypatch, tiny_pairs,
                                                capsys):
    monkeypatch.chdir(tmp_path)
    path, _ = embedding_pairs
    assert runtime.main(["--dataset", str(path), "--condition", "embedding", "--save_path", "emb",
                         "--epochs", "1", "--max_steps", "2", *FAST]) == 0
    checkpoint = load_checkpoint(tmp_path / "checkpoints/emb/latest.pt")
    assert checkpoint["model_args"]["condition"] == "embedding"
    assert checkpoint["model_args"]["condition_dim"] == WIDTH
    networks = checkpoint["networks"]
    assert any(k.startswith("embedding_projector.") for k in networks)
    assert not any(k.startswith("speech_encoder.") for k in networks)
    assert runtime.main(["--inference", "--pre_trained_gen", "checkpoints/emb",
                         "--dataset", str(path), "--save_path", "emb"]) == 0
    pngs = sorted((tmp_path / "results" / "emb").glob("*.png"))
    assert len(pngs) == 3 and Image.open(pngs[0]).size == (134, 68)   # generated beside real
    narrower, _ = write_embedding_pairs(tmp_path / "narrow.h5", width=WIDTH - 1)
    capsys.readouterr()
    for dataset, expected in ((tiny_pairs, "holds no per-pair 'embeddings'"),
                              (narrower, f"holds {WIDTH - 1}-wide embeddings")):
        assert runtime.main(["--inference", "--pre_trained_gen", "checkpoints/emb",
                             "--dataset", str(dataset), "--save_path", "x"]) == 2
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and expected in err and "\n" not in err
