"""The HDF5 pair file: one file holds every (speech window, face frame, speaker) pair.

Schema, format version 1
------------------------
Root attributes
    format          "speech-face-pairs"
    version         1
    sample_rate     16000 (int); the only rate the models read
    speaker_names   array of UTF-8 strings; speaker index i is speaker_names[i],
                    sorted so the same folders always give the same indices

One group per split: ``train`` (required), ``valid`` and ``test`` (optional).
Each group holds three datasets with the same first dimension N (N >= 1):
    waveforms     int16  (N, L)        mono speech at sample_rate; L samples per window.
                                        L may exceed the model's input: training takes a
                                        random crop, evaluation the centre.
    faces         uint8  (N, S, S, 3)  square RGB face frames (true colour, not BGR)
    speaker_ids   int64  (N,)          index into speaker_names

A split may also hold ``pair_names`` (UTF-8 strings, (N,)): where each pair came from.
Every split of a file shares one L and one S. Readers resize faces to the model's size.

Optional condition vectors (for ``--condition embedding``)
    embeddings    float32 (N, E)       one fixed vector per pair, computed elsewhere (a
                                        face-recognition or text embedding, for example);
                                        row i belongs to pair i. Other float widths are
                                        read too. Either every split holds it, with one E,
                                        or none does; values must be finite.

Optional labels (for ``--metrics attributes``, see data/attributes.py)
    attributes    float32 (N, A)       per-pair labels (a class code or a number, NaN where
                                        unknown), with HDF5 attributes `names`, `kinds`
                                        ("class" or "number") and optionally `class_names`.
                                        Every split or none, with the same names and kinds.
A root attribute ``speaker_groups`` (one string per speaker) may name the group of each
held-out speaker (the unseen-speaker demo: "interp", "extrap"). A root attribute ``source``
(a string) may name what the pairs were made from: `data.prepare` writes "videos" or
"wav2pix", and `runtime.py --recipe auto` trains a "videos" file with the real-video recipe.
"""
from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import h5py
import numpy as np

from data.attributes import (DATASET as ATTRIBUTES, AttributeSpec, groups_problem,
                             spec_problem, speaker_groups_of, values_problem,
                             write_speaker_groups)
from utils import UserError

FORMAT_NAME = "speech-face-pairs"
FORMAT_VERSION = 1
SAMPLE_RATE = 16000
SPLITS = ("train", "valid", "test")
_STRING = h5py.string_dtype("utf-8")


class PairFileError(UserError):
    """A pair file that is missing, unreadable or does not follow the schema."""


@dataclass
class SplitInfo:
    num_pairs: int
    window_samples: int
    face_size: int
    embedding_dim: int = 0      # E of `embeddings`; 0 where the split has none
    attributes: AttributeSpec | None = None   # its `attributes` columns, None where none


@dataclass
class PairFileInfo:
    path: Path
    speaker_names: list[str]
    sample_rate: int
    splits: dict[str, SplitInfo] = field(default_factory=dict)
    speaker_groups: list[str] | None = None    # root attribute `speaker_groups`, if any
    source: str | None = None                  # root attribute `source`, if any

    @property
    def window_samples(self) -> int:
        return self.splits["train"].window_samples

    @property
    def face_size(self) -> int:
        return self.splits["train"].face_size

    @property
    def embedding_dim(self) -> int:
        return self.splits["train"].embedding_dim

    @property
    def attributes(self) -> AttributeSpec | None:
        return self.splits["train"].attributes


# ---------------------------------------------------------------- writing

class PairWriter:
    """Streams pairs into a new pair file chunk by chunk, so memory stays flat.

    Use as a context manager; the file is written under a temporary name and renamed
    into place only when closed without an error, so a failed run leaves no half file.
    """

    def __init__(self, path, speaker_names, window_samples: int, face_size: int,
                 sample_rate: int = SAMPLE_RATE, chunk_rows: int = 64,
                 attributes: AttributeSpec | None = None, speaker_groups=None,
                 source: str | None = None):
        """`attributes`: the columns every append then gives labels for; `speaker_groups`:
        one string per speaker (see data/attributes.py); `source`: what the pairs are made
        from (the root attribute)."""
        self.path = Path(path)
        self.attributes = attributes
        self._tmp = self.path.with_name(self.path.name + ".partial")
        self.window_samples, self.face_size = int(window_samples), int(face_size)
        self.chunk_rows = chunk_rows
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self._file = h5py.File(self._tmp, "w")
        self._file.attrs["format"] = FORMAT_NAME
        self._file.attrs["version"] = FORMAT_VERSION
        self._file.attrs["sample_rate"] = int(sample_rate)
        if source is not None:
            self._file.attrs["source"] = source
        self.set_speaker_names(speaker_names)
        if speaker_groups is not None:
            write_speaker_groups(self._file, speaker_groups)

    def set_speaker_names(self, speaker_names) -> None:
        names = [str(n) for n in speaker_names]
        self._file.attrs.create("speaker_names", names, dtype=_STRING)

    def _split_group(self, split: str) -> h5py.Group:
        if split not in SPLITS:
            raise ValueError(f"unknown split {split!r}; use one of {SPLITS}")
        if split in self._file:
            return self._file[split]
        group = self._file.create_group(split)
        rows, s = self.chunk_rows, self.face_size
        group.create_dataset("waveforms", (0, self.window_samples), np.int16,
                             maxshape=(None, self.window_samples), chunks=(1, self.window_samples))
        group.create_dataset("faces", (0, s, s, 3), np.uint8,
                             maxshape=(None, s, s, 3), chunks=(1, s, s, 3))
        group.create_dataset("speaker_ids", (0,), np.int64, maxshape=(None,), chunks=(rows,))
        group.create_dataset("pair_names", (0,), _STRING, maxshape=(None,), chunks=(rows,))
        if self.attributes is not None:
            width = len(self.attributes.names)
            self.attributes.write_to(group.create_dataset(
                ATTRIBUTES, (0, width), np.float32, maxshape=(None, width), chunks=(rows, width)))
        return group

    def append(self, split: str, waveforms, faces, speaker_ids, pair_names=None,
               embeddings=None, attributes=None) -> None:
        """Append pairs: waveforms int16 (n, L), faces uint8 (n, S, S, 3), speaker_ids (n,),
        optionally embeddings float32 (n, E) (give them with every append of a split or never)
        and, for a writer made with an AttributeSpec, labels float32 (n, A) every time."""
        waveforms = np.asarray(waveforms, dtype=np.int16)
        faces = np.asarray(faces, dtype=np.uint8)
        speaker_ids = np.asarray(speaker_ids, dtype=np.int64)
        n = len(speaker_ids)
        if waveforms.shape != (n, self.window_samples):
            raise ValueError(f"waveforms shape {waveforms.shape}, expected ({n}, {self.window_samples})")
        if faces.shape != (n, self.face_size, self.face_size, 3):
            raise ValueError(f"faces shape {faces.shape}, expected "
                             f"({n}, {self.face_size}, {self.face_size}, 3)")
        names = [""] * n if pair_names is None else [str(p) for p in pair_names]
        group = self._split_group(split)
        start = group["speaker_ids"].shape[0]
        columns = [("waveforms", waveforms), ("faces", faces), ("speaker_ids", speaker_ids),
                   ("pair_names", names)]
        if embeddings is not None or "embeddings" in group:
            columns.append(("embeddings", self._embedding_column(group, embeddings, start, n)))
        if self.attributes is not None or attributes is not None:
            columns.append((ATTRIBUTES, self._attribute_column(attributes, n)))
        for key, values in columns:
            group[key].resize(start + n, axis=0)
            group[key][start:start + n] = values

    def _embedding_column(self, group: h5py.Group, embeddings, start: int, n: int) -> np.ndarray:
        """The rows to append, creating the dataset on the split's first append."""
        if embeddings is None or ("embeddings" not in group and start):
            raise ValueError("embeddings must come with every append of a split, from the first on")
        embeddings = np.asarray(embeddings, dtype=np.float32)
        if embeddings.ndim != 2 or len(embeddings) != n:
            raise ValueError(f"embeddings shape {embeddings.shape}, expected ({n}, E)")
        if "embeddings" not in group:
            width = embeddings.shape[1]
            group.create_dataset("embeddings", (0, width), np.float32, maxshape=(None, width),
                                 chunks=(self.chunk_rows, width))
        return embeddings

    def _attribute_column(self, attributes, n: int) -> np.ndarray:
        if self.attributes is None or attributes is None:
            raise ValueError("attribute labels need a writer made with an AttributeSpec, "
                             "and then come with every append")
        attributes = np.asarray(attributes, dtype=np.float32)
        if attributes.shape != (n, len(self.attributes.names)):
            raise ValueError(f"attributes shape {attributes.shape}, expected "
                             f"({n}, {len(self.attributes.names)})")
        return attributes

    def close(self, ok: bool = True) -> None:
        if self._file is None:
            return
        self._file.close()
        self._file = None
        if ok:
            self._tmp.replace(self.path)
        else:
            self._tmp.unlink(missing_ok=True)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        self.close(ok=exc_type is None)


def write_pair_file(path, splits: dict, speaker_names, sample_rate: int = SAMPLE_RATE,
                    embeddings: dict | None = None, source: str | None = None) -> Path:
    """Write a whole pair file at once.

    `splits` maps a split name to (waveforms (N, L) int16, faces (N, S, S, 3) uint8,
    speaker_ids (N,)) and optionally a fourth item, the pair names. `embeddings` maps a
    split name to its condition vectors, float32 (N, E). `source`: the root attribute.
    """
    first = next(iter(splits.values()))
    with PairWriter(path, speaker_names, first[0].shape[1], first[1].shape[1],
                    sample_rate=sample_rate, source=source) as writer:
        for split, arrays in splits.items():
            writer.append(split, *arrays, embeddings=(embeddings or {}).get(split))
    return Path(path)


# ---------------------------------------------------------------- validation

def _fail(path, problem: str):
    raise PairFileError(f"{path}: {problem}")


def _open(path) -> h5py.File:
    path = Path(path)
    if not path.exists():
        _fail(path, "no such file; pass an existing pair file with --dataset "
                    "(make one with `python -m data.prepare`)")
    if path.is_dir():
        _fail(path, "is a folder; --dataset takes an HDF5 pair file")
    try:
        return h5py.File(path, "r")
    except OSError:
        _fail(path, "is not a readable HDF5 file; rebuild it with `python -m data.prepare`")


def _check_split(path, f: h5py.File, split: str, num_speakers: int) -> SplitInfo:
    group = f[split]
    if not isinstance(group, h5py.Group):
        _fail(path, f"'{split}' is not a group of datasets")
    for key in ("waveforms", "faces", "speaker_ids"):
        if key not in group or not isinstance(group[key], h5py.Dataset):
            _fail(path, f"split '{split}' has no '{key}' dataset (see the schema in data/schema.py)")
    waveforms, faces, ids = group["waveforms"], group["faces"], group["speaker_ids"]
    if waveforms.dtype != np.int16 or waveforms.ndim != 2:
        _fail(path, f"{split}/waveforms must be int16 (N, L), found {waveforms.dtype} {waveforms.shape}")
    if faces.dtype != np.uint8 or faces.ndim != 4 or faces.shape[3] != 3 or faces.shape[1] != faces.shape[2]:
        _fail(path, f"{split}/faces must be uint8 (N, S, S, 3), found {faces.dtype} {faces.shape}")
    if ids.ndim != 1 or ids.dtype.kind not in "iu":
        _fail(path, f"{split}/speaker_ids must be integers (N,), found {ids.dtype} {ids.shape}")
    n = ids.shape[0]
    if n == 0:
        _fail(path, f"split '{split}' is empty")
    if waveforms.shape[0] != n or faces.shape[0] != n:
        _fail(path, f"split '{split}' has {waveforms.shape[0]} waveforms, {faces.shape[0]} faces "
                    f"and {n} speaker ids; they must match")
    if waveforms.shape[1] < 1 or faces.shape[1] < 4:
        _fail(path, f"split '{split}' has empty windows or faces")
    id_values = ids[()]
    if id_values.min() < 0 or id_values.max() >= num_speakers:
        _fail(path, f"{split}/speaker_ids range over {id_values.min()}..{id_values.max()} "
                    f"but the file names {num_speakers} speakers")
    return SplitInfo(num_pairs=n, window_samples=waveforms.shape[1], face_size=faces.shape[1],
                     embedding_dim=_check_embeddings(path, group, split, n),
                     attributes=_check_attributes(path, group, split, n))


def _check_embeddings(path, group: h5py.Group, split: str, n: int) -> int:
    """E of the split's optional `embeddings` (N, E) float dataset; 0 where it has none."""
    if "embeddings" not in group:
        return 0
    embeddings = group["embeddings"]
    if (not isinstance(embeddings, h5py.Dataset) or embeddings.dtype.kind != "f"
            or embeddings.ndim != 2 or embeddings.shape[0] != n or embeddings.shape[1] < 1):
        _fail(path, f"{split}/embeddings must be float32 ({n}, E), one vector per pair, found "
                    f"{getattr(embeddings, 'dtype', 'a group')} {getattr(embeddings, 'shape', '')}")
    if not np.isfinite(embeddings[: min(n, 16)]).all():
        _fail(path, f"{split}/embeddings holds NaN or infinite values in its first rows")
    return embeddings.shape[1]


def _check_attributes(path, group: h5py.Group, split: str, n: int) -> AttributeSpec | None:
    """The columns of the split's optional `attributes` (N, A) labels; None where it has none."""
    if ATTRIBUTES not in group:
        return None
    labels = group[ATTRIBUTES]
    where = f"{split}/{ATTRIBUTES}"
    if (not isinstance(labels, h5py.Dataset) or labels.dtype.kind != "f" or labels.ndim != 2
            or labels.shape[0] != n or labels.shape[1] < 1):
        _fail(path, f"{where} must be float32 ({n}, A), one row of labels per pair, found "
                    f"{getattr(labels, 'dtype', 'a group')} {getattr(labels, 'shape', '')}")
    spec, problem = spec_problem(labels)
    problem = problem or values_problem(labels[()], spec)
    if problem:
        _fail(path, f"{where} {problem} (see the pair file schema in README.md)")
    return spec


def _check_file_attributes(path, f: h5py.File, info: PairFileInfo) -> None:
    """Labels in every split or none, with one set of columns; speaker groups that fit."""
    specs = {split: s.attributes for split, s in info.splits.items()}
    columns = {split: None if spec is None else (spec.names, spec.kinds)
               for split, spec in specs.items()}
    if len(set(columns.values())) > 1:
        shown = {split: "none" if c is None else ",".join(f"{n}:{k}" for n, k in zip(*c))
                 for split, c in columns.items()}
        _fail(path, f"splits disagree on their attribute labels ({shown}); give every split "
                    "the same attributes columns, or none")
    if "speaker_groups" in f.attrs:
        groups = speaker_groups_of(f)
        problem = groups_problem(groups, len(info.speaker_names))
        if problem:
            _fail(path, problem)
        info.speaker_groups = groups


def require_embeddings(info: PairFileInfo, width: int | None = None) -> None:
    """Refuse a file that cannot feed `--condition embedding` (or a model that reads E=width)."""
    if not info.embedding_dim:
        _fail(info.path, "holds no per-pair 'embeddings' (float32 (N, E) in every split), "
                         "which --condition embedding needs; add them or use --condition speech")
    if width is not None and info.embedding_dim != width:
        _fail(info.path, f"holds {info.embedding_dim}-wide embeddings but the model reads "
                         f"{width}-wide ones; use a file made with the same embedding")


def validate_pair_file(path) -> PairFileInfo:
    """Open a pair file, check it against the schema and describe it; raises PairFileError."""
    path = Path(path)
    with _open(path) as f:
        try:
            return _describe(path, f)
        except (OSError, RuntimeError, KeyError, ValueError, TypeError) as error:
            # h5py's own errors on a damaged file (a cut copy, flipped bytes): broken heaps,
            # addresses past the end, undecodable headers.
            detail = str(error).strip().splitlines()[0][:100] if str(error).strip() else ""
            _fail(path, f"is damaged ({type(error).__name__}: {detail}); rebuild it with "
                        "`python -m data.prepare` or copy it again")


def _scalar_attr(f: h5py.File, name: str):
    """A root attribute as a plain Python scalar (bytes decoded), or None if absent or not one."""
    value = f.attrs.get(name)
    if isinstance(value, np.ndarray) and value.shape == ():
        value = value.item()
    if isinstance(value, np.generic):
        value = value.item()
    if isinstance(value, bytes):
        value = value.decode("utf-8", "replace")
    return value if isinstance(value, (str, int, float)) else None


def _speaker_names(path, f: h5py.File) -> list[str]:
    value = f.attrs.get("speaker_names")
    if value is None or isinstance(value, (str, bytes)) or np.ndim(value) != 1 or len(value) == 0:
        _fail(path, "names no speakers (root attribute 'speaker_names' must list their names)")
    names = [n.decode("utf-8", "replace") if isinstance(n, bytes) else n for n in value]
    if not all(isinstance(n, str) and n for n in names):
        _fail(path, "root attribute 'speaker_names' must hold non-empty strings")
    if len(set(names)) != len(names):
        _fail(path, "root attribute 'speaker_names' names a speaker twice")
    return names


def _describe(path, f: h5py.File) -> PairFileInfo:
    if _scalar_attr(f, "format") != FORMAT_NAME:
        _fail(path, f"is not a {FORMAT_NAME} file (no 'format' attribute); "
                    "convert it with `python -m data.prepare`")
    version = _scalar_attr(f, "version")
    if version != FORMAT_VERSION:
        _fail(path, f"has format version {version!r}; this code reads version {FORMAT_VERSION}")
    rate = _scalar_attr(f, "sample_rate")
    if rate != SAMPLE_RATE:
        _fail(path, f"holds speech at {rate!r} Hz (root attribute 'sample_rate'); the models "
                    f"read {SAMPLE_RATE} Hz, so rebuild it with `python -m data.prepare` "
                    "(it resamples)")
    names = _speaker_names(path, f)
    if "train" not in f:
        _fail(path, "has no 'train' split")
    source = _scalar_attr(f, "source")
    info = PairFileInfo(path=path, speaker_names=names, sample_rate=int(rate),
                        source=source if isinstance(source, str) else None)
    for split in SPLITS:
        if split in f:
            info.splits[split] = _check_split(path, f, split, len(names))
    shapes = {(s.window_samples, s.face_size) for s in info.splits.values()}
    if len(shapes) > 1:
        _fail(path, f"splits disagree on window length or face size: {sorted(shapes)}")
    widths = {split: s.embedding_dim for split, s in info.splits.items()}
    if len(set(widths.values())) > 1:
        _fail(path, "splits disagree on their embeddings (split: width, 0 for none): "
                    f"{widths}; give every split embeddings of one width, or none")
    _check_file_attributes(path, f, info)
    for value_check in _sample_rows(f, info):
        _fail(path, value_check)
    return info


def _sample_rows(f: h5py.File, info: PairFileInfo):
    """Yield a problem for each split whose first rows hold no usable speech."""
    for split, split_info in info.splits.items():
        rows = f[split]["waveforms"][: min(split_info.num_pairs, 16)]
        if not np.any(rows):
            yield f"the first windows of split '{split}' are all silent (all zeros)"
