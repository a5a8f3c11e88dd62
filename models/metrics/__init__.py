"""Evaluation metrics for generated faces: are they faces, and do they belong to the speaker?

Each metric is registered (models/metrics/registry.py) in the module of the code it uses.
Importing those modules below fills the registry, and their order is the order --help,
`--metrics all`, the printed table and metrics.json list the metrics in. Options are
checked against the registry when they are parsed, before any model or detector is loaded.
"""
from __future__ import annotations

from collections.abc import Mapping

from models.metrics import registry
# Registration order; a metric module imported by one above it would register first.
from models.metrics import detection, identity, frechet, pixels, matching  # noqa: F401,E402
from models.metrics import mouth, grid, sharpness, attributes  # noqa: F401,E402
from utils import UserError


class _Descriptions(Mapping):
    """name -> description of every registered metric, in registration order; a view, so
    a metric registered after this import is listed too."""

    def __getitem__(self, name: str) -> str:
        return registry.registered()[name].description

    def __iter__(self):
        return iter(registry.registered())

    def __len__(self) -> int:
        return len(registry.registered())


METRICS = _Descriptions()

# best.pt keeps the best figure of the first of these whose metrics a run scores: identity
# accuracy; where the speakers are unseen, 1:2 matching on the predicted labels (what a voice
# can tell), else by dlib's descriptors. A table, not a registration: the second rule's
# figure needs two metrics, and the rules' order spans metrics.
BEST_BY = ((("identity",), "identity_top1"), (("matching", "attributes"), "matching_1v2_labels"),
           (("matching",), "matching_1v2"))


def best_metric(names: list[str]) -> str | None:
    """The figure best.pt is chosen by, for these metric names (None: no best.pt)."""
    return next((figure for metrics, figure in BEST_BY if set(metrics) <= set(names)), None)


def parse_metric_names(text: str) -> list[str]:
    """'all' or a comma-separated list of registry names -> the names, in registry order."""
    if text.strip() == "all":
        return list(METRICS)
    names = [name.strip() for name in text.split(",") if name.strip()]
    unknown = [name for name in names if name not in METRICS]
    if unknown or not names:
        raise UserError(f"--metrics: unknown metric {', '.join(unknown) or repr(text)}; "
                        f"choose from all, {', '.join(METRICS)}")
    return [name for name in METRICS if name in names]
