"""index.html: a run without a server, its curves drawn as inline SVG charts."""
from __future__ import annotations

import html
import json
import math
import time
from pathlib import Path

from utils.files import write_atomically
from utils.tracking.figures import SmoothedCurve, panels_for

PALETTE = ("#1f77b4", "#d62728", "#2ca02c", "#ff7f0e", "#9467bd", "#8c564b", "#e377c2")
CHART_POINTS = 1500          # polyline points per curve; longer runs are thinned for the page


def current_run_records(log_path: Path) -> list[dict]:
    """The log's records since its last `start` (a reused --save_path appends a new run)."""
    records = []
    if log_path.is_file():
        for line in log_path.read_text().splitlines():
            record = json.loads(line)
            records = [] if record.get("kind") == "start" else records
            records.append(record)
    return records


def write_run_page(run_dir, panels=()) -> Path:
    """index.html: curves as inline SVG, the latest grids, the speech and the options; it
    needs no server and no network, so a run can be read later from its folder alone.
    `panels` groups the training curves (as figures.panels_for)."""
    run_dir = Path(run_dir)
    records = current_run_records(run_dir / "log.jsonl")
    options_path = run_dir / "options.json"
    options = json.loads(options_path.read_text()) if options_path.is_file() else {}
    sections = [_training_charts(records, panels), _evaluation_charts(records),
                _image_section(records), _speech_section(records), _options_section(options)]
    title = html.escape(f"run {run_dir.name}")
    page = (f"<!doctype html>\n<html><head><meta charset=\"utf-8\"><title>{title}</title>"
            f"<style>{PAGE_STYLE}</style></head>\n<body><h1>{title}</h1>\n<p>{_progress(records)}"
            f"</p>\n" + "\n".join(s for s in sections if s) + "\n</body></html>\n")
    write_atomically(run_dir / "index.html", page.encode())
    return run_dir / "index.html"


PAGE_STYLE = ("body{font-family:sans-serif;margin:1.5em;color:#222}"
              "section{display:flex;flex-wrap:wrap;gap:1em;margin-bottom:1.5em}"
              "figure{margin:0}figcaption{font-size:13px;margin:.3em 0}"
              "img{image-rendering:pixelated;max-width:100%}"
              "td{padding:0 1em 0 0;font-size:13px}svg{background:#fff;border:1px solid #ddd}")


def _progress(records: list[dict]) -> str:
    epochs = [r for r in records if r.get("kind") == "epoch"]
    if not epochs:
        return "no epoch finished yet"
    last = epochs[-1]
    when = time.strftime("%Y-%m-%d %H:%M", time.localtime(last.get("time", 0)))
    return f"epoch {last['epoch']}, step {last['step']}, written {when}"


def _series(records: list[dict], kind: str) -> dict[str, list[tuple[float, float]]]:
    """(step, value) of every finite number logged under `kind`, by figure name."""
    series: dict[str, list[tuple[float, float]]] = {}
    for record in records:
        if record.get("kind") != kind:
            continue
        for name, value in record.items():
            if name in ("kind", "step", "epoch", "time") or not isinstance(value, (int, float)):
                continue
            if math.isfinite(value):
                series.setdefault(name, []).append((record["step"], value))
    return series


def _training_charts(records: list[dict], panels) -> str:
    series = _series(records, "iteration")
    charts = []
    for title, names, log_scale in panels_for(series, panels):
        lines = {}
        for name in names:
            smoothed = SmoothedCurve()
            lines[name] = (series[name], [(x, smoothed.update(y)) for x, y in series[name]])
        charts.append(svg_chart(title, lines, log_scale))
    return _section("Training, per iteration", charts,
                    "<p>bold: smoothed (moving average), faint: raw</p>")


def _evaluation_charts(records: list[dict]) -> str:
    series = _series(records, "evaluation")
    charts = [svg_chart(f"evaluation: {name}", {name: ([], points)}, False, dots=True)
              for name, points in series.items()]
    return _section("Evaluations", charts)


def _image_section(records: list[dict]) -> str:
    by_title: dict[str, list[dict]] = {}
    for record in records:
        if record.get("kind") == "image":
            by_title.setdefault(record["title"], []).append(record)
    figures = []
    for title, images in by_title.items():
        latest = images[-1]
        earlier = "".join(_figure(f"epoch {r['epoch']}", _image(r["path"], lazy=True))
                          for r in images[-2::-1])
        folded = f"<details><summary>earlier epochs</summary>{earlier}</details>" if earlier else ""
        figures.append(_figure(f"{title}, epoch {latest['epoch']}",
                               _image(latest["path"]) + folded))
    return _section("Faces", figures)


def _speech_section(records: list[dict]) -> str:
    latest = {r["title"]: r for r in records if r.get("kind") == "speech"}
    return _section("Speech", [_figure(title, audio_players(r["captions"], r["paths"]))
                               for title, r in latest.items()])


def _options_section(options: dict) -> str:
    rows = "".join(f"<tr><td>{html.escape(str(k))}</td><td>{html.escape(json.dumps(v))}</td></tr>"
                   for k, v in sorted(options.items()))
    return f"<h2>Options</h2><table>{rows}</table>" if rows else ""


def _section(heading: str, parts: list[str], note: str = "") -> str:
    parts = [part for part in parts if part]
    return f"<h2>{heading}</h2>{note}<section>{''.join(parts)}</section>" if parts else ""


def _figure(caption: str, content: str) -> str:
    return f"<figure><figcaption>{html.escape(caption)}</figcaption>{content}</figure>"


def _image(source: str, lazy: bool = False) -> str:
    loading = ' loading="lazy"' if lazy else ""
    return f"<img{loading} src=\"{html.escape(source)}\">"


def audio_players(captions: list[str], sources: list[str]) -> str:
    """One captioned player per clip; a source is a file path or a data: URI."""
    return "".join(f"<div>{html.escape(caption)}<br><audio controls preload=\"none\" "
                   f"src=\"{html.escape(source)}\"></audio></div>"
                   for caption, source in zip(captions, sources))


def svg_chart(title: str, lines: dict[str, tuple[list, list]], log_scale: bool,
              dots: bool = False, width: int = 460, height: int = 250) -> str:
    """An inline SVG line chart. `lines` maps a name to (faint raw points, bold points);
    long curves are thinned to about CHART_POINTS before anything is drawn."""
    lines = {name: (_thin(raw), _thin(bold)) for name, (raw, bold) in lines.items()}
    frame = ChartFrame([p for raw, bold in lines.values() for p in raw + bold], log_scale,
                       width, height)
    if frame.empty:
        return ""
    parts = [f"<text x=\"{frame.LEFT}\" y=\"14\" font-size=\"13\">{html.escape(title)}</text>",
             frame.axes()]
    for index, (name, (raw, bold)) in enumerate(lines.items()):
        color = PALETTE[index % len(PALETTE)]
        parts += [frame.polyline(raw, color, 1, 0.25), frame.polyline(bold, color, 1.8, 1),
                  frame.dots(bold, color) if dots else "",
                  f"<text x=\"{frame.LEFT + 8 + 100 * index}\" y=\"30\" font-size=\"11\" "
                  f"fill=\"{color}\">&#9644; {html.escape(name)}</text>"]
    return (f"<svg xmlns=\"http://www.w3.org/2000/svg\" width=\"{width}\" height=\"{height}\" "
            f"class=\"chart\">" + "".join(parts) + "</svg>")


def _thin(curve: list) -> list:
    return curve[::max(1, len(curve) // CHART_POINTS)]


class ChartFrame:
    """Maps (step, value) points to the pixels of one chart, on a log10 axis when asked."""
    LEFT, RIGHT, TOP, BOTTOM = 58, 10, 40, 26

    def __init__(self, points, log_scale: bool, width: int, height: int):
        self.log_scale, self.width, self.height = log_scale, width, height
        scaled = [(x, self.scale(y)) for x, y in points]
        kept = [(x, y) for x, y in scaled if y is not None]
        self.empty = not kept
        if kept:
            self.x0, self.x1 = min(x for x, _ in kept), max(x for x, _ in kept)
            self.y0, self.y1 = min(y for _, y in kept), max(y for _, y in kept)
            self.x1 = max(self.x1, self.x0 + 1)
            if self.y1 - self.y0 <= 1e-12 * max(1.0, abs(self.y0)):   # flat: give it room
                margin = abs(self.y0) * 0.1 + 1e-9
                self.y0, self.y1 = self.y0 - margin, self.y1 + margin

    def scale(self, y: float) -> float | None:
        if not self.log_scale:
            return y
        return math.log10(y) if y > 0 else None

    def place(self, x: float, scaled_y: float) -> tuple[float, float]:
        across = (x - self.x0) / (self.x1 - self.x0)
        up = (scaled_y - self.y0) / (self.y1 - self.y0)
        return (self.LEFT + across * (self.width - self.LEFT - self.RIGHT),
                self.height - self.BOTTOM - up * (self.height - self.TOP - self.BOTTOM))

    def axes(self) -> str:
        """Five labelled grid lines up the value axis, five whole steps along the bottom."""
        parts = []
        magnitude = max(abs(self.y0), abs(self.y1)) / (self.y1 - self.y0)
        digits = 3 + min(6, max(0, math.floor(math.log10(magnitude)))) if magnitude > 0 else 3
        for i in range(5):
            y = self.y0 + (self.y1 - self.y0) * i / 4
            label = 10 ** y if self.log_scale else y
            _, py = self.place(self.x0, y)
            parts.append(f"<line x1=\"{self.LEFT}\" x2=\"{self.width - self.RIGHT}\" "
                         f"y1=\"{py:.1f}\" y2=\"{py:.1f}\" stroke=\"#eee\"/>"
                         f"<text x=\"{self.LEFT - 4}\" y=\"{py + 4:.1f}\" font-size=\"10\" "
                         f"text-anchor=\"end\">{label:.{3 if self.log_scale else digits}g}</text>")
        for x in sorted({round(self.x0 + (self.x1 - self.x0) * i / 4) for i in range(5)}):
            px, _ = self.place(x, self.y0)
            parts.append(f"<text x=\"{px:.1f}\" y=\"{self.height - 8}\" font-size=\"10\" "
                         f"text-anchor=\"middle\">{x}</text>")
        return "".join(parts)

    def _placed(self, curve) -> list[tuple[float, float]]:
        scaled = [(x, self.scale(y)) for x, y in curve]
        return [self.place(x, y) for x, y in scaled if y is not None]

    def polyline(self, curve, color: str, stroke: float, opacity: float) -> str:
        xy = " ".join(f"{px:.1f},{py:.1f}" for px, py in self._placed(curve))
        return (f"<polyline fill=\"none\" stroke=\"{color}\" stroke-width=\"{stroke}\" "
                f"stroke-opacity=\"{opacity}\" points=\"{xy}\"/>" if xy else "")

    def dots(self, curve, color: str) -> str:
        return "".join(f"<circle cx=\"{px:.1f}\" cy=\"{py:.1f}\" r=\"2.5\" fill=\"{color}\"/>"
                       for px, py in self._placed(curve))
