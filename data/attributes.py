"""Per-pair attribute labels in a pair file, and the speaker groups of held-out speakers.

Optional dataset of every split (see data/schema.py, which checks them):
    attributes    float32 (N, A)       one row of labels per pair, NaN where a label is
                                        unknown. HDF5 attributes of the dataset:
        names         A UTF-8 strings, lower-case identifiers (they name the metric's figures)
        kinds         A UTF-8 strings, "class" (a category coded 0, 1, 2, ...) or "number"
        class_names   optional, A UTF-8 strings: a class column's category names joined by
                      "|" in code order (e.g. "female|male"), "" for a number column
Either every split holds it, with the same names and kinds, or none does.

Optional root attribute
    speaker_groups  one UTF-8 string per speaker (index i is speaker i), a lower-case
                    identifier or "": the group a held-out speaker belongs to, e.g. "interp"
                    (a voice between the train speakers') or "extrap" (beyond them). The
                    attributes metric reports each group of the scored split on its own.
"""
from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import h5py
import numpy as np

DATASET = "attributes"
KINDS = ("class", "number")
NAME_PATTERN = re.compile(r"[a-z][a-z0-9_]*\Z")
GROUP_PATTERN = re.compile(r"[a-z0-9_]*\Z")
_STRING = h5py.string_dtype("utf-8")


@dataclass(frozen=True)
class AttributeSpec:
    """What the columns of `<split>/attributes` are."""
    names: tuple[str, ...]
    kinds: tuple[str, ...]                       # "class" or "number", per column
    class_names: tuple[tuple[str, ...], ...] = ()  # per column; () for numbers or unnamed

    def __post_init__(self):
        if len(self.kinds) != len(self.names) or not self.names:
            raise ValueError("an AttributeSpec needs one kind per name, and at least one name")
        if self.class_names and len(self.class_names) != len(self.names):
            raise ValueError("class_names must give one tuple per attribute (or be empty)")

    def write_to(self, dataset: h5py.Dataset) -> None:
        """Store the spec as the dataset's HDF5 attributes."""
        dataset.attrs.create("names", list(self.names), dtype=_STRING)
        dataset.attrs.create("kinds", list(self.kinds), dtype=_STRING)
        if self.class_names:
            joined = ["|".join(classes) for classes in self.class_names]
            dataset.attrs.create("class_names", joined, dtype=_STRING)


def _strings(value) -> list | None:
    """An HDF5 attribute holding a 1-d array of strings, as str; None if it is not one."""
    if value is None or isinstance(value, (str, bytes)) or np.ndim(value) != 1:
        return None
    items = [v.decode("utf-8", "replace") if isinstance(v, bytes) else v for v in value]
    return items if all(isinstance(v, str) for v in items) else None


def spec_problem(dataset: h5py.Dataset) -> tuple[AttributeSpec | None, str]:
    """(the spec, "") of an attributes dataset, or (None, what is wrong with it)."""
    names, kinds = _strings(dataset.attrs.get("names")), _strings(dataset.attrs.get("kinds"))
    width = dataset.shape[1]
    if names is None or len(names) != width:
        return None, f"needs an HDF5 attribute 'names' listing its {width} column names"
    if kinds is None or len(kinds) != width:
        return None, f"needs an HDF5 attribute 'kinds' giving each of its {width} columns " \
                     "'class' or 'number'"
    bad = [n for n in names if not NAME_PATTERN.match(n)]
    if bad:
        return None, f"names column {bad[0]!r}; use lower-case identifiers such as 'gender'"
    if len(set(names)) != len(names):
        return None, "names a column twice"
    wrong = [k for k in kinds if k not in KINDS]
    if wrong:
        return None, f"has kind {wrong[0]!r}; each kind is 'class' or 'number'"
    classes = _strings(dataset.attrs.get("class_names"))
    if "class_names" in dataset.attrs and (classes is None or len(classes) != width):
        return None, f"has 'class_names' that is not {width} strings (names joined by '|')"
    class_names = tuple(tuple(c.split("|")) if c else () for c in classes) if classes else ()
    return AttributeSpec(tuple(names), tuple(kinds), class_names), ""


def values_problem(values: np.ndarray, spec: AttributeSpec) -> str:
    """What is wrong with the label values, or "": classes are codes 0, 1, ... or NaN,
    numbers are finite or NaN."""
    for column, (name, kind) in enumerate(zip(spec.names, spec.kinds)):
        known = values[:, column][~np.isnan(values[:, column])]
        if kind == "number" and not np.isfinite(known).all():
            return f"column '{name}' holds infinite values; use NaN for an unknown label"
        if kind == "class" and (np.any(known < 0) or np.any(known != np.round(known))):
            return f"column '{name}' is a class but holds values other than the codes 0, 1, 2, ..."
        if kind == "class" and spec.class_names and spec.class_names[column] \
                and known.size and known.max() >= len(spec.class_names[column]):
            return f"column '{name}' holds code {int(known.max())} but names " \
                   f"{len(spec.class_names[column])} classes"
    return ""


def read_attributes(path, split: str) -> tuple[AttributeSpec, np.ndarray] | None:
    """(spec, float32 labels (N, A)) of a split of a validated pair file; None where it
    holds no attributes."""
    with h5py.File(Path(path), "r") as f:
        if DATASET not in f[split]:
            return None
        dataset = f[split][DATASET]
        spec, problem = spec_problem(dataset)
        if spec is None:
            raise ValueError(f"{path}: {split}/{DATASET} {problem}")
        return spec, dataset[()].astype(np.float32)


def speaker_groups_of(f: h5py.File) -> list[str] | None:
    return _strings(f.attrs.get("speaker_groups"))


def groups_problem(groups, num_speakers: int) -> str:
    """What is wrong with a file's `speaker_groups` root attribute, or ""."""
    if groups is None or len(groups) != num_speakers:
        return f"root attribute 'speaker_groups' must hold one string per speaker " \
               f"({num_speakers})"
    bad = [g for g in groups if not GROUP_PATTERN.match(g)]
    if bad:
        return f"root attribute 'speaker_groups' holds {bad[0]!r}; use lower-case " \
               "identifiers such as 'interp', or '' for none"
    return ""


def write_speaker_groups(f: h5py.File, groups) -> None:
    f.attrs.create("speaker_groups", [str(g) for g in groups], dtype=_STRING)
