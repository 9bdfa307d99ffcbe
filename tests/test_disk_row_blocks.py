"""`evomerge merge` (merge_to_disk) in row blocks: for every registered method, a small workspace (many ragged
blocks, and the whole-tensor fallback for rules that cannot be blocked) writes the same file, byte for byte,
as whole tensors (workspace_bytes=None, the path before row blocks), in float32 and bf16 outputs and when
the writer splits results into parts smaller than a row."""

from __future__ import annotations

import pytest

import evomerge.engine as engine
from evomerge.engine import merge_to_disk
from test_resident_placement import CASES, _recipe, family  # noqa: F401 (family is a fixture)

# 1 row per block; ragged blocks (21 for the 103 x 24 embedding); a workspace larger than any tensor
WORKSPACES = [1, 4 * 4 * 24 * 5, 1 << 20]


@pytest.mark.parametrize("method,params", CASES, ids=[f"{m}-{i}" for i, (m, _) in enumerate(CASES)])
@pytest.mark.parametrize("dtype", ["float32", "bfloat16"])
def test_blocked_disk_merge_equals_whole_tensors(family, tmp_path, method, params, dtype):  # noqa: F811
    recipe = _recipe(family, method, params, dtype)
    merge_to_disk(recipe, tmp_path / "whole", workspace_bytes=None)
    want = (tmp_path / "whole" / "model.safetensors").read_bytes()
    for ws in WORKSPACES:
        merge_to_disk(recipe, tmp_path / f"ws{ws}", workspace_bytes=ws)
        assert (tmp_path / f"ws{ws}" / "model.safetensors").read_bytes() == want, (method, params, ws)


def test_results_written_in_parts_smaller_than_a_row_are_the_same_file(family, tmp_path, monkeypatch):  # noqa: F811
    recipe = _recipe(family, "task_arithmetic", {}, "bfloat16")
    merge_to_disk(recipe, tmp_path / "whole", workspace_bytes=None)
    monkeypatch.setattr(engine, "WRITE_CHUNK_BYTES", 6)  # 3 bf16 entries per part: rows are split
    merge_to_disk(recipe, tmp_path / "parts", workspace_bytes=4 * 4 * 24 * 5)
    assert (tmp_path / "parts" / "model.safetensors").read_bytes() == \
        (tmp_path / "whole" / "model.safetensors").read_bytes()


def test_a_non_positive_workspace_is_refused(family, tmp_path):  # noqa: F811
    with pytest.raises(ValueError, match="workspace_bytes"):
        merge_to_disk(_recipe(family, "linear", {}), tmp_path / "out", workspace_bytes=0)
    assert list(tmp_path.iterdir()) == []
