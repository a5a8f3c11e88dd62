import pytest
import torch

from models import ModelArgs, SpeechToFace
from models.face_generator import FaceGenerator, FaceGeneratorConfig
from models.projection_discriminator import ProjectionDiscriminator, ProjectionDiscriminatorConfig
from models.speech_encoder import SpeechEncoder, SpeechEncoderConfig, conv_lengths


def count(module):
    return sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("image_size", [64, 128])
def test_both_image_sizes_build_with_the_right_shapes(image_size):
    model = SpeechToFace(ModelArgs(image_size=image_size, num_speakers=5)).eval()
    waveform = torch.randn(2, 1, 16000)
    with torch.no_grad():
        embedding, faces = model(waveform)
        scores, features = model.projection_discriminator(faces, embedding)
        logits = model.speaker_classifier(embedding)
    assert embedding.shape == (2, 128)
    assert faces.shape == (2, 3, image_size, image_size)
    assert faces.min() >= -1 and faces.max() <= 1
    assert scores.shape == (2,) and features.shape[0] == 2
    assert logits.shape == (2, 5)


@pytest.mark.parametrize("seconds", [0.3, 0.7, 1.0, 2.5, 4.0])
def test_encoder_lengths_follow_audio_seconds(seconds):
    samples = round(seconds * 16000)
    encoder = SpeechEncoder(SpeechEncoderConfig(audio_samples=samples)).eval()
    with torch.no_grad():
        assert encoder(torch.randn(1, 1, samples)).shape == (1, 128)


def test_encoder_matches_wav2pix_lengths_and_size():
    config = SpeechEncoderConfig()
    assert conv_lengths(config) == [4000, 1000, 250, 63, 16, 4]
    assert abs(count(SpeechEncoder(config)) / 1e6 - 11.5) < 0.05
    assert abs(count(FaceGenerator(FaceGeneratorConfig())) / 1e6 - 3.8) < 0.05


def test_spectral_norm_layers_really_get_dcgan_init():
    generator = FaceGenerator(FaceGeneratorConfig())
    discriminator = ProjectionDiscriminator(ProjectionDiscriminatorConfig())
    stored = [m.parametrizations.weight.original for net in (generator, discriminator)
              for m in net.modules() if hasattr(m, "parametrizations")]
    assert len(stored) >= 8
    for weight in stored:
        assert abs(weight.std().item() - 0.02) < 0.004, weight.shape
        assert abs(weight.mean().item()) < 0.004


def test_projection_term_makes_the_score_depend_on_the_speech():
    discriminator = ProjectionDiscriminator(ProjectionDiscriminatorConfig()).eval()
    faces = torch.randn(4, 3, 64, 64)
    with torch.no_grad():
        a, _ = discriminator(faces, torch.randn(4, 128))
        b, _ = discriminator(faces, torch.randn(4, 128))
    assert not torch.allclose(a, b)


def test_noise_vector_changes_the_face_only_when_asked_for():
    torch.manual_seed(0)
    model = SpeechToFace(ModelArgs(noise_dim=16, num_speakers=2)).eval()
    waveform = torch.randn(2, 1, 16000)
    with torch.no_grad():
        assert not torch.allclose(model(waveform)[1], model(waveform)[1])
    plain = SpeechToFace(ModelArgs(noise_dim=0, num_speakers=2)).eval()
    with torch.no_grad():
        assert torch.equal(plain(waveform)[1], plain(waveform)[1])


@pytest.fixture
def one_thread():
    """oneDNN's conv1d weight backward (the plain path) sums in a thread-dependent order:
    with 2 threads it was off by up to 0.48 relative in 5 of 20 trials, 0 of 20 with one."""
    threads = torch.get_num_threads()
    torch.set_num_threads(1)
    yield
    torch.set_num_threads(threads)


def test_unfolded_and_plain_convolution_paths_agree(one_thread):
    from models.speech_encoder import StridedConv1d
    torch.manual_seed(0)
    # eval mode: train-mode BatchNorm over a batch of 3 makes some gradients pure rounding noise.
    # 0.5 s: at 0.3 s the last layer zero-pads 5 samples, where oneDNN's backward itself is
    # wrong at times (tests/test_resume.py::test_the_encoder_backward_is_exact_where_...).
    encoder = SpeechEncoder(SpeechEncoderConfig(audio_samples=8000)).eval()
    unfolded = [m for m in encoder.modules() if isinstance(m, StridedConv1d) and m.unfold]
    assert len(unfolded) == 2                    # the two deepest
    waveform = torch.randn(3, 1, 8000)
    direction = torch.randn(3, 128)
    fast = encoder(waveform)
    (fast * direction).sum().backward()
    fast_grads = [m.weight.grad.clone() for m in unfolded]
    encoder.zero_grad()
    for layer in unfolded:
        layer.unfold = False
    plain = encoder(waveform)
    (plain * direction).sum().backward()
    torch.testing.assert_close(fast, plain, rtol=1e-4, atol=1e-6)
    for grad, layer in zip(fast_grads, unfolded):
        scale = layer.weight.grad.abs().max().item()
        torch.testing.assert_close(grad, layer.weight.grad, rtol=1e-3, atol=1e-4 * scale)


def test_refreshed_batchnorm_statistics_are_those_of_the_given_batches():
    torch.manual_seed(0)
    model = SpeechToFace(ModelArgs(num_speakers=3, audio_samples=4800, noise_dim=4)).train()
    norm = model.speech_encoder.convs[1]                  # after the first strided conv
    spectral = [b.clone() for n, b in model.named_buffers() if n.endswith("_u")]
    assert spectral, "the generator has spectral-norm layers"
    waveforms = torch.randn(2, 6, 1, 4800)
    model.refresh_batchnorm(iter(waveforms))
    with torch.no_grad():
        first_conv = torch.cat([model.speech_encoder.convs[0](w) for w in waveforms])
    assert torch.allclose(norm.running_mean, first_conv.mean(dim=(0, 2)), atol=1e-5)
    assert norm.momentum == 0.1 and model.training and not norm.num_batches_tracked.eq(0)
    # spectral norm's power iteration did not advance
    assert all(torch.equal(a, b) for a, b in
               zip(spectral, [b for n, b in model.named_buffers() if n.endswith("_u")]))
    model.eval()
    with torch.no_grad():
        eval_embedding = model.speech_encoder(waveforms[0])
    assert eval_embedding.isfinite().all()
