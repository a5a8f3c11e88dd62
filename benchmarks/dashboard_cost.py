"""What the Visualizer costs a training run: per-iteration logging, visdom updates, the page.

    python runtime.py --serve_dashboard --visdom_port 8097 &     # optional: a real server
    python benchmarks/dashboard_cost.py [--visdom_port 8097] [--repeats 7]

Rows: `scalars` per training step with no live output (a JSON line),
one update of the six per-iteration panels to visdom (six POSTs; made at most every
PLOT_SECONDS), one epoch's two face grids (PNG files and, with a server, two image
windows), and index.html rewritten from a log of 200 epochs x 100 steps. Each row is the
median over `--repeats` runs; visdom rows are left out when no server answers.
"""
from __future__ import annotations

import argparse
import contextlib
import io
import statistics
import sys
import tempfile
import time
from pathlib import Path

import numpy as np

sys.path.insert(0, str(Path(__file__).resolve().parents[1]))
import runtime  # noqa: E402
from models.panels import GAN_PANELS  # noqa: E402
from utils import Visualizer, VisdomSink, panels_for, write_run_page  # noqa: E402

STEP_FIGURES = ("d_loss", "g_loss", "g_adv", "g_l1", "g_fm", "g_softmax", "d_real", "d_fake",
                "d_wrong", "speaker_acc", "lr_G", "lr_D")


def visualizer(folder: Path, *args: str) -> Visualizer:
    options = runtime.build_parser().parse_args(["--vis_screen", "benchmark", *args])
    folder.mkdir(exist_ok=True)
    with contextlib.redirect_stdout(io.StringIO()):
        return Visualizer(folder, options, panels=GAN_PANELS)


def median_seconds(work, repeats: int) -> float:
    times = []
    for _ in range(repeats):
        start = time.perf_counter()
        work()
        times.append(time.perf_counter() - start)
    return statistics.median(times)


def step_values(rng) -> dict[str, float]:
    return {name: float(rng.random()) for name in STEP_FIGURES}


def cases(folder: Path, port: int | None, rng) -> dict[str, tuple]:
    """name -> (work, calls per run, unit)"""
    offline = visualizer(folder / "offline", "--no_visdom")
    grid = rng.integers(0, 255, (4 * 66 + 2, 8 * 66 + 2, 3), dtype=np.uint8)
    rows = {"scalars, one training step, no server": (
                lambda: [offline.scalars(s, step_values(rng)) for s in range(1000)], 1000, "us"),
            "two face grids, no server": (
                lambda: [offline.faces(t, grid, f"{t}.png", 1) for t in ("a", "b")], 1, "ms")}
    long_run = folder / "long"
    filler = visualizer(long_run, "--no_visdom")
    for step in range(1, 20_001):
        filler.scalars(step, step_values(rng))
    rows["index.html from 20,000 logged steps"] = (
        lambda: write_run_page(long_run, GAN_PANELS), 1, "ms")
    if port is not None:
        online = visualizer(folder / "online", "--visdom_port", str(port))
        visdom = next((sink for sink in online.sinks if isinstance(sink, VisdomSink)), None)
        if visdom and visdom.client:
            steps = iter(range(1, 10_000))

            def update_panels():
                step = next(steps)
                for title, names, log_scale in panels_for(STEP_FIGURES, GAN_PANELS):
                    visdom.line(title, step, {n: rng.random() for n in names}, log_scale)
            rows["visdom update of the six step panels"] = (update_panels, 1, "ms")
            rows["two face grids to visdom and disk"] = (
                lambda: [online.faces(t, grid, f"{t}.png", 1) for t in ("a", "b")], 1, "ms")
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--visdom_port", type=int, default=None)
    parser.add_argument("--repeats", type=int, default=7)
    options = parser.parse_args()
    rng = np.random.default_rng(0)
    scale = {"us": 1e6, "ms": 1e3}
    with tempfile.TemporaryDirectory() as folder:
        rows = cases(Path(folder), options.visdom_port, rng)
        print(f"{'case':42} {'median':>10}")
        for name, (work, calls, unit) in rows.items():
            seconds = median_seconds(work, options.repeats) / calls
            print(f"{name:42} {seconds * scale[unit]:>8.1f} {unit}")


if __name__ == "__main__":
    main()
