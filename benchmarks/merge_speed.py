"""Merge speed and peak memory: evomerge against mergekit 0.1.5 on the same inputs.

Generates (once, cached) a bf16 base + 3 agents of ~131M parameters with sparse task vectors
(evomerge.tiny_checkpoints.build_tiny_family: hidden 768, 13 layers, vocab 32000) — or, with --preset 0.5b|1.5b,
uses a Qwen2.5-shaped fixture of `evomerge fixture` (the paper's three RL agents: 3.2 / 46.2 / 54.3 % of entries
changed by a few bf16 steps; written once when --fixture does not hold one) — then for each method
runs `evomerge merge` and `mergekit-yaml` in fresh subprocesses, one after the other, with the same
output dtype (bf16), float32 arithmetic, parameters, CPU, thread count and OMP_WAIT_POLICY (PASSIVE
by default, what `evomerge merge` sets when it is unset), each started after an os.sync() (no earlier
run's writeback in its time). Each process's wall time and CPU time
(start to exit, imports included) and peak RSS (wait4's ru_maxrss, read in a small launcher) are
printed with the ratios, and the two outputs are compared tensor by tensor (dare_ties draws
different random masks in each tool, so only its amount of work is comparable).

Optionally (--resident) measures the search's resident API: ResidentMerger with inputs kept in
their bf16 dtype vs float32 task vectors (memory, load time, time per merge).

    python benchmarks/merge_speed.py                        # ties, task_arithmetic, dare_ties, ram
    python benchmarks/merge_speed.py --preset 0.5b --repeat 3 \
        --methods ties task_arithmetic dare_ties ram breadcrumbs_ties linear   # Qwen2.5-0.5B-shaped fixture
    python benchmarks/merge_speed.py --resident --repeat 3  # + resident API; best of 3
    python benchmarks/merge_speed.py --threads 1            # on a CPU shared with other jobs
    python benchmarks/merge_speed.py --small                # a quick run on tiny inputs
"""

from __future__ import annotations

import argparse
import json
import os
import random
import shutil
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import yaml

AGENTS = ("coding", "tool_use", "memory")
# evomerge recipe parameters and the mergekit 0.1.5 equivalent (same semantics; see evomerge/methods)
METHODS = {
    "ties": ({"density": 0.5, "weight": 1.0}, "ties", {"density": 0.5, "weight": 1.0}, {}),
    "task_arithmetic": ({"weight": 0.5}, "task_arithmetic", {"weight": 0.5}, {}),
    # mergekit 0.1.5 rescales DARE's kept entries to the task vector's L1 norm: do the same work
    "dare_ties": ({"density": 0.5, "weight": 1.0, "rescale_mode": "l1"}, "dare_ties",
                  {"density": 0.5, "weight": 1.0}, {}),
    "ram": ({"epsilon": 1e-5}, "ram", {}, {"epsilon": 1e-5}),
    "breadcrumbs_ties": ({"density": 0.5, "gamma": 0.01, "weight": 1.0}, "breadcrumbs_ties",
                         {"density": 0.5, "gamma": 0.01, "weight": 1.0}, {}),
    # the base is only the reference of evomerge's task vectors: mergekit averages the same three models
    "linear": ({"weight": 1.0}, "linear", {"weight": 1.0}, {}),
}
DEFAULT_METHODS = ("ties", "task_arithmetic", "dare_ties", "ram")
# Qwen2.5-shaped bf16 fixtures with the paper's RL-like sparse deltas (`evomerge fixture --preset P --agents 3`)
FIXTURE_PRESETS = ("0.5b", "1.5b")
SHAPES = {
    # ~131M parameters: 13 x 6.3M (attention with 4 KV heads + MLP 768->2048) + 2 x 32000 x 768 (embed, lm_head)
    "130m": dict(hidden_size=768, intermediate_size=2048, num_hidden_layers=13, num_attention_heads=12,
                 num_key_value_heads=4, max_position_embeddings=2048, vocab=32000),
    "small": dict(hidden_size=128, intermediate_size=256, num_hidden_layers=2, num_attention_heads=4,
                  num_key_value_heads=2, max_position_embeddings=512, vocab=2000),
}


def fixture_family(directory: Path, preset: str) -> dict[str, Path]:
    """The Qwen2.5-shaped fixture in `directory` (base/ and the three paper agents), written there first
    when missing (0.5b: 4 x 988 MB, about 15 minutes on 2 cores; 1.5b: 4 x 3.1 GB)."""
    paths = {name: directory / name for name in ("base", *AGENTS)}
    if all((p / "config.json").exists() for p in paths.values()):
        return paths
    from evomerge.fixture import FixtureSpec, paper_agents, write_fixture

    print(f"writing the {preset} fixture to {directory} (once)", flush=True)
    result = write_fixture(FixtureSpec(preset, paper_agents(len(AGENTS))), directory)
    if set(result.paths) != set(paths):
        raise RuntimeError(f"{directory}: expected checkpoints {sorted(paths)}, got {sorted(result.paths)}")
    return paths


def build_family(cache: Path, shape_name: str) -> dict[str, Path]:
    """The generated checkpoints, built on first use (a few minutes for 130m on 2 cores)."""
    marker = cache / "family.json"
    if marker.exists():
        return {k: Path(v) for k, v in json.loads(marker.read_text()).items()}
    import torch

    from evomerge.tiny_checkpoints import TinyShape, build_tiny_family, build_tokenizer

    shape = dict(SHAPES[shape_name])
    vocab = shape.pop("vocab")
    # a BPE over pseudo-words reaches any vocabulary size; the committed corpus is too small for 32k
    rng = random.Random(0)
    words = [" ".join("".join(rng.choice("abcdefghijklmnopqrstuvwxyz") for _ in range(rng.randint(2, 9)))
                      for _ in range(12)) for _ in range(40000)]
    tokenizer = build_tokenizer("\n".join(words), vocab_size=vocab)
    if cache.exists():
        shutil.rmtree(cache)
    paths = build_tiny_family(cache, agents=AGENTS, arch="qwen2", shape=TinyShape(**shape), dtype=torch.bfloat16,
                              tokenizer=tokenizer, seed=0)
    marker.write_text(json.dumps({k: str(v) for k, v in paths.items()}))
    return paths


# Peak RSS is read in a small launcher process: Linux carries the pre-exec RSS of a forked parent into the
# child's ru_maxrss, so a child forked straight from this (torch-sized) process would report our size.
_LAUNCHER = """
import json, os, subprocess, sys, time
t0 = time.perf_counter()
proc = subprocess.Popen(sys.argv[2:])
_, status, usage = os.wait4(proc.pid, 0)
with open(sys.argv[1], "w") as f:
    json.dump({"wall": time.perf_counter() - t0, "maxrss_kib": usage.ru_maxrss, "cpu": usage.ru_utime + usage.ru_stime,
               "code": os.waitstatus_to_exitcode(status)}, f)
"""


def run_measured(cmd: list[str], env: dict, result_file: Path) -> tuple[float, float, float]:
    """(wall seconds, peak RSS in MiB, CPU seconds) of one fresh process; start to exit, imports included."""
    proc = subprocess.run([sys.executable, "-c", _LAUNCHER, str(result_file), *cmd], env=env,
                          stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    output = proc.stdout.decode(errors="replace")
    result = json.loads(result_file.read_text()) if result_file.exists() else {"code": proc.returncode}
    if proc.returncode != 0 or result["code"] != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed ({result['code']}):\n{output[-3000:]}")
    return result["wall"], result["maxrss_kib"] / 1024, result["cpu"]


def max_abs_diff(a_dir: Path, b_dir: Path) -> float:
    from safetensors import safe_open

    def tensors(d):
        out = {}
        for f in sorted(d.glob("*.safetensors")):
            h = safe_open(str(f), "pt")
            out.update({k: (h, k) for k in h.keys()})
        return out

    a, b = tensors(a_dir), tensors(b_dir)
    if a.keys() != b.keys():
        return float("nan")
    worst = 0.0
    for k in a:
        x, y = a[k][0].get_tensor(k).float(), b[k][0].get_tensor(k).float()
        worst = max(worst, float((x - y).abs().max()))
    return worst


def warm_page_cache(paths) -> None:
    """Read every input once so neither tool pays for cold disk reads."""
    for p in paths:
        for f in Path(p).glob("*.safetensors"):
            with open(f, "rb") as fh:
                while fh.read(1 << 24):
                    pass


def _vm_hwm_mib() -> float:
    """This process's peak RSS since exec (VmHWM is per address space, unlike ru_maxrss)."""
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith("VmHWM:"):
            return int(line.split()[1]) / 1024
    return float("nan")


def resident_child(family: dict[str, Path], keep: str, repeat: int) -> None:
    """Runs in its own process: load a ResidentMerger and time RAM+ merges into a state dict."""
    import torch

    from evomerge.resident import ResidentMerger
    from evomerge.recipe import MergeRecipe

    recipe = MergeRecipe(base=str(family["base"]), models=[str(family[a]) for a in AGENTS], method="ram_plus")
    t0 = time.perf_counter()
    merger = ResidentMerger(recipe.base, recipe.models, device="cpu", keep=keep)
    load = time.perf_counter() - t0
    times = []
    for _ in range(repeat + 1):  # the first merge also runs the global statistics pass
        t0 = time.perf_counter()
        with torch.no_grad():
            for _name, _tensor in merger.merge(recipe):
                pass  # a sink that keeps nothing: what merge_into costs minus the copy
        times.append(time.perf_counter() - t0)
    print(json.dumps({
        "keep": keep, "resident_mib": merger.resident_bytes() / 2**20, "load_s": load,
        "first_merge_s": times[0], "merge_s": min(times[1:]),
        "peak_rss_mib": _vm_hwm_mib(),
    }))


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--cache-dir", type=Path, default=None,
                        help="where the generated checkpoints live (default: $TMPDIR/evomerge-bench-<shape>)")
    parser.add_argument("--preset", choices=["130m", "small", *FIXTURE_PRESETS], default="130m",
                        help="inputs: 130m (generated tiny-family, default), small (checks the benchmark itself), "
                             "or a Qwen2.5-shaped fixture (0.5b, 1.5b; see --fixture)")
    parser.add_argument("--fixture", type=Path, default=None,
                        help="directory of the --preset 0.5b/1.5b fixture (base/ coding/ tool_use/ memory/), "
                             "written there when missing (default: $TMPDIR/evomerge-fixture-<preset>)")
    parser.add_argument("--methods", nargs="+", default=list(DEFAULT_METHODS), choices=list(METHODS))
    parser.add_argument("--threads", type=int, default=os.cpu_count(),
                        help="threads for both tools (default: all cores)")
    parser.add_argument("--repeat", type=int, default=1,
                        help="runs per tool and method, the tools alternating (evomerge first, then mergekit first, "
                             "...); the best is reported")
    parser.add_argument("--small", action="store_true", help="same as --preset small")
    parser.add_argument("--resident", action="store_true", help="also measure the resident (search) API")
    parser.add_argument("--omp-wait-policy", default="PASSIVE", choices=["PASSIVE", "ACTIVE", "unset"],
                        help="OMP_WAIT_POLICY for both tools (default PASSIVE, what `evomerge merge` sets when "
                             "unset; 'unset' leaves each tool to its own default)")
    parser.add_argument("--json", type=Path, help="write the figures to this JSON file")
    parser.add_argument("--_resident-child", dest="resident_child", help=argparse.SUPPRESS)
    args = parser.parse_args()

    shape_name = "small" if args.small else args.preset
    t0 = time.perf_counter()
    if shape_name in FIXTURE_PRESETS:
        cache = args.fixture or args.cache_dir or Path(tempfile.gettempdir()) / f"evomerge-fixture-{shape_name}"
        family = fixture_family(cache, shape_name)
    else:
        cache = args.cache_dir or Path(tempfile.gettempdir()) / f"evomerge-bench-{shape_name}"
        family = build_family(cache, shape_name)
    if args.resident_child:
        resident_child(family, args.resident_child, args.repeat)
        return 0
    print(f"inputs: {cache} ({time.perf_counter() - t0:.0f} s to build or find)", flush=True)

    env = {**os.environ, "OMP_NUM_THREADS": str(args.threads), "MKL_NUM_THREADS": str(args.threads),
           "TOKENIZERS_PARALLELISM": "false"}
    env.pop("OMP_WAIT_POLICY", None)
    if args.omp_wait_policy != "unset":
        env["OMP_WAIT_POLICY"] = args.omp_wait_policy
    bin_dir = Path(sys.executable).parent
    mergekit_yaml = shutil.which("mergekit-yaml", path=str(bin_dir)) or shutil.which("mergekit-yaml")
    if mergekit_yaml is None:
        print("mergekit-yaml not found: pip install mergekit==0.1.5", file=sys.stderr)
        return 1
    work = Path(tempfile.mkdtemp(prefix="evomerge-bench-work-"))
    rows = []
    try:
        warm_page_cache(family.values())
        for method in args.methods:
            ours, mk_method, mk_model_params, mk_global = METHODS[method]
            recipe = {"base": str(family["base"]), "models": [str(family[a]) for a in AGENTS], "method": method,
                      "parameters": ours, "dtype": "bfloat16", "seed": 0}
            (work / f"{method}.yaml").write_text(yaml.safe_dump(recipe))  # YAML 1.1 reads JSON's 1e-05 as a string
            mk = {"merge_method": mk_method, "base_model": str(family["base"]),
                  "models": [{"model": str(family[a]), "parameters": mk_model_params} for a in AGENTS],
                  "parameters": mk_global, "dtype": "float32", "out_dtype": "bfloat16"}
            if mk_method == "linear":
                # mergekit's linear averages the models it is given (a base_model would be averaged in as one
                # more model); evomerge's linear with a base merges task vectors measured from it, which rounds
                # differently and reads one input more. Both tools get the same merge: the models, no base.
                del mk["base_model"]
                del recipe["base"]
                (work / f"{method}.yaml").write_text(yaml.safe_dump(recipe))
            (work / f"{method}.mk.yaml").write_text(yaml.safe_dump(mk))
            evo_cmd = [sys.executable, "-m", "evomerge.cli", "merge", str(work / f"{method}.yaml"), str(work / "evo"),
                       "--device", "cpu", "--no-progress"]
            mk_cmd = [mergekit_yaml, str(work / f"{method}.mk.yaml"), str(work / "mk"), "--no-cuda", "--quiet",
                      "--random-seed", "0", "-j", str(args.threads)]
            best = {"evomerge": (float("inf"), 0.0, 0.0), "mergekit": (float("inf"), 0.0, 0.0)}
            runs = {"evomerge": [], "mergekit": []}
            tools = [("evomerge", evo_cmd, work / "evo"), ("mergekit", mk_cmd, work / "mk")]
            for i in range(args.repeat):
                # alternate which tool goes first, so neither always runs right after the other's page cache
                # traffic or in the same phase of another job's load
                for tool, cmd, out in (tools if i % 2 == 0 else tools[::-1]):
                    shutil.rmtree(out, ignore_errors=True)
                    # no dirty pages of an earlier run: mergekit writes its output without an fsync, so its
                    # writeback would land in the next process's time (evomerge fsyncs inside its own)
                    os.sync()
                    measured = run_measured(cmd, env, work / "measure.json")
                    runs[tool].append(round(measured[0], 2))
                    if measured[0] < best[tool][0]:
                        best[tool] = measured
            diff = max_abs_diff(work / "evo", work / "mk")
            shutil.rmtree(work / "evo", ignore_errors=True)
            shutil.rmtree(work / "mk", ignore_errors=True)
            row = {"method": method, "evomerge_s": best["evomerge"][0], "mergekit_s": best["mergekit"][0],
                   "speedup": best["mergekit"][0] / best["evomerge"][0],
                   "evomerge_rss_mib": best["evomerge"][1], "mergekit_rss_mib": best["mergekit"][1],
                   "rss_ratio": best["evomerge"][1] / best["mergekit"][1],
                   "evomerge_cpu_s": best["evomerge"][2], "mergekit_cpu_s": best["mergekit"][2],
                   "load_avg_1min": os.getloadavg()[0], "max_abs_diff": diff,
                   "evomerge_runs_s": runs["evomerge"], "mergekit_runs_s": runs["mergekit"]}
            rows.append(row)
            print(json.dumps(row), flush=True)
    finally:
        shutil.rmtree(work, ignore_errors=True)

    print(f"\nthreads={args.threads}, OMP_WAIT_POLICY={args.omp_wait_policy}, best of {args.repeat}; "
          "wall and CPU (user+sys) = process start to exit, "
          "imports included; RSS = peak resident set")
    print(f"{'method':<16}{'evomerge s':>11}{'mergekit s':>11}{'speed-up':>9}{'evo CPU s':>10}{'mk CPU s':>9}"
          f"{'evo RSS MiB':>12}{'mk RSS MiB':>11}{'RSS ratio':>10}{'max|diff|':>11}{'load':>6}")
    for r in rows:
        print(f"{r['method']:<16}{r['evomerge_s']:>11.1f}{r['mergekit_s']:>11.1f}{r['speedup']:>8.1f}x"
              f"{r['evomerge_cpu_s']:>10.1f}{r['mergekit_cpu_s']:>9.1f}"
              f"{r['evomerge_rss_mib']:>12.0f}{r['mergekit_rss_mib']:>11.0f}{r['rss_ratio']:>10.2f}"
              f"{r['max_abs_diff']:>11.2g}{r['load_avg_1min']:>6.1f}")

    resident = []
    if args.resident:
        for keep in ("native", "float32"):
            cmd = [sys.executable, __file__, "--preset", shape_name, "--cache-dir", str(cache),
                   "--_resident-child", keep, "--repeat", str(args.repeat)]
            out = subprocess.run(cmd, env=env, capture_output=True, text=True, check=True).stdout
            resident.append(json.loads(out.strip().splitlines()[-1]))
        print(f"\nresident API (RAM+, global rho): {'keep':<8}{'resident MiB':>13}{'load s':>8}{'1st merge s':>12}"
              f"{'merge s':>8}{'peak RSS MiB':>13}")
        for r in resident:
            print(f"{'':33}{r['keep']:<8}{r['resident_mib']:>13.0f}{r['load_s']:>8.1f}{r['first_merge_s']:>12.2f}"
                  f"{r['merge_s']:>8.2f}{r['peak_rss_mib']:>13.0f}")
    if args.json:
        args.json.write_text(json.dumps({"shape": shape_name, "threads": args.threads, "repeat": args.repeat,
                                         "omp_wait_policy": args.omp_wait_policy,
                                         "merge": rows, "resident": resident}, indent=2))
    return 0


if __name__ == "__main__":
    sys.exit(main())
