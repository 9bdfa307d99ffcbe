"""Deprecated path, kept importable for one release: the search loop lives in `evomerge.search.loop`
(references and constraints: `evomerge.search.references`; resume: `evomerge.search.resume`; the run
record: `evomerge.search.record`; scoring: `evomerge.scoring`)."""

from evomerge.search.loop import RunSummary, SearchLoop, StalledError, run_search  # noqa: F401

SearchRunner = SearchLoop
