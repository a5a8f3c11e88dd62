"""--read_blocks: batches made of runs of consecutive rows, read a block at a time, in an
order that is a pure function of (seed, epoch), whatever the number of workers."""
from __future__ import annotations

import numpy as np
import pytest
import torch
from torch.utils.data import DataLoader

from data.dataset import SpeechFaceDataset
from data.order import BlockOrder, seed_worker, training_order
from data.schema import validate_pair_file
from tests.conftest import trainer_with_one_batch

CPU = torch.device("cpu")


def test_a_block_order_shuffles_aligned_runs():
    order = BlockOrder(10, seed=1, block_rows=4)
    rows = order.permutation(0).numpy()
    assert sorted(rows) == list(range(10))
    assert rows[0] % 4 == 0
    for row, following in zip(rows, rows[1:]):         # runs of a block, from its start on
        assert following == row + 1 if following % 4 else following % 4 == 0
    assert torch.equal(order.permutation(0), BlockOrder(10, 1, 4).permutation(0))
    assert not torch.equal(order.permutation(0), order.permutation(1))


@pytest.mark.parametrize("rows, block_rows, processes", [(100, 8, 2), (100, 16, 3), (96, 16, 2)])
def test_processes_read_whole_blocks_of_their_own(rows, block_rows, processes):
    orders = [BlockOrder(rows, 5, block_rows, rank, processes) for rank in range(processes)]
    taken = [order.process_rows(2) for order in orders]
    assert {len(mine) for mine in taken} == {orders[0].share}        # as many steps each
    assert set(np.concatenate(taken)) == set(range(rows))            # every row each epoch
    blocks = [set(mine // block_rows) for mine in taken]
    for mine, read in zip(taken, blocks):
        # runs of whole blocks: a process uses every row of the blocks it reads (bar the
        # last, partial block and the rows that complete it)
        assert len(mine) >= (len(read) - 2) * block_rows
    shared = set.union(*[a & b for i, a in enumerate(blocks) for b in blocks[i + 1:]])
    assert len(shared) < processes       # only the blocks repeated to even the shares out
    # resume mid-epoch: the rest of the epoch, as the uninterrupted process reads it
    whole, resumed = orders[1], BlockOrder(rows, 5, block_rows, 1, processes)
    whole.start(2)
    resumed.start(2, pairs_done=processes * 3)
    assert list(resumed) == list(whole)[3:]


def loader_batches(tiny_pairs, workers: int, epoch: int, pairs_done: int):
    dataset = SpeechFaceDataset(validate_pair_file(tiny_pairs), "train", 4800, 64, train=True,
                                in_memory=False)
    order = training_order(len(dataset), 4, seed=3, block_rows=2)
    dataset.block_rows = order.block_rows
    order.start(epoch, pairs_done)
    loader = DataLoader(dataset, batch_size=4, sampler=order, drop_last=True,
                        num_workers=workers, worker_init_fn=seed_worker)
    return dataset, order, list(loader)


def test_block_batches_are_the_orders_rows_whatever_the_workers(tiny_pairs):
    dataset, order, made = loader_batches(tiny_pairs, 0, epoch=1, pairs_done=0)
    keys = list(order)
    assert len(made) == 3
    for step, (conditions, faces, speakers, wrong) in enumerate(made):
        rows = [row for row, _ in keys[4 * step:4 * step + 4]]
        assert rows[0] // 2 == rows[1] // 2 and rows[2] // 2 == rows[3] // 2   # two runs of 2
        per_pair = [dataset[key] for key in keys[4 * step:4 * step + 4]]
        assert torch.equal(faces, torch.stack([item[1] for item in per_pair]))
        assert torch.equal(conditions, torch.stack([item[0] for item in per_pair]))
        assert torch.equal(speakers, torch.from_numpy(dataset.speaker_ids[rows]))
        for face, speaker in zip(wrong, speakers):          # another speaker of the batch
            others = [i for i in range(4) if torch.equal(faces[i], face)]
            assert others and all(speakers[i] != speaker for i in others)
    _, _, with_workers = loader_batches(tiny_pairs, 2, epoch=1, pairs_done=0)
    _, _, resumed = loader_batches(tiny_pairs, 0, epoch=1, pairs_done=4)
    for mine, theirs in zip(made + made[1:], with_workers + resumed):
        assert all(torch.equal(a, b) for a, b in zip(mine, theirs))


def test_a_run_trains_from_block_reads(tiny_pairs, tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    run, figures = trainer_with_one_batch(tiny_pairs, "--save_path", "blocks",
                                          "--read_blocks", "2")
    assert isinstance(run.order, BlockOrder) and run.train_loader.dataset.block_rows == 2
    assert figures is not None
