"""GAN losses as pure functions of tensors; the trainer weights and sums them."""
from __future__ import annotations

import torch
import torch.nn.functional as F


def lsgan_discriminator_loss(real_scores, fake_scores, wrong_scores, real_target: float = 0.9):
    """Least squares (Mao et al. 2017): real pairs -> 0.9 (one-sided smoothing), fake and wrong -> 0."""
    return (F.mse_loss(real_scores, torch.full_like(real_scores, real_target))
            + F.mse_loss(fake_scores, torch.zeros_like(fake_scores))
            + F.mse_loss(wrong_scores, torch.zeros_like(wrong_scores)))


def lsgan_generator_loss(fake_scores):
    return F.mse_loss(fake_scores, torch.ones_like(fake_scores))


def feature_matching_loss(real_features, fake_features):
    """Salimans et al. 2016: match D's batch-mean trunk features of real and generated faces."""
    return F.mse_loss(fake_features.mean(dim=0), real_features.detach().mean(dim=0))


def reconstruction_l1(fake_faces, real_faces):
    return F.l1_loss(fake_faces, real_faces)


def speaker_softmax_loss(logits, speaker_ids):
    return F.cross_entropy(logits, speaker_ids)
