"""--log_to visdom: the live dashboard, through a client that never stops training."""
from __future__ import annotations

import base64
import logging
import math
import time
from pathlib import Path

import numpy as np

from utils.tracking.figures import SmoothedCurve, panels_for, window_id
from utils.tracking.run_page import audio_players

PLOT_SECONDS = 2.0          # at most one visdom update per panel this often (plus each epoch end)
VISDOM_TIMEOUT_SECONDS = 10


class VisdomSink:
    """visdom's client behind one guard. If the server is absent or stops answering, this
    says so in one line and the run goes on without it (the client itself would print a
    traceback for every call and return False). Per-iteration figures are smoothed and
    sent at most every PLOT_SECONDS, grouped into the caller's panels."""
    package = "visdom"
    summary = "plots to a visdom server (--visdom_server, --visdom_port)"

    def __init__(self, options, run_dir: Path, panels):
        self.address = f"{options.visdom_server}:{options.visdom_port}"
        self.env, self.created, self.client = options.vis_screen, set(), None
        self.fallback = f"training goes on; {run_dir / 'index.html'} shows the run"
        self.smoothed: dict[str, SmoothedCurve] = {}
        self.panels = panels
        self.step, self.plotted_step, self.last_plot = 0, None, -math.inf
        try:
            self.client = quiet_visdom_client(options.visdom_server, options.visdom_port,
                                              self.env)
        except OSError:
            print(f"note: no visdom server answers at {self.address} (start one with "
                  f"`python runtime.py --serve_dashboard --visdom_port {options.visdom_port}`"
                  f" or pass --no_visdom); {self.fallback}")
        else:
            print(f"dashboard: {self.address}/env/{self.env}")

    def options(self, options: dict) -> None:
        """visdom shows no options; options.json and index.html hold them."""

    def scalars(self, group: str, step: int, values: dict[str, float]) -> None:
        if group == "evaluation":        # markers: a curve of one point is a dot, not nothing
            for name, value in values.items():
                self.line(f"evaluation: {name}", step, {name: value}, markers=True)
            return
        for name, value in values.items():
            self.smoothed.setdefault(name, SmoothedCurve()).update(value)
        self.step = step
        if time.monotonic() - self.last_plot >= PLOT_SECONDS:
            self._plot_smoothed()

    def _plot_smoothed(self) -> None:
        self.last_plot = time.monotonic()
        if self.smoothed and self.plotted_step != self.step:
            self.plotted_step = self.step
            for title, names, log_scale in panels_for(self.smoothed, self.panels):
                self.line(title, self.step, {n: self.smoothed[n].value for n in names},
                          log_scale)

    def images(self, title: str, grid: np.ndarray, step: int | None, epoch: int) -> None:
        self._send(lambda client: client.image(
            grid.transpose(2, 0, 1), win=window_id(title), env=self.env,
            opts={"title": title, "caption": f"epoch {epoch}"}))

    def audio(self, title: str, clips: list, sample_rate: int, step: int | None) -> None:
        """One window of players; visdom's own `audio` takes one clip and leaves temp files."""
        players = audio_players([caption for caption, _, _ in clips], [
            f"data:audio/wav;base64,{base64.b64encode(path.read_bytes()).decode()}"
            for _, _, path in clips])
        self._send(lambda client: client.text(players, win=window_id(title), env=self.env,
                                              opts={"title": title}))

    def flush(self) -> None:
        """The latest curves, and the environment kept on the server's disk (survives a
        restart of the server)."""
        self._plot_smoothed()
        self._send(lambda client: client.save([self.env]))

    def _send(self, call) -> None:
        if self.client is None:
            return
        try:
            call(self.client)
        except OSError as error:
            self.client = None
            print(f"note: the visdom server at {self.address} stopped answering "
                  f"({str(error).splitlines()[0][:80]}); {self.fallback}")

    def line(self, title: str, step: int, values: dict[str, float], log_scale=False,
             markers=False) -> None:
        win = window_id(title)
        opts = {"title": title, "legend": list(values), "xlabel": "step",
                "ytype": "log" if log_scale else "linear", "markers": markers}

        def send(client):
            client.line(Y=np.array([list(values.values())], dtype=float),
                        X=np.full((1, len(values)), step), win=win, env=self.env,
                        update="append" if win in self.created else None, opts=opts)
            self.created.add(win)
        self._send(send)


def quiet_visdom_client(server: str, port: int, env: str):
    """A visdom client that raises OSError instead of printing, and never waits forever."""
    import visdom
    logging.getLogger("visdom").setLevel(logging.ERROR)   # its notes on sockets we do not use

    class TimedVisdom(visdom.Visdom):
        def _handle_post(self, url, data=None):
            return self.session.post(url, data=data, timeout=VISDOM_TIMEOUT_SECONDS).text

    return TimedVisdom(server=server, port=port, env=env, raise_exceptions=True,
                       use_incoming_socket=False)
