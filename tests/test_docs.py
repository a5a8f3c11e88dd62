"""The documentation keeps its promises: the option reference is the parsers' own, the README
stays a short front door whose two commands CI relies on, and every relative link lands."""
from __future__ import annotations

import importlib.util
import re
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
README = ROOT / "README.md"
DOCS = ROOT / "docs"

DEMO_COMMAND = ("pip install -r requirements.txt && python runtime.py --epochs 2 --batch_size 16 "
                "--lr_G 0.0002 --generator hybrid --ema --save_path demo && python runtime.py "
                "--inference --save_path demo")
TEST_COMMAND = ("pip install -r requirements.txt && pip install --no-deps resemblyzer==0.1.4 "
                "&& python -m pytest -q")
README_MAX_LINES = 220
LINK = re.compile(r"\[[^\]]*\]\(([^)\s]+)\)")
WORK_PERIOD_OR_TICKET = re.compile(r"session [0-9]|issue [0-9#]", re.IGNORECASE)


@pytest.fixture(scope="module")
def make_options():
    spec = importlib.util.spec_from_file_location("make_options", DOCS / "make_options.py")
    module = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(module)
    return module


def test_options_reference_is_what_the_parsers_give(make_options):
    on_disk = (DOCS / "options.md").read_text(encoding="utf-8")
    assert on_disk == make_options.render(), \
        "docs/options.md is out of date; run: python docs/make_options.py"


def test_every_option_of_every_command_is_in_the_reference(make_options):
    text = (DOCS / "options.md").read_text(encoding="utf-8")
    missing = []
    for command, parser in make_options.commands():
        for action in make_options.documented_actions(parser):
            names = action.option_strings or [make_options.value_metavar(action)]
            missing += [f"{command} {name}" for name in names
                        if not re.search(r"`" + re.escape(name) + r"[ `]", text)]
    assert not missing


def fenced_bash_blocks(text: str) -> list[str]:
    return re.findall(r"^```bash\n(.*?)^```", text, flags=re.DOTALL | re.MULTILINE)


def test_readme_is_a_short_front_door_with_the_two_commands_first():
    text = README.read_text(encoding="utf-8")
    assert len(text.splitlines()) <= README_MAX_LINES
    blocks = fenced_bash_blocks(text)
    assert [block.strip() for block in blocks[:2]] == [DEMO_COMMAND, TEST_COMMAND]


def markdown_files() -> list[Path]:
    return [README, ROOT / "benchmarks" / "README.md", ROOT / "checkpoints" / "README.md",
            *sorted(DOCS.glob("*.md"))]


def heading_anchors(page: Path) -> set[str]:
    """The anchors GitHub gives a page's headings (fenced code skipped): lower case,
    punctuation dropped, spaces to hyphens, a repeated one numbered."""
    anchors, counts, fenced = set(), {}, False
    for line in page.read_text(encoding="utf-8").splitlines():
        if line.startswith("```"):
            fenced = not fenced
        match = None if fenced else re.match(r"#{1,6} (.*)", line)
        if match:
            slug = re.sub(r"[^\w\- ]", "", match.group(1).strip().lower()).replace(" ", "-")
            anchors.add(slug if slug not in counts else f"{slug}-{counts[slug]}")
            counts[slug] = counts.get(slug, 0) + 1
    return anchors


def test_relative_links_point_at_files_and_headings_that_exist():
    broken = []
    for page in markdown_files():
        for target in LINK.findall(page.read_text(encoding="utf-8")):
            path, _, anchor = target.partition("#")
            if re.match(r"[a-z]+:", path):                   # a URL
                continue
            landing = page.parent / path if path else page
            if not landing.exists() or (
                    anchor and landing.suffix == ".md" and anchor not in heading_anchors(landing)):
                broken.append(f"{page.relative_to(ROOT)} -> {target}")
    assert not broken


def test_documentation_names_no_work_period_or_ticket():
    pages = [README, ROOT / "benchmarks" / "README.md",
             *sorted(p for p in DOCS.rglob("*") if p.is_file() and "__pycache__" not in p.parts)]
    hits = [f"{page.relative_to(ROOT)}:{number}: {line.strip()}"
            for page in pages
            for number, line in enumerate(page.read_text(encoding="utf-8").splitlines(), 1)
            if WORK_PERIOD_OR_TICKET.search(line)]
    assert not hits
