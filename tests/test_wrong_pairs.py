"""--wrong_faces batch: GAN-CLS's wrong pairs from the batch's own real faces, scored from
the features D's pass over them computed (models/wrong_pairs.py)."""
from __future__ import annotations

import json
import math

import torch

import runtime
from utils import load_checkpoint

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


def test_a_run_from_before_the_option_resumes_with_the_loaders_wrong_faces(tiny_pairs, tmp_path,
                                                                          monkeypatch):
    """Checkpoints written before --wrong_faces read their wrong faces from the loader, and
    those written before --gdl_coef trained without it; --resume keeps them so, and a run
    started now records the batch's faces and a weight of 50."""
    monkeypatch.chdir(tmp_path)
    fast = ["--audio_seconds", "0.3", "--batch_size", "4", "--num_workers", "0", "--no_visdom",
            "--precision", "fp32"]
    assert runtime.main(["--dataset", str(tiny_pairs), "--save_path", "old", "--epochs", "2",
                         "--checkpoint_every_steps", "1", "--max_steps", "1", *fast]) == 0
    saved = load_checkpoint(tmp_path / "checkpoints" / "old" / "latest.pt")
    assert saved["options"]["wrong_faces"] == "batch" and saved["options"]["gdl_coef"] == 50
    del saved["options"]["wrong_faces"], saved["options"]["gdl_coef"]
    torch.save(saved, tmp_path / "before.pt")
    assert runtime.main(["--resume", "before.pt", "--save_path", "resumed", "--max_steps", "2"]) == 0
    resumed = json.loads((tmp_path / "checkpoints" / "resumed" / "options.json").read_text())
    assert resumed["wrong_faces"] == "loader" and resumed["gdl_coef"] == 0


def test_the_loader_reads_wrong_faces_only_for_the_loader_mode(tiny_pairs, tmp_path, monkeypatch):
    """Under --wrong_faces batch an item's wrong slot is its own face (no third HDF5 read),
    its other parts as before; --wrong_faces loader reads another speaker's face."""
    from tests.conftest import trainer_with_one_batch
    monkeypatch.chdir(tmp_path)
    runs = {mode: trainer_with_one_batch(tiny_pairs, "--save_path", mode, "--wrong_faces", mode)[0]
            for mode in ("batch", "loader")}
    assert [runs[mode].train_loader.dataset.wrong_faces for mode in runs] == [False, True]
    key = next(iter(runs["batch"].order))
    plain, read = (runs[mode].train_loader.dataset[key] for mode in ("batch", "loader"))
    assert torch.equal(plain[3], plain[1]) and not torch.equal(read[3], read[1])
    for mine, theirs in zip(plain[:3], read[:3]):           # the same crop, face and speaker
        assert torch.equal(mine, theirs)
    # a step under --wrong_faces batch ignores the wrong slot: any faces there, same figures
    condition, real, speakers, _ = batch(6)
    figures = [gan_step("--wrong_faces", "batch", defer_d_check=False)(
        (condition, real, speakers, wrong), 1) for wrong in (real, torch.zeros_like(real))]
    assert figures[0] == figures[1]
