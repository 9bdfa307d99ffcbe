"""The reference models (the base and each model, scored as they are) and what the search derives from
them: the hypervolume's reference point and the "do no harm" constraints."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any, Mapping, Sequence

import numpy as np

from evomerge.errors import EvomergeError, ExperimentError
from evomerge.scoring.outcomes import JobKey, summaries_to_dict
from evomerge.scoring.session import reference_models
from evomerge.search.objectives import objective_vector

if TYPE_CHECKING:
    from evomerge.scoring.queue import CachedJobs
    from evomerge.search.experiment import Experiment
    from evomerge.search.record import RunRecord

log = logging.getLogger(__name__)


def score_references(exp: "Experiment", record: "RunRecord", jobs: "CachedJobs", limit: int | None) -> dict[str, Any]:
    """Scores of the base and of each model on the search slice (top rung, `limit` items): reference point,
    constraints, CMA-ES normalisation and the report's comparison rows. Kept in references.json; a resumed
    run scores only what is missing. Returns the references that were scored."""
    if not exp.references:
        return {}
    models = reference_models(exp.base, exp.models)
    refs = record.read_references()
    todo = {n: p for n, p in models.items() if "search" not in refs.get(n, {})}
    for name, ckpt in todo.items():
        jobs.enqueue(JobKey.reference(name), checkpoint=ckpt, split=None, limit=limit)
    for outcome in jobs.drain():
        name = str(outcome.key.id)
        entry = refs.setdefault(name, {"path": models[name]})
        if not outcome.ok:
            log.warning("scoring the reference model '%s' failed: %s", name, outcome.reason)
            entry["failure"] = outcome.reason
            record.write_references(refs)
            continue
        entry.pop("failure", None)
        entry["search"] = summaries_to_dict(outcome.summaries)
        entry["search_values"], entry["search_stderrs"] = objective_vector(exp, outcome.results)
        entry["items_file"] = record.write_items(f"ref-{name}-search", outcome.results)
        entry["scored_by"] = outcome.producers_dict()
        record.write_references(refs)
    scored = {n: r for n, r in refs.items() if "search_values" in r}
    c = exp.constraints
    if c.max_drop is not None:
        needed = {"base"} if c.relative_to == "base" else {s if s in refs else "base" for s in exp.suite_names}
        for name in sorted(needed - set(scored)):
            raise EvomergeError(f"constraints need the score of the reference model '{name}', but scoring it "
                                f"failed: {refs.get(name, {}).get('failure', 'not scored')}")
    return scored


def reference_point(exp: "Experiment", references: Mapping[str, Any], signs: np.ndarray) -> np.ndarray:
    """The hypervolume's reference point (maximised orientation): the experiment's, else the base's scores."""
    if exp.reference_point is not None:
        return np.asarray(exp.reference_point, float) * signs
    if exp.base and exp.references:
        if "base" not in references:
            raise EvomergeError("the hypervolume's reference point defaults to the base model's scores, and scoring "
                                "the base failed; give reference_point in the experiment")
        return np.asarray(references["base"]["search_values"], float) * signs
    if exp.cost is not None:
        raise ExperimentError("with a cost objective and no base model, give reference_point explicitly")
    return np.zeros(len(signs))


def constraints(exp: "Experiment", references: Mapping[str, Any], values: Sequence[float]) -> list[float]:
    """<= 0 when satisfied: (reference - max_drop) - score for each suite objective."""
    c = exp.constraints
    if c.max_drop is None:
        return []
    out = []
    for i, suite in enumerate(exp.suite_names):
        ref_name = suite if c.relative_to == "specialist" and suite in references else "base"
        ref = references[ref_name]["search_values"][i]
        out.append(float(ref - c.max_drop - values[i]))
    return out
