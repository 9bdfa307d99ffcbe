"""The README and docs/: the quick start that CI runs, and links that lead somewhere."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parents[1]
PAGES = [REPO / "README.md", *sorted((REPO / "docs").glob("*.md"))]


def _code_lines(text: str) -> list[str]:
    lines, inside = [], False
    for line in text.splitlines():
        if line.startswith("```"):
            inside = not inside
        elif inside:
            lines.append(line)
    return lines


def test_readme_test_command_is_the_one_ci_runs():
    ci = [line for line in (REPO / ".ci" / "run").read_text().splitlines() if line.startswith("python3 -m venv")]
    assert len(ci) == 1, ".ci/run should run exactly one install-and-test line"
    assert ci[0] in _code_lines((REPO / "README.md").read_text()), (
        "the README's test command and .ci/run's differ: keep the two verbatim equal")


def test_readme_quick_start_runs_the_committed_demo():
    demo = ("python3 -m venv .venv && . .venv/bin/activate && pip install torch==2.13.0 -e . && "
            "evomerge search experiments/demo.yaml --out runs/demo")
    assert demo in _code_lines((REPO / "README.md").read_text())
    assert (REPO / "experiments" / "demo.yaml").is_file()


def test_readme_stays_an_introduction():
    """The reference lives in docs/; the README keeps what a newcomer needs (plus the measured tables the issues
    ask for in the README itself: the demo, sample efficiency, paper scale)."""
    assert len((REPO / "README.md").read_text().encode()) < 14_000


def _anchor(heading: str) -> str:
    """GitHub's anchor of a heading: lower case, punctuation dropped, spaces to hyphens."""
    return re.sub(r"[^\w\- ]", "", heading.strip().lower()).replace(" ", "-")


def _anchors(page: Path) -> set[str]:
    text = page.read_text(encoding="utf-8")
    code = set(_code_lines(text))
    found = {_anchor(m.group(1)) for m in re.finditer(r"^#+ (.*)$", text, re.M) if m.group(0) not in code}
    return found | set(re.findall(r'<a id="([^"]+)"', text))


@pytest.mark.parametrize("page", PAGES, ids=lambda p: str(p.relative_to(REPO)))
def test_relative_links_and_images_resolve(page):
    broken = []
    for target in re.findall(r"\]\(([^)\s]+)\)", page.read_text(encoding="utf-8")):
        if re.match(r"[a-z]+://", target):
            continue
        path, _, anchor = target.partition("#")
        file = (page.parent / path).resolve() if path else page
        if not file.exists():
            broken.append(f"{target}: no such file")
        elif anchor and anchor not in _anchors(file):
            broken.append(f"{target}: no heading with that anchor in {file.relative_to(REPO)}")
    assert broken == [], f"{page.relative_to(REPO)}: broken links: {broken}"
