"""Generator loss terms declared once (models/loss_terms.py): a new term gets its flag, its
check and its place in G's loss from one registry line; a loss carrying a gradient penalty
is refused where wgan-gp is, by that property and not by its name."""
from __future__ import annotations

import pytest
import torch

import runtime
from models import ModelArgs, SpeechToFace, loss_terms
from models.gan_step import GanStep
from models.losses import (ADVERSARIAL_LOSSES, MOUTH_BOX, AdversarialLoss,
                           critic_generator_loss, mouth_l1, r1_penalty, wasserstein_critic_loss)
from utils import SINGLE_PROCESS, UserError

SPEAKERS = 4
TOY = loss_terms.LossTerm("g_toy", lambda half: half.fake.abs().mean(), "toy_coef", 3.0,
                          "weight of the generated faces' mean absolute value",
                          needs_condition=False)


@pytest.fixture
def with_toy_term(monkeypatch):
    monkeypatch.setattr(loss_terms, "LOSS_TERMS", loss_terms.LOSS_TERMS + (TOY,))


def test_the_registry_holds_todays_terms_flags_and_old_checkpoint_weights():
    assert loss_terms.loss_term_names() == ("g_adv", "g_l1", "g_fm", "g_softmax", "g_gdl",
                                            "g_mouth", "g_mouth_open")
    assert loss_terms.loss_term_flags() == ("l1_coef", "l2_coef", "softmax_coef", "gdl_coef",
                                            "mouth_coef", "mouth_open_coef")
    for flag in ("gdl_coef", "mouth_coef", "mouth_open_coef"):
        assert runtime.BEFORE_THEY_EXISTED[flag] == 0
    saved = vars(runtime.build_parser().parse_args(["--mouth_coef", "7"]))
    del saved["gdl_coef"]                 # options saved before --gdl_coef existed
    options = runtime.merge_resumed_options(runtime.build_parser().parse_args([]), saved, set())
    assert loss_terms.loss_term_weights(options) == {"g_adv": 1.0, "g_l1": 50, "g_fm": 100,
                                                     "g_softmax": 20, "g_gdl": 0.0, "g_mouth": 7,
                                                     "g_mouth_open": 0}


def test_the_mouth_term_sees_the_mouths_box_alone():
    real = torch.zeros(2, 3, 64, 64)
    (top, bottom), (left, right) = MOUTH_BOX
    outside, inside = real.clone(), real.clone()
    outside[..., :round(top * 64) - 1, :] = 1.0               # the eyes and the forehead
    inside[..., round(0.77 * 64), round(0.5 * 64)] = 1.0     # one pixel at the mouth's centre
    assert mouth_l1(outside, real) == 0 and mouth_l1(inside, real) > 0
    box_pixels = (round(bottom * 64) - round(top * 64)) * (round(right * 64) - round(left * 64))
    assert mouth_l1(inside, real) == pytest.approx(1 / box_pixels)  # one pixel of the box


def test_a_new_term_gets_its_flag_and_its_check(with_toy_term, capsys):
    options = runtime.build_parser().parse_args([])
    assert options.toy_coef == 3.0
    assert runtime.main(["--toy_coef", "-1"]) == 2
    assert capsys.readouterr().err == "error: --toy_coef must be zero or positive, got -1.0\n"


def one_step(*flags: str) -> dict[str, float]:
    torch.manual_seed(0)
    options = runtime.config_for(["--precision", "fp32", *flags])
    model = SpeechToFace(ModelArgs(image_size=64, num_speakers=SPEAKERS, audio_samples=4000))
    step = GanStep(model, options, torch.device("cpu"), SINGLE_PROCESS)
    generator = torch.Generator().manual_seed(1)
    faces = lambda: torch.rand(4, 3, 64, 64, generator=generator) * 2 - 1  # noqa: E731
    batch = (torch.randn(4, 1, 4000, generator=generator), faces(), torch.arange(4) % SPEAKERS,
             faces())
    return step(batch, 1)


def test_a_new_term_is_logged_and_weighted_into_gs_loss(with_toy_term):
    weighted, unweighted = one_step("--toy_coef", "3"), one_step("--toy_coef", "0")
    # the same draws: every other term is the same, the toy term still logged at weight 0
    assert weighted["g_toy"] == unweighted["g_toy"] > 0
    assert weighted["g_loss"] == pytest.approx(unweighted["g_loss"] + 3 * weighted["g_toy"],
                                               rel=1e-6)
    weights = {"g_adv": 1, "g_l1": 50, "g_fm": 100, "g_softmax": 20, "g_gdl": 50, "g_toy": 3}
    assert weighted["g_loss"] == pytest.approx(
        sum(weight * weighted[name] for name, weight in weights.items()), rel=1e-6)


def test_a_term_off_at_weight_zero_is_neither_computed_nor_logged():
    assert "g_gdl" in one_step() and "g_gdl" not in one_step("--gdl_coef", "0")


@pytest.fixture
def penalised_loss(monkeypatch):
    """A Wasserstein loss with a gradient penalty under a name no check knows."""
    monkeypatch.setitem(ADVERSARIAL_LOSSES, "wgan-lp", AdversarialLoss(
        wasserstein_critic_loss, critic_generator_loss, gradient_penalty=True))


@pytest.mark.parametrize("flags, message", [
    (["--compile"], "--compile cannot train wgan-lp: its gradient penalty needs a double "
                    "backward"),
    (["--precision", "fp16"], "--precision fp16 does not scale wgan-lp's gradient penalty"),
])
def test_a_new_penalised_loss_is_refused_as_wgan_gp_is(penalised_loss, flags, message):
    options = runtime.build_parser().parse_args(["--loss", "wgan-lp", *flags])
    with pytest.raises(UserError, match=message):
        runtime.check_options(options)


def test_a_new_penalised_loss_cannot_be_recorded_as_a_cuda_graph(penalised_loss):
    options = runtime.build_parser().parse_args(["--loss", "wgan-lp", "--cuda_graph"])
    runtime.resolve_variants(options)
    with pytest.raises(UserError, match="--cuda_graph needs no --loss wgan-lp"):
        runtime.check_processes_and_device(options, torch.device("cuda"), SINGLE_PROCESS)


@pytest.mark.parametrize("flags, message", [
    (["--compile"], "--compile cannot train --r1_coef: its gradient penalty needs a double "),
    (["--precision", "fp16"], "--precision fp16 does not scale --r1_coef's gradient penalty"),
    (["--r1_coef", "-1"], "--r1_coef must be zero or positive, got -1.0"),
])
def test_r1_is_refused_where_a_gradient_penalty_is(flags, message):
    options = runtime.build_parser().parse_args(["--r1_coef", "10", *flags])
    with pytest.raises(UserError, match=message):
        runtime.check_options(options)


def test_r1_is_the_squared_input_gradient_at_the_real_faces_and_joins_ds_loss():
    weights = torch.randn(3, 8, 8)
    linear = lambda faces, condition: (faces * weights).flatten(1).sum(dim=1)  # noqa: E731
    penalty = r1_penalty(linear, torch.randn(4, 3, 8, 8), None)
    assert torch.isclose(penalty, weights.square().sum())
    plain, with_r1 = one_step(), one_step("--r1_coef", "10")
    assert with_r1["d_r1"] > 0 and "d_r1" not in plain
    # the same draws up to D's loss: it grows by exactly r1_coef / 2 times the penalty
    assert with_r1["d_real"] == plain["d_real"]
    assert with_r1["d_loss"] == pytest.approx(plain["d_loss"] + 5 * with_r1["d_r1"], rel=1e-5)


def test_lr_e_sets_the_speech_encoders_rate_alone_and_a_resume_keeps_its_groups(tmp_path):
    torch.manual_seed(0)
    options = runtime.config_for(["--precision", "fp32", "--lr_E", "0"])
    model = SpeechToFace(ModelArgs(image_size=64, num_speakers=SPEAKERS, audio_samples=4000))
    step = GanStep(model, options, torch.device("cpu"), SINGLE_PROCESS)
    encoder = [p.detach().clone() for p in model.speech_encoder.parameters()]
    generator = [p.detach().clone() for p in model.face_generator.parameters()]
    generator_ = torch.Generator().manual_seed(1)
    faces = torch.rand(4, 3, 64, 64, generator=generator_) * 2 - 1
    step((torch.randn(4, 1, 4000, generator=generator_), faces, torch.arange(4) % SPEAKERS,
          faces.flip(0)), 1)
    assert all(torch.equal(a, b) for a, b in zip(encoder, model.speech_encoder.parameters()))
    assert not all(torch.equal(a, b) for a, b in zip(generator, model.face_generator.parameters()))
    saved = step.state_dict()
    assert [group["lr"] for group in saved["optimizer_g"]["param_groups"]] == [0.0001, 0.0]
    one_group = GanStep(model, runtime.config_for(["--precision", "fp32"]), torch.device("cpu"),
                        SINGLE_PROCESS)
    with pytest.raises(UserError, match="resume with the --lr_E the run started with"):
        one_group.load_state_dict(saved)
