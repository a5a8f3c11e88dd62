"""Item seeds and the choices drawn from them (data.order, SpeechFaceDataset.item_choices):
pure integer functions of (seed, epoch, position), on real pair files."""
from __future__ import annotations

import numpy as np

from data.dataset import SpeechFaceDataset
from data.order import EpochOrder, SpeakerBalancedOrder, item_draws, item_seeds
from data.schema import validate_pair_file, write_pair_file
from tests.conftest import make_pairs

POSITIONS = np.arange(4000)


def test_item_seeds_differ_between_epochs_and_positions_and_are_well_mixed():
    epochs = [item_seeds(3, epoch, POSITIONS) for epoch in (0, 1)]
    assert len(np.unique(np.concatenate(epochs + [item_seeds(4, 0, POSITIONS)]))) == 3 * 4000
    bits = (epochs[0][:, None] >> np.arange(64, dtype=np.uint64)) & np.uint64(1)
    assert (abs(bits.mean(0) - 0.5) < 0.05).all()      # each bit set in about half of them
    assert np.array_equal(item_seeds(3, 0, [17]), epochs[0][17:18])   # one item as in a batch


def test_a_ranks_share_has_the_single_process_item_seeds():
    alone = EpochOrder(10, seed=3)
    alone.start(epoch=2, pairs_done=4)
    keys = list(alone)
    assert [seed for _, seed in keys] == item_seeds(3, 2, np.arange(4, 10)).tolist()
    for rank in (0, 1):
        share = EpochOrder(10, seed=3, rank=rank, world_size=2)
        share.start(epoch=2, pairs_done=4)
        assert list(share) == keys[rank::2]


def spread(dataset: SpeechFaceDataset, row: int) -> np.ndarray:
    """The wrong rows of `row` over 4000 item seeds."""
    draws = item_draws(item_seeds(0, 0, POSITIONS), 1)[0]
    return dataset.wrong_rows(np.full(len(draws), row), draws)


def test_wrong_rows_are_of_other_speakers_and_spread_over_all_of_them(tiny_pairs):
    dataset = SpeechFaceDataset(validate_pair_file(tiny_pairs), "train", 4800, 40, train=True)
    for row in range(len(dataset)):
        candidates = np.flatnonzero(dataset.speaker_ids != dataset.speaker_ids[row])
        counts = np.bincount(spread(dataset, row), minlength=len(dataset))
        assert (counts[candidates] > 400).all()      # 8 candidates, 500 each on average
        assert counts.sum() == counts[candidates].sum()


def test_a_one_speaker_split_takes_other_pairs_and_a_one_pair_split_its_own(tmp_path):
    rng = np.random.default_rng(0)
    path = write_pair_file(tmp_path / "one.h5", {"train": make_pairs(rng, 5, 8000, 16, 1),
                                                 "valid": make_pairs(rng, 1, 8000, 16, 1)},
                           ["solo"])
    info = validate_pair_file(path)
    train = SpeechFaceDataset(info, "train", 4800, 16, train=True)
    for row in range(5):
        counts = np.bincount(spread(train, row), minlength=5)
        assert counts[row] == 0 and (np.delete(counts, row) > 800).all()
    single = SpeechFaceDataset(info, "valid", 4800, 16, train=True)
    assert (spread(single, 0) == 0).all()


def test_crop_starts_cover_the_window_in_training_and_are_the_centre_at_evaluation(tiny_pairs):
    info = validate_pair_file(tiny_pairs)
    draws = item_draws(item_seeds(0, 0, np.arange(100_000)), 1)[0]
    starts = SpeechFaceDataset(info, "train", 4800, 40, train=True).crop_starts(draws)
    assert np.array_equal(np.unique(starts), np.arange(8000 - 4800 + 1))
    held_out = SpeechFaceDataset(info, "valid", 4800, 40, train=False).crop_starts(draws)
    assert (held_out == 1600).all()


def test_a_balanced_epoch_gives_every_speaker_an_equal_share_of_its_positions():
    speaker_ids = np.repeat([0, 1, 2], [90, 9, 1])       # 90, 9 and 1 pairs
    order = SpeakerBalancedOrder(speaker_ids, seed=3)
    rows = order.permutation(0).numpy()
    assert len(rows) == 100
    shares = np.bincount(speaker_ids[rows], minlength=3)
    assert shares.max() - shares.min() <= 1 and shares.sum() == 100
    # a speaker's rows cycle through whole shuffles: each of its 9 pairs 3 or 4 times
    seen = np.bincount(rows[speaker_ids[rows] == 1], minlength=99)[90:99]
    assert seen.min() >= 3 and seen.max() <= 4
    assert np.array_equal(SpeakerBalancedOrder(speaker_ids, seed=3).permutation(0), rows)
    assert not np.array_equal(order.permutation(1).numpy(), rows)
    order.start(epoch=1, pairs_done=4)
    keys = list(order)
    assert [row for row, _ in keys] == order.permutation(1).numpy()[4:].tolist()
    for rank in (0, 1):     # processes split it as they split the plain shuffle
        share = SpeakerBalancedOrder(speaker_ids, seed=3, rank=rank, world_size=2)
        share.start(epoch=1, pairs_done=4)
        assert list(share) == keys[rank::2]


def test_balance_is_refused_beside_orders_of_its_own(tiny_pairs, tmp_path, monkeypatch, capsys):
    import runtime
    monkeypatch.chdir(tmp_path)
    assert runtime.main(["--dataset", str(tiny_pairs), "--balance", "speakers",
                         "--read_blocks", "2", "--batch_size", "2", "--audio_seconds", "0.5",
                         "--no_visdom"]) == 2
    assert capsys.readouterr().err == ("error: --balance speakers draws its own order; it "
                                       "cannot be combined with --read_blocks: drop one of "
                                       "them\n")
