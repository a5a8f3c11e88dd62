"""The metric registry: one decorated scoring function per name a user can pass to --metrics.

A metric is one function `score(fake, real, speaker_ids, suite) -> {figure: value}` that
reads the Analysis of the generated faces and of their paired real faces, registered with
`@register_metric(name, description, ...)` in the module of the code it uses. What it needs
is declared there: the analyses several metrics share (`needs`), its own per-face analysis
(`analyse`, stored as `analysis.extra[name]`), and whether an unconditional model's faces
can be scored on it. Names are listed (in --help, the printed table) in registration order:
the order `models/metrics/__init__.py` imports the metric modules.
"""
from __future__ import annotations

from dataclasses import dataclass
from typing import Callable

# What a metric may declare in `needs`: what is computed once per set of faces, or supplied
# to the suite, for every chosen metric that reads it.
NEEDS = {
    "detection": "dlib's face detection with all 68 landmarks (Analysis.dlib_found)",
    "descriptors": "dlib's 128-d face descriptors (Analysis.descriptors; with the detection)",
    "classifier": "the identity classifier's logits and features (Analysis.logits, .features)",
    "attribute_labels": "the attribute predictor and the scored rows' labels (suite.attributes)",
    "loudness": "the loudness of the real pairs' speech windows (the real Analysis.loudness)",
}


@dataclass(frozen=True)
class Metric:
    name: str
    description: str                # shown by --help and in the --metrics error
    score: Callable                 # (fake, real, speaker_ids, suite) -> {figure: value}
    needs: frozenset                # of NEEDS
    unconditional: bool             # scores faces that pair with no frame or speaker
    analyse: Callable | None        # (faces uint8 (N, S, S, 3), suite) -> extra[name]
    detector: str | None            # the detector behind the figure, named in metrics.json


REGISTRY: dict[str, Metric] = {}


def register_metric(name: str, description: str, needs=(), unconditional: bool = False,
                    analyse: Callable | None = None, detector: str | None = None):
    """Decorator: registers `score` under `name` (see the module docstring)."""
    unknown = set(needs) - NEEDS.keys()
    if unknown:
        raise ValueError(f"metric {name}: unknown needs {sorted(unknown)}; known: {sorted(NEEDS)}")

    def register(score: Callable) -> Callable:
        if name in REGISTRY:
            raise ValueError(f"metric {name} is registered twice")
        REGISTRY[name] = Metric(name, description, score, frozenset(needs), unconditional,
                                analyse, detector)
        return score
    return register


def registered() -> dict[str, Metric]:
    """Every registered metric by name, in registration order."""
    return REGISTRY


def metric(name: str) -> Metric:
    return REGISTRY[name]


def needs_of(names) -> set[str]:
    """Everything the named metrics need together."""
    return set().union(*(REGISTRY[name].needs for name in names))


def unconditional_names() -> set[str]:
    """The registered metrics an unconditional model's faces can be scored on."""
    return {name for name, entry in REGISTRY.items() if entry.unconditional}
