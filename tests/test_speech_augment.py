"""--speech_augment: each augmentation does what it says to each window on its own, the
encoder reads the changed speech in training, and bad policies are refused in one line."""
import math

import pytest
import torch

import runtime
from models.speech_augment import (GAIN_DB, NOISE_SNR_DB, SAMPLE_RATE, SHIFT,
                                   SPEECH_AUGMENTATIONS, gain, noise, shift)
from tests.test_augment import one_step


def speech(count: int = 8, samples: int = 4000, seed: int = 0) -> torch.Tensor:
    """Windows no augmentation leaves alone by chance: every sample differs from its
    neighbours and from zero."""
    generator = torch.Generator().manual_seed(seed)
    return torch.randn(count, 1, samples, generator=generator) * 0.1 + 0.5


def test_shift_moves_each_window_by_whole_samples_within_reach_holding_the_edge():
    torch.manual_seed(0)
    before = speech()
    after = shift(before)
    reach = round(SHIFT * SAMPLE_RATE)
    moves = []
    for window, moved in zip(before[:, 0], after[:, 0]):
        found = []
        for move in range(-reach, reach + 1):
            taken = (torch.arange(len(window)) - move).clamp(0, len(window) - 1)
            if torch.equal(window[taken], moved):
                found.append(move)
        assert len(found) == 1
        moves.append(found[0])
    assert len(set(moves)) > 1          # each window its own draw


def test_noise_stays_between_its_signal_to_noise_bounds_for_each_window():
    torch.manual_seed(0)
    before = speech(count=16, samples=16000) * torch.linspace(0.01, 1, 16)[:, None, None]
    added = noise(before) - before
    snr = 10 * torch.log10(before.pow(2).mean(dim=(1, 2)) / added.pow(2).mean(dim=(1, 2)))
    low, high = NOISE_SNR_DB
    assert (snr > low - 0.2).all() and (snr < high + 0.2).all()     # 16,000 draws: +-0.05 dB
    assert snr.std() > 2                                             # drawn, not fixed
    assert torch.equal(noise(torch.zeros(2, 1, 100)), torch.zeros(2, 1, 100))


def test_gain_scales_each_window_by_one_factor_within_its_decibels():
    torch.manual_seed(0)
    before = speech()
    ratio = gain(before) / before
    factors = ratio[:, 0, 0]
    assert torch.allclose(ratio, factors[:, None, None].expand_as(ratio))
    decibels = 20 * torch.log10(factors)
    assert (decibels.abs() <= GAIN_DB + 1e-4).all() and decibels.std() > 1
    for name, step in SPEECH_AUGMENTATIONS.items():
        source = speech().requires_grad_(True)
        assert step(source).shape == source.shape, name


def test_the_encoder_reads_augmented_speech_in_training_and_the_faces_are_compared_as_they_are():
    """The same weights, faces and speech: with the speech changed, G draws other faces (its
    L1 to the same real faces moves) and D judges other pairs."""
    plain = one_step()
    augmented = one_step("--speech_augment", "shift,noise,gain")
    assert not math.isclose(augmented["g_l1"], plain["g_l1"], rel_tol=1e-6)
    assert augmented["d_fake"] != plain["d_fake"]
    assert one_step("--speech_augment", "none") == plain


@pytest.mark.parametrize("flags, message", [
    (["--speech_augment", "pitch"],
     "error: --speech_augment pitch: no augmentation 'pitch'; name some of shift, noise, gain, "
     "or none\n"),
    (["--speech_augment", "noise", "--condition", "none"],
     "error: --speech_augment changes speech waveforms; --condition none reads none: leave "
     "--speech_augment at none\n"),
])
def test_a_bad_speech_augmentation_is_refused_in_one_line(flags, message, capsys):
    assert runtime.main(flags) == 2
    assert capsys.readouterr().err == message
