"""The paper model set (experiments/paper/model_sets.yaml, `paper`) end to end on tiny random-weight stand-ins,
so a configuration error surfaces on a CPU and not in the first GPU hour. Shared by test_paper_smoke.py (hf
backend) and test_paper_smoke_vllm.py (vllm backend, run in .venv-vllm by .ci/run).

The stand-ins are `evomerge fixture --preset tiny` checkpoints: Qwen2 architecture, bf16, the paper
models' 32768 positions, the Qwen2.5 chat template. Everything of the paper model set is kept as it is
(suites, data, BFCL categories, memory lengths / chunk sizes / memory budget, the backend's dtype and
max_model_len) except:
- generation lengths are capped at GENERATION_CAP new tokens (the paper's 512-1024 on a random model
  decode to the cap: minutes per row on a CPU, and no configuration is checked by the 9th token that
  is not by the 8th);
- two items per suite (--limit 2), workers inline; the Table 1 rows are the references and TABLE1_METHODS
  (every method's grid was run on the toy set by test_paper_experiments.py: what is checked here is the
  model set), and the search scores no references (references: false): its candidates and front only;
- for the hf backend, the generator is {backend: hf} in its CPU default float32 (vLLM's max_model_len is
  not an hf option, and bf16 matmuls on a CPU made the memory suites 4x slower: 70-90 s per evaluation).
"""

from __future__ import annotations

import copy
import csv
import json
from pathlib import Path

import yaml

from evomerge.cli import main

PAPER = Path(__file__).resolve().parent.parent / "experiments" / "paper"
AGENTS = ("coding", "tool_use", "memory")
TABLE1_METHODS = ["TIES", "RAM+"]
GENERATION_CAP = 8


def build_standins(out: Path) -> dict[str, Path]:
    from evomerge.fixture import FixtureSpec, paper_agents, write_fixture

    return write_fixture(FixtureSpec("tiny", paper_agents(3)), out).paths


def paper_model_set(backend: str) -> dict:
    """The `paper` model set with the caps above (and the hf generator for backend 'hf')."""
    sets = yaml.safe_load((PAPER / "model_sets.yaml").read_text())
    paper = copy.deepcopy(sets["paper"])
    assert paper["generator"]["backend"] == "vllm" and paper["generator"]["options"]["max_model_len"] == 32768
    for objective in paper["objectives"].values():
        gen = objective.setdefault("generation", {})
        gen["max_new_tokens"] = min(gen.get("max_new_tokens", GENERATION_CAP), GENERATION_CAP)
        options = objective.get("options", {})
        if "memory_max_new_tokens" in options:
            options["memory_max_new_tokens"] = min(options["memory_max_new_tokens"], GENERATION_CAP)
    if backend == "hf":
        paper["generator"] = {"backend": "hf"}
    paper["workers"] = {"kind": "inline", "count": 1}
    return paper


def run_table1(standins: dict[str, Path], backend: str, out: Path) -> list[dict]:
    """Table 1 on the stand-ins with one grid point per method; returns table.csv's rows."""
    data = yaml.safe_load((PAPER / "table1_three_agents.yaml").read_text())
    data["model_set"] = "paper"
    data["model_sets"] = {"paper": paper_model_set(backend)}
    exp = out.parent / f"table1_{backend}.yaml"
    exp.write_text(yaml.safe_dump(data))
    paths = ",".join(f"{k}={standins[k]}" for k in ("base", *AGENTS))
    assert main(["sweep", str(exp), "--out", str(out), "--paths", paths, "--limit", "2", "--grid-max", "1",
                 "--methods", ",".join(TABLE1_METHODS), "--no-progress", "--no-cache"]) == 0
    return check_table1(out / "table.csv", backend)


def check_table1(table_csv: Path, backend: str) -> list[dict]:
    """Every row is there (under the model set's labels), none failed, every column scored 2 items."""
    with open(table_csv, newline="") as fh:
        rows = list(csv.DictReader(fh))
    paper = paper_model_set(backend)
    labels = paper.get("labels", {})
    expected = [labels.get(n, n) for n in ("base", *AGENTS)] + TABLE1_METHODS
    assert sorted(r["model"] for r in rows) == sorted(expected), [r["model"] for r in rows]
    assert sorted(r["kind"] for r in rows) == sorted(["base"] + ["specialist"] * 3 + ["method"] * len(TABLE1_METHODS))
    assert all(r["failure"] == "" for r in rows), [(r["model"], r["failure"]) for r in rows]
    for objective in paper["objectives"]:
        assert all(r[f"{objective}_n"] == "2" for r in rows), objective
    return rows


def run_search(standins: dict[str, Path], backend: str, out: Path) -> dict:
    """A search over the paper model set's objectives with a budget of two candidates."""
    paper = paper_model_set(backend)
    objectives = {name: {**obj, "limit": 2} for name, obj in paper["objectives"].items()}
    exp = {
        "name": f"paper_smoke_{backend}", "base": str(standins["base"]),
        "models": {a: str(standins[a]) for a in AGENTS},
        "search_space": "method_per_layer", "space": {"layer_groups": {"count": 2}}, "dtype": "bfloat16",
        "objectives": objectives, "optimizer": {"name": "nsga2", "population": 2}, "budget": 2,
        "heldout": {"split": "test", "limit": 2}, "references": False, "workers": paper["workers"], "generator": paper["generator"],
        "cache": {"enabled": False},
    }
    path = out.parent / f"search_{backend}.yaml"
    path.write_text(yaml.safe_dump(exp))
    assert main(["search", str(path), "--out", str(out), "--no-progress", "--no-cache"]) == 0
    with open(out / "trials.csv", newline="") as fh:
        trials = list(csv.DictReader(fh))
    assert len(trials) == 2 and all(t["state"] == "COMPLETE" for t in trials), trials
    front = json.loads((out / "front.json").read_text())
    assert front["members"] and all(m["heldout"] and "failure" not in m["heldout"] for m in front["members"]), front
    return front
