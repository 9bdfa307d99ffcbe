"""What a run leaves behind: trials.csv rows, front.json, PNG plots and a self-contained report.html.

Everything here is rebuilt from the run directory and its storage (`write_report(run_dir)`), so a
report can be regenerated at any time, also for a run that is still going or was killed.
"""

from __future__ import annotations

import base64
import datetime as dt
import html
import io
import json
import math
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from evomerge.yamlio import load_yaml
from evomerge.errors import ExperimentError
from evomerge.experiment import Experiment
from evomerge.store import STUDY_NAME, RunStore, write_bytes_atomic, write_json_atomic, write_text_atomic

if TYPE_CHECKING:
    import optuna

PLOTS = {"front": "front.png", "hypervolume": "hypervolume.png", "genes": "front_genes.png"}


# ---------------------------------------------------------------------------------------------
# trials.csv
# ---------------------------------------------------------------------------------------------


def trial_header(exp: Experiment, genes: Sequence[str]) -> list[str]:
    cols = ["trial", "state", "fidelity"]
    for name in exp.objective_names:
        cols += [name, f"{name}_stderr"]
    return cols + ["feasible", "merge_seconds", "eval_seconds", "worker", "finished_at", "failure"] + list(genes)


def result_of(t: "optuna.trial.FrozenTrial") -> dict[str, Any]:
    """What the runner stored when the trial finished (scores, constraints, fidelity, timing, failure)."""
    return t.user_attrs.get("result", {})


def trial_row(t: "optuna.trial.FrozenTrial", exp: Experiment, genes: Sequence[str]) -> list[Any]:
    a = result_of(t)
    values = a.get("objectives") or [""] * len(exp.objective_names)
    stderrs = a.get("stderrs") or [""] * len(exp.objective_names)
    row: list[Any] = [t.number, t.state.name, a.get("fidelity", "")]
    for v, s in zip(values, stderrs):
        row += [_num(v), _num(s)]
    finished = t.datetime_complete.isoformat(timespec="seconds") if t.datetime_complete else ""
    row += [a.get("feasible", ""), _num(a.get("merge_seconds", "")), _num(a.get("eval_seconds", "")),
            a.get("worker", ""), finished, a.get("failure", "")]
    return row + [_num(t.params.get(g, "")) for g in genes]


def _num(v: Any) -> Any:
    return f"{v:.6g}" if isinstance(v, float) else v


# ---------------------------------------------------------------------------------------------
# front.json
# ---------------------------------------------------------------------------------------------


def front_member(t: "optuna.trial.FrozenTrial", exp: Experiment, heldout: Mapping[str, Any] | None) -> dict[str, Any]:
    a = result_of(t)
    member = {
        "trial": t.number,
        "fidelity": a.get("fidelity"),
        "search": {n: {"mean": v, "stderr": s} for n, v, s in zip(exp.objective_names, a["objectives"], a["stderrs"])},
        "heldout": None,
        "genome": dict(t.params),
        "recipe": t.user_attrs.get("recipe"),
    }
    if heldout and "values" in heldout:
        member["heldout"] = {n: {"mean": v, "stderr": s}
                             for n, v, s in zip(exp.objective_names, heldout["values"], heldout["stderrs"])}
    elif heldout and "failure" in heldout:
        member["heldout"] = {"failure": heldout["failure"]}
    return member


def write_front_json(run_dir: Path, exp: Experiment, members: Sequence["optuna.trial.FrozenTrial"], hv: float,
                     reference_point: Sequence[float], heldout: Mapping[str, Any] | None = None) -> None:
    heldout = heldout or {}
    data = {
        "experiment": exp.name,
        "objectives": exp.objective_names,
        "directions": ["maximize" if s > 0 else "minimize" for s in exp.signs()],
        "reference_point": [float(x) for x in reference_point],
        "hypervolume": hv,
        "members": [front_member(t, exp, heldout.get(str(t.number))) for t in members],
    }
    write_json_atomic(Path(run_dir) / "front.json", data)


# ---------------------------------------------------------------------------------------------
# loading a run
# ---------------------------------------------------------------------------------------------


@dataclass
class RunData:
    dir: Path
    experiment: Experiment
    trials: list[Any]  # finished (COMPLETE / FAIL) FrozenTrials, in completion order
    running: int
    references: dict[str, Any]
    heldout: dict[str, Any]
    front: dict[str, Any]
    hypervolume: list[tuple[int, float, int]] = field(default_factory=list)  # (evaluations, hv, front size)

    @property
    def complete(self) -> list[Any]:
        return [t for t in self.trials if t.state.name == "COMPLETE"]

    @property
    def failed(self) -> list[Any]:
        return [t for t in self.trials if t.state.name == "FAIL"]

    def trial(self, number: int):
        for t in self.trials:
            if t.number == number:
                return t
        raise ExperimentError(f"{self.dir}: no finished trial {number} (finished trials: {len(self.trials)})")

    def evaluations_per_rung(self) -> list[int]:
        return evaluations_per_rung(self.trials, len(self.experiment.fidelity.rungs))


def evaluations_per_rung(trials: Sequence[Any], n_rungs: int) -> list[int]:
    """Evaluations spent on each fidelity rung: the rungs each trial was scored on, plus the one it failed on."""
    counts = [0] * n_rungs
    for t in trials:
        for r in (t.user_attrs.get("rungs") or {}):
            counts[int(r)] += 1
        failed_on = result_of(t).get("failed_rung")
        if failed_on is not None:
            counts[failed_on] += 1
    return counts


def load_run(run_dir: str | Path) -> RunData:
    import optuna
    from optuna.trial import TrialState

    run_dir = Path(run_dir)
    exp_file = run_dir / "experiment.yaml"
    if not exp_file.is_file():
        raise ExperimentError(f"{run_dir}: not a search run directory (no experiment.yaml)")
    exp = Experiment.from_dict(load_yaml(exp_file.read_text()), where=str(exp_file))
    store = RunStore(run_dir, exp.storage)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    try:
        study = optuna.load_study(study_name=STUDY_NAME, storage=store.storage())
        all_trials = study.get_trials(deepcopy=False)
    except KeyError:
        all_trials = []
    trials = [t for t in all_trials if t.state in (TrialState.COMPLETE, TrialState.FAIL) and not t.user_attrs.get("discarded")]
    trials.sort(key=lambda t: (t.datetime_complete or dt.datetime.min, t.number))
    running = sum(t.state == TrialState.RUNNING for t in all_trials)

    def read(name: str, default: Any) -> Any:
        path = run_dir / name
        return json.loads(path.read_text()) if path.is_file() else default

    hv = []
    hv_file = run_dir / "hypervolume.csv"
    if hv_file.is_file():
        for line in hv_file.read_text().splitlines()[1:]:
            parts = line.split(",")
            if len(parts) == 4:
                hv.append((int(parts[0]), float(parts[2]), int(parts[3])))
    return RunData(run_dir, exp, trials, running, read("references.json", {}), read("heldout.json", {"trials": {}, "references": {}}),
                   read("front.json", {"members": []}), hv)


# ---------------------------------------------------------------------------------------------
# plots
# ---------------------------------------------------------------------------------------------


def _pyplot():
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    return plt


def _png(fig) -> bytes:
    buf = io.BytesIO()
    fig.savefig(buf, format="png", dpi=110, bbox_inches="tight")
    _pyplot().close(fig)
    return buf.getvalue()


def plot_front(run: RunData) -> bytes:
    """Scatter matrix of the objectives: every scored candidate, the front, the reference models."""
    plt = _pyplot()
    exp = run.experiment
    names = exp.objective_names
    top = len(exp.fidelity.rungs) - 1
    full = [t for t in run.complete if result_of(t).get("fidelity") == top]
    members = {m["trial"] for m in run.front.get("members", [])}
    pts = np.array([result_of(t)["objectives"] for t in full]) if full else np.zeros((0, len(names)))
    on_front = np.array([t.number in members for t in full], bool)
    feasible = np.array([result_of(t).get("feasible", True) for t in full], bool)
    m = len(names)
    pairs = [(i, j) for i in range(m) for j in range(i + 1, m)] or [(0, 0)]
    cols = min(3, len(pairs))
    rows = math.ceil(len(pairs) / cols)
    fig, axes = plt.subplots(rows, cols, figsize=(4.2 * cols, 3.8 * rows), squeeze=False)
    fig.subplots_adjust(wspace=0.32, hspace=0.35)  # room for each panel's y label beside its left neighbour
    for k, (i, j) in enumerate(pairs):
        ax = axes[k // cols][k % cols]
        if i == j:  # a single objective: values over trials
            ax.scatter(range(len(pts)), pts[:, 0] if len(pts) else [], s=12, c="0.6")
            ax.set_xlabel("candidate")
            ax.set_ylabel(names[0])
            continue
        if len(pts):
            rest = ~on_front & feasible
            ax.scatter(pts[rest, i], pts[rest, j], s=12, c="0.7", label="candidates")
            if (~feasible).any():
                ax.scatter(pts[~feasible, i], pts[~feasible, j], s=14, c="0.75", marker="x",
                           label="infeasible (constraints)")
            ax.scatter(pts[on_front, i], pts[on_front, j], s=36, c="tab:red", edgecolors="k", linewidths=0.5,
                       label="Pareto front", zorder=3)
        for n, (name, ref) in enumerate(run.references.items()):
            if "search_values" in ref:
                ax.scatter(ref["search_values"][i], ref["search_values"][j], marker="*s^vD"[n % 5], s=90,
                           c=f"C{n}", edgecolors="k", linewidths=0.5, label=name, zorder=4)
        ax.set_xlabel(names[i])
        ax.set_ylabel(names[j])
        ax.grid(alpha=0.3)
    for k in range(len(pairs), rows * cols):
        axes[k // cols][k % cols].axis("off")
    handles, labels = axes[0][0].get_legend_handles_labels()
    if handles:
        fig.legend(handles, labels, loc="upper center", ncol=min(len(labels), 6), bbox_to_anchor=(0.5, 1.04))
    fig.suptitle(f"{exp.name}: objectives on the search split (top fidelity)", y=1.09 if handles else 1.0)
    return _png(fig)


def plot_hypervolume(run: RunData) -> bytes:
    plt = _pyplot()
    fig, ax = plt.subplots(figsize=(6.5, 3.6))
    if run.hypervolume:
        ev, hv, size = zip(*run.hypervolume)
        ax.step(ev, hv, where="post", c="tab:blue")
        ax2 = ax.twinx()
        ax2.step(ev, size, where="post", c="tab:orange", alpha=0.6)
        ax2.set_ylabel("front size", color="tab:orange")
    ax.set_xlabel("finished candidates")
    ax.set_ylabel("hypervolume", color="tab:blue")
    ax.grid(alpha=0.3)
    ax.set_title("hypervolume of the front over the search")
    return _png(fig)


def plot_front_genes(run: RunData) -> bytes:
    """Each front member's genes on [0, 1] (log genes in log space; categorical genes as choice index)."""
    plt = _pyplot()
    members = run.front.get("members", [])
    space = _space_for(run)
    genes = [g for g in space.genes] if space is not None else []
    fig, ax = plt.subplots(figsize=(max(6.5, 0.28 * len(genes) + 2), 4.2))
    for k, m in enumerate(members):
        active = set(space.active_genes(m["genome"])) if space is not None else set()
        xs, ys = [], []
        for x, g in enumerate(genes):
            if g.name in active and g.name in m["genome"]:
                xs.append(x)
                ys.append(g.to_unit(m["genome"][g.name]))
        ax.plot(xs, ys, marker="o", ms=3, lw=0.8, alpha=0.8, label=f"trial {m['trial']}")
    ax.set_xticks(range(len(genes)))
    ax.set_xticklabels([g.name for g in genes], rotation=90, fontsize=7)
    ax.set_ylim(-0.05, 1.05)
    ax.set_ylabel("gene value (scaled to its range)")
    ax.set_title("genes of the front members (genes a member does not use are left out)")
    ax.grid(alpha=0.3)
    if 0 < len(members) <= 12:
        ax.legend(fontsize=7, ncol=2)
    return _png(fig)


def _space_for(run: RunData):
    from evomerge.genome import SearchSpace, load_space_spec

    exp = run.experiment
    try:
        spec = load_space_spec(exp.search_space, exp.space or None)
        return SearchSpace.for_checkpoints(spec, exp.base, exp.models, seed=exp.seed, dtype=exp.dtype)
    except Exception:  # noqa: BLE001 - checkpoints moved: the plot goes without gene names
        return None


# ---------------------------------------------------------------------------------------------
# report.html
# ---------------------------------------------------------------------------------------------


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


def _scoring_note(exp: Experiment, objective: str) -> str:
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


def write_report(run_dir: str | Path) -> Path:
    """front.json (with held-out scores), the PNG plots and report.html, from what the run directory holds."""
    run = load_run(run_dir)
    exp = run.experiment
    heldout = run.heldout.get("trials", {})
    numbers = [m["trial"] for m in run.front.get("members", [])]
    members = [run.trial(n) for n in numbers if any(t.number == n for t in run.trials)]
    write_front_json(run.dir, exp, members, run.front.get("hypervolume", 0.0),
                     run.front.get("reference_point") or [0.0] * len(exp.objective_names), heldout)
    run.front = json.loads((run.dir / "front.json").read_text())
    images = {"front": plot_front(run), "hypervolume": plot_hypervolume(run), "genes": plot_front_genes(run)}
    for key, data in images.items():
        write_bytes_atomic(run.dir / PLOTS[key], data)
    out = run.dir / "report.html"
    write_text_atomic(out, build_html(run, images))
    return out
