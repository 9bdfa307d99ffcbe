"""Plan the memory of an experiment's workers before starting it: per node and per worker, the bytes of
each component (runtime, inputs, float32 workspace, merge temporaries, engine weights, KV cache, CUDA
context), where the inputs live (placement: device = private copies, host_mapped = the node's page cache,
shared once by every worker, compact = bitmask + changed values), the engine settings (vLLM
gpu_memory_utilization, max_model_len, max_num_seqs) and the expected time of one merge + swap. Reads only
config.json and safetensors headers. `evomerge search` builds the same plan for this machine, runs its
workers with it and writes it to RUN_DIR/plan.json.

Exits 1 with a one-line reason when the plan cannot fit, saying what to change.

examples:
  evomerge plan experiments/demo.yaml
  evomerge plan experiments/paper/table1_three_agents.yaml --model-set paper --paths base=...,coding=... \\
      --gpus 8 --gpu-memory 80GiB --host-memory 512GiB --json plan.json
  evomerge plan exp.yaml --gpus 1 --placement compact --densities 0.032,0.462,0.543
"""

from __future__ import annotations

import argparse

EXIT_WITHOUT_TEARDOWN = True  # the JSON file is closed before run() returns


def add_arguments(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("experiment", help="a search or sweep experiment YAML")
    parser.add_argument("--gpus", type=int, default=None,
                        help="GPUs per node, one worker each (default: the experiment's workers on CPUs for the hf "
                             "backend, one GPU for vllm)")
    parser.add_argument("--gpu-memory", default="80GiB", help="memory of one GPU (default 80GiB)")
    parser.add_argument("--host-memory", default="512GiB", help="host memory of one node (default 512GiB)")
    parser.add_argument("--placement", choices=["auto", "device", "host_mapped", "compact"], default=None,
                        help="where the workers keep the inputs: device (private copies), host_mapped (the node's "
                             "page cache, shared by every worker), compact, or auto (device if it fits, else "
                             "host_mapped); default: the experiment's workers.placement")
    parser.add_argument("--workspace-mib", default=None,
                        help="row-block bound of the float32 workspace in MiB, 'none' for whole tensors, or "
                             "'auto' (512 on a GPU, 32 on a CPU) (default: the experiment's workers.workspace_mib)")
    parser.add_argument("--densities", default=None,
                        help="each agent's share of changed entries, comma-separated (for placement compact; "
                             "measure with evomerge analyze); unknown densities are bounded at 1")
    parser.add_argument("--model-set", default=None, help="a sweep experiment's model set (e.g. paper)")
    parser.add_argument("--paths", default=None, help="name=dir,... replacing the experiment's checkpoints")
    parser.add_argument("--json", dest="json_path", default=None, help="also write the plan as JSON to this file")


def run(args: argparse.Namespace) -> int:
    import json
    import sys
    from pathlib import Path

    from evomerge.errors import EvomergeError
    from evomerge.io.writer import parse_size
    from evomerge.memory_plan import build_plan, format_plan
    from evomerge.worker_plan import Machine, plan_request

    base, models, methods, blockable, generator, workers = _read_experiment(args)
    gpus = args.gpus if args.gpus is not None else (1 if generator.backend == "vllm" else 0)
    machine = Machine(parse_size(args.host_memory), gpus, parse_size(args.gpu_memory))
    workspace = "experiment"
    if args.workspace_mib is not None:
        text = str(args.workspace_mib).strip().lower()
        if text not in ("none", "null", "auto") and not (text.isdigit() and int(text) >= 1):
            raise EvomergeError(f"--workspace-mib: expected a whole number of MiB >= 1, 'none' or 'auto', "
                                f"got {args.workspace_mib!r}")
        workspace = None if text in ("none", "null") else "auto" if text == "auto" else int(text)
    densities = None
    if args.densities:
        try:
            densities = [float(d) for d in args.densities.split(",")]
        except ValueError:
            raise EvomergeError(f"--densities: expected comma-separated numbers, got {args.densities!r}") from None
        if len(densities) != len(models) or not all(0 <= d <= 1 for d in densities):
            raise EvomergeError(f"--densities: expected {len(models)} value(s) in [0, 1] (one per agent, in the "
                                f"experiment's order), got {args.densities!r}")
    req = plan_request(base, models, methods, generator, workers, blockable, machine, args.placement, workspace,
                       densities)
    plan = build_plan(req)
    print(format_plan(plan))
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(plan.to_dict(), indent=2) + "\n")
        print(f"wrote {args.json_path}")
    if not plan.fits:
        print(f"error: {plan.refusal}", file=sys.stderr)
        return 1
    return 0


def _read_experiment(args):
    """(base, model paths, methods, method -> row-blockable, generator settings, worker settings) of a
    search or sweep YAML."""
    from pathlib import Path

    from evomerge.errors import EvomergeError
    from evomerge.plan_rules import space_row_blockable, sweep_row_blockable
    from evomerge.yamlio import read_yaml_file

    data = read_yaml_file(Path(args.experiment), EvomergeError, "experiment")
    if isinstance(data, dict) and "sweep" in data:
        from evomerge.sweep.experiment import load_sweep_experiment, parse_paths

        exp = load_sweep_experiment(args.experiment, model_set=args.model_set, paths=parse_paths(args.paths))
        entries = list(exp.sweep.methods.values())
        methods = sorted({m.method for m in entries})
        models = list(exp.models.values())
        return exp.base, models, methods, sweep_row_blockable(entries, len(models)), exp.generator, exp.workers
    if args.model_set or args.paths:
        raise EvomergeError(f"{args.experiment}: --model-set and --paths apply to sweep experiments only")
    from evomerge.search.experiment import Experiment
    from evomerge.search.space_spec import load_space_spec

    exp = Experiment.from_yaml(args.experiment)
    spec = load_space_spec(exp.search_space, exp.space)
    models = list(exp.models.values())
    return exp.base, models, sorted(spec.methods), space_row_blockable(spec, len(models)), exp.generator, exp.workers
