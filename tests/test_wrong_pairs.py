"""--wrong_faces batch: GAN-CLS's wrong pairs from the batch's own real faces, scored from
the features D's pass over them computed (models/wrong_pairs.py)."""
from __future__ import annotations

import math

import torch

from models.projection_discriminator import ProjectionDiscriminator, ProjectionDiscriminatorConfig
from models.wrong_pairs import wrong_partners
from tests.test_step_syncs import batch, gan_step


def test_partners_are_other_speakers_pairs_drawn_afresh_each_step():
    speakers = torch.arange(16) % 4
    partners = wrong_partners(speakers, seed=0, step=1)
    assert partners.shape == (16,) and partners.dtype == torch.int64
    assert (speakers[partners] != speakers).all()
    assert torch.equal(partners, wrong_partners(speakers, seed=0, step=1))   # exact resume
    drawn = torch.stack([wrong_partners(speakers, seed=0, step=s) for s in range(1, 201)])
    assert len({tuple(p.tolist()) for p in drawn}) == 200
    # every other speaker's pair is drawn for pair 0, about equally often (12 of them)
    counts = torch.bincount(drawn[:, 0], minlength=16)
    assert (counts[speakers == 0] == 0).all() and (counts[speakers != 0] > 5).all()


def test_a_one_speaker_batch_takes_another_pair_never_the_pair_itself():
    partners = wrong_partners(torch.zeros(6, dtype=torch.int64), seed=3, step=7)
    assert (partners != torch.arange(6)).all()


def test_scores_from_partners_equal_scores_of_the_gathered_faces():
    torch.manual_seed(0)
    discriminator = ProjectionDiscriminator(ProjectionDiscriminatorConfig(embedding_dim=8)).eval()
    real, fake = torch.rand(2, 6, 3, 64, 64) * 2 - 1
    condition = torch.randn(6, 8)
    partners = wrong_partners(torch.tensor([0, 0, 1, 1, 2, 2]), seed=0, step=1)
    scores, features = discriminator(torch.cat([real, fake]), torch.cat([condition] * 2), partners)
    gathered, _ = discriminator(real[partners], condition)
    assert scores.shape == (18,) and features.shape[0] == 12
    torch.testing.assert_close(scores[12:], gathered, rtol=1e-5, atol=1e-5)


def test_a_step_from_the_batch_equals_a_step_on_the_same_faces_read_by_the_loader():
    """The same figures and the same gradients of D's step either way, when the loader's
    wrong faces are the batch's real faces the partners name: only D's work differs. (Adam's
    first step moves a weight by its learning rate wherever the gradient is not zero, so D's
    weights after it, and G's gradients through them, show float noise where D's gradients
    are near zero; G's figures agree.)"""
    condition, real, speakers, _ = batch(6)
    partners = wrong_partners(speakers, seed=0, step=1)
    results = []
    for mode in ("batch", "loader"):
        step = gan_step("--wrong_faces", mode, defer_d_check=False)
        figures = step((condition, real, speakers, real[partners]), 1)
        results.append((figures, [p.grad for p in
                                 step.model.projection_discriminator.parameters()]))
    (figures_batch, grads_batch), (figures_loader, grads_loader) = results
    assert figures_batch.keys() == figures_loader.keys() and "d_wrong" in figures_batch
    for name in figures_batch:
        assert math.isclose(figures_batch[name], figures_loader[name], rel_tol=1e-5,
                            abs_tol=1e-5), name
    assert all(g is not None for g in grads_batch)
    for mine, theirs in zip(grads_batch, grads_loader):
        assert (mine - theirs).norm() <= 1e-4 * theirs.norm()   # sums in another order
