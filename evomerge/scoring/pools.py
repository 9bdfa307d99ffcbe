"""Worker pools: run `Worker`s and share one interface (`submit`, `wait`, `close`).

- `InlinePool`: one worker in this process (debugging, tests; no isolation from crashes);
- `LocalPool` (default): one process per worker; a worker process that dies fails its job and is
  replaced;
- `RayPool`: one Ray actor per GPU (or per CPU slot); a dead actor fails its job and is replaced;
  `address` joins an existing cluster.
"""

from __future__ import annotations

import dataclasses
import logging
import math
import multiprocessing as mp
import os
import time
from abc import ABC, abstractmethod
from collections import deque
from dataclasses import dataclass
from typing import Any, Sequence

from evomerge.errors import EvomergeError
from evomerge.scoring.outcomes import EvalJob, EvalOutcome
from evomerge.scoring.workers import Worker, WorkerSetup, WorkerStartError

log = logging.getLogger(__name__)


# ---------------------------------------------------------------------------------------------


class Pool(ABC):
    """Run jobs on workers. `submit` only while `free_slots() > 0`; `wait` returns finished outcomes."""

    @property
    @abstractmethod
    def slots(self) -> int: ...

    @abstractmethod
    def submit(self, job: EvalJob) -> None: ...

    @abstractmethod
    def wait(self, timeout: float | None = None) -> list[EvalOutcome]:
        """Block until at least one job finishes (or `timeout` passes); return what finished."""

    @abstractmethod
    def in_flight(self) -> int: ...

    def free_slots(self) -> int:
        return self.slots - self.in_flight()

    def close(self) -> None:
        pass

    def __enter__(self) -> "Pool":
        return self

    def __exit__(self, *exc) -> None:
        self.close()


def _check_fatal(outcome: EvalOutcome) -> EvalOutcome:
    if outcome.fatal:
        raise WorkerStartError(f"{outcome.worker}: {outcome.reason}")
    return outcome


class InlinePool(Pool):
    """One worker in the calling process; jobs run inside `wait`, one at a time, in submission order."""

    def __init__(self, setup: WorkerSetup, device: str = "cpu"):
        self.worker = Worker(setup, device, "inline")
        self._queue: deque[EvalJob] = deque()

    @property
    def slots(self) -> int:
        return 1

    def submit(self, job: EvalJob) -> None:
        self._queue.append(job)

    def in_flight(self) -> int:
        return len(self._queue)

    def wait(self, timeout: float | None = None) -> list[EvalOutcome]:
        if not self._queue:
            return []
        return [_check_fatal(self.worker.run(self._queue.popleft()))]

    def close(self) -> None:
        if self.worker.previous_threads is not None:  # this process's setting, borrowed while scoring
            import torch

            torch.set_num_threads(self.worker.previous_threads)


def _process_main(setup: WorkerSetup, device: str, name: str, conn) -> None:
    """Entry point of a LocalPool worker process."""
    worker = Worker(setup, device, name)
    try:
        worker.start()
    except BaseException as exc:  # noqa: BLE001 - sent to the parent, which stops the run
        conn.send(("fatal", f"{type(exc).__name__}: {exc}"))
        return
    conn.send(("ready", name))
    while True:
        try:
            job = conn.recv()
        except (EOFError, OSError):
            return
        if job is None:
            return
        conn.send(("done", worker.run(job)))


@dataclass
class _Proc:
    name: str
    device: str
    process: Any
    conn: Any
    job: EvalJob | None = None


class MainGuardError(EvomergeError):
    """The main script would start the search again in every worker process."""


def _has_main_guard(source: str) -> bool:
    """Whether `source` compares `__name__` with "__main__" anywhere."""
    import ast

    for node in ast.walk(ast.parse(source)):
        if isinstance(node, ast.Compare):
            parts = [node.left, *node.comparators]
            if any(isinstance(p, ast.Name) and p.id == "__name__" for p in parts) and \
                    any(isinstance(p, ast.Constant) and p.value == "__main__" for p in parts):
                return True
    return False


def check_main_guard() -> None:
    """Spawned worker processes import the main script again (as `__mp_main__`). A script that calls
    `run_search` at its top level, with no `if __name__ == "__main__":` guard, would start the search once
    more in every worker, where starting processes is refused: every worker dies and every trial fails.
    Found here before any worker starts. (`python -c`, notebooks and the CLI have no script to re-import.)"""
    import sys

    main = sys.modules.get("__main__")
    path = getattr(main, "__file__", None)
    if not path or not str(path).endswith(".py"):
        return
    try:
        with open(path, encoding="utf-8") as fh:
            source = fh.read()
        guarded = _has_main_guard(source)
    except (OSError, SyntaxError, ValueError):
        return  # cannot tell; the workers will report what goes wrong
    if not guarded:
        raise MainGuardError(
            f"{path}: local worker processes re-import this script, which would start the search again in each "
            f"of them; put the code that runs the search under `if __name__ == \"__main__\":` (or use "
            f"workers.kind: inline)")


class LocalPool(Pool):
    """Worker processes on this machine (spawned: a fresh interpreter each, safe with CUDA)."""

    def __init__(self, setup: WorkerSetup, devices: Sequence[str]):
        if not devices:
            raise ValueError("LocalPool needs at least one device")
        check_main_guard()
        self.setup = setup
        self._ctx = mp.get_context("spawn")
        self._procs = [self._spawn(f"worker-{i}", d) for i, d in enumerate(devices)]
        self.restarts = 0

    def _spawn(self, name: str, device: str) -> _Proc:
        parent, child = self._ctx.Pipe()
        process = self._ctx.Process(target=_process_main, args=(self.setup, device, name, child), name=name, daemon=True)
        process.start()
        child.close()
        return _Proc(name, device, process, parent)

    @property
    def slots(self) -> int:
        return len(self._procs)

    def in_flight(self) -> int:
        return sum(p.job is not None for p in self._procs)

    def submit(self, job: EvalJob) -> None:
        proc = next((p for p in self._procs if p.job is None), None)
        if proc is None:
            raise RuntimeError("LocalPool.submit: every worker is busy; wait() first")
        proc.job = job
        proc.conn.send(job)

    def wait(self, timeout: float | None = None) -> list[EvalOutcome]:
        from multiprocessing.connection import wait

        busy = [p for p in self._procs if p.job is not None]
        if not busy:
            return []
        deadline = None if timeout is None else time.monotonic() + timeout
        while True:
            remaining = None if deadline is None else max(0.0, deadline - time.monotonic())
            wait([p.conn for p in busy] + [p.process.sentinel for p in busy], timeout=remaining)
            outcomes = []
            for proc in busy:
                outcome = self._collect(proc)
                if outcome is not None:
                    outcomes.append(_check_fatal(outcome))
            if outcomes or (deadline is not None and time.monotonic() >= deadline):
                return outcomes

    def _collect(self, proc: _Proc) -> EvalOutcome | None:
        while proc.conn.poll():
            try:
                kind, payload = proc.conn.recv()
            except (EOFError, OSError):  # the pipe closed: the process is gone
                break
            if kind == "ready":
                continue
            if kind == "fatal":
                return EvalOutcome(proc.job.key, False, payload, worker=proc.name, fatal=True)
            proc.job = None
            return payload
        if not proc.process.is_alive():
            proc.process.join(timeout=5)
            code = proc.process.exitcode
            job, proc.job = proc.job, None
            log.warning("%s died (exit code %s) while scoring %s; starting a new worker", proc.name, code, job.key)
            self._replace(proc)
            return EvalOutcome(job.key, False, f"worker died (exit code {code}) while scoring this candidate",
                               worker=proc.name)
        return None

    def _replace(self, proc: _Proc) -> None:
        fresh = self._spawn(proc.name, proc.device)
        proc.process, proc.conn = fresh.process, fresh.conn
        self.restarts += 1

    def close(self) -> None:
        for p in self._procs:
            try:
                p.conn.send(None)
            except (OSError, BrokenPipeError):
                pass
        for p in self._procs:
            p.process.join(timeout=10)
            if p.process.is_alive():
                p.process.terminate()
                p.process.join(timeout=5)
            p.conn.close()


class RayWorker:
    """The Ray actor: a Worker on the device Ray gave it (started on its first job)."""

    def __init__(self, setup: WorkerSetup, name: str):
        import ray

        gpus = ray.get_gpu_ids()
        self.worker = Worker(setup, "cuda" if gpus else "cpu", name)

    def run(self, job: EvalJob) -> EvalOutcome:
        return self.worker.run(job)


class RayPool(Pool):
    """One Ray actor per worker: per GPU when the cluster has GPUs, else per CPU slot."""

    def __init__(self, setup: WorkerSetup, count: int, address: str | None = None, cpus_per_worker: float = 1,
                 gpus_per_worker: float = 1):
        import ray

        self._ray = ray
        self._owns_ray = not ray.is_initialized()
        if self._owns_ray:
            os.environ.setdefault("RAY_AUTH_MODE", "disabled")
            ray.init(address=address, include_dashboard=False, log_to_driver=False,
                     num_cpus=None if address else max(int(math.ceil(count * cpus_per_worker)), 1))
        has_gpu = ray.cluster_resources().get("GPU", 0) > 0
        self._options = {"num_gpus": gpus_per_worker, "num_cpus": 1} if has_gpu and gpus_per_worker > 0 else \
            {"num_cpus": cpus_per_worker, "num_gpus": 0}
        self.setup = setup
        self._actor_cls = ray.remote(RayWorker)
        self._actors = [self._new_actor(i) for i in range(count)]
        self._busy: dict[Any, tuple[int, EvalJob]] = {}  # object ref -> (actor index, job)
        self.restarts = 0

    def _new_actor(self, i: int):
        return self._actor_cls.options(**self._options, max_restarts=0).remote(self.setup, f"ray-worker-{i}")

    @property
    def slots(self) -> int:
        return len(self._actors)

    def in_flight(self) -> int:
        return len(self._busy)

    def submit(self, job: EvalJob) -> None:
        used = {i for i, _ in self._busy.values()}
        free = next((i for i in range(len(self._actors)) if i not in used), None)
        if free is None:
            raise RuntimeError("RayPool.submit: every actor is busy; wait() first")
        self._busy[self._actors[free].run.remote(job)] = (free, job)

    def wait(self, timeout: float | None = None) -> list[EvalOutcome]:
        if not self._busy:
            return []
        ready, _ = self._ray.wait(list(self._busy), num_returns=1, timeout=timeout)
        outcomes = []
        for ref in ready:
            index, job = self._busy.pop(ref)
            try:
                outcomes.append(_check_fatal(self._ray.get(ref)))
            except self._ray.exceptions.RayActorError as exc:
                log.warning("ray-worker-%d died while scoring %s (%s); starting a new actor", index, job.key, exc)
                self._actors[index] = self._new_actor(index)
                self.restarts += 1
                outcomes.append(EvalOutcome(job.key, False, f"worker died: {str(exc).splitlines()[0][:300]}",
                                            worker=f"ray-worker-{index}"))
            except self._ray.exceptions.RayError as exc:
                outcomes.append(EvalOutcome(job.key, False, f"ray task failed: {str(exc)[:500]}",
                                            worker=f"ray-worker-{index}"))
        return outcomes

    def close(self) -> None:
        for actor in self._actors:
            try:
                self._ray.kill(actor)
            except Exception:  # noqa: BLE001 - already gone
                pass
        if self._owns_ray:
            self._ray.shutdown()


def default_devices(count: int) -> list[str]:
    """One GPU per worker when there are GPUs (round robin if fewer), else the CPU for each."""
    import torch

    n = torch.cuda.device_count()
    return [f"cuda:{i % n}" for i in range(count)] if n else ["cpu"] * count


def build_pool(kind: str, setup: WorkerSetup, count: int = 1, devices: Sequence[str] | None = None,
               ray_address: str | None = None, cpus_per_worker: float = 1, gpus_per_worker: float = 1) -> Pool:
    if kind == "inline":
        return InlinePool(setup, (devices or default_devices(1))[0])
    if kind == "local":
        devices = list(devices) if devices else default_devices(count)
        if len(devices) < count:
            devices = [devices[i % len(devices)] for i in range(count)]
        if setup.threads is None and all(d == "cpu" for d in devices[:count]):
            setup = dataclasses.replace(setup, threads=max(1, (os.cpu_count() or 1) // count))
        return LocalPool(setup, devices[:count])
    if kind == "ray":
        return RayPool(setup, count, ray_address, cpus_per_worker, gpus_per_worker)
    raise ValueError(f"unknown worker kind {kind!r}; use local, inline or ray")
