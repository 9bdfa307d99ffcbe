"""From suite results to the search's objective vector (natural orientation) and its standard errors."""

from __future__ import annotations

import math
from typing import Any, Mapping, Sequence

import numpy as np

from evomerge.scoring.outcomes import summaries


def objective_vector(exp: Any, results: Mapping[str, Mapping[str, Any]]) -> tuple[list[float], list[float]]:
    """Natural-orientation objective values and standard errors from suite results (SuiteResult dicts):
    one per objective suite, then the cost when the experiment has one. A missing standard error is 0."""
    values, stderrs = [], []
    summary = summaries({s: results[s] for s in exp.suite_names})
    for suite in exp.suite_names:
        s = summary[suite]
        values.append(float(s.mean))
        stderrs.append(float(s.stderr) if s.stderr is not None else 0.0)
    if exp.cost is not None:
        c, se = cost(results, exp.suite_names, exp.cost.metric)
        values.append(c)
        stderrs.append(se)
    return values, [0.0 if math.isnan(s) else s for s in stderrs]


def _completion_chars(item: Mapping[str, Any]) -> float:
    c = item.get("completion", "")
    if isinstance(c, list):
        return float(np.mean([len(x) for x in c])) if c else 0.0
    return float(len(c or ""))


def cost(results: Mapping[str, Any], suites: Sequence[str], metric: str) -> tuple[float, float]:
    """The cost objective and its standard error: seconds spent, or the mean completion length in characters."""
    if metric == "seconds":
        return float(sum(results[s].get("seconds", 0.0) for s in suites)), 0.0
    lengths = [_completion_chars(it) for s in suites for it in results[s].get("items", [])]
    if not lengths:
        return 0.0, 0.0
    arr = np.asarray(lengths)
    se = float(arr.std(ddof=1) / math.sqrt(len(arr))) if len(arr) > 1 else 0.0
    return float(arr.mean()), se
