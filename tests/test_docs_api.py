"""docs/api.md cannot rot: every ```python block runs, as written, from a directory holding the zoo.

Blocks fenced as ```python notest are shown but not run (the import overview). The search example is
the slow one (two candidates scored with the HF backend) and carries the slow marker.
"""

from __future__ import annotations

import re
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
PAGE = REPO / "docs" / "api.md"


def code_blocks() -> list[tuple[str, str]]:
    """(section heading, code) of every runnable python block, in page order."""
    blocks, heading = [], "top"
    for match in re.finditer(r"^(#+ [^\n]*)$|^```python(?P<tag>[^\n]*)\n(?P<code>.*?)^```$", PAGE.read_text(),
                             flags=re.M | re.S):
        if match.group(1):
            heading = match.group(1).lstrip("# ").strip()
        elif "notest" not in match.group("tag"):
            blocks.append((heading, match.group("code")))
    return blocks


BLOCKS = code_blocks()


def test_the_page_has_the_examples_the_issue_asks_for():
    headings = [h for h, _ in BLOCKS]
    assert headings[:1] == ["Merge to disk"] and "Merge in memory: `ResidentMerger`" in headings
    assert "Evaluate: suites and generators" in headings and "A tiny search" in headings


@pytest.mark.parametrize("index", [
    pytest.param(i, id=f"{i}-{heading}", marks=[pytest.mark.slow] if heading == "A tiny search" else [])
    for i, (heading, _) in enumerate(BLOCKS)
])
def test_example_runs(index, tmp_path, monkeypatch):
    (tmp_path / "zoo").symlink_to(REPO / "zoo")
    monkeypatch.chdir(tmp_path)
    monkeypatch.setenv("EVOMERGE_CACHE", str(tmp_path / "cache"))
    heading, code = BLOCKS[index]
    exec(compile(code, f"{PAGE}:{heading}", "exec"), {"__name__": f"docs_api_{index}"})
