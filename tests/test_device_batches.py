"""--data_on_device: batches made from a split held on the device equal the DataLoader's,
bit for bit, for the same seed (on CPU here; the code is the same on CUDA)."""
from __future__ import annotations

from itertools import islice

import torch
from torch.utils.data import DataLoader

import runtime
import trainer
from data.dataset import SpeechFaceDataset
from data.device_batches import DeviceBatches, hold_on_device
from data.order import training_order
from data.schema import validate_pair_file

CPU = torch.device("cpu")


def test_device_batches_equal_the_loaders_bit_for_bit(tiny_pairs):
    """40 px faces resized to 64 on the device, 0.3 s crops of 0.5 s windows, wrong faces
    of other speakers; a fresh epoch and one resumed 4 pairs in."""
    dataset = SpeechFaceDataset(validate_pair_file(tiny_pairs), "train", 4800, 64, train=True)
    order = training_order(len(dataset), 4, seed=3)
    for epoch, pairs_done in ((0, 0), (1, 4)):
        order.start(epoch, pairs_done)
        expected = list(DataLoader(dataset, batch_size=4, sampler=order, drop_last=True))
        order.start(epoch, pairs_done)
        made = list(DeviceBatches(dataset, order, 4, CPU))
        assert len(made) == len(expected) == (12 - pairs_done) // 4
        for ours, theirs in zip(made, expected):
            for mine, loaders in zip(ours, theirs):
                assert mine.dtype == loaders.dtype and mine.shape == loaders.shape
                assert torch.equal(mine, loaders)
        assert not torch.equal(made[0][1], made[0][3])      # the wrong faces are other faces


def test_auto_holds_data_on_cuda_only(tiny_pairs):
    dataset = SpeechFaceDataset(validate_pair_file(tiny_pairs), "train", 4800, 64, train=True)
    assert not hold_on_device("auto", dataset, CPU)
    assert hold_on_device("on", dataset, CPU) and not hold_on_device("off", dataset, CPU)


def test_a_run_with_data_on_device_trains_as_one_with_the_loader(tiny_pairs, tmp_path,
                                                                 monkeypatch):
    """A step of a Trainer from each path: the same weights, bit for bit."""
    monkeypatch.chdir(tmp_path)
    weights = {}
    for choice in ("off", "on"):
        options = runtime.config_for([
            "--dataset", str(tiny_pairs), "--save_path", choice, "--data_on_device", choice,
            "--audio_seconds", "0.3", "--batch_size", "4", "--num_workers", "0", "--no_visdom",
            "--precision", "fp32", "--speech_encoder", "segan", "--generator", "dcgan"])
        run = trainer.Trainer(options, CPU, tiny_pairs)
        assert isinstance(run.train_loader, DeviceBatches) == (choice == "on")
        run.order.start(0, 0)
        for batch in islice(run.train_loader, 1):
            assert run.train_batch(batch) is not None
        weights[choice] = run.model.state_dict()
    assert all(torch.equal(weights["on"][k], v) for k, v in weights["off"].items())
