"""A split is read into memory only where the memory the process may still take allows it."""
from __future__ import annotations

from data import dataset as dataset_module
from data.dataset import SpeechFaceDataset
from data.schema import validate_pair_file


def test_a_split_is_read_into_memory_only_where_memory_allows(tiny_pairs, monkeypatch):
    """Under 2 GiB is not enough: a memory cgroup below the split's size would kill the run."""
    info = validate_pair_file(tiny_pairs)
    monkeypatch.setattr(dataset_module, "available_memory", lambda: 1 << 30)
    assert SpeechFaceDataset(info, "train", 4800, 64, train=True)._arrays is not None
    monkeypatch.setattr(dataset_module, "available_memory", lambda: 1000)   # a few bytes left
    assert SpeechFaceDataset(info, "train", 4800, 64, train=True)._arrays is None
    monkeypatch.undo()
    assert 0 < dataset_module.available_memory() <= dataset_module._meminfo_available()
