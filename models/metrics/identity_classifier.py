"""A speaker classifier on face images, trained on a pair file's real train faces.

It plays the part of wav2pix's fine-tuned VGG-Face: its top-1 accuracy on generated faces
says whether a face shows the right speaker, its accuracy on real faces is the ceiling,
and its penultimate features give a Frechet distance in a space that knows these speakers.
It is trained once per pair file and cached next to it, keyed by the file's SHA-256.
"""
from __future__ import annotations

import hashlib
from dataclasses import asdict, dataclass
from pathlib import Path

import numpy as np
import torch
import torch.nn.functional as F
from torch import nn

from utils import write_durably

CACHE_VERSION = 3           # bump when the recipe below changes, so old caches are not reused
TRAIN_EPOCHS = 10           # passes over the train faces, as steps within the bounds below
MIN_STEPS, MAX_STEPS = 100, 200
BATCH_SIZE = 32
LEARNING_RATE = 2e-3
SHIFT_PIXELS = 4            # random translation, so a face need not sit where the crops did


@dataclass
class IdentityClassifierConfig:
    num_speakers: int
    image_size: int = 64
    channels: tuple = (16, 32, 64, 128)
    feature_dim: int = 128


def conv_trunk(channels: tuple) -> tuple[nn.Sequential, int]:
    """Stride-2 3x3 convolutions with BatchNorm and ReLU, one per entry of `channels`
    (64 -> 32 -> 16 -> 8 -> 4 for four), and the channels they end with."""
    layers, in_channels = [], 3
    for out_channels in channels:
        layers += [nn.Conv2d(in_channels, out_channels, 3, 2, 1, bias=False),
                   nn.BatchNorm2d(out_channels), nn.ReLU(True)]
        in_channels = out_channels
    return nn.Sequential(*layers), in_channels


class IdentityClassifier(nn.Module):
    """faces (B, 3, 64, 64) in [-1, 1] -> (logits (B, num_speakers), features (B, 128))."""

    def __init__(self, config: IdentityClassifierConfig):
        super().__init__()
        self.config = config
        self.trunk, in_channels = conv_trunk(config.channels)
        self.features = nn.Sequential(nn.Linear(in_channels, config.feature_dim), nn.ReLU(True))
        self.head = nn.Linear(config.feature_dim, config.num_speakers)

    def forward(self, faces: torch.Tensor):
        pooled = self.trunk(faces).mean(dim=(2, 3))    # (B, C)
        features = self.features(pooled)
        return self.head(features), features


def faces_to_input(faces: np.ndarray, size: int) -> torch.Tensor:
    """uint8 (N, S, S, 3) -> float (N, 3, size, size) in [-1, 1]."""
    tensor = torch.from_numpy(np.ascontiguousarray(faces)).permute(0, 3, 1, 2).float()
    if tensor.shape[-1] != size:
        tensor = F.interpolate(tensor, size=(size, size), mode="bilinear", antialias=True,
                               align_corners=False).clamp(0, 255)
    return tensor / 127.5 - 1.0


def augment(faces: torch.Tensor, generator: torch.Generator) -> torch.Tensor:
    """Random mirror, shift and brightness: the classifier must not key on exact pixels."""
    batch = len(faces)
    flip = torch.rand(batch, generator=generator) < 0.5
    faces = torch.where(flip[:, None, None, None], faces.flip(3), faces)
    shift = torch.randint(-SHIFT_PIXELS, SHIFT_PIXELS + 1, (2,), generator=generator).tolist()
    faces = torch.roll(faces, shifts=shift, dims=(2, 3))
    gain = 1 + 0.2 * (torch.rand(batch, 1, 1, 1, generator=generator) - 0.5)
    return (faces * gain).clamp(-1, 1)


def training_steps(num_faces: int) -> int:
    return min(MAX_STEPS, max(MIN_STEPS, TRAIN_EPOCHS * -(-num_faces // BATCH_SIZE)))


def fit_on_faces(network: nn.Module, inputs: torch.Tensor, batch_loss, steps: int,
                 generator: torch.Generator, device, augmented=augment,
                 batch_size: int = BATCH_SIZE, learning_rate: float = LEARNING_RATE) -> None:
    """Adam with a cosine schedule over `steps` batches of rows drawn from `inputs`
    (N, 3, S, S); `batch_loss(outputs, rows)` scores the network's outputs for the
    `augmented` faces of those rows."""
    optimiser = torch.optim.Adam(network.parameters(), learning_rate)
    schedule = torch.optim.lr_scheduler.CosineAnnealingLR(optimiser, steps)
    network.train()
    for _ in range(steps):
        rows = torch.randint(len(inputs), (min(batch_size, len(inputs)),), generator=generator)
        loss = batch_loss(network(augmented(inputs[rows], generator).to(device)), rows)
        optimiser.zero_grad(set_to_none=True)
        loss.backward()
        optimiser.step()
        schedule.step()
    network.eval()


def train_identity_classifier(faces: np.ndarray, speaker_ids: np.ndarray, num_speakers: int,
                              device, seed: int = 0) -> IdentityClassifier:
    """Train on uint8 faces (N, S, S, 3) and their speaker ids; a fixed number of steps."""
    torch.manual_seed(seed)
    generator = torch.Generator().manual_seed(seed)
    classifier = IdentityClassifier(IdentityClassifierConfig(num_speakers)).to(device)
    inputs = faces_to_input(faces, classifier.config.image_size)
    labels = torch.as_tensor(speaker_ids, dtype=torch.long)
    fit_on_faces(classifier, inputs,
                 lambda outputs, rows: F.cross_entropy(outputs[0], labels[rows].to(device)),
                 training_steps(len(inputs)), generator, device)
    return classifier


@torch.no_grad()
def classify(classifier: IdentityClassifier, faces: np.ndarray, device, batch: int = 256):
    """uint8 faces (N, S, S, 3) -> (logits (N, K), features (N, 128)) as numpy float32."""
    classifier.eval()
    logits, features = [], []
    for start in range(0, len(faces), batch):
        inputs = faces_to_input(faces[start:start + batch], classifier.config.image_size)
        chunk_logits, chunk_features = classifier(inputs.to(device))
        logits.append(chunk_logits.cpu())
        features.append(chunk_features.cpu())
    return torch.cat(logits).numpy(), torch.cat(features).numpy()


# ---------------------------------------------------------------- cache next to the pair file

def file_sha256(path, block: int = 1 << 20) -> str:
    digest = hashlib.sha256()
    with open(path, "rb") as f:
        while chunk := f.read(block):
            digest.update(chunk)
    return digest.hexdigest()


def cache_path(pair_file: Path, sha256: str) -> Path:
    return pair_file.with_name(f"{pair_file.name}.identity-v{CACHE_VERSION}-{sha256[:16]}.pt")


def load_network(path: Path, sha256: str, device, build) -> nn.Module | None:
    """The network cached at `path` for a pair file of this content, in eval mode on `device`,
    or None: no cache, a cache of other content, or a damaged or foreign one (it is retrained,
    never trusted). `build(config dict)` makes the untrained network."""
    if not path.is_file():
        return None
    try:
        saved = torch.load(path, map_location="cpu", weights_only=True)
        if saved.get("sha256") != sha256:
            return None
        network = build(saved["config"])
        network.load_state_dict(saved["state_dict"])
    except Exception:
        return None
    return network.to(device).eval()


def save_network(path: Path, network: nn.Module, sha256: str) -> bool:
    """Cache a network with its dataclass config, durably; False (and nothing written) where
    the folder is not writable."""
    payload = {"sha256": sha256, "config": asdict(network.config),
               "state_dict": {k: v.cpu() for k, v in network.state_dict().items()}}
    try:
        write_durably(path, lambda f: torch.save(payload, f))
    except (OSError, RuntimeError):     # torch.save turns a failed write into RuntimeError
        return False
    return True


def cached_network(path: Path, sha256: str, device, build, train, name: str, log=print):
    """The network cached at `path` (load_network), else `train()`'s, cached there for the
    next run; where the folder is not writable it is kept for this run only."""
    network = load_network(path, sha256, device, build)
    if network is not None:
        return network
    network = train()
    if not save_network(path, network, sha256):
        log(f"note: {path.parent} is not writable; the {name} is kept for this run only")
    return network


def build_classifier(config: dict) -> IdentityClassifier:
    return IdentityClassifier(IdentityClassifierConfig(**{**config,
                                                          "channels": tuple(config["channels"])}))


def identity_classifier_for(pair_file, read_train_faces, num_speakers: int, device,
                            log=print) -> IdentityClassifier:
    """The cached classifier of this exact file, training and caching it on first use.

    `read_train_faces()` returns (uint8 faces (N, S, S, 3), speaker ids (N,)); it is called
    only when no cache matches the file's content.
    """
    pair_file = Path(pair_file)
    sha256 = file_sha256(pair_file)
    path = cache_path(pair_file, sha256)

    def train() -> IdentityClassifier:
        faces, speaker_ids = read_train_faces()
        log(f"training the identity classifier on {len(faces)} real train faces "
            f"({training_steps(len(faces))} steps); cached in {path}")
        return train_identity_classifier(faces, speaker_ids, num_speakers, device)
    return cached_network(path, sha256, device, build_classifier, train, "identity classifier",
                          log)
