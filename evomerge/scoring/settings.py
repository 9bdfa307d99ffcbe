"""The settings a search experiment and a sweep share: the models, how they are scored (objectives,
generator, workers, cache, held-out split), and the rules that hold for both. Declared once here;
`Experiment` (evomerge.search.experiment) and the sweep's model set (evomerge.sweep.experiment) build on
`ScoredModels`."""

from __future__ import annotations

from pathlib import Path
from typing import Annotated, Any, ClassVar, Literal, Mapping

from pydantic import BaseModel, ConfigDict, Field, model_validator

from evaluators.suites.base import SuiteConfig

MergedDtype = Literal["float32", "float16", "bfloat16"]  # the merged weights' dtype (recipe dtype)


class Strict(BaseModel):
    model_config = ConfigDict(extra="forbid")


class Objective(Strict):
    """One objective: a suite (maximised) and its weight for scalarising optimisers."""

    suite: SuiteConfig
    weight: float = Field(1.0, ge=0)

    @model_validator(mode="before")
    @classmethod
    def _flat(cls, data):
        # `coding: {kind: coding, data: toy, weight: 2}`: every key but `weight` belongs to the suite
        if isinstance(data, Mapping) and "suite" not in data:
            data = dict(data)
            weight = data.pop("weight", 1.0)
            return {"suite": data, "weight": weight}
        return data


class Heldout(Strict):
    enabled: bool = True
    split: str = "test"
    limit: int | None = Field(None, ge=1)


class Workers(Strict):
    kind: Literal["local", "inline", "ray"] = "local"  # local: worker processes; inline: this process
    count: int = Field(1, ge=1)
    mode: Literal["async", "sync"] = "async"  # sync: generation by generation, reproducible
    devices: list[str] | None = None  # e.g. [cuda:0, cuda:1]; default: one GPU each if present, else cpu
    ray_address: str | None = None  # an existing Ray cluster; None starts a local one
    cpus_per_worker: float = Field(1, gt=0)
    gpus_per_worker: float = Field(1, ge=0)
    threads: int | None = Field(None, ge=1)  # torch CPU threads per worker; default: the cores shared among local workers
    # where each worker's ResidentMerger keeps the inputs (evomerge/resident.py): device (private copies),
    # host_mapped (memory maps: the workers of a node share one copy through the page cache), compact, or
    # auto: a search's memory plan (evomerge.memory_plan) takes device when the inputs fit beside the engine,
    # else host_mapped (a sweep, which does not plan yet, runs auto as device)
    placement: Literal["auto", "device", "host_mapped", "compact"] = "auto"
    # row-block bound of the float32 workspace in MiB; None: whole tensors; auto: by the worker's device
    # (evomerge.memory_plan.AUTO_WORKSPACE_BYTES: 512 on a GPU, 32 on a CPU)
    workspace_mib: Annotated[int, Field(ge=1)] | None | Literal["auto"] = "auto"


class Generator(Strict):
    backend: Literal["hf", "vllm"] = "hf"
    dtype: str | None = None  # None: float32 on CPU, bfloat16 on GPU
    options: dict[str, Any] = Field(default_factory=dict)  # backend keyword arguments (e.g. batch_size)


class Cache(Strict):
    enabled: bool = True
    dir: str | None = None  # default: $EVOMERGE_CACHE or ~/.cache/evomerge


def with_default_kinds(data: Any) -> Any:
    """`coding: {data: toy}`: an objective's suite kind defaults to its name, as in `evomerge evaluate`."""
    if isinstance(data, Mapping) and isinstance(data.get("objectives"), Mapping):
        objectives = {}
        for name, obj in data["objectives"].items():
            if obj is None:
                obj = {}
            if isinstance(obj, Mapping):
                obj = dict(obj)
                if isinstance(obj.get("suite"), Mapping):
                    obj["suite"] = {"kind": name, **obj["suite"]}
                else:
                    obj.setdefault("kind", name)
            objectives[name] = obj
        data = {**data, "objectives": objectives}
    return data


class ScoredModels(Strict):
    """A base (optional) and named models, and how merges of them are scored."""

    base: str | None = None
    models: dict[str, str] = Field(min_length=1)
    dtype: MergedDtype | None = None  # merged weights' dtype (recipe dtype)
    objectives: dict[str, Objective] = Field(min_length=1)
    generator: Generator = Field(default_factory=Generator)
    workers: Workers = Field(default_factory=Workers)

    # the order of experiment.yaml's keys (as written before the schemas were shared); fields not named
    # here follow in declaration order
    yaml_order: ClassVar[tuple[str, ...]] = ()

    @model_validator(mode="before")
    @classmethod
    def _objective_kinds(cls, data):
        return with_default_kinds(data)

    def check_heldout_split(self, heldout: "Heldout", uses: str, held_out: str = "the held-out split") -> None:
        """No objective may `uses` (search on, choose grid points on) the split that is held out."""
        for name, obj in self.objectives.items():
            if obj.suite.split == heldout.split:
                raise ValueError(f"objective '{name}' {uses} split '{obj.suite.split}', which is also {held_out}; "
                                 f"use different splits")

    def to_dict(self) -> dict[str, Any]:
        data = self.model_dump(mode="json")
        ordered = {k: data[k] for k in self.yaml_order if k in data}
        ordered.update(data)
        return ordered


def relative_to(root: Path, p: Any) -> Any:
    """A path string written in a file under `root`, as an absolute or root-relative path (other values as is)."""
    if not isinstance(p, str):
        return p
    q = Path(p).expanduser()
    return str(q if q.is_absolute() else root / q)


def resolve_paths(data: dict[str, Any], root: Path) -> dict[str, Any]:
    """Checkpoint paths, a search-space path and suite data paths are relative to the experiment file."""

    def rel(p: Any) -> Any:
        return relative_to(root, p)

    from evomerge.io.hub import locate  # a checkpoint name is a local path or a Hub id `org/name[@revision]`

    if isinstance(data.get("base"), str):
        data["base"] = locate(data["base"], root)
    if isinstance(data.get("models"), Mapping):
        data["models"] = {k: locate(v, root) if isinstance(v, str) else v for k, v in data["models"].items()}
    space = data.get("search_space")
    if isinstance(space, str) and (space.endswith((".yaml", ".yml")) or "/" in space):
        data["search_space"] = rel(space)
    objectives = data.get("objectives")
    if isinstance(objectives, Mapping):
        fixed = {}
        for name, obj in objectives.items():
            if isinstance(obj, Mapping):
                obj = dict(obj)
                suite = obj
                if isinstance(obj.get("suite"), Mapping):
                    suite = obj["suite"] = dict(obj["suite"])
                # `data` is a bundled data-set name unless a file or folder of that name sits next to the YAML
                if isinstance(suite.get("data"), str) and (root / suite["data"]).exists():
                    suite["data"] = rel(suite["data"])
            fixed[name] = obj
        data["objectives"] = fixed
    cache = data.get("cache")
    if isinstance(cache, Mapping) and isinstance(cache.get("dir"), str):
        data["cache"] = {**cache, "dir": rel(cache["dir"])}
    return data
