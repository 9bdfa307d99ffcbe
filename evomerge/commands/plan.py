"""Plan the memory of an experiment's workers before starting it: per node and per worker, the bytes of
each component (runtime, inputs, float32 workspace, merge temporaries, engine weights, KV cache, CUDA
context), where the inputs live, the engine settings (vLLM gpu_memory_utilization, max_model_len,
max_num_seqs) and the expected time of one merge + swap. Reads only config.json and safetensors headers.

Exits 1 with a one-line reason when the plan cannot fit, saying what to change.

examples:
  evomerge plan experiments/demo.yaml
  evomerge plan experiments/paper/table1_three_agents.yaml --model-set paper --paths base=...,coding=... \\
      --gpus 8 --gpu-memory 80GiB --host-memory 512GiB --json plan.json
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
    parser.add_argument("--placement", choices=["auto", "device", "host"], default="auto",
                        help="where inputs and workspace live: device (today's workers), host, or auto (default)")
    parser.add_argument("--model-set", default=None, help="a sweep experiment's model set (e.g. paper)")
    parser.add_argument("--paths", default=None, help="name=dir,... replacing the experiment's checkpoints")
    parser.add_argument("--json", dest="json_path", default=None, help="also write the plan as JSON to this file")


def run(args: argparse.Namespace) -> int:
    import json
    from pathlib import Path

    from evomerge.io.writer import parse_size
    from evomerge.memory_plan import PlanRequest, build_plan, format_plan

    base, models, methods, generator, workers = _read_experiment(args)
    gpus = args.gpus if args.gpus is not None else (1 if generator.backend == "vllm" else 0)
    req = PlanRequest(base=base, models=tuple(models), methods=tuple(methods), backend=generator.backend,
                      engine_dtype=generator.dtype, engine_options=dict(generator.options), gpus=gpus,
                      cpu_workers=workers.count, gpu_memory=parse_size(args.gpu_memory),
                      host_memory=parse_size(args.host_memory), placement=args.placement)
    plan = build_plan(req)
    print(format_plan(plan))
    if args.json_path:
        Path(args.json_path).write_text(json.dumps(plan.to_dict(), indent=2) + "\n")
        print(f"wrote {args.json_path}")
    if not plan.fits:
        import sys

        print(f"error: {plan.refusal}", file=sys.stderr)
        return 1
    return 0


def _read_experiment(args):
    """(base, model paths, methods, generator settings, worker settings) of a search or sweep YAML."""
    from evomerge.errors import EvomergeError
    from evomerge.yamlio import read_yaml_file

    from pathlib import Path

    data = read_yaml_file(Path(args.experiment), EvomergeError, "experiment")
    if isinstance(data, dict) and "sweep" in data:
        from evomerge.sweep.experiment import load_sweep_experiment, parse_paths

        exp = load_sweep_experiment(args.experiment, model_set=args.model_set, paths=parse_paths(args.paths))
        methods = sorted({m.method for m in exp.sweep.methods.values()})
        return exp.base, list(exp.models.values()), methods, exp.generator, exp.workers
    if args.model_set or args.paths:
        raise EvomergeError(f"{args.experiment}: --model-set and --paths apply to sweep experiments only")
    from evomerge.search.experiment import Experiment
    from evomerge.search.space_spec import load_space_spec

    exp = Experiment.from_yaml(args.experiment)
    spec = load_space_spec(exp.search_space, exp.space)
    return exp.base, list(exp.models.values()), sorted(spec.methods), exp.generator, exp.workers
