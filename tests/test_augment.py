"""--augment (DiffAugment): each augmentation does what it says to each face on its own, lets
G's gradient through, and changes what D sees but not what L1 compares."""
import pytest
import torch

import runtime
from models import ModelArgs, SpeechToFace
from models.augment import AUGMENTATIONS, CUTOUT, TRANSLATION, augmentation, color, cutout, translation
from models.gan_step import GanStep

SIDE = 32


def faces(count: int = 8, seed: int = 0) -> torch.Tensor:
    """Faces no augmentation leaves alone by chance: every pixel differs from grey (0)."""
    generator = torch.Generator().manual_seed(seed)
    return torch.rand(count, 3, SIDE, SIDE, generator=generator) * 0.9 + 0.1


def shifted(face: torch.Tensor, down: int, right: int) -> torch.Tensor:
    """`face` moved by whole pixels, grey where nothing came in."""
    out = torch.zeros_like(face)
    rows, cols = slice(max(down, 0), SIDE + min(down, 0)), slice(max(right, 0), SIDE + min(right, 0))
    out[:, rows, cols] = face[:, max(-down, 0):SIDE - max(down, 0),
                              max(-right, 0):SIDE - max(right, 0)]
    return out


def test_translation_moves_each_face_by_whole_pixels_within_reach():
    torch.manual_seed(0)
    before = faces()
    after = translation(before)
    reach = int(SIDE * TRANSLATION)
    moves = []
    for face, moved in zip(before, after):
        found = [(down, right) for down in range(-reach, reach + 1)
                 for right in range(-reach, reach + 1)
                 if torch.equal(shifted(face, down, right), moved)]
        assert len(found) == 1
        moves.append(found[0])
    assert len(set(moves)) > 1       # each face its own draw


def test_cutout_greys_one_square_and_keeps_the_rest():
    torch.manual_seed(0)
    before = faces()
    after = cutout(before)
    side = int(SIDE * CUTOUT)
    for face, cut in zip(before, after):
        grey = (cut == 0).all(dim=0)
        rows, cols = grey.any(dim=1).nonzero()[:, 0], grey.any(dim=0).nonzero()[:, 0]
        # one axis-aligned square, clipped where its centre lies near the border
        assert grey.sum() == len(rows) * len(cols) > 0
        assert len(rows) <= side and len(cols) <= side
        assert torch.equal(cut[:, ~grey], face[:, ~grey])


def test_color_draws_per_face_and_every_augmentation_passes_gradients():
    torch.manual_seed(0)
    twins = faces(1).repeat(4, 1, 1, 1)
    recoloured = color(twins)
    assert len({tuple(face.flatten()[:8].tolist()) for face in recoloured}) == 4
    for name, step in AUGMENTATIONS.items():
        source = faces().requires_grad_(True)
        step(source).square().sum().backward()
        assert (source.grad.flatten(1).abs().sum(dim=1) > 0).all(), name
    assert augmentation("none") is None


def one_step(*flags: str) -> dict[str, float]:
    torch.manual_seed(0)
    options = runtime.config_for(["--precision", "fp32", *flags])
    model = SpeechToFace(ModelArgs(image_size=64, num_speakers=2, audio_samples=4000))
    step = GanStep(model, options, torch.device("cpu"))
    generator = torch.Generator().manual_seed(1)
    real = torch.rand(4, 3, 64, 64, generator=generator) * 2 - 1
    return step((torch.randn(4, 1, 4000, generator=generator), real, torch.arange(4) % 2,
                 real.flip(0)), 1)


def test_d_sees_augmented_faces_and_l1_the_faces_themselves():
    plain, augmented = one_step(), one_step("--augment", "color,translation,cutout")
    assert augmented["g_l1"] == plain["g_l1"]         # the same generated faces
    assert augmented["d_real"] != plain["d_real"] and augmented["d_fake"] != plain["d_fake"]


@pytest.mark.parametrize("policy, message", [
    ("colour", "error: --augment colour: no augmentation 'colour'; name some of color, "
               "translation, cutout, or none\n"),
    ("color,,cutout", "error: --augment color,,cutout: no augmentation ''; name some of color, "
                      "translation, cutout, or none\n"),
])
def test_an_unknown_augmentation_is_refused_in_one_line(policy, message, capsys):
    assert runtime.main(["--augment", policy]) == 2
    assert capsys.readouterr().err == message
