"""Export a search run's finished trials (genes and scores) to a CSV the benchmark reads.

    python benchmarks/real_scores/export.py RUN_DIR OUT.csv [--max-trials N]

Reads RUN_DIR/trials.csv (written by `evomerge search`) and keeps the finished (COMPLETE) trials: their
gene columns and each objective's mean and standard error, in trial order; and writes the reference models'
search-split scores from RUN_DIR/references.json next to it (OUT_references.json).
"""

from __future__ import annotations

import argparse
import csv
import json
from pathlib import Path


def export(run_dir: Path, out: Path, max_trials: int | None = None) -> int:
    with open(run_dir / "trials.csv", newline="") as fh:
        rows = [r for r in csv.DictReader(fh) if r["state"] == "COMPLETE"]
    rows.sort(key=lambda r: int(r["trial"]))
    if max_trials is not None:
        rows = [r for r in rows if int(r["trial"]) < max_trials]
    if not rows:
        raise SystemExit(f"{run_dir / 'trials.csv'}: no finished trial")
    skip = {"state", "fidelity", "feasible", "merge_seconds", "swap_seconds", "eval_seconds", "worker", "finished_at", "failure"}
    columns = [c for c in rows[0] if c not in skip]
    with open(out, "w", newline="") as fh:
        writer = csv.DictWriter(fh, fieldnames=columns, extrasaction="ignore")
        writer.writeheader()
        writer.writerows(rows)
    refs = run_dir / "references.json"
    if refs.is_file():  # the reference models' search-split scores (the hypervolume's reference point)
        data = json.loads(refs.read_text())
        kept = {name: {"search_values": r["search_values"], "search_stderrs": r["search_stderrs"]}
                for name, r in data.items() if "search_values" in r}
        out.with_name(out.stem + "_references.json").write_text(json.dumps(kept, indent=1) + "\n")
    return len(rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("run_dir", type=Path)
    parser.add_argument("out", type=Path)
    parser.add_argument("--max-trials", type=int, default=None, help="keep trials numbered below N")
    args = parser.parse_args()
    print(f"{export(args.run_dir, args.out, args.max_trials)} trials -> {args.out}")


if __name__ == "__main__":
    main()
