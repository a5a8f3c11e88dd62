"""The sharpness metric on the wav2pix-mini real faces (64 px photographs): against
themselves, blurred, noisy and dimmed; and through --metrics and a FaceMetrics run."""
from __future__ import annotations

import numpy as np
import pytest
import torch
import torch.nn.functional as F

from data.dataset import read_faces
from data.schema import validate_pair_file
from models.metrics import parse_metric_names
from models.metrics.sharpness import high_frequency_share, sharpness_scores
from models.metrics.suite import FaceMetrics, format_table
from tests.conftest import FIXTURE


@pytest.fixture(scope="module")
def real_faces(tmp_path_factory) -> np.ndarray:
    """uint8 (92, 64, 64, 3): every face of the fixture, train and test."""
    if not (FIXTURE / "train").is_dir():
        pytest.skip(f"wav2pix-mini fixture not found at {FIXTURE} (it lives beside the clone in CI)")
    from data import prepare
    out = tmp_path_factory.mktemp("mini") / "mini.h5"
    assert prepare.main(["wav2pix", str(FIXTURE), str(out), "--face_size", "64"]) == 0
    info = validate_pair_file(out)
    return np.concatenate([read_faces(info, "train")[0], read_faces(info, "test")[0]])


def gaussian_blur(faces: np.ndarray, sigma: float) -> np.ndarray:
    """uint8 (N, S, S, 3) blurred by a separable Gaussian of `sigma` px (reflected borders)."""
    radius = int(3 * sigma)
    taps = torch.exp(-torch.arange(-radius, radius + 1.0) ** 2 / (2 * sigma ** 2))
    taps = (taps / taps.sum()).repeat(3, 1, 1, 1)                         # (3, 1, 1, K)
    pixels = torch.from_numpy(faces).permute(0, 3, 1, 2).float()
    pixels = F.pad(pixels, (radius,) * 4, mode="reflect")
    pixels = F.conv2d(F.conv2d(pixels, taps, groups=3), taps.transpose(2, 3), groups=3)
    return pixels.round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()


def sharpness_of(fake: np.ndarray, real: np.ndarray) -> float:
    return sharpness_scores(high_frequency_share(fake), high_frequency_share(real))["sharpness"]


def test_real_faces_against_themselves_score_one(real_faces):
    shares = high_frequency_share(real_faces)
    assert shares.shape == (len(real_faces),) and np.all((shares > 0) & (shares < 1))
    scores = sharpness_scores(shares, shares)
    assert scores["sharpness"] == 1.0 and scores["hf_power"] == scores["hf_power_real"]
    assert 0.1 < scores["hf_power"] < 0.2, scores        # 0.144 on these faces


def test_blur_scores_below_one_and_more_blur_less(real_faces):
    by_sigma = {sigma: sharpness_of(gaussian_blur(real_faces, sigma), real_faces)
                for sigma in (0.5, 1.0, 2.0)}
    assert by_sigma[1.0] < 0.6 and by_sigma[2.0] < 0.2, by_sigma          # 0.39 and 0.05
    assert 1 > by_sigma[0.5] > by_sigma[1.0] > by_sigma[2.0], by_sigma


def test_noise_scores_above_one_and_contrast_does_not_count(real_faces):
    rng = np.random.default_rng(0)
    noisy = np.clip(real_faces + rng.normal(0, 8, real_faces.shape), 0, 255).astype(np.uint8)
    assert sharpness_of(noisy, real_faces) > 1.05                          # 1.13
    dimmer = (real_faces * 0.6 + 40).round().astype(np.uint8)              # same detail, flatter
    assert sharpness_of(dimmer, real_faces) == pytest.approx(1, abs=0.03)


def test_sharpness_is_parsed_listed_beside_grid_and_scored(real_faces):
    assert parse_metric_names("sharpness") == ["sharpness"]
    listed = parse_metric_names("all")
    assert listed[listed.index("grid") + 1] == "sharpness"
    suite = FaceMetrics(parse_metric_names("sharpness,grid"), "cpu")
    real = suite.analyse(real_faces)
    fake = suite.analyse(gaussian_blur(real_faces, 1.0))
    scores = suite.score(fake, real, np.zeros(len(real_faces), np.int64))
    assert list(scores)[-3:] == ["sharpness", "hf_power", "hf_power_real"]
    assert scores["sharpness"] == pytest.approx(scores["hf_power"] / scores["hf_power_real"])
    assert scores["sharpness"] < 0.6 and "grid_4_real" in scores
    row = next(line for line in format_table(scores).splitlines() if line.startswith("hf_power"))
    assert row.split()[1:] == [f"{scores['hf_power']:.4f}", f"{scores['hf_power_real']:.4f}"]
