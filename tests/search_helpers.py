"""Fast deterministic objectives for search tests (importable by worker processes and Ray actors).

`TaskVectorUptake` scores the merged model in weight space: per tensor (an item), how much of one
agent's task vector the merge carries, minus the interference of everything else it carries. The
base scores 0, merges can beat it on every objective at once, and the objectives trade off, so three
of them (one per agent) have a real front; no text is generated, so a candidate costs milliseconds.

`TextLikelihood` is a real forward pass: per item, exp(mean token log-likelihood) of a fixed text.
"""

from __future__ import annotations

import hashlib
import os
import time
from typing import Any

import torch

from evaluators.protocol import ItemResult, SuiteResult
from evaluators.suites.base import split_items, subsample


class TaskVectorUptake:
    """options: base, target (agent checkpoint dirs), agents (every agent's dir); fail_mod/exit_mod: fail, or
    kill the worker, for candidates whose weight checksum hashes to 0 mod that number (failure tests);
    sleep: seconds to wait per candidate.

    Item = one tensor. Score = how much of the target's task vector the merge carries (projection
    coefficient: 0 for the base, 1 for the target) minus half the interference (the rest of the merged
    task vector, relative to the agents' summed task-vector norms)."""

    def __init__(self, name: str, config):
        from safetensors.torch import load_file

        self.name = name
        self.config = config
        opts = config.options

        def load(d):
            return load_file(os.path.join(d, "model.safetensors"))

        self.base = load(opts["base"])
        target = load(opts["target"])
        agents = [load(d) for d in opts["agents"]]
        self.names = sorted(k for k in target if not torch.equal(target[k], self.base[k]))
        # the checkpoints themselves (reference evaluations) never fail on purpose
        self.checkpoints = {self._checksum(s) for s in agents + [self.base]}
        self.tau = {k: target[k].float() - self.base[k].float() for k in target}
        self.scale = {k: sum(float((a[k].float() - self.base[k].float()).norm()) for a in agents) for k in self.names}
        self.fail_mod = opts.get("fail_mod")
        self.exit_mod = opts.get("exit_mod")
        self.sleep = float(opts.get("sleep", 0.0))  # seconds per candidate: a slow benchmark (kill tests)

    def evaluate(self, generator, split=None, limit=None, seed=0) -> SuiteResult:
        if self.sleep:
            time.sleep(self.sleep)
        state = generator.model.state_dict()
        if (self.exit_mod or self.fail_mod) and (checksum := self._checksum(state)) not in self.checkpoints:
            bucket = int.from_bytes(checksum[:4], "big")
            if self.exit_mod and bucket % self.exit_mod == 0:
                os._exit(3)  # a worker dying mid-candidate (segfault, OOM kill)
            if self.fail_mod and bucket % self.fail_mod == 0:
                raise RuntimeError("deliberate failure for this candidate")
        items = [{"id": n} for n in self.names]
        chosen = subsample(split_items(items, split or self.config.split, self.config.search_fraction),
                           limit if limit is not None else self.config.limit, seed)
        results = []
        for it in chosen:
            n = it["id"]
            delta = state[n].float() - self.base[n].float()
            tau = self.tau[n]
            uptake = float((delta * tau).sum() / (tau * tau).sum())
            interference = float((delta - uptake * tau).norm()) / self.scale[n]
            score = uptake - 0.5 * interference
            results.append(ItemResult(n, score, score > 0.5, "ok"))
        return SuiteResult.from_items(self.name, results)

    def _checksum(self, state) -> bytes:
        return hashlib.sha256(b"".join(state[k].float().numpy().tobytes() for k in self.names)).digest()


class TextLikelihood:
    """options: texts (list of strings). Item score: exp(mean log p(token)) under the model."""

    def __init__(self, name: str, config):
        self.name = name
        self.config = config
        self.texts = list(config.options["texts"])

    def evaluate(self, generator, split=None, limit=None, seed=0) -> SuiteResult:
        items = [{"id": f"text-{i}", "text": t} for i, t in enumerate(self.texts)]
        chosen = subsample(split_items(items, split or self.config.split, self.config.search_fraction),
                           limit if limit is not None else self.config.limit, seed)
        results = []
        model, tok = generator.model, generator.tokenizer
        with torch.inference_mode():
            for it in chosen:
                ids = torch.tensor([tok(it["text"])["input_ids"]])
                logits = model(ids).logits[0, :-1].float()
                logp = torch.log_softmax(logits, -1).gather(1, ids[0, 1:, None]).mean()
                score = float(torch.exp(logp))
                results.append(ItemResult(it["id"], score, True, "ok"))
        return SuiteResult.from_items(self.name, results)


SUITES = {"uptake": TaskVectorUptake, "likelihood": TextLikelihood}


def suite_factory(name: str, config) -> Any:
    return SUITES[config.kind](name, config)


# task arithmetic with one weight per model and per layer (2 layers + the rest): 9 genes, no randomness
TA_WEIGHTS = {"name": "ta_weights", "layer_groups": {"count": 2},
              "methods": {"task_arithmetic": {"weight": {"low": 0.0, "high": 1.0, "per_model": True}}}}


def experiment_dict(family, tmp_path, **overrides) -> dict[str, Any]:
    """A small experiment over the tiny family: three weight-closeness objectives, 2 layer groups."""
    agents = ("coding", "tool_use", "memory")
    base = dict(
        name="test",
        base=str(family["base"]),
        models={a: str(family[a]) for a in agents},
        search_space=TA_WEIGHTS,
        objectives={a: {"kind": "uptake", "search_fraction": 0.6,
                        "options": {"target": str(family[a]), "base": str(family["base"]),
                                    "agents": [str(family[b]) for b in agents]}} for a in agents},
        optimizer={"name": "nsga2", "population": 6},
        budget=12,
        workers={"kind": "inline", "threads": 1},
        cache={"enabled": False, "dir": str(tmp_path / "cache")},
        seed=0,
    )
    for k, v in overrides.items():
        base[k] = v
    return base
