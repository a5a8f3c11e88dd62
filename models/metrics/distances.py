"""Scores on feature vectors: accuracy, Frechet distance, 1:2 matching and recall@K.

All are pure functions of numpy arrays, so each can be checked on vectors made by hand.
"""
from __future__ import annotations

import numpy as np


def top_k_accuracy(logits: np.ndarray, labels: np.ndarray, k: int) -> float:
    """Share of rows whose label is among the k highest logits (N, C)."""
    k = min(k, logits.shape[1])
    top = np.argsort(-logits, axis=1)[:, :k]
    return float((top == labels[:, None]).any(axis=1).mean())


def frechet_distance(real: np.ndarray, fake: np.ndarray) -> float:
    """||mu_r - mu_f||^2 + Tr(S_r + S_f - 2 (S_r S_f)^(1/2)) of Gaussians fitted to (N, D).

    Tr((S_r S_f)^(1/2)) is taken from the eigenvalues of S_r^(1/2) S_f S_r^(1/2), which is
    symmetric PSD, so no complex square root is needed (Heusel et al. 2017, eq. 6).
    """
    real, fake = real.astype(np.float64), fake.astype(np.float64)
    mean_term = float(np.sum((real.mean(0) - fake.mean(0)) ** 2))
    cov_real = np.atleast_2d(np.cov(real, rowvar=False))
    cov_fake = np.atleast_2d(np.cov(fake, rowvar=False))
    values, vectors = np.linalg.eigh(cov_real)
    root_real = (vectors * np.sqrt(np.clip(values, 0, None))) @ vectors.T
    middle = np.linalg.eigvalsh(root_real @ cov_fake @ root_real)
    trace_root = float(np.sum(np.sqrt(np.clip(middle, 0, None))))
    return mean_term + float(np.trace(cov_real) + np.trace(cov_fake)) - 2 * trace_root


def speaker_centroids(descriptors: np.ndarray, speaker_ids: np.ndarray):
    """(speakers present (P,), mean descriptor of each (P, D))."""
    speakers = np.unique(speaker_ids)
    return speakers, np.stack([descriptors[speaker_ids == s].mean(0) for s in speakers])


def _unit(vectors: np.ndarray) -> np.ndarray:
    return vectors / np.maximum(np.linalg.norm(vectors, axis=-1, keepdims=True), 1e-12)


def similarity_to_speakers(fake: np.ndarray, fake_ids: np.ndarray, real: np.ndarray,
                           real_ids: np.ndarray) -> dict[str, float]:
    """Mean cosine similarity and Euclidean distance of each generated descriptor to every
    real descriptor of its own speaker, and to those of the other speakers."""
    cosine = _unit(fake) @ _unit(real).T                                   # (N, M)
    euclid = np.linalg.norm(fake[:, None] - real[None], axis=-1)           # (N, M)
    same = fake_ids[:, None] == real_ids[None]
    result = {"cosine_same": cosine[same].mean(), "euclidean_same": euclid[same].mean()}
    if (~same).any():
        result.update(cosine_other=cosine[~same].mean(), euclidean_other=euclid[~same].mean())
    return {k: float(v) for k, v in result.items()}


def similarity_to(fake: np.ndarray, centroids: np.ndarray, distance: str) -> np.ndarray:
    """(N, P) similarity of each descriptor to each centroid: cosine, or minus the Euclidean
    distance (for descriptors whose axes share a unit, as standardised attributes do)."""
    if distance == "cosine":
        return _unit(fake) @ _unit(centroids).T
    return -np.linalg.norm(fake[:, None] - centroids[None], axis=-1)


def matching_1v2(fake: np.ndarray, fake_ids: np.ndarray, real: np.ndarray,
                 real_ids: np.ndarray, distance: str = "cosine") -> float:
    """1:2 matching (Nagrani et al. 2018; Wen et al. 2019): is a generated face closer (cosine,
    or Euclidean) to its speaker's real faces than to another speaker's? Averaged over every
    generated face and every other speaker present, using each speaker's mean real
    descriptor. Chance: 0.5."""
    speakers, centroids = speaker_centroids(real, real_ids)
    similarity = similarity_to(fake, centroids, distance)                 # (N, P)
    own = similarity[np.arange(len(fake)), np.searchsorted(speakers, fake_ids)]
    others = speakers[None] != fake_ids[:, None]
    wins = (own[:, None] > similarity) + 0.5 * (own[:, None] == similarity)
    return float(wins[others].mean())


def recall_at_k(fake: np.ndarray, fake_ids: np.ndarray, real: np.ndarray, real_ids: np.ndarray,
                ks=(1, 5, 10), distance: str = "cosine") -> dict[int, float]:
    """Voice-to-face retrieval: rank the speakers' mean real descriptors by cosine similarity
    (or Euclidean closeness) to each generated face; recall@K is the share whose own speaker
    ranks in the top K. Chance: K / number of speakers (1.0 once K reaches it)."""
    speakers, centroids = speaker_centroids(real, real_ids)
    similarity = similarity_to(fake, centroids, distance)
    own = similarity[np.arange(len(fake)), np.searchsorted(speakers, fake_ids)]
    rank = (similarity > own[:, None]).sum(axis=1)                         # 0 = first
    return {k: float((rank < k).mean()) for k in ks}
