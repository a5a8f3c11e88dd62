"""Which split each video's pairs go to: whole videos (`--split_by video`), whole speakers
(`speaker`), or each video's stretches of time (`time`); a manifest's split column fixes a
video's split whatever --split_by says."""
from __future__ import annotations

import random
from dataclasses import dataclass

import numpy as np

SPLIT_BY = ("video", "speaker", "time")
BY_TIME = None  # assign_splits' value for a video whose pairs are shared out by time
BETWEEN_SPLITS = "between splits"  # the drop cause of a window on a boundary or a gap


def assign_splits(sources, split_by: str, test_fraction: float, valid_fraction: float,
                  seed: int) -> dict:
    """Map each video's label to a split, or to BY_TIME. By video: each speaker's videos
    are shared out, so test speech comes from videos never trained on. By speaker: whole
    speakers are. A split the manifest gives is kept; the others are drawn among the rest."""
    fixed = {source.label: source.split for source in sources if source.split}
    free = [source for source in sources if not source.split]
    if split_by == "time":
        return {**{source.label: BY_TIME for source in free}, **fixed}
    rng = random.Random(seed)
    by_speaker = {}
    for source in free:
        by_speaker.setdefault(source.speaker, []).append(source.label)
    if split_by == "speaker":
        speakers = sorted(by_speaker)
        rng.shuffle(speakers)
        shares = _share_out(speakers, test_fraction, valid_fraction)
        drawn = {label: shares[s] for s, labels in by_speaker.items() for label in labels}
        return {**drawn, **fixed}
    drawn = {}
    for speaker in sorted(by_speaker):
        labels = sorted(by_speaker[speaker])
        rng.shuffle(labels)
        drawn.update(_share_out(labels, test_fraction, valid_fraction))
    return {**drawn, **fixed}


def _share_out(items: list, test_fraction: float, valid_fraction: float) -> dict:
    """First items to test, next to valid, the rest to train; train always keeps one, and
    a fraction above 0 takes at least one item while there are enough to go round."""
    count = len(items)
    test = round(count * test_fraction) or int(test_fraction > 0 and count >= 2)
    test = min(test, count - 1)
    valid = round(count * valid_fraction) or int(valid_fraction > 0 and count - test >= 2)
    valid = min(valid, count - test - 1)
    return {item: "test" if i < test else "valid" if i < test + valid else "train"
            for i, item in enumerate(items)}


# ---------------------------------------------------------------- by time

@dataclass(frozen=True)
class TimeSplit:
    """`--split_by time`: the last test_fraction of a clip's span goes to test, the last
    valid_fraction before it to valid, the rest to train, with a gap of one window taken
    from the end of each share that another follows. A pair belongs to the share its whole
    speech window lies in, so no sample, nor any two samples closer than a window, is in
    two splits; the clip's outer ends are open (the windows there are checked against the
    audio already)."""
    test_fraction: float
    valid_fraction: float
    window_samples: int

    def shares(self, span: list) -> list[tuple[str, float, float]]:
        """(split, first sample, end sample) of each share with a fraction above 0, in clock
        samples; window starts >= first and window ends <= end belong to it."""
        start, end = span
        length, gap = end - start, self.window_samples
        test_from = start + round(length * (1 - self.test_fraction))
        valid_from = start + round(length * (1 - self.test_fraction - self.valid_fraction))
        held_out = [(name, first) for name, first, fraction in
                    (("valid", valid_from, self.valid_fraction), ("test", test_from, self.test_fraction))
                    if fraction > 0]
        firsts = [-np.inf] + [first for _, first in held_out]
        ends = [first - gap for _, first in held_out] + [np.inf]
        names = ["train"] + [name for name, _ in held_out]
        return list(zip(names, firsts, ends))

    def splits_of(self, window_starts: np.ndarray, span: list) -> np.ndarray:
        """The split of each window (n,) starting at `window_starts` (n,), BETWEEN_SPLITS for
        one across a boundary or in a gap."""
        starts = np.asarray(window_starts, np.int64)
        splits = np.full(len(starts), BETWEEN_SPLITS, dtype=object)
        for name, first, end in self.shares(span):
            splits[(starts >= first) & (starts + self.window_samples <= end)] = name
        return splits

    def too_short(self, span: list) -> bool:
        """Whether some share is shorter than one window, so that split gets no pair."""
        start, end = span
        lengths = [min(e, end) - max(f, start) for _, f, e in self.shares(span)]
        return any(length < self.window_samples for length in lengths)
