"""The merge benchmark runs end to end on tiny inputs (`--small`) and both tools agree on what they wrote.

Only that it works and what it compares: its timings are for people to read, never asserted here."""

from __future__ import annotations

import json
import subprocess
import sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
pytestmark = [pytest.mark.mergekit, pytest.mark.slow]


def test_merge_speed_small_runs_both_tools_and_their_outputs_agree(tmp_path):
    out = tmp_path / "bench.json"
    done = subprocess.run(
        [sys.executable, str(ROOT / "benchmarks" / "merge_speed.py"), "--small", "--methods", "task_arithmetic", "ram",
         "--threads", "1", "--cache-dir", str(tmp_path / "family"), "--json", str(out)],
        capture_output=True, text=True, timeout=600, cwd=tmp_path,
    )
    assert done.returncode == 0, done.stderr[-3000:]
    rows = {row["method"]: row for row in json.loads(out.read_text())["merge"]}
    assert set(rows) == {"task_arithmetic", "ram"}
    for row in rows.values():
        assert row["evomerge_s"] > 0 and row["mergekit_s"] > 0 and row["evomerge_rss_mib"] > 0
        # same semantics and parameters: the written bf16 tensors agree to float32 rounding and one bf16 step
        assert row["max_abs_diff"] <= 1e-4, row
    assert "speed-up" in done.stdout
