"""Task-vector statistics for `evomerge analyze`: what the RAM paper's Fig. 2 reports, and more.

Per agent, over the whole model: density of changed entries (|τ| > ε, Eq. 1), the share of its
changes that are unique or shared with k other agents, ρ_t (Eq. 2) and the RAM+ factors λ_t
(Eq. 6, and App. E's soft variant). The paper stops at whole-model counts; here the same numbers
are also given per decoder layer and per module type (attention, MLP, embeddings, norms, lm_head),
as text tables, JSON and a heat-map.

The counting is `taskvectors.overlap_counts` (shared with the engine's RAM+ statistics pass);
this module only groups, formats and plots.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Sequence

from evomerge.errors import CheckpointError
from evomerge.io.atomic import replace_atomically
from evomerge.io.reader import CheckpointSet
from evomerge.recipe import layer_index, module_type
from evomerge.taskvectors import OverlapCounts, ram_plus_lambda, ram_plus_soft_lambda

MODULE_ORDER = ("embed", "attn", "mlp", "norm", "lm_head", "other")


@dataclass
class TaskVectorReport:
    agents: list[str]
    epsilon: float
    r: float
    alpha: float
    model: OverlapCounts
    layers: dict[int, OverlapCounts] = field(default_factory=dict)
    modules: dict[str, OverlapCounts] = field(default_factory=dict)


def agent_names(paths: Sequence[str | Path]) -> list[str]:
    """Directory names, made unique with their parent when two agents share a name."""
    names = [Path(p).name for p in paths]
    if len(set(names)) < len(names):
        names = [f"{Path(p).parent.name}/{Path(p).name}" for p in paths]
    if len(set(names)) < len(names):
        names = [f"{n}#{i}" for i, n in enumerate(names)]
    return names


def analyze(
    base: str | Path, models: Sequence[str | Path], epsilon: float = 1e-5, r: float = 0.1, alpha: float = 2.0,
    device: str = "cpu", progress: bool = False,
) -> TaskVectorReport:
    """One streaming pass over the checkpoints (one tensor in memory at a time)."""
    from tqdm.auto import tqdm

    from evomerge.engine import CheckpointSource, resolve_device
    from evomerge.taskvectors import MAX_AGENTS, overlap_counts

    if not models:
        raise CheckpointError("analyze: give at least one model besides the base")
    if len(models) > MAX_AGENTS:
        raise CheckpointError(f"analyze: at most {MAX_AGENTS} models, got {len(models)}")
    if not epsilon >= 0:
        raise CheckpointError(f"analyze: epsilon must be >= 0, got {epsilon}")
    n = len(models)
    with CheckpointSet.open(base, models) as inputs:
        source = CheckpointSource(inputs, resolve_device(device))
        total = OverlapCounts.zero(n)
        layers: dict[int, OverlapCounts] = {}
        modules: dict[str, OverlapCounts] = {}
        names = [name for name in source.tensor_names if source.is_float(name)]
        for name in tqdm(names, desc="analyzing", unit="tensor", disable=not progress):
            _, deltas = source.operands(name)
            counts = overlap_counts(deltas, epsilon)
            del deltas
            total = total + counts
            layer = layer_index(name)
            if layer is not None:
                layers[layer] = layers.get(layer, OverlapCounts.zero(n)) + counts
            kind = module_type(name)
            modules[kind] = modules.get(kind, OverlapCounts.zero(n)) + counts
    return TaskVectorReport(
        agents=agent_names(models), epsilon=epsilon, r=r, alpha=alpha, model=total,
        layers=dict(sorted(layers.items())),
        modules={k: modules[k] for k in MODULE_ORDER if k in modules},
    )


def agent_stats(counts: OverlapCounts, t: int, r: float, alpha: float) -> dict[str, Any]:
    """The Fig. 2 numbers of agent t in one group of tensors; shares are of the agent's own changes."""
    changed = counts.changed[t]
    rho_t = counts.rho(t)
    return {
        "changed": changed,
        "unique": counts.unique[t],
        "shared": counts.shared[t],
        "shared_with": list(counts.shared_with[t]),  # k = 0..N-1 other agents
        "density": counts.density(t),
        "unique_share": counts.unique[t] / changed if changed else None,
        "shared_with_share": [c / changed for c in counts.shared_with[t]] if changed else None,
        "rho": rho_t,
        "lambda_ram_plus": ram_plus_lambda(rho_t, r, alpha),
        "lambda_ram_plus_soft": ram_plus_soft_lambda(rho_t, r),
    }


def _group(counts: OverlapCounts, report: TaskVectorReport) -> dict[str, Any]:
    return {
        "total": counts.total,
        "agents": {a: agent_stats(counts, t, report.r, report.alpha) for t, a in enumerate(report.agents)},
    }


def report_to_dict(report: TaskVectorReport) -> dict[str, Any]:
    return {
        "epsilon": report.epsilon,
        "r": report.r,
        "alpha": report.alpha,
        "agents": report.agents,
        "model": _group(report.model, report),
        "layers": {str(i): _group(c, report) for i, c in report.layers.items()},
        "modules": {k: _group(c, report) for k, c in report.modules.items()},
    }


# -- text tables ---------------------------------------------------------------------------------


def _pct(x: float | None) -> str:
    return "-" if x is None else f"{100 * x:.1f}%"


def _num(x: float | None) -> str:
    return "-" if x is None else f"{x:.3f}"


def _table(header: list[str], rows: list[list[str]]) -> str:
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    def line(cells: list[str]) -> str:
        return "  ".join(c.ljust(w) if i == 0 else c.rjust(w) for i, (c, w) in enumerate(zip(cells, widths)))

    return "\n".join([line(header), line(["-" * w for w in widths])] + [line(r) for r in rows])


def format_report(report: TaskVectorReport) -> str:
    n = len(report.agents)
    stats = [agent_stats(report.model, t, report.r, report.alpha) for t in range(n)]
    header = ["agent", "density", "unique"] + [f"w/{k}" for k in range(1, n)] + [
        "rho", f"lambda RAM+ (r={report.r:g},a={report.alpha:g})", f"lambda RAM+s (r={report.r:g})"]
    rows = [
        [a, _pct(s["density"]), _pct(s["unique_share"])]
        + [_pct(None if s["shared_with_share"] is None else s["shared_with_share"][k]) for k in range(1, n)]
        + [_num(s["rho"]), _num(s["lambda_ram_plus"]), _num(s["lambda_ram_plus_soft"])]
        for a, s in zip(report.agents, stats)
    ]
    parts = [
        f"whole model ({report.model.total:,} entries, epsilon={report.epsilon:g}); "
        "unique / w/k = share of the agent's changed entries changed by no / exactly k other agent(s)",
        _table(header, rows),
    ]
    for title, groups in (("per decoder layer", report.layers), ("per module type", report.modules)):
        if not groups:
            continue
        header = ["group"] + [f"{a} {col}" for a in report.agents for col in ("density", "unique", "rho")]
        rows = []
        for key, counts in groups.items():
            row = [f"layer {key}" if isinstance(key, int) else key]
            for t in range(n):
                s = agent_stats(counts, t, report.r, report.alpha)
                row += [_pct(s["density"]), _pct(s["unique_share"]), _num(s["rho"])]
            rows.append(row)
        parts += ["", title, _table(header, rows)]
    return "\n".join(parts)


# -- files ---------------------------------------------------------------------------------------


def write_json_report(report: TaskVectorReport, path: str | Path) -> None:
    replace_atomically(Path(path), lambda tmp: tmp.write_text(json.dumps(report_to_dict(report), indent=2) + "\n"))


def plot_heatmap(report: TaskVectorReport, path: str | Path) -> None:
    """PNG: rows = decoder layers (then module types), columns = agents; density and unique share."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt
    import numpy as np

    groups = [(f"layer {i}", c) for i, c in report.layers.items()] + [(k, c) for k, c in report.modules.items()]
    labels = [g for g, _ in groups]
    n = len(report.agents)
    density = np.array([[c.density(t) for t in range(n)] for _, c in groups]) * 100
    unique = np.array([[c.unique[t] / c.changed[t] if c.changed[t] else np.nan for t in range(n)]
                       for _, c in groups]) * 100
    fig, axes = plt.subplots(1, 2, figsize=(4 + 2.2 * n, 1.2 + 0.32 * len(groups)), squeeze=False)
    titles = ("changed entries (% of entries)", "unique share (% of changes)")
    for ax, values, title in zip(axes[0], (density, unique), titles):
        image = ax.imshow(values, aspect="auto", cmap="viridis", vmin=0, vmax=100)
        ax.set_xticks(range(n), report.agents, rotation=30, ha="right")
        ax.set_yticks(range(len(labels)), labels)
        ax.set_title(title, fontsize=10)
        if len(groups) <= 40:
            for (i, j), v in np.ndenumerate(values):
                if not np.isnan(v):
                    ax.text(j, i, f"{v:.0f}", ha="center", va="center", fontsize=7,
                            color="white" if v < 50 else "black")
        fig.colorbar(image, ax=ax, fraction=0.046)
    fig.suptitle(f"task-vector changes |tau| > {report.epsilon:g}", fontsize=11)
    fig.tight_layout()
    replace_atomically(Path(path), lambda tmp: fig.savefig(tmp, dpi=110, format="png"))
    plt.close(fig)
