"""Memory and merge time of ResidentMerger per placement, one process and two processes on the same inputs.

    python benchmarks/resident_memory.py --out /tmp/resident_bench [--layers 2] [--merges 3]
    python benchmarks/resident_memory.py --fixture fixtures/qwen-0.5b --method ties --configs ...

Builds (once) a Qwen2.5-0.5B-shaped input set: a bf16 base with the 151936 x 896 embedding and `--layers`
decoder layers (attention 896/128, MLP 896/4864), and three agents with RL-like sparse deltas (3 %, 20 %,
54 % of entries changed by a few bf16 steps, partly shared), or takes `--fixture DIR` (base/ and one directory
per agent, as `evomerge fixture` writes them). Then, per configuration, starts worker
processes that each build a ResidentMerger, merge `--merges` candidates (the merged tensors streamed and
dropped, as a weight-loading iterator consumes them), and, while every worker of the configuration is
alive, read their PSS and RSS from /proc/self/smaps_rollup and their peak RSS (VmHWM). PSS charges a
page shared by k processes 1/k to each: the sum over workers is what the node really holds for them.
Prints one JSON line per configuration.
"""

from __future__ import annotations

import argparse
import hashlib
import json
import subprocess
import sys
import time
import zlib
from pathlib import Path

VOCAB, HIDDEN, KV, INTER = 151936, 896, 128, 4864
DENSITIES = (0.03, 0.20, 0.54)


def layer_shapes(layers: int) -> dict[str, tuple[int, ...]]:
    shapes: dict[str, tuple[int, ...]] = {"model.embed_tokens.weight": (VOCAB, HIDDEN), "model.norm.weight": (HIDDEN,)}
    for i in range(layers):
        p = f"model.layers.{i}."
        shapes.update({
            p + "self_attn.q_proj.weight": (HIDDEN, HIDDEN), p + "self_attn.k_proj.weight": (KV, HIDDEN),
            p + "self_attn.v_proj.weight": (KV, HIDDEN), p + "self_attn.o_proj.weight": (HIDDEN, HIDDEN),
            p + "mlp.gate_proj.weight": (INTER, HIDDEN), p + "mlp.up_proj.weight": (INTER, HIDDEN),
            p + "mlp.down_proj.weight": (HIDDEN, INTER),
            p + "input_layernorm.weight": (HIDDEN,), p + "post_attention_layernorm.weight": (HIDDEN,),
        })
    return shapes


def build(root: Path, layers: int) -> dict:
    import torch
    from safetensors.torch import save_file

    names = ["base"] + [f"agent{t}" for t in range(len(DENSITIES))]
    if all((root / n / "model.safetensors").is_file() for n in names):
        return {"base": str(root / "base"), "models": [str(root / n) for n in names[1:]]}
    config = {"model_type": "qwen2", "architectures": ["Qwen2ForCausalLM"], "hidden_size": HIDDEN,
              "vocab_size": VOCAB, "num_hidden_layers": layers}
    gen = torch.Generator().manual_seed(0)
    shapes = layer_shapes(layers)
    base = {n: (torch.randn(s, generator=gen) * 0.02).to(torch.bfloat16) for n, s in shapes.items()}
    for n, tensors in [("base", base)] + [(f"agent{t}", None) for t in range(len(DENSITIES))]:
        (root / n).mkdir(parents=True, exist_ok=True)
        (root / n / "config.json").write_text(json.dumps(config))
        if tensors is None:
            t = int(n.removeprefix("agent"))
            tensors = {}
            for name, b in base.items():
                # shared: a common draw decides half of each agent's changes, so the agents overlap
                shared = torch.Generator().manual_seed(zlib.crc32(name.encode()))
                u_shared = torch.rand(b.shape, generator=shared)
                u_own = torch.rand(b.shape, generator=gen)
                changed = (u_shared < DENSITIES[t] / 2) | (u_own < DENSITIES[t] / 2)
                steps = torch.randint(1, 4, b.shape, generator=gen).float()
                steps.mul_(torch.randint(0, 2, b.shape, generator=gen).float().mul_(2).sub_(1))
                # 1-3 bf16 steps (an ulp of bf16 is |b| x 2^-7) up or down
                moved = b.float() + steps * b.float().abs() * 2**-7
                tensors[name] = torch.where(changed, moved, b.float()).to(torch.bfloat16)
        save_file(tensors, str(root / n / "model.safetensors"))
        del tensors
    return {"base": str(root / "base"), "models": [str(root / n) for n in names[1:]]}


def _memory() -> dict[str, float]:
    out = {}
    for line in Path("/proc/self/smaps_rollup").read_text().splitlines():
        key, _, rest = line.partition(":")
        if key in ("Rss", "Pss", "Pss_Anon", "Pss_File", "Shared_Clean", "Private_Dirty"):
            out[key.lower() + "_gib"] = round(int(rest.split()[0]) / 2**20, 3)
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            out["peak_rss_gib"] = round(int(line.split()[1]) / 2**20, 3)
    return out


def worker(inputs: dict, placement: str, workspace: int | None, method: str, merges: int) -> None:
    """One process: build, merge, report, wait for the parent's word (so workers are measured together)."""
    import torch

    from evomerge.recipe import MergeRecipe
    from evomerge.resident import ResidentMerger

    t0 = time.perf_counter()
    if placement == "legacy":  # the ResidentMerger before placements (run with the old tree on PYTHONPATH)
        merger = ResidentMerger(inputs["base"], inputs["models"], device="cpu")
    else:
        merger = ResidentMerger(inputs["base"], inputs["models"], device="cpu", placement=placement,
                                workspace_bytes=workspace)
    load = time.perf_counter() - t0
    params = {"ram_plus": {"epsilon": 1e-5}, "task_arithmetic": {"weight": [0.4, 0.3, 0.3]},
              "ties": {"density": 0.5}, "dare_ties": {"density": 0.5},
              "breadcrumbs_ties": {"density": 0.5, "gamma": 0.01}}[method]
    times, digest = [], hashlib.sha256()
    for i in range(merges):
        recipe = MergeRecipe.from_dict({"method": method, "base": inputs["base"], "models": inputs["models"],
                                        "parameters": params, "seed": i})
        t0 = time.perf_counter()
        for name, tensor in merger.merge(recipe):
            if i == 0:  # every placement and workspace must give the same bytes
                digest.update(tensor.contiguous().view(-1).view(torch.uint8).numpy().tobytes())
            del tensor
        times.append(time.perf_counter() - t0)
    # timed merges exclude the digest's time: the first merge also hashes, report it apart
    memory = merger.memory_bytes() if hasattr(merger, "memory_bytes") else {"inputs": merger.resident_bytes()}
    print(json.dumps({"ready": True}), flush=True)
    sys.stdin.readline()  # every worker is alive and done: measure now
    print(json.dumps({"load_s": round(load, 2), "merge_s": [round(t, 2) for t in times], "digest": digest.hexdigest()[:16],
                      **{k: round(v / 2**30, 3) for k, v in memory.items()}, **_memory()}), flush=True)
    sys.stdin.readline()  # stay alive (mapped) until every worker has been measured


def run(inputs: dict, placement: str, workspace: int | None, method: str, merges: int, processes: int) -> dict:
    cmd = [sys.executable, __file__, "--worker", json.dumps([inputs, placement, workspace, method, merges])]
    procs = [subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, text=True) for _ in range(processes)]
    for p in procs:
        assert json.loads(p.stdout.readline())["ready"], "worker failed"
    reports = []
    for p in procs:
        p.stdin.write("measure\n")
        p.stdin.flush()
        reports.append(json.loads(p.stdout.readline()))
    for p in procs:
        p.stdin.write("exit\n")
        p.stdin.flush()
        p.wait()
    return {"placement": placement, "workspace_bytes": workspace, "method": method, "processes": processes,
            "pss_sum_gib": round(sum(r["pss_gib"] for r in reports), 3), "workers": reports}


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--out", type=Path, default=Path("/tmp/resident_bench"))
    parser.add_argument("--layers", type=int, default=2)
    parser.add_argument("--merges", type=int, default=3)
    parser.add_argument("--method", default="task_arithmetic",
                        choices=["task_arithmetic", "ram_plus", "ties", "dare_ties", "breadcrumbs_ties"])
    parser.add_argument("--fixture", type=Path, help="inputs from an `evomerge fixture` directory instead of --out")
    parser.add_argument("--configs", default="device:none:1,device:512:1,host_mapped:512:1,compact:512:1,"
                        "device:512:2,host_mapped:512:2",
                        help="placement:workspace MiB (none = whole largest tensor):processes, comma-separated")
    parser.add_argument("--worker", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.worker:
        worker(*json.loads(args.worker))
        return
    if args.fixture is not None:
        from row_block_speed import fixture_inputs  # benchmarks/ is the script's directory: on sys.path

        base, models = fixture_inputs(args.fixture)
        inputs = {"base": base, "models": models}
    else:
        inputs = build(args.out, args.layers)
    for config in args.configs.split(","):
        placement, mib, processes = config.split(":")
        workspace = None if mib == "none" else int(mib) * 2**20
        print(json.dumps(run(inputs, placement, workspace, args.method, args.merges, int(processes))), flush=True)


if __name__ == "__main__":
    main()
