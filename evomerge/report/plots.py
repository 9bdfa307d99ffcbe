"""The report's plots, drawn from a loaded run (evomerge.report.reading.RunData) as PNG bytes."""

from __future__ import annotations

import io
import math

import numpy as np

from evomerge.report.reading import RunData
from evomerge.search.record import result_of

PLOTS = {"front": "front.png", "hypervolume": "hypervolume.png", "genes": "front_genes.png"}


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
    from evomerge.search.space import SearchSpace
    from evomerge.search.space_spec import load_space_spec

    exp = run.experiment
    try:
        spec = load_space_spec(exp.search_space, exp.space or None)
        return SearchSpace.for_checkpoints(spec, exp.base, exp.models, seed=exp.seed, dtype=exp.dtype)
    except Exception:  # noqa: BLE001 - checkpoints moved: the plot goes without gene names
        return None
