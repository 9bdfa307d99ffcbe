"""List the Pareto front of a search run, or export one trial's recipe.

Without --export: a table of the front members (search-split scores ± standard error, held-out
scores when the run got that far). With --export ID --out RECIPE.yaml: the trial's recipe, ready for
`evomerge merge RECIPE.yaml OUT_DIR`; when every tensor uses one method that mergekit 0.1.5 has, a
mergekit configuration is written next to it (RECIPE.mergekit.yaml). --report rebuilds report.html.

examples:
  evomerge front runs/demo
  evomerge front runs/demo --export 42 --out best.yaml && evomerge merge best.yaml merged/
"""

from __future__ import annotations

import argparse


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("run_dir", help="a directory written by `evomerge search`")
    parser.add_argument("--export", type=int, metavar="ID", default=None, help="trial number to export")
    parser.add_argument("--out", default=None, help="recipe YAML to write (with --export)")
    parser.add_argument("--report", action="store_true", help="rebuild front.json, the plots and report.html")


def run(args: argparse.Namespace) -> int:
    from evomerge.errors import ExperimentError
    from evomerge.report import load_run, write_report
    from evomerge.search.record import refresh_front

    if args.export is not None:
        if not args.out:
            raise ExperimentError("--export needs --out RECIPE.yaml")
        return _export(args)
    if args.out:
        raise ExperimentError("--out is only used with --export ID")
    if args.report:
        refresh_front(args.run_dir)  # the record first (held-out scores of a run killed while scoring them)
        print(f"report: {write_report(args.run_dir)}")
    run_data = load_run(args.run_dir)
    front = run_data.front
    names = front.get("objectives", run_data.experiment.objective_names)
    members = front.get("members", [])
    print(f"{run_data.experiment.name}: {len(run_data.trials)} finished candidates, front of {len(members)}, "
          f"hypervolume {front.get('hypervolume', 0.0):.4g}")
    header = ["trial"] + [f"{n} (search)" for n in names] + [f"{n} (held-out)" for n in names]
    rows = []
    for m in members:
        ho = m.get("heldout") or {}
        rows.append([str(m["trial"])] + [_cell(m["search"].get(n)) for n in names] + [_cell(ho.get(n)) for n in names])
    widths = [max(len(h), *(len(r[i]) for r in rows)) if rows else len(h) for i, h in enumerate(header)]
    print("  ".join(h.rjust(w) for h, w in zip(header, widths)))
    for r in rows:
        print("  ".join(c.rjust(w) for c, w in zip(r, widths)))
    return 0


def _cell(entry) -> str:
    if not entry:
        return "-"
    return f"{entry['mean']:.3f}±{entry['stderr']:.3f}"


def _export(args: argparse.Namespace) -> int:
    from pathlib import Path

    import yaml

    from evomerge.checkpoint import Checkpoint
    from evomerge.errors import ExperimentError
    from evomerge.recipe import MergeRecipe
    from evomerge.report import load_run
    from evomerge.search.mergekit_export import ExportError, to_mergekit
    from evomerge.io.atomic import write_text_atomic

    run_data = load_run(args.run_dir)
    trial = run_data.trial(args.export)
    result = trial.user_attrs.get("result", {})
    if trial.state.name != "COMPLETE":
        raise ExperimentError(f"trial {args.export} failed ({result.get('failure', 'no reason')}); "
                              "export a completed trial")
    recipe = MergeRecipe.from_dict(trial.user_attrs["recipe"], where=f"trial {args.export}")
    out = Path(args.out)
    header = (f"# Trial {trial.number} of the evomerge search in {Path(args.run_dir).resolve()}\n"
              f"# objectives (search split): " + ", ".join(
                  f"{n}={v:.4g}±{s:.3g}" for n, v, s in zip(run_data.experiment.objective_names,
                                                          result["objectives"], result["stderrs"]))
              + f"\n# Materialise it with: evomerge merge {out.name} OUT_DIR\n")
    write_text_atomic(out, header + recipe.to_yaml())
    print(f"wrote {out}")
    names = [n for n, info in Checkpoint.open(recipe.base or recipe.models[0]).tensors.items() if info.is_float]
    try:
        config = to_mergekit(recipe, names)
    except ExportError as exc:
        print(f"no mergekit configuration: {exc}")
        return 0
    mk = out.with_name(out.stem + ".mergekit.yaml")
    write_text_atomic(mk, f"# mergekit 0.1.5 configuration of trial {trial.number}: mergekit-yaml {mk.name} OUT_DIR\n"
                      + yaml.safe_dump(config, sort_keys=False))
    print(f"wrote {mk}")
    return 0
