"""Frechet distances between the real and the generated faces' feature distributions: in the
identity classifier's space, dlib's descriptor space and, with a user-supplied Inception
network, Inception-v3's (FID)."""
from __future__ import annotations

import numpy as np
import torch

from models.metrics.distances import frechet_distance
from models.metrics.registry import register_metric


def load_inception(path, device):
    """A TorchScript Inception-v3 feature network, e.g. NVIDIA's `inception-2015-12-05.pt`
    of the StyleGAN2-ADA metrics: called as net(uint8 NCHW, return_features=True) -> (N, 2048).
    Nothing is downloaded: the user passes the file."""
    return torch.jit.load(str(path), map_location=device).eval()


@torch.no_grad()
def inception_features(network, faces: np.ndarray, device, batch: int = 64) -> np.ndarray:
    chunks = []
    for start in range(0, len(faces), batch):
        images = torch.from_numpy(np.ascontiguousarray(faces[start:start + batch]))
        chunks.append(network(images.permute(0, 3, 1, 2).to(device), return_features=True).cpu())
    return torch.cat(chunks).float().numpy()


def suite_inception_features(faces: np.ndarray, suite) -> np.ndarray | None:
    """(N, 2048) Inception features where the suite was given the network, else None."""
    if suite.inception is None:
        return None
    return inception_features(suite.inception, faces, suite.device)


@register_metric("frechet",
                 "Frechet distance between real and generated faces in the classifier's and "
                 "dlib's feature spaces (and Inception FID with --inception)",
                 needs=("descriptors", "classifier"), unconditional=True,
                 analyse=suite_inception_features)
def frechet(fake, real, speaker_ids, suite) -> dict[str, float]:
    results = {"frechet_classifier": frechet_distance(real.features, fake.features),
               "frechet_dlib": frechet_distance(real.descriptors, fake.descriptors)}
    if fake.extra["frechet"] is not None:
        results["fid_inception"] = frechet_distance(real.extra["frechet"], fake.extra["frechet"])
    return results
