"""The CPU fast paths compute what the layers they stand in for compute: convolutions as
matrix multiplies (forward and gradients), spectral norm's eval-mode weight kept between
calls, and the wav2pix driver of benchmarks/wav2pix_speed.py at wav2pix's sizes."""
import copy
import sys
from pathlib import Path

import pytest
import torch
from torch import nn

from models import ModelArgs, SpeechToFace
from models.blocks import MatmulConvTranspose2d, sn

CL = torch.channels_last


def outputs_and_gradients(layer, maps):
    maps = maps.clone().requires_grad_()
    out = layer(maps)
    out.backward(torch.linspace(-1, 1, out.numel()).view_as(out))
    grads = [maps.grad] + [p.grad.clone() for p in layer.parameters()]
    layer.zero_grad()
    return out, grads


def assert_both_paths_agree(layer, maps):
    torch.manual_seed(0)
    layer.matmul = False
    expected, expected_grads = outputs_and_gradients(layer, maps)
    layer.matmul = True
    got, grads = outputs_and_gradients(layer, maps)
    scale = expected.abs().max()
    assert got.shape == expected.shape
    assert (got - expected).abs().max() <= 1e-5 * scale
    for g, e in zip(grads, expected_grads):
        assert (g - e).abs().max() <= 1e-5 * e.abs().max()


@pytest.mark.parametrize("memory_format", [torch.contiguous_format, CL])
@pytest.mark.parametrize("size,stride,padding,output_padding",
                         [(1, 1, 0, 0), (1, 2, 0, 1), (1, 2, 1, 0), (4, 2, 1, 0)])
def test_matmul_conv_transpose2d_equals_the_transposed_convolution(memory_format, size, stride,
                                                                  padding, output_padding):
    """One input pixel without padding is G's first layer, whose columns are its output;
    with output padding or padding they are not."""
    layer = sn(MatmulConvTranspose2d(16, 8, 4, stride, padding, output_padding,
                                     bias=False)).eval()
    maps = torch.randn(3, 16, size, size).contiguous(memory_format=memory_format)
    assert_both_paths_agree(layer.to(memory_format=memory_format), maps)
    out = layer(maps)
    assert out.is_contiguous(memory_format=memory_format) or size == 1


def test_fast_paths_keep_the_state_dict_keys():
    """Old checkpoints load: the layers add no parameters or buffers of their own."""
    plain = nn.ModuleList([sn(nn.ConvTranspose2d(4, 8, 4, 2, 1))])
    fast = nn.ModuleList([sn(MatmulConvTranspose2d(4, 8, 4, 2, 1, matmul=True))])
    assert list(plain.state_dict()) == list(fast.state_dict())
    fast.load_state_dict(plain.state_dict())


def test_spectral_norm_weight_is_kept_in_eval_and_follows_an_update():
    model = SpeechToFace(ModelArgs(num_speakers=2)).eval()
    generator = model.face_generator
    waveform = torch.randn(2, 1, 16000)
    with torch.no_grad():
        first = model(waveform)[1]
        layer = generator.layers[0]
        weight = layer.weight
        assert layer.weight is weight                           # kept between calls
        assert torch.equal(model(waveform)[1], first)
        layer.parametrizations.weight.original.mul_(1.5)        # as an optimiser step would
        moved = layer.weight
        assert moved is not weight
    with torch.enable_grad():
        fresh = layer.weight                                    # recomputed, with a graph
    assert fresh.requires_grad and torch.allclose(fresh, moved)
    model.train()
    waveform = torch.randn(4, 1, 16000)
    with torch.no_grad():
        model(waveform)
        assert layer.weight is not layer.weight                 # train: never kept


def test_wav2pix_driver_has_wav2pix_sizes_and_takes_a_step():
    sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "benchmarks"))
    from wav2pix_speed import Wav2pixStep, fake_batch

    def millions(module):
        return sum(p.numel() for p in module.parameters()) / 1e6
    step = Wav2pixStep(64)
    # WAV2PIX.md: encoder 11.5 M, G 3.8 M at 64 px (13.2 M at 128 px), D 2.8 M
    assert abs(millions(step.encoder) - 11.5) < 0.05
    assert abs(millions(step.generator) - 3.8) < 0.05
    assert abs(millions(step.discriminator) - 2.8) < 0.05
    assert abs(millions(Wav2pixStep(128).generator) - 13.2) < 0.05
    before = [p.detach().clone() for p in step.discriminator.parameters()]
    loss = step(fake_batch(4, 64, 16000, 10))
    assert loss == loss                                          # finite, a real step ran
    assert any(not torch.equal(b, p) for b, p in zip(before, step.discriminator.parameters()))


def test_averaged_generator_draws_with_its_updated_weights():
    from models.ema import GeneratorEma
    model = SpeechToFace(ModelArgs(num_speakers=2))
    ema = GeneratorEma(model, 0.5)
    waveform = torch.randn(2, 1, 16000)
    with torch.no_grad():
        before = ema.average(waveform)[1]
        for name, p in model.face_generator.named_parameters():
            if name.endswith("weight.original"):       # only what spectral norm keeps
                p.add_(0.05 * torch.randn_like(p))
        ema.update()
        after = ema.average(waveform)[1]
    assert not torch.equal(before, after)
    fresh = copy.deepcopy(ema.average)                  # a new tensor: nothing kept applies
    with torch.no_grad():
        assert torch.equal(fresh(waveform)[1], after)
