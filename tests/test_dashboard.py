"""The visdom dashboard and the run folder, against a real visdom server on 127.0.0.1.

The server is started the documented way (`python runtime.py --serve_dashboard`), which
first installs visdom's JavaScript from npm where it is missing, so a fresh machine's first
run of these tests takes that step too.
"""
from __future__ import annotations

import json
import os
import shutil
import signal
import socket
import subprocess
import sys
import time
import urllib.request
from html.parser import HTMLParser
from pathlib import Path

import numpy as np
import pytest
from PIL import Image

import runtime
from utils import (SmoothedCurve, Visualizer, current_run_records, missing_dashboard_assets,
                   visdom_static_dir)

# visdom 0.2.4's client logs through the deprecated Logger.warn
pytestmark = pytest.mark.filterwarnings("ignore:The 'warn' method is deprecated")
REPO = Path(__file__).resolve().parents[1]
FAST = ["--audio_seconds", "0.3", "--batch_size", "4", "--num_workers", "0"]
ENV = "dashboard_test"
PLOT_WINDOWS = ("generator_loss_weighted_total", "generator_loss_terms",
                "discriminator_loss", "d_mean_scores_targets_0_9_0",
                "speaker_accuracy_train_batches", "learning_rates")
EVALUATION_WINDOWS = ("evaluation_val_l1", "evaluation_val_nearest_speaker_acc")
IMAGE_WINDOWS = ("held_out_speech_generated_faces_above_the_real_ones",
                 "training_pairs_generated_faces_above_the_real_ones")
AUDIO_WINDOWS = ("held_out_speech_in_grid_order", "training_speech_in_grid_order")
CHROMIUM_FLAGS = ["--headless", "--no-sandbox", "--disable-gpu", "--disable-background-networking",
                  "--disable-component-update", "--no-first-run", "--window-size=1400,1800",
                  "--virtual-time-budget=15000"]


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return probe.getsockname()[1]


def start_dashboard(home: Path) -> tuple[subprocess.Popen, int]:
    """`python runtime.py --serve_dashboard` on a free port, waited for until it answers.
    HOME points visdom's saved environments into the test's folder."""
    port = free_port()
    server = subprocess.Popen([sys.executable, "runtime.py", "--serve_dashboard", "--visdom_port",
                               str(port)], cwd=REPO, env={**os.environ, "HOME": str(home)},
                              stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    deadline = time.monotonic() + 180          # the first start installs the JavaScript
    while time.monotonic() < deadline:
        if server.poll() is not None:
            pytest.fail(f"the dashboard server exited: {server.stdout.read()[-2000:]}")
        try:
            with urllib.request.urlopen(f"http://127.0.0.1:{port}/", timeout=2) as answer:
                if answer.status == 200:
                    return server, port
        except OSError:
            time.sleep(0.2)
    stop(server)
    pytest.fail("the dashboard server did not answer within 180 s")


def stop(server: subprocess.Popen) -> None:
    if server.poll() is None:
        server.send_signal(signal.SIGKILL)
    server.wait(timeout=30)
    server.stdout.close()


def visdom_client(port: int):
    import visdom
    return visdom.Visdom(server="http://127.0.0.1", port=port, env=ENV, raise_exceptions=True,
                         use_incoming_socket=False)


@pytest.fixture(scope="module")
def dashboard(tmp_path_factory):
    server, port = start_dashboard(tmp_path_factory.mktemp("home"))
    yield port
    stop(server)


@pytest.fixture(scope="module")
def plotted_run(dashboard, tmp_path_factory):
    """Two epochs of three steps each on a tiny real pair file, plotted to the server."""
    from data.schema import write_pair_file
    from tests.conftest import make_pairs
    folder = tmp_path_factory.mktemp("plotted")
    rng = np.random.default_rng(0)
    pairs = write_pair_file(folder / "tiny.h5", {"train": make_pairs(rng, 12, 8000, 40, 3),
                                                 "valid": make_pairs(rng, 6, 8000, 40, 3)},
                            ["anna", "bert", "carl"])
    with pytest.MonkeyPatch.context() as patch:
        patch.chdir(folder)
        assert runtime.main(["--dataset", str(pairs), "--save_path", "live", "--epochs", "2",
                             "--visdom_port", str(dashboard), "--vis_screen", ENV, *FAST]) == 0
    return folder / "checkpoints" / "live"


def window(client, win: str) -> dict:
    assert client.win_exists(win, env=ENV), win
    return json.loads(client.get_window_data(win=win, env=ENV))


def test_training_fills_every_window_of_a_real_visdom_server(dashboard, plotted_run):
    client = visdom_client(dashboard)
    every = json.loads(client.get_window_data(env=ENV))
    assert set(every) == {*PLOT_WINDOWS, *EVALUATION_WINDOWS, *IMAGE_WINDOWS, *AUDIO_WINDOWS}
    for win in PLOT_WINDOWS:
        traces = window(client, win)["content"]["data"]
        for trace in traces:
            steps = trace["x"]
            assert steps == sorted(set(steps)) and steps[-1] == 6, (win, trace["name"], steps)
            assert all(np.isfinite(trace["y"])), (win, trace["name"])
    names = {t["name"] for win in PLOT_WINDOWS for t in window(client, win)["content"]["data"]}
    assert names == {"g_loss", "g_adv", "g_l1", "g_fm", "g_softmax", "g_gdl", "d_loss", "d_real",
                     "d_fake", "d_wrong", "speaker_acc", "lr_G", "lr_D"}
    lr = {t["name"]: t["y"] for t in window(client, "learning_rates")["content"]["data"]}
    assert lr["lr_G"] == pytest.approx([1e-4] * len(lr["lr_G"]))
    assert lr["lr_D"] == pytest.approx([4e-4] * len(lr["lr_D"]))
    for win in EVALUATION_WINDOWS:
        trace = window(client, win)["content"]["data"][0]
        assert trace["x"] == [3, 6]
        assert trace["mode"] == "lines+markers"       # so that a curve of one point shows
    for win in IMAGE_WINDOWS:
        assert window(client, win)["content"]["src"].startswith("data:image/png;base64,")
    clips = [window(client, win)["content"].count("<audio controls") for win in AUDIO_WINDOWS]
    assert clips == [6, 8]     # the first grid row of each sample set: 6 held-out pairs, 8 train
    assert missing_dashboard_assets(visdom_static_dir()) == []


def test_the_dashboard_page_renders_the_plots_in_headless_chromium(dashboard, plotted_run,
                                                                     tmp_path):
    chromium = shutil.which("chromium") or shutil.which("chromium-browser")
    if chromium is None:
        pytest.skip("Chromium is not installed (Debian: apt-get install chromium; .ci/run does)")
    page = f"http://127.0.0.1:{dashboard}/env/{ENV}"
    flags = [chromium, *CHROMIUM_FLAGS, f"--user-data-dir={tmp_path / 'profile'}"]
    dom = subprocess.run([*flags, "--dump-dom", page], capture_output=True, text=True,
                         timeout=120).stdout
    assert dom.count('class="main-svg"') >= 2 * len(PLOT_WINDOWS + EVALUATION_WINDOWS)
    assert dom.count('<img class="content-image') == len(IMAGE_WINDOWS)
    assert dom.count("<audio controls") == 14
    shot = tmp_path / "dashboard.png"
    subprocess.run([*flags, f"--screenshot={shot}", page], capture_output=True, timeout=120)
    pixels = np.asarray(Image.open(shot).convert("RGB"))
    # visdom's blue backdrop, white panes and coloured curves: far from one flat colour
    assert len(np.unique(pixels.reshape(-1, 3), axis=0)) > 200
    assert (pixels == 255).all(axis=2).mean() > 0.2


def test_the_run_folder_holds_every_figure_and_a_page_that_shows_them(plotted_run):
    records = current_run_records(plotted_run / "log.jsonl")
    kinds = [r["kind"] for r in records]
    assert kinds.count("iteration") == 6 and kinds.count("epoch") == 2
    assert kinds.count("evaluation") == 2 and kinds.count("image") == 4
    assert [r["step"] for r in records if r["kind"] == "iteration"] == [1, 2, 3, 4, 5, 6]
    page = PageParts()
    page.feed((plotted_run / "index.html").read_text())
    assert len(page.charts) == len(PLOT_WINDOWS) + len(EVALUATION_WINDOWS)
    assert all(points for chart in page.charts for points in chart)
    for source in page.images + page.audio:
        assert (plotted_run / source).is_file(), source
    assert len(page.images) == 4 and len(page.audio) == 14
    assert json.loads((plotted_run / "options.json").read_text())["vis_screen"] == ENV


class PageParts(HTMLParser):
    """The charts (their polylines' point lists), image and audio sources of a page."""

    def __init__(self):
        super().__init__()
        self.charts, self.images, self.audio = [], [], []

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "svg":
            self.charts.append([])
        elif tag == "polyline":
            self.charts[-1].append(attrs["points"])
        elif tag == "img":
            self.images.append(attrs["src"])
        elif tag == "audio":
            self.audio.append(attrs["src"])


def test_training_goes_on_when_the_server_dies_and_says_so_once(tiny_pairs, tmp_path):
    server, port = start_dashboard(tmp_path)
    log = tmp_path / "checkpoints" / "dies" / "log.jsonl"
    training = subprocess.Popen(
        [sys.executable, str(REPO / "runtime.py"), "--dataset", str(tiny_pairs), "--save_path",
         "dies", "--epochs", "1", "--visdom_port", str(port), "--vis_screen", ENV, *FAST],
        cwd=tmp_path, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    try:
        while not (log.is_file() and '"kind": "iteration"' in log.read_text()):
            assert training.poll() is None, training.communicate()
            time.sleep(0.02)
        stop(server)                        # after the first of three steps was plotted
        killed = time.time()
        out, err = training.communicate(timeout=300)
    finally:
        stop(server)
        if training.poll() is None:
            training.kill()
    assert training.returncode == 0, err
    assert "dashboard: http://localhost" in out
    assert out.count("stopped answering") == 1 and "Traceback" not in out + err
    records = current_run_records(log)
    assert [r["step"] for r in records if r["kind"] == "iteration"] == [1, 2, 3]
    assert [r for r in records if r["kind"] == "epoch"][0]["time"] > killed
    assert (tmp_path / "checkpoints" / "dies" / "index.html").is_file()


def dashboard_options(*args: str):
    return runtime.build_parser().parse_args(["--vis_screen", ENV, *args])


def show_everything(visualizer) -> None:
    """One call of each kind, as a training epoch makes them."""
    visualizer.scalars(1, {"g_loss": 2.0, "d_loss": 1.0})
    visualizer.metrics(1, {"val_l1": 0.5}, epoch=1)
    visualizer.faces("faces", np.zeros((10, 20, 3), np.uint8), "epoch_0001.png", 1)
    visualizer.speech("speech", [("1: anna", np.zeros(1600, np.float32))], 16000)
    visualizer.epoch_end(1, 1, {"g_loss": 2.0, "d_loss": 1.0})


def test_without_a_server_the_run_folder_gets_everything_and_one_note(tmp_path, capsys):
    options = dashboard_options("--visdom_port", str(free_port()))
    show_everything(Visualizer(tmp_path, options))
    captured = capsys.readouterr()
    assert captured.out.count("note: no visdom server answers at http://localhost:") == 1
    assert len(captured.out.splitlines()) == 1 and captured.err == ""
    kinds = [r["kind"] for r in current_run_records(tmp_path / "log.jsonl")]
    assert kinds == ["start", "iteration", "evaluation", "image", "speech", "epoch"]
    assert (tmp_path / "index.html").is_file() and (tmp_path / "samples/epoch_0001.png").is_file()


def test_no_visdom_tries_no_server(tmp_path, capsys):
    show_everything(Visualizer(tmp_path, dashboard_options("--no_visdom")))
    assert capsys.readouterr().out == ""
    assert (tmp_path / "index.html").is_file()


def test_bad_dashboard_options_are_refused_in_one_line(capsys):
    cases = {("--visdom_port", "0"): "--visdom_port must be between 1 and 65535",
             ("--visdom_port", "70000"): "--visdom_port must be between 1 and 65535",
             ("--visdom_server", "localhost"): "--visdom_server must start with http://"}
    for args, expected in cases.items():
        assert runtime.main(list(args)) == 2, args
        err = capsys.readouterr().err.strip()
        assert err.startswith("error: ") and expected in err and "\n" not in err, (args, err)


def test_serving_on_a_taken_port_is_refused_in_one_line():
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        port = taken.getsockname()[1]
        result = subprocess.run([sys.executable, "runtime.py", "--serve_dashboard",
                                 "--visdom_port", str(port)], cwd=REPO, capture_output=True,
                                text=True, timeout=120)
    assert result.returncode == 2
    assert result.stderr.strip() == (f"error: port {port} is taken (a visdom server may already "
                                     f"run there: open http://localhost:{port}); choose another "
                                     "--visdom_port")


def test_the_moving_average_starts_at_the_first_value_and_follows_a_constant():
    ema = SmoothedCurve(0.9)
    assert ema.update(5.0) == pytest.approx(5.0)
    assert all(ema.update(5.0) == pytest.approx(5.0) for _ in range(50))
    ema = SmoothedCurve(0.5)
    ema.update(0.0)
    assert ema.update(3.0) == pytest.approx(2.0)     # (0.25 * 0 + 0.5 * 3) / (1 - 0.25)


def test_a_reused_run_folder_shows_only_its_latest_run(tmp_path):
    log = tmp_path / "log.jsonl"
    lines = [{"kind": "start"}, {"kind": "iteration", "step": 1, "g_loss": 9.0},
             {"kind": "start"}, {"kind": "iteration", "step": 1, "g_loss": 1.0}]
    log.write_text("".join(json.dumps(line) + "\n" for line in lines))
    assert current_run_records(log) == lines[2:]
