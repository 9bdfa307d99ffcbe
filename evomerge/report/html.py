"""report.html: a self-contained page (plots inlined) drawn from a loaded run."""

from __future__ import annotations

import base64
import datetime as dt
import html
from typing import TYPE_CHECKING, Any, Mapping

from evomerge.report.reading import RunData
from evomerge.search.record import result_of

if TYPE_CHECKING:
    from evomerge.search.experiment import Experiment


def _fmt(entry: Mapping[str, Any] | None) -> str:
    if not entry:
        return "–"
    if "failure" in entry:
        return "failed"
    return f"{entry['mean']:.3f} ± {entry['stderr']:.3f}"


def _recipe_summary(recipe: Mapping[str, Any] | None) -> str:
    if not recipe:
        return ""
    parts = []
    for ov in recipe.get("overrides", []):
        params = ", ".join(f"{k}={_short(v)}" for k, v in ov.get("parameters", {}).items())
        mods = f" {','.join(ov['modules'])}" if ov.get("modules") else ""
        parts.append(f"L{ov.get('layers')}{mods}: {ov.get('method') or recipe['method']}({params})")
    top = ", ".join(f"{k}={_short(v)}" for k, v in recipe.get("parameters", {}).items())
    parts.append(f"other: {recipe['method']}({top})")
    return "<br>".join(html.escape(p) for p in parts)


def _short(v: Any) -> str:
    if isinstance(v, float):
        return f"{v:.3g}"
    if isinstance(v, (list, tuple)):
        return "[" + ",".join(_short(x) for x in v) + "]"
    return str(v)


def scored_by(run: RunData) -> list[str]:
    """What produced the run's scores, one line per distinct producer with the suites it scored (from the
    `scored_by` entries of references, trials and held-out scores; runs from before it was recorded: none)."""
    entries = [r.get("scored_by") for r in run.references.values()]
    entries += [result_of(t).get("scored_by") for t in run.trials]
    for section in ("trials", "references"):
        entries += [e.get("scored_by") for e in run.heldout.get(section, {}).values()]
    suites: dict[tuple, set[str]] = {}
    for entry in entries:
        for suite, p in (entry or {}).items():
            if p:
                key = (p.get("backend"), p.get("backend_version"), p.get("dtype"), p.get("device"), p.get("sandbox"))
                suites.setdefault(key, set()).add(suite)
    lines = []
    for (backend, version, dtype, device, sandbox), names in sorted(suites.items(), key=str):
        package = "transformers" if backend == "hf" else backend
        box = f", code sandbox {sandbox}" if sandbox else ""
        lines.append(f"{backend} ({package} {version}), {dtype} on {device}{box}: {', '.join(sorted(names))}")
    return lines


def _scoring_note(exp: "Experiment", objective: str) -> str:
    """", scored with bfcl" for an objective whose suite offers several scorings ("" otherwise, and for cost)."""
    from evaluators.registry import scoring_of

    objective_spec = exp.objectives.get(objective)
    scoring = scoring_of(objective_spec.suite) if objective_spec is not None else ""
    return f", scored with {scoring}" if scoring else ""


def build_html(run: RunData, images: Mapping[str, bytes]) -> str:
    exp = run.experiment
    names = exp.objective_names
    members = run.front.get("members", [])
    rungs = run.evaluations_per_rung()
    fid = ", ".join(f"rung {i} ({'full split' if lim is None else f'{lim} items'}): {n}"
                    for i, (lim, n) in enumerate(zip(exp.fidelity.rungs, rungs)))
    esc = html.escape

    def img(key: str) -> str:
        if key not in images:
            return ""
        return f'<img alt="{key}" src="data:image/png;base64,{base64.b64encode(images[key]).decode()}">'

    head = "".join(f"<th>{esc(n)}<br><small>search</small></th><th>{esc(n)}<br><small>held-out</small></th>" for n in names)
    rows = []
    for m in members:
        ho = m.get("heldout") or {}
        cells = "".join(f"<td>{_fmt(m['search'][n])}</td><td>{_fmt(ho.get(n) if 'failure' not in ho else ho)}</td>"
                        for n in names)
        rows.append(f"<tr><td>{m['trial']}</td>{cells}<td class=recipe>{_recipe_summary(m.get('recipe'))}</td></tr>")
    ref_rows = []
    for name, ref in run.references.items():
        ho = run.heldout.get("references", {}).get(name, {})
        cells = []
        for i, n in enumerate(names):
            s = {"mean": ref["search_values"][i], "stderr": ref["search_stderrs"][i]} if "search_values" in ref else None
            h = {"mean": ho["values"][i], "stderr": ho["stderrs"][i]} if "values" in ho else ho or None
            cells.append(f"<td>{_fmt(s)}</td><td>{_fmt(h)}</td>")
        ref_rows.append(f"<tr><td>{esc(name)}</td>{''.join(cells)}</tr>")
    fail_rows = "".join(f"<tr><td>{t.number}</td><td>{esc(str(result_of(t).get('failure', '')))}</td></tr>"
                        for t in run.failed)
    hv = run.front.get("hypervolume", 0.0)
    ref_point = run.front.get("reference_point")
    return f"""<!doctype html>
<html><head><meta charset="utf-8"><title>evomerge: {esc(exp.name)}</title>
<style>
body {{ font-family: system-ui, sans-serif; margin: 2em auto; max-width: 1200px; color: #222; }}
table {{ border-collapse: collapse; margin: 1em 0; font-size: 0.9em; }}
th, td {{ border: 1px solid #ccc; padding: 4px 8px; text-align: right; vertical-align: top; }}
td.recipe {{ text-align: left; font-family: monospace; font-size: 0.8em; }}
img {{ max-width: 100%; display: block; margin: 1em 0; }}
.muted {{ color: #666; }}
</style></head><body>
<h1>evomerge search: {esc(exp.name)}</h1>
<p>{esc(exp.optimizer.name)} over <code>{esc(str(exp.search_space if isinstance(exp.search_space, str) else exp.search_space.get('name')))}</code>,
objectives {esc(', '.join(f'{n} ({d}{_scoring_note(exp, n)})' for n, d in zip(names, run.front.get('directions', []))))}.
Finished candidates: {len(run.trials)} of a budget of {exp.budget} ({len(run.failed)} failed{f', {run.running} still running' if run.running else ''}).
Evaluations per fidelity: {esc(fid)}.
Scored by: {esc('; '.join(scored_by(run)) or 'not recorded')}.
Hypervolume {hv:.4g} against reference point {esc(str([round(x, 4) for x in ref_point]) if ref_point else '–')}.</p>
<h2>Pareto front ({len(members)} members)</h2>
<p class=muted>Mean ± standard error. "search" is the split the search optimised; "held-out" is the {esc(exp.heldout.split)} split,
scored once at the end: a large drop means the front overfits the search items.</p>
<table><tr><th>trial</th>{head}<th>recipe</th></tr>{''.join(rows)}</table>
<h2>Reference models</h2>
<table><tr><th>model</th>{head}</tr>{''.join(ref_rows)}</table>
{img('front')}
{img('hypervolume')}
{img('genes')}
<h2>Failed candidates ({len(run.failed)})</h2>
<table><tr><th>trial</th><th>reason</th></tr>{fail_rows}</table>
<p class=muted>Written by evomerge at {dt.datetime.now().isoformat(timespec='seconds')}. Per-trial data: trials.csv, front.json, items/.</p>
</body></html>
"""
