"""The run record of a search: what the loop writes into its run directory, and the formats the report reads.

RUN_DIR/
  experiment.yaml     the experiment as validated (a resumed run must match it)
  plan.json           the memory plan the workers run with (placement, workspace, engine settings; per start)
  run.json            {"study": NAME}: the study this run owns in its storage (none: a run from before, study "evomerge")
  run.lock            flock held by the one process working in the run; holds its pid
  study.db            Optuna storage (SQLite) unless the experiment names another SQLAlchemy URL
  references.json     scores of the base and of each model (reference point, constraints, report)
  items/              per-item results, one JSON file per trial (too large for the storage)
  trials.csv          one row per finished trial, appended as each finishes
  hypervolume.csv     hypervolume and front size after every finished trial
  front.json          the Pareto front: trial, scores with standard errors, held-out scores, recipe
  heldout.json        held-out scores of the front members and the references
  report.html, *.png  drawn from the above by evomerge.report

Every evaluation's entry says what produced its scores (`scored_by`: suite -> backend and its version,
dtype, device, sandbox mode): references.json and heldout.json entries, and each trial's `result` in
the storage. The CSVs are rebuilt from the storage when a run resumes, so a crash between the storage
and a CSV loses nothing.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING, Any, Mapping, Sequence

from evomerge.io.atomic import write_json_atomic
from evomerge.rundir import RunDir

if TYPE_CHECKING:
    import optuna

TRIALS_CSV = "trials.csv"
HYPERVOLUME_CSV = "hypervolume.csv"
FRONT_JSON = "front.json"
REFERENCES_JSON = "references.json"
HELDOUT_JSON = "heldout.json"
PLAN_JSON = "plan.json"  # the memory plan the workers run with (MemoryPlan.to_dict), rewritten on every start
HYPERVOLUME_HEADER = ["evaluations", "trial", "hypervolume", "front_size"]


# ---------------------------------------------------------------------------------------------
# trials.csv
# ---------------------------------------------------------------------------------------------


def trial_header(exp: Any, genes: Sequence[str]) -> list[str]:
    cols = ["trial", "state", "fidelity"]
    for name in exp.objective_names:
        cols += [name, f"{name}_stderr"]
    return cols + ["feasible", "merge_seconds", "swap_seconds", "eval_seconds", "worker", "finished_at", "failure"] + list(genes)


def result_of(t: "optuna.trial.FrozenTrial") -> dict[str, Any]:
    """What the loop stored when the trial finished (scores, constraints, fidelity, timing, failure)."""
    return t.user_attrs.get("result", {})


def trial_row(t: "optuna.trial.FrozenTrial", exp: Any, genes: Sequence[str]) -> list[Any]:
    a = result_of(t)
    values = a.get("objectives") or [""] * len(exp.objective_names)
    stderrs = a.get("stderrs") or [""] * len(exp.objective_names)
    row: list[Any] = [t.number, t.state.name, a.get("fidelity", "")]
    for v, s in zip(values, stderrs):
        row += [_num(v), _num(s)]
    finished = t.datetime_complete.isoformat(timespec="seconds") if t.datetime_complete else ""
    # swap_seconds: empty for trials finished before it was recorded apart (their merge_seconds include the swap)
    row += [a.get("feasible", ""), _num(a.get("merge_seconds", "")), _num(a.get("swap_seconds", "")),
            _num(a.get("eval_seconds", "")), a.get("worker", ""), finished, a.get("failure", "")]
    return row + [_num(t.params.get(g, "")) for g in genes]


def _num(v: Any) -> Any:
    return f"{v:.6g}" if isinstance(v, float) else v


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


def items_name(number: int) -> str:
    """The items file (under items/) of a trial's per-item results."""
    return f"trial-{number:05d}"


# ---------------------------------------------------------------------------------------------
# front.json
# ---------------------------------------------------------------------------------------------


def front_member(t: "optuna.trial.FrozenTrial", exp: Any, heldout: Mapping[str, Any] | None) -> dict[str, Any]:
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


def write_front_json(run_dir: Path, exp: Any, members: Sequence["optuna.trial.FrozenTrial"], hv: float,
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
    write_json_atomic(Path(run_dir) / FRONT_JSON, data)


def refresh_front(run_dir: str | Path) -> None:
    """Rewrite front.json from the storage and heldout.json (`evomerge front --report`), e.g. for a run
    killed while its front was being re-scored on the held-out split."""
    from evomerge.report.reading import load_run

    run = load_run(run_dir)
    exp = run.experiment
    numbers = [m["trial"] for m in run.front.get("members", [])]
    members = [run.trial(n) for n in numbers if any(t.number == n for t in run.trials)]
    write_front_json(run.dir, exp, members, run.front.get("hypervolume", 0.0),
                     run.front.get("reference_point") or [0.0] * len(exp.objective_names),
                     run.heldout.get("trials", {}))


# ---------------------------------------------------------------------------------------------
# the directory, as the loop writes it
# ---------------------------------------------------------------------------------------------


class RunRecord(RunDir):
    trials_csv = property(lambda self: self.dir / TRIALS_CSV)
    hypervolume_csv = property(lambda self: self.dir / HYPERVOLUME_CSV)
    front_json = property(lambda self: self.dir / FRONT_JSON)
    references_json = property(lambda self: self.dir / REFERENCES_JSON)
    heldout_json = property(lambda self: self.dir / HELDOUT_JSON)

    def read_references(self) -> dict[str, Any]:
        return self.read_json(REFERENCES_JSON) if self.references_json.is_file() else {}

    def write_references(self, refs: Mapping[str, Any]) -> None:
        write_json_atomic(self.references_json, refs)

    def read_heldout(self) -> dict[str, Any]:
        return self.read_json(HELDOUT_JSON) if self.heldout_json.is_file() else {"trials": {}, "references": {}}

    def write_heldout(self, done: Mapping[str, Any]) -> None:
        write_json_atomic(self.heldout_json, done)

    def write_plan(self, plan: Mapping[str, Any]) -> None:
        write_json_atomic(self.dir / PLAN_JSON, plan)

    def write_trial_items(self, number: int, results: Mapping[int, Any]) -> str:
        return self.write_items(items_name(number), results)

    def read_trial_items(self, number: int) -> dict[str, Any]:
        return self.read_json(f"items/{items_name(number)}.json")
