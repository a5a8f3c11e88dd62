"""The speech encoders and generators of the registry: shapes, the filterbank's start, a
2-step run of each, and checkpoints from before the registry that still load and render."""
from __future__ import annotations

import json

import pytest
import torch

import runtime
from models import SPEECH_ENCODERS, ModelArgs, SpeechToFace
from models.filterbank_encoder import FilterbankEncoder, FilterbankEncoderConfig, feature_frames
from models.ge2e_encoder import ge2e_weights_path
from models.loading import generator_from_checkpoint
from utils import UserError, load_checkpoint


def ge2e_weights_missing() -> str | None:
    try:
        ge2e_weights_path()
    except UserError as missing:
        return str(missing)
    return None


# The ge2e encoders read their weights from the resemblyzer wheel (installed with --no-deps,
# as .ci/run does); where it is absent they skip, saying how to install it.
ENCODERS = [pytest.param(name, marks=pytest.mark.skipif(
                name.startswith("ge2e") and ge2e_weights_missing() is not None,
                reason=f"GE2E weights not installed ({ge2e_weights_missing()})"))
            for name in sorted(SPEECH_ENCODERS)]

FAST = ["--audio_seconds", "0.3", "--batch_size", "4", "--num_workers", "0", "--no_visdom",
        "--epochs", "1", "--max_steps", "2", "--precision", "fp32"]


@pytest.mark.parametrize("encoder", ENCODERS)
@pytest.mark.parametrize("generator", ["dcgan", "resize", "bilinear"])
@pytest.mark.parametrize("image_size", [64, 128])
def test_every_encoder_and_generator_draws_faces_of_the_right_shape(encoder, generator,
                                                                     image_size):
    model = SpeechToFace(ModelArgs(image_size=image_size, audio_samples=4800, num_speakers=3,
                                   speech_encoder=encoder, generator=generator)).eval()
    with torch.no_grad():
        embedding, faces = model(torch.randn(2, 1, 4800))
    assert embedding.shape == (2, 128)
    assert faces.shape == (2, 3, image_size, image_size)
    assert faces.min() >= -1 and faces.max() <= 1


@pytest.mark.parametrize("seconds", [0.3, 1.0, 4.0])
def test_the_filterbank_pools_over_time_so_any_length_gives_one_embedding(seconds):
    samples = round(seconds * 16000)
    encoder = FilterbankEncoder(FilterbankEncoderConfig(audio_samples=samples)).eval()
    with torch.no_grad():
        assert encoder(torch.randn(3, 1, samples)).shape == (3, 128)


@pytest.mark.parametrize("samples", [4800, 8000, 12345, 16000, 32000])
def test_the_frames_encoder_keeps_every_frame_in_order_beside_the_statistics(samples):
    """filterbank_frames appends the last conv's map, frame by frame, to the mean and std:
    its projection is sized by feature_frames, and the same sounds in another order give
    another embedding (the statistics alone are blind to the order of frames)."""
    config = FilterbankEncoderConfig(audio_samples=samples, keep_frames=True)
    encoder = FilterbankEncoder(config).eval()
    channels = config.channels[-1]
    with torch.no_grad():
        features = encoder.convs(encoder.input_norm(encoder.log_bands(torch.randn(2, 1, samples))))
        assert features.shape[2] == feature_frames(config)
        assert encoder.project[0].in_features == (2 + features.shape[2]) * channels
        reversed_features = features.flip(2)
        pooled = [torch.cat([f.mean(2), f.std(2), f.flatten(1)], 1)
                  for f in (features, reversed_features)]
        assert torch.allclose(pooled[0][:, :2 * channels], pooled[1][:, :2 * channels], atol=1e-5)
        assert not torch.allclose(encoder.project(pooled[0]), encoder.project(pooled[1]))


@pytest.mark.parametrize("samples", [4800, 16000, 32000])
def test_the_centre_encoder_keeps_only_the_middle_frames_in_order(samples):
    """filterbank_centre keeps the centre_frames frames around the window's middle, where the
    pictured face's mouth is, and all of them when the window has fewer: frames further out
    reach the embedding through the statistics alone."""
    config = SPEECH_ENCODERS["filterbank_centre"][1](audio_samples=samples)
    encoder = FilterbankEncoder(config).eval()
    frames, channels = feature_frames(config), config.channels[-1]
    kept = min(config.centre_frames, frames)
    assert encoder.project[0].in_features == (2 + kept) * channels
    features = torch.randn(2, channels, frames)
    pooled = encoder.pool(features)
    start = (frames - kept) // 2
    assert start <= frames // 2 < start + kept
    assert torch.equal(pooled[:, 2 * channels:].view(2, channels, kept),
                       features[:, :, start:start + kept])
    moved = features.clone()
    moved[:, :, :start] = moved[:, :, :start].flip(2)
    moved[:, :, start + kept:] = moved[:, :, start + kept:].flip(2)
    assert torch.equal(encoder.pool(moved)[:, 2 * channels:], pooled[:, 2 * channels:])


def test_the_filterbank_starts_as_mel_bands_whose_log_energy_follows_a_tone():
    """Each filter passes its own band: a pure tone lights the filter whose band holds it."""
    encoder = FilterbankEncoder(FilterbankEncoderConfig(audio_samples=16000)).eval()
    t = torch.arange(16000) / 16000
    peaks = []
    for hz in (200.0, 1000.0, 4000.0):
        with torch.no_grad():
            bands = encoder.log_bands(torch.sin(2 * torch.pi * hz * t)[None, None])
        peaks.append(int(bands[0, :, 10:-10].mean(1).argmax()))
    assert peaks == sorted(peaks) and len(set(peaks)) == 3      # higher tone, higher band


NEAREST, BILINEAR = "nearest", "bilinear"
RESIZES = {"resize": {64: [NEAREST] * 4, 128: [NEAREST] * 5},
           "bilinear": {64: [BILINEAR] * 4, 128: [BILINEAR] * 5},
           # nearest from 4x4 and 8x8, bilinear from 16x16 on
           "hybrid": {64: [NEAREST] * 2 + [BILINEAR] * 2, 128: [NEAREST] * 2 + [BILINEAR] * 3}}


def resize_modes(model) -> list[str]:
    return [m.mode for m in model.face_generator.modules() if isinstance(m, torch.nn.Upsample)]


@pytest.mark.parametrize("generator", RESIZES)
@pytest.mark.parametrize("size", [64, 128])
def test_resizing_generators_have_no_transposed_stride_two_layers(generator, size):
    model = SpeechToFace(ModelArgs(generator=generator, num_speakers=2, image_size=size))
    strided = [m for m in model.face_generator.modules()
               if isinstance(m, torch.nn.ConvTranspose2d) and m.stride == (2, 2)]
    assert not strided
    assert resize_modes(model) == RESIZES[generator][size]
    faces = model.face_generator(torch.randn(3, model.args.embedding_dim))
    assert faces.shape == (3, 3, size, size) and faces.abs().max() <= 1


@pytest.mark.parametrize("generator", ["bilinear", "hybrid"])
def test_a_resizing_generator_trains_two_steps_records_itself_and_renders(generator, tiny_pairs,
                                                                          tmp_path, monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert runtime.main(["--dataset", str(tiny_pairs), "--save_path", generator,
                         "--generator", generator, *FAST]) == 0
    checkpoint = load_checkpoint(tmp_path / "checkpoints" / generator / "latest.pt")
    assert checkpoint["model_args"]["generator"] == generator
    model, _ = generator_from_checkpoint(tmp_path / "checkpoints" / generator / "latest.pt",
                                         torch.device("cpu"))
    assert resize_modes(model) == RESIZES[generator][checkpoint["model_args"]["image_size"]]


@pytest.mark.parametrize("encoder", ENCODERS)
def test_each_encoder_trains_two_steps_records_itself_and_renders(encoder, tiny_pairs, tmp_path,
                                                                 monkeypatch):
    monkeypatch.chdir(tmp_path)
    assert runtime.main(["--dataset", str(tiny_pairs), "--save_path", encoder,
                         "--speech_encoder", encoder, *FAST]) == 0
    checkpoint = load_checkpoint(tmp_path / "checkpoints" / encoder / "latest.pt")
    assert checkpoint["model_args"]["speech_encoder"] == encoder
    assert runtime.main(["--inference", "--pre_trained_gen", f"checkpoints/{encoder}",
                         "--dataset", str(tiny_pairs), "--save_path", encoder]) == 0
    assert len(list((tmp_path / "results" / encoder).glob("*.png"))) == 3


def test_a_checkpoint_from_before_the_registry_loads_renders_the_same_and_resumes(
        tiny_pairs, tmp_path, monkeypatch):
    """Checkpoints written before --generator and --speech_encoder hold neither entry: they
    are SEGAN encoders with DCGAN generators, and --resume keeps them so (today's defaults
    would be refused as another architecture)."""
    monkeypatch.chdir(tmp_path)
    assert runtime.main(["--dataset", str(tiny_pairs), "--save_path", "old", "--speech_encoder",
                         "segan", "--generator", "dcgan", *FAST[:-4], "--epochs", "2",
                         "--checkpoint_every_steps", "1", "--max_steps", "1"]) == 0
    saved = load_checkpoint(tmp_path / "checkpoints" / "old" / "latest.pt")
    for entry in ("speech_encoder", "generator"):
        del saved["model_args"][entry], saved["options"][entry]
    torch.save(saved, tmp_path / "before.pt")
    model, _ = generator_from_checkpoint(tmp_path / "before.pt", torch.device("cpu"))
    assert (model.args.speech_encoder, model.args.generator) == ("segan", "dcgan")
    reference, _ = generator_from_checkpoint(tmp_path / "checkpoints" / "old" / "latest.pt",
                                             torch.device("cpu"))
    speech = torch.randn(2, 1, 4800)
    with torch.no_grad():
        assert torch.equal(model.eval()(speech)[1], reference.eval()(speech)[1])
    assert runtime.main(["--resume", "before.pt", "--save_path", "old_resumed",
                         "--max_steps", "2"]) == 0
    resumed = json.loads((tmp_path / "checkpoints" / "old_resumed" / "options.json").read_text())
    assert (resumed["speech_encoder"], resumed["generator"]) == ("segan", "dcgan")
