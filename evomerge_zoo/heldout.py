"""Score checkpoints on the toy suites through the real evaluation path: HF backend + the suites' `evaluate`.

This is the table the zoo reports (each model x each family, mean +- standard error on a split),
measured exactly as a search measures a merge: greedy decoding, the suite's prompt and scorer.
"""

from __future__ import annotations

from pathlib import Path
from typing import Callable, Mapping


def score_table(models: Mapping[str, Path], suites: Mapping[str, object], split: str = "test",
                batch_size: int = 64, progress: Callable[[int], None] | None = None) -> dict[str, dict[str, dict]]:
    """{model: {suite: {"mean", "stderr", "n"}}} for every model directory and suite, on `split`."""
    from evaluators.backends.hf import HFGenerator

    table: dict[str, dict[str, dict]] = {}
    for model_name, path in models.items():
        generator = HFGenerator(path, batch_size=batch_size, device="cpu", progress=False)  # the caller shows progress
        table[model_name] = {}
        for suite_name, suite in suites.items():
            result = suite.evaluate(generator, split=split)
            table[model_name][suite_name] = {"mean": result.mean, "stderr": result.stderr, "n": result.n}
            if progress:
                progress(1)
    return table


def format_table(table: Mapping[str, Mapping[str, Mapping]], title: str = "") -> str:
    """A Markdown table: rows = models, columns = suites, cells = mean +- stderr (in %)."""
    suites = list(next(iter(table.values())))
    lines = [title] if title else []
    lines.append("| model | " + " | ".join(suites) + " |")
    lines.append("|---|" + "---|" * len(suites))
    for model, row in table.items():
        cells = [f"{100 * row[s]['mean']:.1f} ± {100 * row[s]['stderr']:.1f}" for s in suites]
        lines.append(f"| {model} | " + " | ".join(cells) + " |")
    return "\n".join(lines)
