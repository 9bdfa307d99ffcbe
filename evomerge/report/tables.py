"""Result tables in the paper's layout: rows = base, specialists, merge methods; columns = benchmarks + Avg.

Pure formatting (`to_markdown`, `to_csv`) plus an atomic writer. Markdown cells are percentages with
two decimals, `mean ± standard error`, the best value of each column in bold; the CSV keeps the raw
scores (fractions in [0, 1]) with their standard errors and item counts. The average over K columns
is the mean of the column means; its standard error is sqrt(sum se_k^2) / K, taking the columns
(different items of different suites) as independent.
"""

from __future__ import annotations

import csv
import io
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Mapping, Sequence

from evomerge.io.atomic import canonical_json, write_text_atomic

ROW_KINDS = ("base", "specialist", "method")


@dataclass(frozen=True)
class Score:
    mean: float
    stderr: float
    n: int


@dataclass(frozen=True)
class TableRow:
    label: str
    kind: str  # one of ROW_KINDS
    scores: Mapping[str, Score]  # objective -> score; a missing objective was not scored (see failure)
    method: str = ""  # the merge method (method rows)
    point: str = ""  # the grid point, e.g. "lambda=0.5, density=0.2"
    parameters: Mapping[str, Any] = field(default_factory=dict)  # every parameter of the merge (CSV)
    search_average: float | None = None  # the average that chose the point, on the selection split
    failure: str = ""


@dataclass(frozen=True)
class TableBlock:
    name: str
    title: str
    objectives: Sequence[str]
    rows: Sequence[TableRow]


def average(scores: Mapping[str, Score], objectives: Sequence[str]) -> Score | None:
    """The mean over the objectives and its standard error (independent columns); None if one is missing."""
    if not objectives or any(o not in scores for o in objectives):
        return None
    k = len(objectives)
    mean = sum(scores[o].mean for o in objectives) / k
    se = math.sqrt(sum(_finite(scores[o].stderr) ** 2 for o in objectives)) / k
    return Score(mean, se, min(scores[o].n for o in objectives))


def _finite(x: float) -> float:
    return x if math.isfinite(x) else 0.0


def percent(x: float) -> str:
    return f"{100 * x:.2f}" if math.isfinite(x) else "nan"


def _cell(score: Score | None, best: bool) -> str:
    if score is None:
        return "—"
    text = f"{percent(score.mean)} ± {percent(_finite(score.stderr))}"
    return f"**{text}**" if best else text


def _best_in_column(values: Sequence[Score | None]) -> set[int]:
    """Rows holding the column's highest mean at the displayed precision (every one of them on a tie);
    none when all rows show the same value (nothing stands out)."""
    shown = {i: float(percent(v.mean)) for i, v in enumerate(values) if v is not None and math.isfinite(v.mean)}
    if len(set(shown.values())) < 2:
        return set()
    top = max(shown.values())
    return {i for i, s in shown.items() if s == top}


def _markdown_block(block: TableBlock) -> list[str]:
    columns = list(block.objectives) + ["Avg"]
    grid = [[row.scores.get(o) for o in block.objectives] + [average(row.scores, block.objectives)]
            for row in block.rows]
    bold = [_best_in_column([r[c] for r in grid]) for c in range(len(columns))]
    lines = ["| Model | " + " | ".join(columns) + " | Grid point (search avg) |",
             "|---|" + "---:|" * len(columns) + "---|"]
    for i, row in enumerate(block.rows):
        cells = [_cell(score, i in bold[c]) for c, score in enumerate(grid[i])]
        if row.failure:
            chosen = f"failed: {_one_line(row.failure)}"
        elif row.kind == "method":
            avg = "" if row.search_average is None else f" ({percent(row.search_average)})"
            chosen = f"{row.point or 'fixed'}{avg}"
        else:
            chosen = ""
        lines.append(f"| {_escape(row.label)} | " + " | ".join(cells) + f" | {_escape(chosen)} |")
    return lines


def _one_line(text: str, width: int = 120) -> str:
    text = " ".join(text.split())
    return text if len(text) <= width else text[: width - 1] + "…"


def _escape(text: str) -> str:
    return text.replace("|", "\\|")


def to_markdown(title: str, notes: Sequence[str], blocks: Sequence[TableBlock], footer: Sequence[str] = ()) -> str:
    """`# title`, the notes as a paragraph each, then one table per block (under `## block title` when
    there are several blocks), then the footer lines."""
    lines = [f"# {title}", ""]
    for note in notes:
        lines += [note, ""]
    for block in blocks:
        if len(blocks) > 1:
            lines += [f"## {block.title}", ""]
        lines += _markdown_block(block) + [""]
    if footer:
        lines += list(footer) + [""]
    return "\n".join(lines)


def csv_header(objectives: Sequence[str]) -> list[str]:
    cols = ["block", "model", "kind", "method", "grid_point", "parameters", "search_average"]
    for o in objectives:
        cols += [o, f"{o}_stderr", f"{o}_n"]
    return cols + ["avg", "avg_stderr", "failure"]


def to_csv(blocks: Sequence[TableBlock]) -> str:
    """One row per table row; objective columns are the union over blocks (empty where a block lacks one)."""
    objectives: list[str] = []
    for block in blocks:
        objectives += [o for o in block.objectives if o not in objectives]
    buf = io.StringIO()
    writer = csv.writer(buf, lineterminator="\n")
    writer.writerow(csv_header(objectives))
    for block in blocks:
        for row in block.rows:
            out: list[Any] = [block.name, row.label, row.kind, row.method, row.point,
                              canonical_json(dict(row.parameters)) if row.parameters else "",
                              "" if row.search_average is None else repr(row.search_average)]
            for o in objectives:
                s = row.scores.get(o) if o in block.objectives else None
                out += ["", "", ""] if s is None else [repr(s.mean), repr(s.stderr), s.n]
            avg = average(row.scores, block.objectives)
            out += ["", ""] if avg is None else [repr(avg.mean), repr(avg.stderr)]
            writer.writerow(out + [row.failure])
    return buf.getvalue()


def write_tables(directory: str | Path, title: str, notes: Sequence[str], blocks: Sequence[TableBlock],
                 footer: Sequence[str] = ()) -> tuple[Path, Path]:
    """DIR/table.md and DIR/table.csv, each written to a temporary sibling and renamed into place."""
    directory = Path(directory)
    md, table_csv = directory / "table.md", directory / "table.csv"
    markdown = to_markdown(title, notes, blocks, footer)
    data = to_csv(blocks)
    write_text_atomic(md, markdown)
    write_text_atomic(table_csv, data)
    return md, table_csv
