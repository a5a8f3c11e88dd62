"""Mouth sync: the two openness measures on real faces, and the within-speaker scores."""
from __future__ import annotations

import numpy as np
import pytest

from data.dataset import SpeechFaceDataset
from data.demo import demo_dataset_path
from data.schema import validate_pair_file
from models.metrics.mouth import (correlation, demo_mouth_openness, landmark_mouth_openness,
                                  mouth_sync_scores, within_speakers)
from tests.conftest import FIXTURE


def test_real_mouths_score_one_and_a_mouth_that_never_moves_scores_nothing():
    rng = np.random.default_rng(0)
    speakers = np.repeat(np.arange(4), 25)
    real = rng.normal(size=100) + speakers * 10                 # speakers differ a lot
    perfect = mouth_sync_scores(real, real, None, speakers)
    assert perfect["mouth_sync"] == pytest.approx(1.0)
    assert perfect["mouth_spread"] == pytest.approx(perfect["mouth_spread_real"])
    still = mouth_sync_scores(speakers * 10.0, real, None, speakers)   # speaker right, mouth still
    assert still["mouth_spread"] == 0 and np.isnan(still["mouth_sync"])
    shuffled = np.concatenate([rng.permutation(real[speakers == s]) for s in range(4)])
    assert abs(mouth_sync_scores(shuffled, real, None, speakers)["mouth_sync"]) < 0.3
    assert np.allclose(np.nanmean(within_speakers(real, speakers)), 0)


def test_the_demo_measure_follows_the_loudness_the_demo_mouths_were_drawn_from():
    """Measured r = 0.86 within speakers on the 200 test pairs (audio-derived openness: 0.92)."""
    info = validate_pair_file(demo_dataset_path())
    test = SpeechFaceDataset(info, "test", 16000, 64, train=False)
    rows = np.arange(len(test))
    faces = np.stack([test._rows()["faces"][i] for i in rows])
    loudness = np.array([test.centre_loudness(i) for i in rows])
    openness = demo_mouth_openness(faces)
    scores = mouth_sync_scores(openness, openness, loudness, test.speaker_ids)
    assert scores["mouth_loudness_real"] >= 0.75


@pytest.mark.skipif(not FIXTURE.is_dir(), reason="the wav2pix-mini fixture (../shared/fixtures) "
                    "is not beside this checkout")
def test_dlib_lip_landmarks_measure_real_faces():
    from data.wav2pix_import import read_image
    from models.metrics.face_analysis import DlibFaces
    from PIL import Image
    paths = sorted(FIXTURE.glob("test/*/cropped_face_frame_*.png"))[:12]
    faces = np.stack([np.asarray(Image.fromarray(read_image(p)).resize((128, 128)))
                      for p in paths])
    openness = landmark_mouth_openness(DlibFaces().landmark_points(faces))
    found = np.isfinite(openness)
    assert found.mean() >= 0.75
    assert ((openness[found] >= 0) & (openness[found] < 1)).all()   # lips' gap under their width
    assert correlation(openness, openness) == pytest.approx(1.0)
