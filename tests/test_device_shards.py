"""--data_on_device shard: each of N processes holds only its stripe of the train split, and
its order (data.order.ShardOrder) is reproducible and resumable. Two ranks are simulated on
CPU by building each with rank 0 and 1 of 2, on a real pair file."""
from __future__ import annotations


import numpy as np
import pytest
import torch

from data.dataset import SpeechFaceDataset
from data.device_batches import DeviceBatches, hold_on_device
from data.order import ShardOrder, training_order
from data.schema import validate_pair_file
from tests.conftest import trainer_with_one_batch

CPU = torch.device("cpu")


@pytest.fixture
def dataset(tiny_pairs):
    """12 train pairs of 3 speakers, read per item (not in memory), as a large split is."""
    return SpeechFaceDataset(validate_pair_file(tiny_pairs), "train", 4800, 64, train=True,
                             in_memory=False)


def rank_batches(dataset, rank: int, epoch: int = 0, pairs_done: int = 0):
    order = training_order(len(dataset), 2, seed=5, rank=rank, processes=2, sharded=True)
    batches = DeviceBatches(dataset, order, 2, CPU)
    order.start(epoch, pairs_done)
    return order, batches, list(batches)


def test_the_ranks_hold_disjoint_stripes_that_cover_the_split(dataset):
    stripes = []
    for rank in (0, 1):
        order, batches, _ = rank_batches(dataset, rank)
        assert isinstance(order, ShardOrder) and len(order.rows) == 6
        assert batches.waveforms.shape == (6, 8000) and batches.faces.shape == (6, 40, 40, 3)
        assert batches.speaker_ids.shape == (6,) and len(batches.dataset) == 6
        stripes.append(order.rows)
    assert not set(stripes[0]) & set(stripes[1])
    assert sorted(np.concatenate(stripes)) == list(range(12))


def test_a_ranks_batches_are_its_rows_and_wrong_faces_of_its_other_speakers(dataset):
    order, batches, made = rank_batches(dataset, rank=1)
    assert len(made) == 3
    stripe_faces = torch.stack([dataset.face(row) for row in order.rows])
    seen, keys = [], list(order)
    for step, (_, faces, speakers, wrong) in enumerate(made):
        rows = order.rows[[local for local, _ in keys[2 * step:2 * step + 2]]]
        assert torch.equal(faces, torch.stack([dataset.face(row) for row in rows]))
        assert torch.equal(speakers, torch.from_numpy(dataset.speaker_ids[rows]))
        for face, speaker in zip(wrong, speakers):
            match = [i for i, held in enumerate(stripe_faces) if torch.equal(held, face)]
            assert match and dataset.speaker_ids[order.rows[match[0]]] != speaker
        seen.extend(rows.tolist())
    assert sorted(seen) == sorted(order.rows.tolist())     # every stripe row once an epoch


def test_the_sharded_order_is_reproducible_and_resumes_mid_epoch(dataset):
    for rank in (0, 1):
        _, _, first = rank_batches(dataset, rank, epoch=1)
        _, _, again = rank_batches(dataset, rank, epoch=1)
        _, _, resumed = rank_batches(dataset, rank, epoch=1, pairs_done=4)   # a step of 2 x 2
        _, _, other_epoch = rank_batches(dataset, rank, epoch=2)
        assert len(first) == 3 and len(resumed) == 2
        for mine, theirs in zip(first + first[1:], again + resumed):
            assert all(torch.equal(a, b) for a, b in zip(mine, theirs))
        assert not all(torch.equal(a[1], b[1]) for a, b in zip(first, other_epoch))


def test_the_choice_of_what_is_held(dataset):
    assert hold_on_device("shard", dataset, CPU, 2) == "shard"
    assert hold_on_device("on", dataset, CPU, 2) == "split"
    assert hold_on_device("auto", dataset, CPU, 2) is None


def test_a_run_trains_from_its_shard(tiny_pairs, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run, figures = trainer_with_one_batch(tiny_pairs, "--save_path", "shard",
                                          "--data_on_device", "shard")
    assert isinstance(run.order, ShardOrder) and isinstance(run.train_loader, DeviceBatches)
    assert figures is not None

