"""The grid-artifact metric on the demo set's real faces, and on the same faces with the two
artifacts it is for: a nearest-neighbour mosaic and a transposed convolution's checkerboard."""
from __future__ import annotations

import numpy as np
import torch
import torch.nn.functional as F

from data.dataset import read_faces
from data.demo import demo_dataset_path
from data.schema import validate_pair_file
from models.metrics.grid import grid_scores


def demo_test_faces() -> np.ndarray:
    return read_faces(validate_pair_file(demo_dataset_path()), "test")[0]   # uint8 (200, 64, 64, 3)


def as_uint8(faces: torch.Tensor) -> np.ndarray:
    return faces.round().clamp(0, 255).byte().permute(0, 2, 3, 1).numpy()


def test_real_faces_show_no_grid_and_both_artifacts_are_seen():
    faces = demo_test_faces()
    real = grid_scores(faces)
    assert all(0.95 <= real[f"grid_{p}"] <= 1.1 for p in (2, 4, 8)), real
    assert real["checkerboard"] < 2, real

    pixels = torch.from_numpy(faces).permute(0, 3, 1, 2).float()
    # a quarter of each face drawn from its 16x16 version doubled twice by nearest neighbour
    mosaic = F.interpolate(F.avg_pool2d(pixels, 4), scale_factor=4, mode="nearest")
    blocky = grid_scores(as_uint8(0.75 * pixels + 0.25 * mosaic))
    assert blocky["grid_4"] >= real["grid_4"] + 0.3, blocky
    assert blocky["checkerboard"] < 2, blocky        # a mosaic puts no peak at period 2

    # a stride-2 transposed convolution whose four phase kernels differ by a few percent:
    # alternate pixels a grey level or two brighter
    kernel = torch.full((3, 1, 4, 4), 0.25)
    kernel[:, :, ::2, ::2] *= 1.03
    uneven = F.conv_transpose2d(F.avg_pool2d(pixels, 2), kernel, stride=2, padding=1, groups=3)
    checkered = grid_scores(as_uint8(uneven))
    assert checkered["checkerboard"] >= 10, checkered
    # the same upsampling with even phases draws none
    even = F.conv_transpose2d(F.avg_pool2d(pixels, 2), torch.full((3, 1, 4, 4), 0.25),
                              stride=2, padding=1, groups=3)
    assert grid_scores(as_uint8(even))["checkerboard"] < 2
