"""GAN losses as pure functions of tensors; the trainer weights and sums them.

Every discriminator loss takes D's raw scores of real pairs, generated pairs and, when the
GAN-CLS term is on (Reed et al. 2016), wrong pairs (a face of another speaker under the
current condition); `wrong_scores=None` leaves that term out. `ADVERSARIAL_LOSSES` maps
each `--loss` name to its pair of functions.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

import torch
import torch.nn.functional as F


def _sum_over_pairs(real_term, negative_term, real_scores, fake_scores, wrong_scores):
    """real term + generated term [+ wrong term], weights 1 each as in wav2pix."""
    loss = real_term(real_scores) + negative_term(fake_scores)
    return loss if wrong_scores is None else loss + negative_term(wrong_scores)


def lsgan_discriminator_loss(real_scores, fake_scores, wrong_scores=None, real_target: float = 0.9):
    """Least squares (Mao et al. 2017): real pairs -> 0.9 (one-sided smoothing), fake and
    wrong -> 0."""
    return _sum_over_pairs(lambda s: F.mse_loss(s, torch.full_like(s, real_target)),
                           lambda s: F.mse_loss(s, torch.zeros_like(s)),
                           real_scores, fake_scores, wrong_scores)


def lsgan_generator_loss(fake_scores):
    return F.mse_loss(fake_scores, torch.ones_like(fake_scores))


def gan_discriminator_loss(real_scores, fake_scores, wrong_scores=None):
    """Goodfellow et al. 2014 as binary cross-entropy on logits: real -> 1, fake and wrong -> 0."""
    return _sum_over_pairs(lambda s: F.softplus(-s).mean(), lambda s: F.softplus(s).mean(),
                           real_scores, fake_scores, wrong_scores)


def gan_generator_loss(fake_scores):
    """The non-saturating form, -log sigmoid(D(G(c), c)): strong gradients while D wins."""
    return F.softplus(-fake_scores).mean()


def hinge_discriminator_loss(real_scores, fake_scores, wrong_scores=None):
    """Hinge (Lim & Ye 2017; SAGAN, BigGAN): real scores above +1, fake and wrong below -1."""
    return _sum_over_pairs(lambda s: F.relu(1 - s).mean(), lambda s: F.relu(1 + s).mean(),
                           real_scores, fake_scores, wrong_scores)


def critic_generator_loss(fake_scores):
    """-E[D(G(c), c)]: the generator loss of both WGAN and the hinge GAN."""
    return -fake_scores.mean()


def wasserstein_critic_loss(real_scores, fake_scores, wrong_scores=None):
    """WGAN critic (Arjovsky et al. 2017): E[D(negative pairs)] - E[D(real pairs)].

    Generated and wrong pairs share the negative side equally: weighting them 1 each would
    reward lowering every score by the same constant, which no Lipschitz bound prevents.
    """
    negative = fake_scores.mean() if wrong_scores is None else (
        fake_scores.mean() + wrong_scores.mean()) / 2
    return negative - real_scores.mean()


def gradient_penalty(critic: Callable, real_faces, fake_faces, condition):
    """WGAN-GP (Gulrajani et al. 2017, eq. 3): E[(||grad_x D(x, c)||_2 - 1)^2] on random
    interpolates x of real and generated faces under the same condition c.

    `critic(faces, condition)` returns scores (B,). The graph is kept (create_graph) so
    the penalty trains D through its own gradient.
    """
    mix = torch.rand(len(real_faces), 1, 1, 1, device=real_faces.device)
    between = (mix * real_faces + (1 - mix) * fake_faces.detach()).requires_grad_(True)
    gradient, = torch.autograd.grad(critic(between, condition).sum(), between, create_graph=True)
    return ((gradient.flatten(1).norm(dim=1) - 1) ** 2).mean()


def r1_penalty(critic: Callable, real_faces, condition):
    """R1 (Mescheder et al. 2018, eq. 9 without its 1/2): E[||grad_x D(x, c)||_2^2] at the
    real pairs, which keeps D flat where the data is. Graph kept, as gradient_penalty's."""
    faces = real_faces.detach().requires_grad_(True)
    gradient, = torch.autograd.grad(critic(faces, condition).sum(), faces, create_graph=True)
    return gradient.flatten(1).square().sum(dim=1).mean()


@dataclass(frozen=True)
class AdversarialLoss:
    discriminator: Callable
    generator: Callable
    gradient_penalty: bool = False
    critic_steps: int = 1           # default --d_iters: D steps per G step


ADVERSARIAL_LOSSES = {
    "lsgan": AdversarialLoss(lsgan_discriminator_loss, lsgan_generator_loss),
    "gan": AdversarialLoss(gan_discriminator_loss, gan_generator_loss),
    # Gulrajani et al. train the critic 5 times per generator step.
    "wgan-gp": AdversarialLoss(wasserstein_critic_loss, critic_generator_loss,
                               gradient_penalty=True, critic_steps=5),
    "hinge": AdversarialLoss(hinge_discriminator_loss, critic_generator_loss),
}


def feature_matching_loss(real_features, fake_features):
    """Salimans et al. 2016: match D's batch-mean trunk features of real and generated faces."""
    return F.mse_loss(fake_features.mean(dim=0), real_features.detach().mean(dim=0))


def reconstruction_l1(fake_faces, real_faces):
    return F.l1_loss(fake_faces, real_faces)


# Where the mouth lies in a face crop, as fractions of its side (rows, columns): dlib's mouth
# landmarks on eye-aligned real crops (realvids-dev, 97 train faces) fall in rows 0.69-0.93
# and columns 0.36-0.64 (1st-99th percentiles); the demo faces' mouth box is 0.60-0.84 by
# 0.40-0.60. A box holding both.
MOUTH_BOX = ((0.60, 0.94), (0.34, 0.66))


def mouth_of(faces: torch.Tensor) -> torch.Tensor:
    """(..., S, S) faces -> the MOUTH_BOX part of each."""
    size = faces.shape[-1]
    (top, bottom), (left, right) = MOUTH_BOX
    return faces[..., round(top * size):round(bottom * size), round(left * size):round(right * size)]


def mouth_l1(fake_faces, real_faces):
    """L1 to the true face inside MOUTH_BOX alone: the mouth is about 4% of the crop, so the
    whole-face L1 spends almost nothing on whether it opens when the true one does."""
    return F.l1_loss(mouth_of(fake_faces), mouth_of(real_faces))


def gradient_difference_loss(fake_faces, real_faces):
    """Mathieu, Couprie & LeCun 2016 (alpha 1): how far the generated face's neighbouring-pixel
    differences, across and down, are from the true frame's in size. Texture where the true
    face is flat costs all it shows, an edge where it has one costs nothing: L1 alone charges
    a fine texture only its small amplitude."""
    def across(x):
        return (x[..., :, 1:] - x[..., :, :-1]).abs()

    def down(x):
        return (x[..., 1:, :] - x[..., :-1, :]).abs()
    return (F.l1_loss(across(fake_faces), across(real_faces))
            + F.l1_loss(down(fake_faces), down(real_faces)))


def speaker_softmax_loss(logits, speaker_ids):
    return F.cross_entropy(logits, speaker_ids)
