"""The variant networks and losses (--loss, --generator, --discriminator, --condition),
on small real tensors."""
import math

import pytest
import torch

from models import ModelArgs, SpeechToFace
from models.adain_generator import AdaINFaceGenerator, AdaINGeneratorConfig
from models.blocks import SelfAttention
from models.losses import (ADVERSARIAL_LOSSES, gan_discriminator_loss, gradient_penalty,
                           hinge_discriminator_loss, lsgan_discriminator_loss,
                           wasserstein_critic_loss)
from models.projection_discriminator import ProjectionDiscriminator, ProjectionDiscriminatorConfig
from models.speaker_classifier import SpeakerClassifier


def attention_input_sizes(module: torch.nn.Module, run) -> list[int]:
    """The spatial size of every feature map a SelfAttention block sees while `run()` runs."""
    sizes = []
    hooks = [m.register_forward_hook(lambda _, inputs, __: sizes.append(inputs[0].shape[-1]))
             for m in module.modules() if isinstance(m, SelfAttention)]
    run()
    for hook in hooks:
        hook.remove()
    return sizes


# ---------------------------------------------------------------- losses

def test_gradient_penalty_of_a_linear_critic_is_its_weight_norm_minus_one_squared():
    weight = torch.randn(3, 8, 8, requires_grad=True)
    critic = lambda faces, condition: (faces * weight).sum(dim=(1, 2, 3))  # noqa: E731
    real, fake = torch.randn(4, 3, 8, 8), torch.randn(4, 3, 8, 8)
    penalty = gradient_penalty(critic, real, fake, torch.zeros(4, 0))
    assert penalty.item() == pytest.approx((weight.norm().item() - 1) ** 2, rel=1e-5)
    penalty.backward()        # the penalty trains the critic through its own gradient
    assert weight.grad is not None and weight.grad.abs().sum() > 0


def test_hinge_is_zero_beyond_the_margins_and_gan_is_log2_per_pair_at_zero():
    high, low = torch.full((4,), 2.0), torch.full((4,), -2.0)
    assert hinge_discriminator_loss(high, low, low).item() == 0
    assert hinge_discriminator_loss(low, high).item() == pytest.approx(6.0)
    zero = torch.zeros(4)
    assert gan_discriminator_loss(zero, zero, zero).item() == pytest.approx(3 * math.log(2))
    assert gan_discriminator_loss(zero, zero).item() == pytest.approx(2 * math.log(2))


def test_lsgan_keeps_wav2pix_targets_and_drops_the_wrong_term_on_request():
    real, fake, wrong = torch.full((4,), 0.9), torch.zeros(4), torch.ones(4)
    assert lsgan_discriminator_loss(real, fake, wrong).item() == pytest.approx(1.0)
    assert lsgan_discriminator_loss(real, fake).item() == pytest.approx(0.0)


def test_wasserstein_critic_is_blind_to_a_constant_shift_of_every_score():
    real, fake, wrong = torch.randn(5), torch.randn(5), torch.randn(5)
    for wrong_scores in (wrong, None):
        shifted = None if wrong_scores is None else wrong_scores - 7
        assert wasserstein_critic_loss(real - 7, fake - 7, shifted).item() == pytest.approx(
            wasserstein_critic_loss(real, fake, wrong_scores).item(), abs=1e-5)


def test_every_loss_name_has_both_halves_and_only_wgan_gp_is_penalised():
    assert set(ADVERSARIAL_LOSSES) == {"lsgan", "gan", "wgan-gp", "hinge"}
    assert [n for n, loss in ADVERSARIAL_LOSSES.items() if loss.gradient_penalty] == ["wgan-gp"]
    assert ADVERSARIAL_LOSSES["wgan-gp"].critic_steps == 5
    scores = torch.randn(4, requires_grad=True)
    for loss in ADVERSARIAL_LOSSES.values():
        loss.generator(scores).backward()
        assert torch.isfinite(scores.grad).all()


# ---------------------------------------------------------------- networks

def test_self_attention_starts_as_identity_then_mixes_distant_positions():
    torch.manual_seed(0)
    attention = SelfAttention(16).eval()
    features = torch.randn(1, 16, 32, 32)
    assert torch.equal(attention(features), features)
    with torch.no_grad():
        attention.gamma.fill_(1.0)
        nudged = features.clone()
        nudged[0, :, 0, 0] += 5.0       # change one corner ...
        far = (attention(nudged) - attention(features))[0, :, 31, 31]
    assert far.abs().max() > 1e-4      # ... and the opposite corner's output moves


@pytest.mark.parametrize("image_size", [64, 128])
def test_adain_generator_draws_faces_from_the_embedding_with_attention_at_32(image_size):
    torch.manual_seed(0)
    generator = AdaINFaceGenerator(AdaINGeneratorConfig(image_size=image_size)).eval()
    with torch.no_grad():
        generator.attention.gamma.fill_(0.5)
        embedding = torch.randn(2, 128)
        sizes = attention_input_sizes(generator, lambda: generator(embedding))
        faces = generator(embedding)
        other = generator(torch.randn(2, 128))
    assert sizes == [32]
    assert faces.shape == (2, 3, image_size, image_size)
    assert faces.min() >= -1 and faces.max() <= 1
    assert not torch.allclose(faces, other, atol=1e-3)  # the code reaches the pixels via AdaIN


def test_sagan_discriminator_attends_at_32_and_an_unconditional_one_ignores_the_condition():
    sagan = ProjectionDiscriminator(ProjectionDiscriminatorConfig(attention_size=32)).eval()
    faces = torch.randn(2, 3, 64, 64)
    with torch.no_grad():
        assert attention_input_sizes(sagan, lambda: sagan(faces, torch.randn(2, 128))) == [32]
        plain = ProjectionDiscriminator(ProjectionDiscriminatorConfig(embedding_dim=0)).eval()
        scores, _ = plain(faces, torch.zeros(2, 0))
    assert plain.embed is None and scores.shape == (2,)


def test_d_channels_sets_the_discriminators_width_and_old_checkpoints_keep_64():
    from models import ModelArgs, SpeechToFace
    narrow = SpeechToFace(ModelArgs(audio_samples=4800, num_speakers=3, d_channels=32))
    convs = [m.out_channels for m in narrow.projection_discriminator.trunk
             if isinstance(m, torch.nn.Conv2d)]
    assert convs == [32, 64, 128, 256]
    wide = ProjectionDiscriminator(ProjectionDiscriminatorConfig(base_channels=128))
    assert [m.out_channels for m in wide.trunk if isinstance(m, torch.nn.Conv2d)] == \
        [128, 256, 512, 512]
    assert ModelArgs(**{"image_size": 64}).d_channels == 64   # a checkpoint without the entry


@pytest.mark.parametrize("condition, inputs", [("none", torch.zeros(2, 0)),
                                               ("embedding", torch.randn(2, 6))])
def test_models_without_speech_have_no_speech_encoder(condition, inputs):
    model = SpeechToFace(ModelArgs(condition=condition, condition_dim=6, num_speakers=3,
                                   noise_dim=16 if condition == "none" else 0)).eval()
    with torch.no_grad():
        embedding, faces = model(inputs)
    assert "speech_encoder" not in model.generator_part_names()
    assert faces.shape == (2, 3, 64, 64)
    assert embedding.shape == ((2, 0) if condition == "none" else (2, 128))
    assert model.conditioned == (condition == "embedding")
    with pytest.raises(ValueError, match="noise_dim"):
        SpeechToFace(ModelArgs(condition="none", noise_dim=0))


def test_extended_speaker_classifier_keeps_the_trained_rows_first():
    torch.manual_seed(0)
    trained, extended = SpeakerClassifier(128, 3), SpeakerClassifier(128, 5)
    fresh_rows = extended.layers[-1].weight[3:].detach().clone()
    extended.load_extended(trained.state_dict())
    assert torch.equal(extended.layers[-1].weight[:3], trained.layers[-1].weight)
    assert torch.equal(extended.layers[-1].bias[:3], trained.layers[-1].bias)
    assert torch.equal(extended.layers[-1].weight[3:], fresh_rows)
    assert torch.equal(extended.layers[0].weight, trained.layers[0].weight)
    with pytest.raises(ValueError, match="does not fit"):
        SpeakerClassifier(128, 2).load_extended(trained.state_dict())
