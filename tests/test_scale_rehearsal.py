"""The CPU rehearsal (benchmarks/scale_rehearsal.py) runs a real two-worker search at the tiny preset and
reports measurements, not placeholders: positive merge / swap / evaluation seconds per candidate, one entry
per worker process with its own pid and non-zero memory figures, and the memory plan beside them.
Its timings and bytes are for people to read; only that they were measured is asserted here."""

from __future__ import annotations

import importlib.util
import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
SCRIPT = ROOT / "benchmarks" / "scale_rehearsal.py"


def _module():
    sys.path.insert(0, str(SCRIPT.parent))  # the script imports its neighbour proc_memory
    try:
        spec = importlib.util.spec_from_file_location("scale_rehearsal", SCRIPT)
        module = importlib.util.module_from_spec(spec)
        sys.modules[spec.name] = module  # dataclasses look their module up there
        spec.loader.exec_module(module)
        return module
    finally:
        sys.path.remove(str(SCRIPT.parent))


@pytest.mark.slow
def test_rehearsal_at_the_tiny_preset_measures_every_candidate_and_worker(tmp_path):
    fixture = tmp_path / "fixture"
    subprocess.run([sys.executable, "-m", "evomerge.cli", "fixture", "--preset", "tiny", str(fixture)], check=True,
                   capture_output=True, timeout=300)
    out = tmp_path / "out"
    done = subprocess.run([sys.executable, str(SCRIPT), "--fixture", str(fixture), "--out", str(out),
                           "--configs", "host_mapped:128:2", "--candidates", "3", "--interval", "0.1"],
                          capture_output=True, text=True, timeout=900, cwd=tmp_path)
    assert done.returncode == 0, done.stdout[-3000:] + done.stderr[-3000:]
    assert "| trial | worker | merge s | swap s | eval s | state |" in done.stdout
    assert "| worker (pid) | peak VmHWM | PSS |" in done.stdout
    report = json.loads((out / "rehearsal.json").read_text())
    [r] = report["results"]
    assert r["returncode"] == 0 and r["workers"] == 2 and r["placement"] == "host_mapped"

    assert len(r["candidates"]) == 3
    for c in r["candidates"]:
        assert c["state"] == "COMPLETE"
        assert c["merge_seconds"] > 0 and c["swap_seconds"] > 0 and c["eval_seconds"] > 0
        assert c["worker"] in ("worker-0", "worker-1")

    workers = r["memory"]["workers"]
    assert len(workers) == 2 and len({w["pid"] for w in workers}) == 2  # two processes, each sampled
    for w in workers:
        assert w["samples"] > 0
        for field in ("VmHWM", "Pss", "Rss", "RssFile", "Shared_Clean"):
            assert w[field] > 0, (field, w)
        assert w["VmHWM"] >= w["Rss"] >= w["Pss"]  # peak >= resident >= proportional share
    # the node's memory is the largest PSS sum at one instant: more than one worker's, at most both peaks
    m = r["memory"]
    assert max(w["Pss"] for w in workers) < m["pss_sum_peak"] <= sum(w["VmHWM"] for w in workers)

    assert len(r["plan"]) == 2 and all(p["host_peak"] > 0 and p["host_resident"] > 0 for p in r["plan"])


def test_two_workers_are_compared_with_one_of_the_same_placement():
    module = _module()

    def result(placement, workspace, workers, pss):
        return {"config": f"{placement}-{workspace}-x{workers}", "placement": placement, "workspace_mib": workspace,
                "workers": workers, "memory": {"pss_sum_peak": pss}}

    results = [result("host_mapped", 128, 2, 130), result("host_mapped", 128, 1, 100), result("device", 512, 2, 200)]
    assert module.ratios(results) == [{"config": "host_mapped-128-x2", "over": "host_mapped-128-x1",
                                       "pss_sum_ratio": 1.3}]  # device has no one-worker twin: no ratio
    assert module.Config.parse("host_mapped:none:2") == module.Config("host_mapped", None, 2)
    with pytest.raises(SystemExit, match="PLACEMENT:WORKSPACE_MIB:WORKERS"):
        module.Config.parse("host_mapped:2")
