"""The cross-run evaluation cache and what its keys are made of (content fingerprints, not paths)."""

from __future__ import annotations

import hashlib
import json
import logging
import os
from pathlib import Path
from typing import Any, Iterable, Mapping

from evomerge.io.atomic import canonical_json, write_json_atomic
from evomerge.scoring.outcomes import Producer

log = logging.getLogger(__name__)

CACHE_FORMAT = 2  # bump when a cached entry's layout or meaning changes (2: suite results name their scoring;
#   tool_use lenient relevance / irrelevance and the memory F1 were corrected)
PRODUCER_FIELD = "producer"  # beside a cached SuiteResult: what produced it (absent in older entries)


class EvalCache:
    """Suite results keyed by a content hash of what determines them; shared by every run on the machine.

    The key covers the merged weights (the recipe with checkpoint paths replaced by content
    fingerprints, or a reference checkpoint's fingerprint), the suite configuration, the data slice
    (split, limit, subset seed), the generation backend settings and the cache format. One entry per
    suite, so changing one objective keeps the others' cached scores.
    """

    def __init__(self, directory: str | Path | None = None, enabled: bool = True):
        self.enabled = enabled
        self.dir = Path(directory).expanduser() if directory else default_cache_dir()
        self.hits = 0
        self.misses = 0

    @staticmethod
    def key(weights_identity: Mapping[str, Any], suite: Mapping[str, Any], split: str, limit: int | None, seed: int,
            generator: Mapping[str, Any]) -> str:
        payload = {"format": CACHE_FORMAT, "weights": weights_identity, "suite": suite, "split": split,
                   "limit": limit, "seed": seed, "generator": generator}
        return hashlib.sha256(canonical_json(payload).encode()).hexdigest()

    def _path(self, key: str) -> Path:
        return self.dir / "evals" / key[:2] / f"{key}.json"

    def get(self, key: str) -> dict[str, Any] | None:
        """The cached SuiteResult dict (without its producer; see `get_with_producer`)."""
        hit = self.get_with_producer(key)
        return None if hit is None else hit[0]

    def get_with_producer(self, key: str) -> tuple[dict[str, Any], Producer | None] | None:
        if not self.enabled:
            return None
        path = self._path(key)
        try:
            data = json.loads(path.read_text())
        except FileNotFoundError:
            self.misses += 1
            return None
        except (OSError, ValueError) as exc:  # a damaged entry is recomputed, never trusted
            log.warning("evaluation cache entry %s is unreadable (%s); recomputing", path, exc)
            self.misses += 1
            return None
        self.hits += 1
        producer = data.pop(PRODUCER_FIELD, None)
        return data, (Producer.from_dict(producer) if isinstance(producer, Mapping) else None)

    def put(self, key: str, result: Mapping[str, Any], producer: Producer | None = None) -> None:
        if self.enabled:
            entry = dict(result) if producer is None else {**result, PRODUCER_FIELD: producer.to_dict()}
            write_json_atomic(self._path(key), entry)


def default_cache_dir() -> Path:
    env = os.environ.get("EVOMERGE_CACHE")
    if env:
        return Path(env).expanduser()
    xdg = os.environ.get("XDG_CACHE_HOME")
    return (Path(xdg).expanduser() if xdg else Path.home() / ".cache") / "evomerge"


def fingerprints(paths: Iterable[str]) -> dict[str, str]:
    """Checkpoint path -> content fingerprint (what cache keys name)."""
    from evomerge.checkpoint import Checkpoint

    return {p: Checkpoint.open(p).fingerprint for p in paths}


def weights_identity(recipe: Mapping[str, Any] | None, fingerprints: Mapping[str, str],
                     checkpoint: str | None = None) -> dict[str, Any]:
    """What determines the merged weights: the recipe with every checkpoint path replaced by its content
    fingerprint (so moving a checkpoint keeps its cache entries) and the methods' numerics version, or
    one checkpoint's fingerprint."""
    from evomerge.methods import NUMERICS_VERSION

    if checkpoint is not None:
        return {"checkpoint": fingerprints[checkpoint]}
    assert recipe is not None
    out = dict(recipe)
    if out.get("base") is not None:
        out["base"] = fingerprints[out["base"]]
    out["models"] = [fingerprints[m] for m in out["models"]]
    return {"recipe": out, "numerics": NUMERICS_VERSION}
