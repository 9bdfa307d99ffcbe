"""The memory plan of an experiment's workers on this machine, and the worker settings it gives.

`evomerge plan` and `evomerge search` build the same `PlanRequest` here: the experiment's inputs, the methods
its search space (or sweep) can use and whether each merges in row blocks (the method registry's answer,
evomerge.plan_rules), its generator and workers, and the machine (host memory from /proc/meminfo, GPUs from
torch.cuda). The search then runs its workers with what the plan chose: the placement (`auto` resolved),
the workspace bound, and on a GPU the vLLM settings the user left unset.
"""

from __future__ import annotations

from dataclasses import dataclass, replace
from pathlib import Path
from typing import Any, Mapping, Sequence

from evomerge.errors import EvomergeError
from evomerge.memory_plan import GiB, MemoryPlan, PlanRequest, mib_to_bytes

MEBIBYTE = 2**20
ENGINE_KEYS = ("max_num_seqs", "gpu_memory_utilization", "enforce_eager")  # what the plan may set for vLLM


@dataclass(frozen=True)
class Machine:
    host_memory: int  # bytes of host memory of this node
    gpus: int  # GPUs the workers use on this node (one worker each); 0: CPU workers
    gpu_memory: int  # bytes of the smallest of those GPUs (unused when gpus == 0)


def host_memory_total(meminfo: str | Path = "/proc/meminfo") -> int:
    """MemTotal of this machine, in bytes."""
    try:
        for line in Path(meminfo).read_text().splitlines():
            if line.startswith("MemTotal:"):
                return int(line.split()[1]) * 1024  # the kernel writes kB (KiB)
    except (OSError, ValueError, IndexError) as exc:
        raise EvomergeError(f"{meminfo}: cannot read MemTotal ({exc})") from None
    raise EvomergeError(f"{meminfo}: no MemTotal line")


def gpu_memory(devices: Sequence[str]) -> int:
    """The smallest total memory of the CUDA devices named (the plan holds for each of them)."""
    import torch

    indices = sorted({int(d.split(":")[1]) if ":" in d else 0 for d in devices})
    return min(torch.cuda.get_device_properties(i).total_memory for i in indices)


def this_machine(workers: Any) -> Machine:
    """This node as the experiment's workers would use it: local and inline workers run here; a Ray cluster
    named by address runs its workers elsewhere (planned as one worker on a node like this one)."""
    from evomerge.scoring.pools import default_devices

    here = workers_on_node(workers)
    devices = list(workers.devices) if workers.devices else default_devices(here)
    cuda = [d for d in devices[:here] if d.startswith("cuda")]
    return Machine(host_memory_total(), len(cuda), gpu_memory(cuda) if cuda else 80 * GiB)


def workers_on_node(workers: Any) -> int:
    """Workers of the experiment on one node (inline: this process; a named Ray cluster: one per node)."""
    return 1 if workers.kind == "inline" or workers.ray_address else workers.count


def plan_request(base: str | None, models: Sequence[str], methods: Sequence[str], generator: Any, workers: Any,
                 row_blockable: Mapping[str, bool], machine: Machine, placement: str | None = None,
                 workspace_mib: int | None | str = "experiment",
                 densities: Sequence[float] | None = None) -> PlanRequest:
    """The request for an experiment's workers on `machine`; `placement` / `workspace_mib` override the
    experiment's workers settings (the `evomerge plan` flags)."""
    mib = workers.workspace_mib if workspace_mib == "experiment" else workspace_mib
    return PlanRequest(base=base, models=tuple(models), methods=tuple(methods), backend=generator.backend,
                       engine_dtype=generator.dtype, engine_options=dict(generator.options), gpus=machine.gpus,
                       cpu_workers=workers_on_node(workers), gpu_memory=machine.gpu_memory,
                       host_memory=machine.host_memory, placement=placement or workers.placement,
                       workspace_bytes=mib_to_bytes(mib),
                       row_blockable=dict(row_blockable),
                       densities=None if densities is None else tuple(float(d) for d in densities))


def plan_search(exp: Any, spec: Any) -> MemoryPlan:
    """The plan of a search experiment's workers on this machine (`spec`: its SearchSpaceSpec)."""
    from evomerge.memory_plan import build_plan
    from evomerge.plan_rules import space_row_blockable

    models = list(exp.models.values())
    return build_plan(plan_request(exp.base, models, sorted(spec.methods), exp.generator, exp.workers,
                                   space_row_blockable(spec, len(models)), this_machine(exp.workers)))


def configure_workers(setup: Any, plan: MemoryPlan) -> Any:
    """The WorkerSetup with the plan's placement and workspace bound and, for vLLM on a GPU, the engine
    settings the plan chose where the experiment's generator options leave them unset. The evaluation cache
    key keeps the experiment's own generator settings: these change memory, not scores."""
    worker = plan.nodes[0].workers[0]
    generator = dict(setup.generator)
    if worker.device == "cuda" and worker.engine.get("backend") == "vllm":
        options = dict(generator.get("options") or {})
        for key in ENGINE_KEYS:
            if key not in options and key in worker.engine:
                options[key] = worker.engine[key]
        generator["options"] = options
    return replace(setup, placement=worker.placement, workspace_bytes=worker.workspace_bound, generator=generator)
