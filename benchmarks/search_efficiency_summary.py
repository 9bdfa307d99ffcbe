"""The README's sample-efficiency table, read from `benchmarks/search_efficiency.py --markdown` outputs.

Each input file is a table that search_efficiency.py wrote (its command is the file's first line, an HTML
comment). This prints, per (family, space), every optimizer's median evaluations to reach random search's
200-evaluation hypervolume at the chosen group counts, and its own CPU milliseconds per candidate (the
largest over those rows), so the README quotes the benchmark's figures and nothing else.

    python benchmarks/search_efficiency_summary.py benchmarks/results/search_efficiency/{synthetic,surrogate,pairwise}.md
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path

GROUPS = ("8", "16")
COLUMNS = ("family", "space", "groups", "optimizer", "evals to target (median)", "own ms / candidate")


def read_rows(path: Path) -> list[dict[str, str]]:
    """The rows of the one table in a search_efficiency.py markdown file, as {header: cell}."""
    lines = [ln.strip() for ln in path.read_text().splitlines() if ln.strip().startswith("|")]
    if len(lines) < 2:
        raise SystemExit(f"{path}: no markdown table (expected the output of search_efficiency.py --markdown)")
    header = [c.strip() for c in lines[0].strip("|").split("|")]
    missing = [c for c in COLUMNS if c not in header]
    if missing:
        raise SystemExit(f"{path}: the table has no column(s) {missing}")
    return [dict(zip(header, (c.strip() for c in ln.strip("|").split("|")))) for ln in lines[2:]]


def summary(rows: list[dict[str, str]], groups: tuple[str, ...]) -> str:
    """One row per (family, space): 'a / b' evaluations at `groups` per optimizer, and the largest own ms."""
    cells: dict[tuple[str, str], dict[str, dict[str, str]]] = {}
    cost: dict[str, float] = {}
    optimizers: list[str] = []
    for r in rows:
        if r["groups"] not in groups:
            continue
        opt = r["optimizer"]
        if opt not in optimizers:
            optimizers.append(opt)
        cells.setdefault((r["family"], r["space"]), {}).setdefault(opt, {})[r["groups"]] = r["evals to target (median)"]
        cost[opt] = max(cost.get(opt, 0.0), float(r["own ms / candidate"]))
    optimizers.sort(key=lambda o: (o == "random", o != "additive", o))  # the default first, the baseline last
    out = [f"| family, space ({' / '.join(groups)} groups) | " + " | ".join(optimizers) + " |",
           "|---|" + "---|" * len(optimizers)]
    for (family, space), by_opt in cells.items():
        out.append(f"| {family}, {space} | " + " | ".join(
            " / ".join(by_opt.get(o, {}).get(g, "-") for g in groups) for o in optimizers) + " |")
    out.append("| own CPU ms per candidate (largest) | " + " | ".join(f"{cost[o]:.0f}" for o in optimizers) + " |")
    return "\n".join(out)


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("tables", nargs="+", type=Path, help="markdown files written by search_efficiency.py --markdown")
    parser.add_argument("--groups", default=",".join(GROUPS), help="group counts to show (default 8,16)")
    args = parser.parse_args(argv)
    rows = [r for path in args.tables for r in read_rows(path)]
    print(summary(rows, tuple(args.groups.split(","))))
    return 0


if __name__ == "__main__":
    sys.exit(main())
