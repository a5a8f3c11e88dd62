"""The metric registry: a metric is one decorated function, and --metrics, --help and a real
scoring run pick it up from its registration alone."""
from __future__ import annotations

import numpy as np
import pytest

import runtime
from data.dataset import read_faces
from data.demo import demo_dataset_path
from data.schema import validate_pair_file
from models.metrics import METRICS, parse_metric_names
from models.metrics import registry
from models.metrics.pixels import luma
from models.metrics.suite import FaceMetrics
from utils import UserError

BUILT_IN = ["detection_dlib", "detection_haar", "identity", "dlib_similarity", "frechet", "l1",
            "matching", "mouth_sync", "grid", "sharpness", "attributes"]


def face_brightness(faces: np.ndarray, suite) -> np.ndarray:
    """(N,) mean luma of each face in [0, 1]: the toy metric's own analysis."""
    return luma(faces).mean(axis=(1, 2)) / 255


def toy_brightness(fake, real, speaker_ids, suite) -> dict[str, float]:
    return {"toy": fake.extra["toy"].mean(), "toy_real": real.extra["toy"].mean()}


@pytest.fixture
def toy_metric(monkeypatch):
    """`toy` registered on a copy of the registry; the built-in registry is restored after."""
    monkeypatch.setattr(registry, "REGISTRY", dict(registry.REGISTRY))
    registry.register_metric("toy", "mean brightness of the faces, beside the real faces'",
                             analyse=face_brightness)(toy_brightness)


def demo_faces(count: int = 16) -> np.ndarray:
    return read_faces(validate_pair_file(demo_dataset_path()), "test")[0][:count]


def test_a_registered_metric_is_parsed_listed_and_scored(toy_metric, capsys):
    assert parse_metric_names("toy") == ["toy"]
    assert parse_metric_names("toy, l1") == ["l1", "toy"]          # registry order
    assert parse_metric_names("all") == BUILT_IN + ["toy"]
    with pytest.raises(SystemExit) as stop:
        runtime.main(["--help"])
    assert stop.value.code == 0
    assert "attributes, toy; or all" in " ".join(capsys.readouterr().out.split())

    real_faces = demo_faces()
    fake_faces = real_faces // 2                                   # darker, same shapes
    suite = FaceMetrics(parse_metric_names("grid,toy,l1"), "cpu")
    real, fake = suite.analyse(real_faces), suite.analyse(fake_faces)
    assert list(fake.extra) == ["grid", "toy"] and fake.extra["toy"].shape == (16,)
    scores = suite.score(fake, real, np.zeros(16, np.int64))
    assert list(scores)[:1] == ["l1"] and list(scores)[-2:] == ["toy", "toy_real"]
    assert scores["toy"] == float(face_brightness(fake_faces, suite).mean())
    assert scores["toy_real"] == float(face_brightness(real_faces, suite).mean())
    assert 0.4 < scores["toy"] / scores["toy_real"] < 0.5


def test_an_unknown_metric_is_still_one_line(toy_metric, capsys):
    assert runtime.main(["--evaluate", "--metrics", "l1,toys"]) == 2
    err = capsys.readouterr().err.strip()
    assert err.startswith("error: --metrics: unknown metric toys; choose from all,")
    assert err.endswith("attributes, toy") and "\n" not in err


def test_the_built_in_registry_keeps_its_order_and_declarations():
    assert list(METRICS) == BUILT_IN                      # the toy metric was taken out again
    entries = registry.registered()

    def declaring(need):
        return {name for name in BUILT_IN if need in entries[name].needs}
    assert declaring("descriptors") == {"dlib_similarity", "frechet", "matching"}
    assert declaring("classifier") == {"identity", "frechet", "matching"}
    assert registry.unconditional_names() == {"detection_dlib", "detection_haar", "frechet",
                                              "grid", "sharpness"}
    assert all(entries[name].description == METRICS[name] for name in BUILT_IN)


def test_a_registration_must_name_known_needs_and_a_new_name(monkeypatch):
    monkeypatch.setattr(registry, "REGISTRY", dict(registry.REGISTRY))
    with pytest.raises(ValueError, match="unknown needs"):
        registry.register_metric("toy", "a toy", needs=("landmark",))
    with pytest.raises(ValueError, match="registered twice"):
        registry.register_metric("l1", "again")(toy_brightness)
    with pytest.raises(UserError, match="unknown metric toy"):
        parse_metric_names("toy")
