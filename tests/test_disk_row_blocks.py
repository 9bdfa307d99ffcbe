"""`evomerge merge` (merge_to_disk) in row blocks: for every registered method, a small workspace (many ragged
blocks, and the whole-tensor fallback for rules that cannot be blocked) writes the same file, byte for byte,
as whole tensors (workspace_bytes=None, the path before row blocks), in float32 and bf16 outputs and when
the writer splits results into parts smaller than a row."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch

import evomerge.engine as engine
from evomerge.engine import merge_to_disk
from evomerge.methods.registry import get_method
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


@pytest.mark.parametrize("method,params", [
    ("linear", {}), ("task_arithmetic", {"weight": [0.7, -0.2, 0.4], "normalize": True}), ("ties", {"density": 0.3}),
    ("dare_ties", {"density": 0.4}), ("ram_plus", {}), ("ram_plus", {"rho_scope": "tensor"}),
    ("dare_linear", {"density": 0.4, "rescale_mode": "l1"}),  # an L1 rescale: whole tensors, among blocked ones
])
@pytest.mark.parametrize("base", [True, False], ids=["base", "no-base"])
def test_block_workers_write_the_serial_bytes(family, tmp_path, method, params, base):  # noqa: F811
    """Blocks merged by several threads (each with its own workspace and memory maps, running ahead of the
    writer) come out in order and bit for bit as one thread merges them, with and without a base."""
    if not base and get_method(method).requires_base:
        pytest.skip(f"{method} needs a base")
    recipe = _recipe(family, method, params, "bfloat16")
    if not base:
        recipe = recipe.model_copy(update={"base": None})
    threads_before = torch.get_num_threads()
    merge_to_disk(recipe, tmp_path / "one", workspace_bytes=4 * 4 * 24 * 5, threads=1)
    want = (tmp_path / "one" / "model.safetensors").read_bytes()
    for threads in (2, 3, 5):
        merge_to_disk(recipe, tmp_path / f"t{threads}", workspace_bytes=4 * 4 * 24 * 5, threads=threads)
        assert (tmp_path / f"t{threads}" / "model.safetensors").read_bytes() == want, threads
        assert torch.get_num_threads() == threads_before  # the process-wide count is given back
    with pytest.raises(ValueError, match="threads"):
        merge_to_disk(recipe, tmp_path / "zero", threads=0)


def _family_with(root, family, name, tensor, index, value):  # noqa: F811
    """A copy of `family[name]` (a checkpoint directory) whose tensor holds `value` at flat `index`."""
    import shutil

    from safetensors.torch import load_file, save_file

    out = root / f"{Path(name).name}-{tensor}-{index}-{value}"
    shutil.copytree(name, out)
    weights = load_file(str(out / "model.safetensors"))
    weights[tensor].view(-1)[index] = value
    save_file(weights, str(out / "model.safetensors"), metadata={"format": "pt"})
    return str(out)


@pytest.mark.parametrize("method", ["linear", "task_arithmetic"])
@pytest.mark.parametrize("where", ["base", "model"])
@pytest.mark.parametrize("value", [float("nan"), float("inf"), float("-inf")])
@pytest.mark.parametrize("threads", [1, 3])
def test_a_nonfinite_input_is_named_when_only_the_merge_is_checked(family, tmp_path, method, where, value, threads):  # noqa: F811
    """linear and task_arithmetic check their merged blocks, not every operand (nonfinite_propagates): a NaN/inf
    in the last row block of the embedding of the base or of the second model still fails the merge naming
    that file, with zero weights too (0 * inf is NaN), and leaves no output."""
    from evomerge.errors import CheckpointError

    assert get_method(method).nonfinite_propagates
    recipe = _recipe(family, method, {"weight": [1.0, 0.0, 0.5]}, "bfloat16")
    last = 103 * 24 - 1  # the embedding's last entry: in its last block
    if where == "base":
        bad = _family_with(tmp_path, family, family["base"], "embed.weight", last, value)
        recipe = recipe.model_copy(update={"base": bad})
    else:  # the zero-weight model: its NaN/inf reaches the merge only as 0 * value
        bad = _family_with(tmp_path, family, family["models"][1], "embed.weight", last, value)
        recipe = recipe.model_copy(update={"models": [family["models"][0], bad, family["models"][2]]})
    with pytest.raises(CheckpointError, match=rf"{Path(bad).name}.*embed\.weight"):
        merge_to_disk(recipe, tmp_path / "out", workspace_bytes=4 * 4 * 24 * 5, threads=threads)
    assert not (tmp_path / "out").exists()


def test_a_merge_that_overflows_from_finite_inputs_is_written_as_before(family, tmp_path):  # noqa: F811
    """Finite inputs whose merge overflows float32 (three task vectors of ~3e38 at one entry, summed) are not an
    input error: the merged check finds every operand finite and goes on, as the operand check did."""
    from safetensors.torch import load_file

    models = [_family_with(tmp_path, family, m, "embed.weight", 5, 3e38) for m in family["models"]]
    recipe = _recipe(family, "task_arithmetic", {}, "float32").model_copy(update={"models": models})
    merge_to_disk(recipe, tmp_path / "out", workspace_bytes=4 * 4 * 24 * 5, threads=2)
    merged = load_file(str(tmp_path / "out" / "model.safetensors"))["embed.weight"].view(-1)
    assert merged[5] == float("inf") and torch.isfinite(merged[6:]).all()
