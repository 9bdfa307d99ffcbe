"""What a sweep writes besides sweep.json: grid.csv (every point on the search split) and the held-out
table (table.md / table.csv, drawn by evomerge.report.tables)."""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Sequence

from evomerge.io.atomic import canonical_json
from evomerge.report.tables import Score, TableBlock, TableRow, write_tables
from evomerge.scoring.outcomes import HELDOUT, SEARCH
from evomerge.sweep.grid import _value, describe, thin
from evomerge.sweep.state import Evaluation

if TYPE_CHECKING:
    from evomerge.sweep.run import SweepRunner


def write_grid_csv(run: "SweepRunner") -> None:
    exp = run.exp
    objectives = list(exp.objectives)
    header = ["block", "row", "method", "grid_point", "parameters", "status", "chosen", "search_average"]
    for o in objectives:
        header += [o, f"{o}_stderr", f"{o}_n"]
    header += ["items_file", "failure"]
    rows = []
    for name in exp.references():
        entry = run.state.reference(name, SEARCH)
        rows.append(["", exp.label(name), "", "", "", *_status_cells(entry, objectives, None, "")])
    for block, points in run.points.items():
        chosen = {p.key for _, pts in run.rows_of(block) for p in pts}
        for p in points:
            entry = run.state.point(p.key, SEARCH)
            rows.append([block, p.label, p.method, describe(p.varied), canonical_json(p.recipe["parameters"]),
                         *_status_cells(entry, objectives, exp.columns(block), "yes" if p.key in chosen else "")])
    run.store.rewrite_csv(run.store.dir / "grid.csv", header, rows)


def _status_cells(entry: Evaluation | None, objectives: Sequence[str], columns: Sequence[str] | None,
                  chosen: str) -> list[Any]:
    """status, chosen, search_average, (mean, stderr, n) per objective, items_file, failure."""
    if entry is None:
        return ["pending", chosen, ""] + ["", "", ""] * len(objectives) + ["", ""]
    if not entry.ok:
        return ["failed", chosen, ""] + ["", "", ""] * len(objectives) + ["", entry.failure]
    suites = entry.suites
    avg = entry.mean_over(columns if columns is not None else [o for o in objectives if o in suites])
    cells: list[Any] = []
    for o in objectives:
        s = suites.get(o)
        cells += ["", "", ""] if s is None else [s.mean, s.stderr, s.n]
    return ["ok", chosen, "" if avg is None else avg] + cells + [entry.items_file, ""]


def write_sweep_tables(run: "SweepRunner") -> tuple[Path, Path]:
    exp = run.exp
    blocks = []
    for block, spec in exp.blocks().items():
        columns = exp.columns(block)
        rows = []
        for name in (["base"] if exp.base else []) + list(spec.models):
            entry = run.state.reference(name, HELDOUT)
            rows.append(TableRow(exp.label(name), "base" if name == "base" else "specialist",
                                 _scores(entry, columns), failure=_failure(entry)))
        for label, points in run.rows_of(block):
            every = exp.sweep.methods[label].report == "every"
            if not points:
                reasons = {_failure(run.state.point(p.key, SEARCH)) for p in run.points[block] if p.label == label}
                rows.append(TableRow(label, "method", {}, method=exp.sweep.methods[label].method,
                                     failure="every grid point failed on the search split: "
                                             + "; ".join(sorted(r for r in reasons if r))))
            for p in points:
                entry = run.state.point(p.key, HELDOUT)
                rows.append(TableRow(f"{label} ({describe(p.varied)})" if every and p.varied else label, "method",
                                     _scores(entry, columns), method=p.method, point=describe(p.varied),
                                     parameters=dict(p.recipe["parameters"]),
                                     search_average=run.search_average(p), failure=_failure(entry)))
        title = spec.title or " + ".join(exp.label(m) for m in spec.models)
        blocks.append(TableBlock(block, title, columns, rows))
    return write_tables(run.store.dir, f"{exp.name} — model set `{exp.model_set}`", _notes(run), blocks,
                        _grids(run))


def _notes(run: "SweepRunner") -> list[str]:
    exp = run.exp
    splits = sorted({o.suite.split for o in exp.objectives.values()})
    limit = f", at most {exp.heldout.limit} items per objective" if exp.heldout.limit else ""
    notes = [
        f"Scores on the held-out `{exp.heldout.split}` split{limit}: mean ± standard error, in %. "
        f"Each method's grid point (last column) was chosen on the `{'`/`'.join(splits)}` split by the average "
        f"over the block's objectives (that average in brackets); the held-out split played no part in the "
        f"choice. The paper chose its grid points on its test sets; we do not.",
        "Avg: the mean of the columns; its standard error is sqrt(sum of squared standard errors) / number of "
        "columns (columns taken as independent). Bold: the best value of a column.",
    ]
    if exp.description:
        notes.append(f"Model set `{exp.model_set}`: {exp.description}")
    from evaluators.registry import scoring_of

    scorings = {o: scoring_of(obj.suite) for o, obj in exp.objectives.items()}
    if any(scorings.values()):
        notes.append("Scoring: " + ", ".join(f"{o} `{s}`" for o, s in scorings.items() if s) + ".")
    if run.grid_max is not None or run.method_labels != list(exp.sweep.methods):
        notes.append(f"Reduced run: at most {run.grid_max or 'all'} values per grid parameter; methods "
                     f"{', '.join(run.method_labels)}.")
    return notes


def _grids(run: "SweepRunner") -> list[str]:
    lines = ["Grids (chosen per method on the search split):", ""]
    for label in run.method_labels:
        cfg = run.exp.sweep.methods[label]
        fixed = f" with {describe(cfg.parameters)}" if cfg.parameters else ""
        grid = "; ".join(f"{k} ∈ {{{', '.join(_value(v) for v in thin(vs, run.grid_max))}}}"
                         for k, vs in cfg.grid.items())
        every = " (a row per point)" if cfg.report == "every" else ""
        lines.append(f"- {label}: `{cfg.method}`{fixed}" + (f"; {grid}" if grid else "") + every)
    return lines


def _scores(entry: Evaluation | None, columns: Sequence[str]) -> dict[str, Score]:
    if entry is None or not entry.ok:
        return {}
    return {c: Score(float(s.mean), float(s.stderr), int(s.n)) for c in columns if (s := entry.suites.get(c)) is not None}


def _failure(entry: Evaluation | None) -> str:
    if entry is None:
        return "not scored"
    return entry.failure
