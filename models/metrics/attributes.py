"""Attribute agreement (Speech2Face's protocol, offline): does the face drawn for a voice
carry the speaker's labelled attributes (beard, face width, gender, ...)?

One small network, a convolutional trunk with one head per labelled attribute (class
logits, or one standardised number), is trained on the pair file's real train faces and
cached next to the file like the identity classifier. It is applied to the generated faces
of the scored pairs and, as the ceiling, to their real faces. Figures per attribute A:
    attributes_A         accuracy (class) or Pearson correlation (number) of its predictions
                         on the generated faces against the pairs' true labels
    attributes_A_real    the same on the real faces: what the predictor can read at all
    attributes_A_blind   a voice-blind baseline: the train split's majority class for
                         every pair (its accuracy), or the train mean (correlation 0)
and the same per speaker group (`attributes_A_<group>...`) where the file names groups.
"""
from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import NamedTuple

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from data.attributes import AttributeSpec, read_attributes
from data.dataset import read_faces, read_speaker_ids
from data.schema import PairFileInfo
from models.metrics.identity_classifier import (augment, cached_network, conv_trunk,
                                                faces_to_input, file_sha256, fit_on_faces)
from models.metrics.registry import register_metric
from utils import UserError

CACHE_VERSION = 1           # bump when the recipe below changes, so old caches are not reused
TRAIN_EPOCHS = 10
MIN_STEPS, MAX_STEPS = 60, 400
BATCH_SIZE = 32
LEARNING_RATE = 2e-3


@dataclass
class AttributePredictorConfig:
    names: tuple
    kinds: tuple
    outputs: tuple              # per attribute: classes (class) or 1 (number)
    mean: tuple                 # per attribute: the train labels' mean (numbers; 0 for classes)
    scale: tuple                # and standard deviation (1 for classes)
    majority: tuple             # per attribute: the train majority class (-1 for numbers)
    image_size: int = 64
    channels: tuple = (16, 32, 64, 128)


class AttributePredictor(nn.Module):
    """faces (B, 3, 64, 64) in [-1, 1] -> (B, sum(outputs)): every head's outputs side by side."""

    def __init__(self, config: AttributePredictorConfig):
        super().__init__()
        self.config = config
        self.trunk, in_channels = conv_trunk(config.channels)      # the identity classifier's
        # Flattened, not pooled: widths, heights and where a beard sits are places in the map.
        side = config.image_size // 2 ** len(config.channels)
        self.heads = nn.Sequential(nn.Flatten(), nn.Linear(in_channels * side * side, 128),
                                   nn.ReLU(True), nn.Linear(128, sum(config.outputs)))

    def forward(self, faces: torch.Tensor) -> torch.Tensor:
        return self.heads(self.trunk(faces))

    def split_outputs(self, outputs: torch.Tensor) -> list[torch.Tensor]:
        return list(outputs.split(list(self.config.outputs), dim=1))


def predictor_config(spec: AttributeSpec, labels: np.ndarray) -> AttributePredictorConfig:
    """Heads and target statistics from the train labels (N, A), NaN where unknown."""
    outputs, mean, scale, majority = [], [], [], []
    for column, kind in enumerate(spec.kinds):
        known = labels[:, column][~np.isnan(labels[:, column])]
        if kind == "class":
            counts = np.bincount(known.astype(np.int64)) if known.size else np.zeros(1)
            named = len(spec.class_names[column]) if spec.class_names else 0
            outputs.append(max(2, len(counts), named))
            mean.append(0.0), scale.append(1.0), majority.append(int(np.argmax(counts)))
        else:
            outputs.append(1)
            mean.append(float(known.mean()) if known.size else 0.0)
            scale.append(float(known.std()) if known.size and known.std() > 0 else 1.0)
            majority.append(-1)
    return AttributePredictorConfig(spec.names, spec.kinds, tuple(outputs), tuple(mean),
                                    tuple(scale), tuple(majority))


def recolour(faces: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Shuffled colour channels and a random grey mix per face (B, 3, H, W): skin, hair and
    shirt colours name a train speaker but say nothing about a new one's attributes, so the
    predictor must read shapes."""
    batch = len(faces)
    order = torch.argsort(torch.rand(batch, 3, generator=generator), dim=1)
    shuffled = faces.gather(1, order[:, :, None, None].expand_as(faces))
    grey = torch.rand(batch, 1, 1, 1, generator=generator)
    return grey * faces.mean(1, keepdim=True) + (1 - grey) * shuffled


def _loss(predictor: AttributePredictor, outputs: torch.Tensor, targets: torch.Tensor):
    """Cross-entropy per class head plus squared error per standardised number; labels that
    are NaN add nothing."""
    config, total = predictor.config, outputs.new_zeros(())
    for column, head in enumerate(predictor.split_outputs(outputs)):
        target = targets[:, column]
        known = ~torch.isnan(target)
        if not known.any():
            continue
        if config.kinds[column] == "class":
            total = total + F.cross_entropy(head[known], target[known].long())
        else:
            standard = (target[known] - config.mean[column]) / config.scale[column]
            total = total + F.mse_loss(head[known, 0], standard)
    return total


def training_steps(num_faces: int) -> int:
    return min(MAX_STEPS, max(MIN_STEPS, TRAIN_EPOCHS * -(-num_faces // BATCH_SIZE)))


def train_attribute_predictor(faces: np.ndarray, labels: np.ndarray, spec: AttributeSpec,
                              device, seed: int = 0) -> AttributePredictor:
    """Train on uint8 faces (N, S, S, 3) and their labels (N, A); a fixed number of steps."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    predictor = AttributePredictor(predictor_config(spec, labels)).to(device)
    inputs = faces_to_input(faces, predictor.config.image_size)
    targets = torch.as_tensor(labels, dtype=torch.float32)
    fit_on_faces(predictor, inputs,
                 lambda outputs, rows: _loss(predictor, outputs, targets[rows].to(device)),
                 training_steps(len(inputs)), generator, device,
                 augmented=lambda faces, g: recolour(augment(faces, g), g),
                 batch_size=BATCH_SIZE, learning_rate=LEARNING_RATE)
    return predictor


@torch.no_grad()
def predict_attributes(predictor: AttributePredictor, faces: np.ndarray, device,
                       batch: int = 256) -> tuple[np.ndarray, np.ndarray]:
    """uint8 faces (N, S, S, 3) -> (float32 (N, A): class codes and numbers in label units,
    float32 (N, 128): the heads' shared hidden layer, a face embedding that holds what the
    labelled attributes need)."""
    predictor.eval()
    config, chunks, hidden = predictor.config, [], []
    for start in range(0, len(faces), batch):
        inputs = faces_to_input(faces[start:start + batch], config.image_size).to(device)
        features = predictor.heads[:-1](predictor.trunk(inputs))
        heads = predictor.split_outputs(predictor.heads[-1](features).float().cpu())
        chunks.append(torch.stack([
            head.argmax(1).float() if kind == "class" else head[:, 0] * scale + mean
            for head, kind, mean, scale in zip(heads, config.kinds, config.mean, config.scale)],
            dim=1))
        hidden.append(features.float().cpu())
    return torch.cat(chunks).numpy(), torch.cat(hidden).numpy()


# ---------------------------------------------------------------- cache next to the pair file

def cache_path(pair_file: Path, sha256: str) -> Path:
    return pair_file.with_name(f"{pair_file.name}.attributes-v{CACHE_VERSION}-{sha256[:16]}.pt")


def build_predictor(config: dict) -> AttributePredictor:
    return AttributePredictor(AttributePredictorConfig(
        **{k: tuple(v) if isinstance(v, list) else v for k, v in config.items()}))


def attribute_predictor_for(info: PairFileInfo, device, log=print) -> AttributePredictor:
    """The cached predictor of this exact file, training and caching it on first use."""
    sha256 = file_sha256(info.path)
    path = cache_path(Path(info.path), sha256)

    def train() -> AttributePredictor:
        faces, _ = read_faces(info, "train")
        spec, labels = read_attributes(info.path, "train")
        log(f"training the attribute predictor ({', '.join(spec.names)}) on {len(faces)} real "
            f"train faces ({training_steps(len(faces))} steps); cached in {path}")
        return train_attribute_predictor(faces, labels, spec, device)
    return cached_network(path, sha256, device, build_predictor, train, "attribute predictor",
                          log)


# ---------------------------------------------------------------- the figures

def pearson(predicted: np.ndarray, truth: np.ndarray) -> float:
    """Correlation; 0 for predictions without spread (they carry nothing about the truth),
    NaN where the truth has none (one speaker: correlation is undefined)."""
    if len(truth) < 2 or np.ptp(truth) == 0:
        return float("nan")
    if np.ptp(predicted) == 0:
        return 0.0
    return float(np.corrcoef(predicted.astype(np.float64), truth.astype(np.float64))[0, 1])


class PredictedAttributes(NamedTuple):
    """The attribute predictor's reading of one set of faces (predict_attributes)."""
    labels: np.ndarray          # float32 (N, A): class codes and numbers in label units
    features: np.ndarray        # float32 (N, 128): the heads' shared hidden layer


class AttributeAgreement:
    """The predictor with the true labels (N, A) of the scored rows, in their order, and
    their speakers' groups (N,) or None."""

    def __init__(self, predictor: AttributePredictor, labels: np.ndarray, groups=None):
        self.predictor, self.labels = predictor, labels
        self.groups = None if groups is None else np.asarray(groups)

    def predict(self, faces: np.ndarray, device) -> PredictedAttributes:
        """(predictions (N, A), hidden features (N, 128)): predict_attributes."""
        if len(faces) != len(self.labels):
            raise ValueError(f"{len(faces)} faces for {len(self.labels)} labelled pairs")
        return PredictedAttributes(*predict_attributes(self.predictor, faces, device))

    def label_space(self, fake: np.ndarray, real: np.ndarray) -> tuple[np.ndarray, np.ndarray]:
        """Predictions (N, A) of the generated and the real faces as vectors whose axes share
        a unit: numbers in standard deviations of the real faces' predictions, classes one-hot
        scaled so that a different class is as far as one standard deviation. Euclidean
        distances there count disagreements in the labelled traits, and nothing else."""
        config, parts = self.predictor.config, ([], [])
        for column, (kind, outputs) in enumerate(zip(config.kinds, config.outputs)):
            values = fake[:, column], real[:, column]
            if kind == "class":
                for part, v in zip(parts, values):
                    part.append(np.eye(outputs)[v.astype(int)] / np.sqrt(2))
            else:
                mean, std = values[1].mean(), values[1].std() or 1.0
                for part, v in zip(parts, values):
                    part.append(((v - mean) / std)[:, None])
        return tuple(np.concatenate(part, axis=1) for part in parts)

    def scores(self, fake: np.ndarray, real: np.ndarray) -> dict[str, float]:
        """fake, real: predictions (N, A) on the generated and the real faces."""
        results = self._scores(fake, real, np.ones(len(self.labels), bool), "")
        if self.groups is not None:
            for group in sorted(set(self.groups.tolist()) - {""}):
                results.update(self._scores(fake, real, self.groups == group, f"_{group}"))
        return results

    def _scores(self, fake, real, rows, suffix: str) -> dict[str, float]:
        config, results = self.predictor.config, {}
        for column, (name, kind) in enumerate(zip(config.names, config.kinds)):
            truth = self.labels[rows, column]
            known = ~np.isnan(truth)
            truth, key = truth[known], f"attributes_{name}{suffix}"
            generated, actual = fake[rows, column][known], real[rows, column][known]
            if kind == "class":
                blind = np.full_like(truth, config.majority[column])
                values = [np.mean(p == truth) if truth.size else np.nan
                          for p in (generated, actual, blind)]
            else:
                values = [pearson(generated, truth), pearson(actual, truth), 0.0]
            results.update(zip((key, f"{key}_real", f"{key}_blind"), map(float, values)))
        return results


def predicted_attributes(faces: np.ndarray, suite) -> PredictedAttributes:
    return suite.attributes.predict(faces, suite.device)


@register_metric("attributes",
                 "per labelled attribute (<split>/attributes), agreement of a predictor "
                 "trained on the real train faces with the true label: accuracy (classes) "
                 "or correlation (numbers), beside the real faces and a voice-blind baseline",
                 needs=("attribute_labels",), analyse=predicted_attributes)
def attributes(fake, real, speaker_ids, suite) -> dict[str, float]:
    return suite.attributes.scores(fake.extra["attributes"].labels,
                                   real.extra["attributes"].labels)


def attribute_agreement_for(info: PairFileInfo, split: str, rows, device) -> AttributeAgreement:
    """The agreement of `rows` of `split`: the file's predictor and those rows' labels."""
    if info.attributes is None:
        raise UserError(f"{info.path} holds no attribute labels ('{split}/attributes', see the "
                        "pair file schema in README.md); add them, or leave attributes out "
                        "of --metrics")
    _, labels = read_attributes(info.path, split)
    rows = np.asarray(rows, dtype=np.int64)
    groups = None
    if info.speaker_groups is not None:
        groups = np.asarray(info.speaker_groups)[read_speaker_ids(info, split)[rows]]
    return AttributeAgreement(attribute_predictor_for(info, device), labels[rows], groups)


def labelled_metrics(names: list[str], info: PairFileInfo, metrics_option: str) -> list[str]:
    """`names` without attributes where the file holds no labels and the user asked for
    `all`; asked for by name on such a file, it is refused in one line."""
    if "attributes" not in names or info.attributes is not None:
        return names
    if metrics_option.strip() != "all":
        raise UserError(f"--metrics attributes: {info.path} holds no attribute labels "
                        "(<split>/attributes, see the pair file schema in README.md); make a "
                        "labelled file (python -m data.prepare demo) or drop attributes")
    return [name for name in names if name != "attributes"]
