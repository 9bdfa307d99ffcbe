"""Checkpoint reading, validation and the atomic sharded writer (evomerge/io/)."""

from __future__ import annotations

import json
import shutil
import struct
import threading
from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file, save_file

from evomerge.io.staging import staged_output_dir
from evomerge.io.reader import Checkpoint, CheckpointSet
from evomerge.io.safetensors_format import read_safetensors_header
from evomerge.io.writer import PlannedTensor, ShardPlan, ShardWriter, parse_size
from evomerge.errors import CheckpointError


def _copy(src: Path, dst: Path) -> Path:
    shutil.copytree(src, dst)
    return dst


def _rewrite(ckpt: Path, change) -> None:
    """Load model.safetensors, let `change(state)` edit it, save it back."""
    file = ckpt / "model.safetensors"
    state = load_file(file)
    change(state)
    save_file(state, file, metadata={"format": "pt"})


def _shard(ckpt: Path, n_files: int = 2) -> None:
    """Split a single-file checkpoint into n_files shards with an index (as HF save_pretrained does)."""
    state = load_file(ckpt / "model.safetensors")
    names = list(state)
    weight_map = {}
    for i in range(n_files):
        part = names[i::n_files]
        fname = f"model-{i + 1:05d}-of-{n_files:05d}.safetensors"
        save_file({k: state[k] for k in part}, ckpt / fname, metadata={"format": "pt"})
        weight_map.update({k: fname for k in part})
    (ckpt / "model.safetensors").unlink()
    (ckpt / "model.safetensors.index.json").write_text(json.dumps({"metadata": {}, "weight_map": weight_map}))


def test_open_reads_headers_only(tiny_family):
    ckpt = Checkpoint.open(tiny_family["base"])
    assert ckpt.architecture == ("qwen2", ("Qwen2ForCausalLM",))
    assert ckpt.dtype == "float32"
    info = ckpt.tensors["model.layers.0.mlp.up_proj.weight"]
    assert info.shape == (128, 64) and info.dtype == "float32" and info.is_float


def test_sharded_input_reads_the_same_tensors(tiny_family, tmp_path):
    sharded = _copy(tiny_family["coding"], tmp_path / "coding")
    _shard(sharded, 3)
    single = CheckpointSet.open(tiny_family["base"], [tiny_family["coding"]])
    split = CheckpointSet.open(tiny_family["base"], [sharded])
    assert len(split.models[0].files) == 3
    assert sorted(split.tensor_names) == sorted(single.tensor_names)
    for name in single.tensor_names:
        assert torch.equal(split.read(split.models[0], name), single.read(single.models[0], name))


def test_fingerprint_tells_agents_with_identical_headers_apart(tiny_family):
    a, b = Checkpoint.open(tiny_family["coding"]), Checkpoint.open(tiny_family["memory"])
    assert a.fingerprint != b.fingerprint
    assert a.fingerprint == Checkpoint.open(tiny_family["coding"]).fingerprint


@pytest.mark.parametrize("damage, message", [
    (lambda raw: raw[:4], "no header"),
    (lambda raw: struct.pack("<Q", 10**12) + raw[8:], "header claims"),
    (lambda raw: raw[:8] + b"\xff" * 16 + raw[24:], "not valid JSON"),
    (lambda raw: raw[: len(raw) - 1000], "truncated"),
])
def test_corrupt_safetensors_is_named(tiny_family, tmp_path, damage, message):
    ckpt = _copy(tiny_family["coding"], tmp_path / "coding")
    file = ckpt / "model.safetensors"
    file.write_bytes(damage(file.read_bytes()))
    with pytest.raises(CheckpointError, match=message) as err:
        Checkpoint.open(ckpt)
    assert str(file) in str(err.value)


def test_header_offsets_must_match_shape(tmp_path):
    file = tmp_path / "bad.safetensors"
    header = json.dumps({"w": {"dtype": "F32", "shape": [4], "data_offsets": [0, 12]}}).encode()
    file.write_bytes(struct.pack("<Q", len(header)) + header + b"\0" * 16)
    with pytest.raises(CheckpointError, match="tensor 'w'"):
        read_safetensors_header(file)


@pytest.mark.parametrize("escape", ["../outside.safetensors", "/etc/passwd", "sub/../../outside.safetensors"])
def test_index_path_escaping_the_directory_is_refused(tiny_family, tmp_path, escape):
    ckpt = _copy(tiny_family["coding"], tmp_path / "coding")
    _shard(ckpt, 2)
    shutil.copy(ckpt / "model-00001-of-00002.safetensors", tmp_path / "outside.safetensors")
    index = json.loads((ckpt / "model.safetensors.index.json").read_text())
    name = next(k for k, v in index["weight_map"].items() if v == "model-00001-of-00002.safetensors")
    index["weight_map"][name] = escape
    (ckpt / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match="outside the checkpoint directory"):
        Checkpoint.open(ckpt)


def test_symlinked_shard_outside_the_directory_is_refused(tiny_family, tmp_path):
    ckpt = _copy(tiny_family["coding"], tmp_path / "coding")
    _shard(ckpt, 2)
    moved = tmp_path / "elsewhere.safetensors"
    (ckpt / "model-00002-of-00002.safetensors").rename(moved)
    (ckpt / "model-00002-of-00002.safetensors").symlink_to(moved)
    with pytest.raises(CheckpointError, match="outside the checkpoint directory"):
        Checkpoint.open(ckpt)


def test_index_naming_a_tensor_its_shard_lacks(tiny_family, tmp_path):
    ckpt = _copy(tiny_family["coding"], tmp_path / "coding")
    _shard(ckpt, 2)
    index = json.loads((ckpt / "model.safetensors.index.json").read_text())
    index["weight_map"]["model.extra.weight"] = "model-00001-of-00002.safetensors"
    (ckpt / "model.safetensors.index.json").write_text(json.dumps(index))
    with pytest.raises(CheckpointError, match="model.extra.weight"):
        Checkpoint.open(ckpt)


def test_missing_config_and_pickled_weights_are_explained(tiny_family, tmp_path):
    ckpt = _copy(tiny_family["coding"], tmp_path / "coding")
    (ckpt / "config.json").unlink()
    with pytest.raises(CheckpointError, match="config.json"):
        Checkpoint.open(ckpt)
    ckpt2 = _copy(tiny_family["coding"], tmp_path / "coding2")
    (ckpt2 / "model.safetensors").rename(ckpt2 / "pytorch_model.bin")
    with pytest.raises(CheckpointError, match="only safetensors"):
        Checkpoint.open(ckpt2)
    with pytest.raises(CheckpointError, match="not found"):
        Checkpoint.open(tmp_path / "nope")


def test_validation_names_the_tensor_at_fault(tiny_family, tmp_path):
    shape = _copy(tiny_family["coding"], tmp_path / "shape")
    _rewrite(shape, lambda s: s.update({"model.norm.weight": torch.ones(65)}))
    with pytest.raises(CheckpointError, match=r"'model.norm.weight' has shape \[65\]"):
        CheckpointSet.open(tiny_family["base"], [shape])

    missing = _copy(tiny_family["coding"], tmp_path / "missing")
    _rewrite(missing, lambda s: s.pop("model.layers.1.mlp.up_proj.weight"))
    with pytest.raises(CheckpointError, match="'model.layers.1.mlp.up_proj.weight'.*missing"):
        CheckpointSet.open(tiny_family["base"], [missing])

    extra = _copy(tiny_family["coding"], tmp_path / "extra")
    _rewrite(extra, lambda s: s.update({"model.extra.bias": torch.zeros(3)}))
    with pytest.raises(CheckpointError, match="'model.extra.bias'"):
        CheckpointSet.open(tiny_family["base"], [extra])


def test_architecture_mismatch(tiny_family, tiny_family_llama):
    with pytest.raises(CheckpointError, match="architecture"):
        CheckpointSet.open(tiny_family["base"], [tiny_family_llama["coding"]])


def test_copy_into_converts_from_a_memory_map_and_refuses_a_file_truncated_in_use(tiny_family, tmp_path):
    sharded = _copy(tiny_family["coding"], tmp_path / "coding")
    _shard(sharded, 3)
    inputs = CheckpointSet.open(tiny_family["base"], [sharded])
    stored = {}
    for f in sorted(sharded.glob("*.safetensors")):
        stored.update(load_file(f))
    for name, want in stored.items():
        got = torch.empty(want.shape, dtype=torch.float32)
        inputs.copy_into(inputs.models[0], name, got)
        assert torch.equal(got, want.float()), name
        if want.numel() > 11:  # a span of entries (a row block, or less), by memory map and by pread
            part = torch.empty(8)
            inputs.copy_into(inputs.models[0], name, part, (3, 11))
            assert torch.equal(part, want.reshape(-1)[3:11].float()), name
            assert torch.equal(inputs.read(inputs.models[0], name, span=(3, 11)), want.reshape(-1)[3:11]), name
    with pytest.raises(ValueError, match="outside"):
        inputs.copy_into(inputs.models[0], name, torch.empty(2), (want.numel() - 1, want.numel() + 1))
    with pytest.raises(ValueError, match="entries"):
        inputs.copy_into(inputs.models[0], name, torch.empty(want.numel() + 1))
    last = max(inputs.models[0].tensors.values(), key=lambda i: (str(i.file), i.offset))
    with open(last.file, "r+b") as fh:  # another process truncates the file after validation
        fh.truncate(last.offset + 4)
    with pytest.raises(CheckpointError, match="truncated while in use"):
        inputs.copy_into(inputs.models[0], last.name, torch.empty(last.numel))
    inputs.close()


def test_non_finite_values_are_reported_on_read(tiny_family, tmp_path):
    nan = _copy(tiny_family["coding"], tmp_path / "nan")

    def poison(state):
        state["model.layers.0.self_attn.q_proj.weight"][3, 5] = float("nan")

    _rewrite(nan, poison)
    inputs = CheckpointSet.open(tiny_family["base"], [nan])
    with pytest.raises(CheckpointError, match=r"'model.layers.0.self_attn.q_proj.weight' has 1 NaN/inf"):
        inputs.read(inputs.models[0], "model.layers.0.self_attn.q_proj.weight")


def test_parse_size():
    assert parse_size("5GB") == 5 * 10**9
    assert parse_size("500MiB") == 500 * 2**20
    assert parse_size("1.5kb") == 1500
    assert parse_size(123) == 123
    for bad in ("5 parsecs", "-1GB", 0):
        with pytest.raises(CheckpointError):
            parse_size(bad)


@pytest.mark.parametrize("writeback_bytes", [None, 1])
def test_shard_writer_streams_a_readable_sharded_checkpoint(tmp_path, monkeypatch, writeback_bytes):
    """Also with the early writeback asked for after every tensor (normally every 64 MiB)."""
    import evomerge.io.writer as checkpoint_module

    kicks = []
    if writeback_bytes is not None:
        real = checkpoint_module.start_writeback
        monkeypatch.setattr(checkpoint_module, "WRITEBACK_BYTES", writeback_bytes)
        monkeypatch.setattr(checkpoint_module, "start_writeback", lambda fd: (kicks.append(fd), real(fd)))
    torch.manual_seed(0)
    tensors = {
        "a": torch.randn(10, 10).to(torch.bfloat16),  # 200 bytes
        "b": torch.randn(30).to(torch.bfloat16),  # 60 bytes
        "big": torch.randn(200).to(torch.bfloat16),  # 400 bytes: larger than a shard, gets its own
        "scalar": torch.tensor(3.0).to(torch.bfloat16),
        "ids": torch.arange(5),  # int64 passes through in its own dtype
    }
    planned = [PlannedTensor(k, str(v.dtype).removeprefix("torch."), tuple(v.shape)) for k, v in tensors.items()]
    plan = ShardPlan.build(planned, 300)
    assert [[t.name for t in s] for s in plan.shards] == [["a", "b"], ["big"], ["scalar", "ids"]]
    writer = ShardWriter(tmp_path, plan)
    for k, v in tensors.items():
        writer.write(k, v)
    files = writer.finish()
    assert len(kicks) == (len(tensors) if writeback_bytes else 0)
    assert files == [f"model-0000{i}-of-00003.safetensors" for i in (1, 2, 3)]
    index = json.loads((tmp_path / "model.safetensors.index.json").read_text())
    assert index["weight_map"] == {"a": files[0], "b": files[0], "big": files[1], "scalar": files[2], "ids": files[2]}
    loaded = {}
    for f in files:
        loaded.update(load_file(tmp_path / f))
    assert loaded.keys() == tensors.keys()
    for k in tensors:
        assert torch.equal(loaded[k], tensors[k]) and loaded[k].dtype == tensors[k].dtype


def test_shard_writer_refuses_tensors_out_of_plan(tmp_path):
    writer = ShardWriter(tmp_path, ShardPlan.build([PlannedTensor("a", "float32", (2,))], 100))
    with pytest.raises(RuntimeError, match="plan expects"):
        writer.write("a", torch.zeros(3))


def test_shard_writer_takes_tensors_in_parts_and_refuses_parts_that_do_not_add_up(tmp_path):
    """merge_to_disk writes row blocks, cast in chunks that may split a row: parts of one tensor in order."""
    plan = ShardPlan.build([PlannedTensor("a", "bfloat16", (3, 4)), PlannedTensor("b", "bfloat16", (2,))], 1000)
    a, b = torch.randn(3, 4).to(torch.bfloat16), torch.randn(2).to(torch.bfloat16)
    writer = ShardWriter(tmp_path, plan)
    for part in (a.view(-1)[:5], a.view(-1)[5:6], a[1:].reshape(-1)[2:]):  # 5 + 1 + 6 entries: splits rows
        writer.write_part("a", part)
    writer.write_part("b", b)
    writer.finish()
    loaded = load_file(tmp_path / "model.safetensors")
    assert torch.equal(loaded["a"], a) and torch.equal(loaded["b"], b)

    for bad, match in [
        ([("a", a.view(-1)[:5]), ("b", b)], "still to come"),  # the next tensor before the last part
        ([("a", a.view(-1)[:5]), ("a", a.view(-1))], "overrun"),  # more bytes than planned
        ([("a", a.view(-1).float())], r"got part of 'a' \(torch.float32\)"),  # another dtype
        ([("b", b)], "the plan expects"),  # out of order
    ]:
        writer = ShardWriter(tmp_path / "bad", plan)
        (tmp_path / "bad").mkdir(exist_ok=True)
        with pytest.raises(RuntimeError, match=match):
            for name, part in bad:
                writer.write_part(name, part)
        writer.abort()
    writer = ShardWriter(tmp_path / "bad", plan)
    writer.write_part("a", a.view(-1)[:5])
    with pytest.raises(RuntimeError, match="finished before"):  # a tensor left incomplete
        writer.finish()
    writer.abort()


def test_staged_output_dir_is_all_or_nothing(tmp_path):
    out = tmp_path / "out"
    with pytest.raises(ValueError):
        with staged_output_dir(out) as staging:
            (staging / "partial").write_text("x")
            raise ValueError("boom")
    assert list(tmp_path.iterdir()) == []

    with staged_output_dir(out) as staging:
        (staging / "done").write_text("1")
    assert (out / "done").read_text() == "1"
    with pytest.raises(CheckpointError, match="already exists"):
        with staged_output_dir(out):
            pass
    with staged_output_dir(out, overwrite=True) as staging:
        (staging / "done").write_text("2")
    assert (out / "done").read_text() == "2"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["out"]


def _hostile(tmp_path: Path, entries: dict, data_bytes: int) -> Path:
    """A hand-built safetensors file with the given header entries and `data_bytes` bytes of data."""
    file = tmp_path / "hostile.safetensors"
    header = json.dumps(entries).encode()
    file.write_bytes(struct.pack("<Q", len(header)) + header + bytes(range(256)) * (data_bytes // 256)
                     + b"\1" * (data_bytes % 256))
    return file


def _f32(start: int, n: int) -> dict:
    return {"dtype": "F32", "shape": [n], "data_offsets": [start, start + 4 * n]}


@pytest.mark.parametrize("entries, data_bytes, message", [
    # two tensors over the same 16 bytes: a merge would read one as the other
    ({"a": _f32(0, 4), "b": _f32(0, 4)}, 16, "'b' at bytes 0..16 overlaps tensor 'a'"),
    # partly shared bytes, listed out of order
    ({"b": _f32(8, 4), "a": _f32(0, 4)}, 24, "'b' at bytes 8..24 overlaps tensor 'a'"),
    # a hole between two tensors
    ({"a": _f32(0, 4), "b": _f32(20, 4)}, 36, r"bytes 16..20 of the data section belong to no tensor"),
    # the first tensor does not start at 0
    ({"a": _f32(8, 4)}, 24, r"bytes 0..8 of the data section belong to no tensor"),
    # bytes after the last tensor
    ({"a": _f32(0, 4)}, 20, "4 trailing byte"),
    # a tensor past the end of the data section
    ({"a": _f32(0, 4), "b": _f32(16, 4)}, 24, "ends at byte 32 but the data section has 24"),
])
def test_hostile_header_layouts_are_refused_like_the_safetensors_library(tmp_path, entries, data_bytes, message):
    from safetensors import SafetensorError, safe_open

    file = _hostile(tmp_path, entries, data_bytes)
    with pytest.raises(CheckpointError, match=message) as err:
        read_safetensors_header(file)
    assert str(file) in str(err.value)
    with pytest.raises(SafetensorError):  # the reference behaviour: the library refuses each of these too
        safe_open(str(file), framework="pt")


def test_a_well_formed_hand_built_header_is_accepted(tmp_path):
    from safetensors import safe_open

    file = _hostile(tmp_path, {"b": _f32(16, 2), "a": _f32(0, 4), "empty": _f32(24, 0)}, 24)
    tensors, _ = read_safetensors_header(file)
    assert [tensors[k].nbytes for k in ("a", "b", "empty")] == [16, 8, 0]
    with safe_open(str(file), framework="pt") as f:  # and so does the library
        assert sorted(f.keys()) == ["a", "b", "empty"]


def test_copy_into_keeps_one_tensor_mapped_across_spans_and_rereads_dropped_pages(tiny_family):
    """copy_into keeps a tensor's map for its next span and drops each copied span's pages from it
    (MADV_DONTNEED): spans in any order, re-read spans (their pages dropped), spans straddling pages and
    another tensor of the same file in between must all read the stored values."""
    import mmap

    inputs = CheckpointSet.open(tiny_family["base"], [tiny_family["coding"]])
    ckpt = inputs.models[0]
    stored = {}
    for f in sorted(Path(tiny_family["coding"]).glob("*.safetensors")):
        stored.update(load_file(f))
    big = max(ckpt.tensors.values(), key=lambda i: i.nbytes)
    other = next(i for i in ckpt.tensors.values() if i.file == big.file and i.name != big.name)
    assert big.nbytes > 4 * mmap.PAGESIZE, "the test needs a tensor of several pages"
    want = stored[big.name].reshape(-1).float()
    step = mmap.PAGESIZE // 2 + 3  # spans that straddle page boundaries at varying offsets
    spans = [(a, min(a + step, big.numel)) for a in range(0, big.numel, step)]
    for a, b in [*spans, *reversed(spans), spans[0]]:
        got = torch.empty(b - a)
        inputs.copy_into(ckpt, big.name, got, (a, b))
        assert torch.equal(got, want[a:b]), (a, b)
        assert inputs._maps[(threading.get_ident(), big.file)][0] == big.name  # the map is kept for the next span
        got_other = torch.empty(other.numel)
        if (a, b) == spans[1]:  # another tensor of the same file in between replaces the map
            inputs.copy_into(ckpt, other.name, got_other)
            assert torch.equal(got_other, stored[other.name].reshape(-1).float())
            assert inputs._maps[(threading.get_ident(), big.file)][0] == other.name
    inputs.close()
    assert not inputs._maps
