"""Build the zoo: tokenizer -> base (supervised) -> three GRPO agents -> held-out table + task-vector stats.

Deterministic from the seed on a given machine and thread count (torch's deterministic algorithms,
a fixed number of threads, seeded data streams and sampling). The output appears all at once:
everything is written into a temporary sibling directory that is renamed to DIR at the end.
"""

from __future__ import annotations

import contextlib
import json
import logging
import os
import platform
import shutil
import tempfile
import time
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any

import torch
from tqdm.auto import tqdm

from evomerge.errors import EvomergeError
from evomerge_zoo.families import FAMILIES, build_family_suite, reward_function
from evomerge_zoo.grpo import GRPOSettings, train_grpo
from evomerge_zoo.model import QUICK_SHAPE, ZooShape, new_model, round_to_bf16, save_checkpoint
from evomerge_zoo.pretrain import PretrainSettings, pretrain

log = logging.getLogger(__name__)

AGENTS = tuple(FAMILIES)  # coding, tool_use, memory
PAPER_DENSITY = {"coding": 0.032, "tool_use": 0.462, "memory": 0.543}  # RAM paper, Fig. 2 (Qwen2.5-7B agents)


@dataclass(frozen=True)
class ZooPlan:
    shape: ZooShape = ZooShape()
    vocab_size: int = 2048
    pretrain: PretrainSettings = PretrainSettings()
    # Share of flawed demonstrations per family. Memory's retrieval is the hardest skill to learn,
    # so it gets fewer flawed and more examples than the others.
    flaw_rates: dict[str, float] = field(default_factory=lambda: {"coding": 0.5, "tool_use": 0.5, "memory": 0.3})
    family_weights: dict[str, float] = field(default_factory=lambda: {"coding": 1.0, "tool_use": 1.0, "memory": 2.0})
    generic_share: float = 0.05
    # Memory's reward is the sparsest (one short value, right or wrong): measured on the seed-0 base, its
    # held-out sub_em moved 30.5 -> 29.7 % with the default 150 steps at lr 1e-3, and 30.5 -> 43.0 % with
    # 250 steps at lr 3e-3.
    grpo: dict[str, GRPOSettings] = field(default_factory=lambda: {
        "coding": GRPOSettings(), "tool_use": GRPOSettings(), "memory": GRPOSettings(steps=250, lr=3e-3)})
    eval_limit: int | None = None  # items per suite in the held-out table (None: the whole test split)
    # One thread: on 2 small cores, a 1M-parameter model gains little from a second thread, and on
    # a shared machine OpenMP's spinning threads made each step up to 10x slower (measured).
    threads: int = 1

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


FULL_PLAN = ZooPlan()
QUICK_PLAN = ZooPlan(
    shape=QUICK_SHAPE, vocab_size=2048,
    pretrain=PretrainSettings(steps=12, tokens_per_batch=2048, warmup=3),
    grpo={a: GRPOSettings(steps=3, prompts_per_step=4, group=4) for a in AGENTS},
    eval_limit=8,
)


def build_zoo(out_dir: str | Path, seed: int = 0, quick: bool = False, plan: ZooPlan | None = None,
              show_progress: bool = True) -> dict[str, Any]:
    """Write DIR/{base,coding,tool_use,memory} (bf16 HF checkpoints) and DIR/zoo.json; return zoo.json's content."""
    from evomerge_zoo.toy_data import check_toy_data, evaluation_keys

    plan = plan or (QUICK_PLAN if quick else FULL_PLAN)
    out_dir = Path(out_dir).expanduser().resolve()
    if out_dir.exists() and any(out_dir.iterdir()):
        raise EvomergeError(f"{out_dir} exists and is not empty; give a new directory")
    out_dir.parent.mkdir(parents=True, exist_ok=True)
    data = {family: check_toy_data(family) for family in AGENTS}  # before any work: the data must be right
    excluded = {family: evaluation_keys(family) for family in AGENTS}

    with _reproducible_torch(plan.threads):
        return _build(out_dir, seed, quick, plan, data, excluded, show_progress)


@contextlib.contextmanager
def _reproducible_torch(threads: int):
    """A fixed thread count, deterministic kernels and no per-load progress bars; restored afterwards."""
    from transformers.utils import logging as hf_logging

    previous = (torch.get_num_threads(), torch.are_deterministic_algorithms_enabled(),
                hf_logging.is_progress_bar_enabled())
    torch.set_num_threads(threads)
    torch.use_deterministic_algorithms(True)
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        torch.set_num_threads(previous[0])
        torch.use_deterministic_algorithms(previous[1])
        if previous[2]:
            hf_logging.enable_progress_bar()


def _build(out_dir: Path, seed: int, quick: bool, plan: ZooPlan, data: dict[str, Path],
           excluded: dict[str, set[str]], show_progress: bool) -> dict[str, Any]:
    from evomerge.analysis import analyze, report_to_dict
    from evomerge_zoo.encoding import end_of_turn_id
    from evomerge_zoo.heldout import format_table, score_table
    from evomerge_zoo.mixture import pretraining_examples, suite_prompts
    from evomerge_zoo.tokenizer import build_zoo_tokenizer

    started, cpu_started = time.perf_counter(), time.process_time()
    timings: dict[str, float] = {}
    total_units = 1 + plan.pretrain.steps + sum(plan.grpo[a].steps for a in AGENTS) + 4 * len(AGENTS)
    bar = tqdm(total=total_units, desc="zoo build", unit="step", disable=not show_progress)

    staging = Path(tempfile.mkdtemp(prefix=f".{out_dir.name}.partial-", dir=out_dir.parent))
    work = staging / ".work"
    work.mkdir()
    try:
        t = time.perf_counter()
        bar.set_postfix_str("tokenizer")
        tokenizer = build_zoo_tokenizer(plan.vocab_size)
        bar.update(1)
        timings["tokenizer"] = time.perf_counter() - t

        t = time.perf_counter()
        bar.set_postfix_str("pretraining the base")
        model = new_model(tokenizer, plan.shape, seed)
        examples = pretraining_examples(tokenizer, seed, plan.flaw_rates, excluded, work, plan.generic_share,
                                        plan.family_weights)
        losses = pretrain(model, examples, tokenizer.pad_token_id, plan.pretrain, seed, progress=bar.update)
        round_to_bf16(model)
        save_checkpoint(model, tokenizer, staging / "base")
        base_state = {k: v.clone() for k, v in model.state_dict().items()}
        timings["pretrain"] = time.perf_counter() - t

        stop_ids = [end_of_turn_id(tokenizer), tokenizer.eos_token_id]
        curves: dict[str, dict[str, list[float]]] = {}
        for i, agent in enumerate(AGENTS):
            t = time.perf_counter()
            bar.set_postfix_str(f"GRPO {agent}")
            model.load_state_dict(base_state)
            suite = build_family_suite(agent, data[agent])
            prompts = ((item, ids) for _, item, ids in
                       suite_prompts(agent, tokenizer, seed * 1000 + 100 + i, excluded[agent], work))
            history = train_grpo(model, tokenizer, prompts, reward_function(agent, suite),
                                 FAMILIES[agent].max_new_tokens, stop_ids, plan.grpo[agent], seed + 1 + i,
                                 progress=bar.update)
            save_checkpoint(model, tokenizer, staging / agent)
            curves[agent] = asdict(history)
            timings[f"grpo_{agent}"] = time.perf_counter() - t

        t = time.perf_counter()
        bar.set_postfix_str("held-out evaluation")
        suites = {family: build_family_suite(family, data[family]) for family in AGENTS}
        if plan.eval_limit:
            for suite in suites.values():
                suite.config = suite.config.model_copy(update={"limit": plan.eval_limit})
        models = {name: staging / name for name in ("base",) + AGENTS}
        table = score_table(models, suites, split="test", progress=bar.update)
        timings["evaluation"] = time.perf_counter() - t

        stats = report_to_dict(analyze(staging / "base", [staging / a for a in AGENTS]))
        bar.close()
        timings["total"] = time.perf_counter() - started
        summary = {
            "seed": seed,
            "quick": quick,
            "plan": plan.to_dict(),
            "seconds": {k: round(v, 1) for k, v in timings.items()},
            "cpu_seconds": round(time.process_time() - cpu_started, 1),
            "machine": {"cpus": os.cpu_count(), "threads": plan.threads, "platform": platform.platform(),
                        "torch": torch.__version__},
            # How the demo and the sweeps must configure the suites to score the zoo as it was trained.
            "suites": {family: FAMILIES[family].suite_config(f"evaluators/data/toy/{family}.jsonl")
                       for family in AGENTS},
            "heldout_test": table,
            "heldout_test_markdown": format_table(table),
            "pretrain_loss": [round(x, 4) for x in losses],
            "grpo": curves,
            "task_vectors": stats,
            "paper_density": PAPER_DENSITY,
            "parameters": sum(p.numel() for p in model.parameters()),
        }
        (staging / "zoo.json").write_text(json.dumps(summary, indent=1), encoding="utf-8")
        shutil.rmtree(work)
        if out_dir.exists():
            out_dir.rmdir()  # empty, checked above
        staging.rename(out_dir)
    except BaseException:
        bar.close()
        shutil.rmtree(staging, ignore_errors=True)
        raise
    return summary
