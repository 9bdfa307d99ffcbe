"""The benchmark suites and generation backends by name, and suite configurations from YAML.

Two explicit tables of "module:attribute" strings. A module is imported only when its entry is
used, so listing the vLLM backend costs nothing on a machine without vLLM, and a suite whose
module is missing gives a clear error instead of breaking the others.
"""

from __future__ import annotations

import importlib
import inspect
import logging
from pathlib import Path
from typing import Any, Mapping

from pydantic import ValidationError

from evaluators.errors import SuiteConfigError, describe_validation
from evaluators.suites.base import SuiteConfig

log = logging.getLogger(__name__)

# kind -> suite class (an ItemSuite / Evaluator taking a SuiteConfig)
SUITES: dict[str, str] = {
    "coding": "evaluators.suites.coding:CodingSuite",
    "tool_use": "evaluators.suites.tool_use:ToolUseSuite",
    "memory": "evaluators.suites.memory:MemorySuite",
}

# name -> generator factory called as factory(model, **options); `replay` is not here: it reads completions, not a model
BACKENDS: dict[str, str] = {
    "hf": "evaluators.backends.hf:HFGenerator",
    "vllm": "evaluators.backends.vllm:VLLMGenerator",
}


def _resolve(table: Mapping[str, str], name: str, what: str) -> Any:
    if name not in table:
        raise SuiteConfigError(f"unknown {what} {name!r}; available: {', '.join(sorted(table))}")
    module_name, attribute = table[name].split(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise SuiteConfigError(f"the {what} {name!r} is not available here: importing {module_name} failed "
                               f"({exc}); install what it needs (see README)") from exc
    return getattr(module, attribute)


def suite_class(kind: str) -> type:
    return _resolve(SUITES, kind, "suite")


def backend_factory(name: str) -> Any:
    return _resolve(BACKENDS, name, "backend")


def parse_suite_config(name: str, raw: Any, source: str = "suite configuration") -> SuiteConfig:
    """A YAML mapping (or None) for suite `name` -> a validated SuiteConfig; `kind` defaults to the name."""
    if isinstance(raw, SuiteConfig):
        return raw
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise SuiteConfigError(f"{source}: suite {name!r} must be a mapping of settings, got {type(raw).__name__}")
    if "kind" not in raw and name not in SUITES:
        raise SuiteConfigError(f"{source}: unknown suite {name!r} (and no 'kind' given); "
                               f"available: {', '.join(sorted(SUITES))}")
    try:
        config = SuiteConfig.model_validate({"kind": name, **raw})
    except ValidationError as exc:
        raise SuiteConfigError(f"{source}: invalid settings for suite {name!r}: {describe_validation(exc)}") from None
    if config.kind not in SUITES:
        raise SuiteConfigError(f"{source}: suite {name!r} has unknown kind {config.kind!r}; "
                               f"available: {', '.join(sorted(SUITES))}")
    return config


def scoring_of(config: SuiteConfig) -> str:
    """The scoring rule a suite configuration selects ("" for suites with one rule), without building the suite:
    what reports and tables print next to a score (tool_use: its rule and prompt, e.g. "bfcl (prompt: bfcl)";
    memory: sub_em | ruler_exact).

    Read from the options as written, else the suite's default; the suite itself validates the value. A kind
    outside the registry (a suite passed in by a program) has no known rule: ""."""
    if config.kind not in SUITES:
        return ""
    cls = suite_class(config.kind)
    if hasattr(cls, "scoring_of_options"):  # a suite whose label names more than the rule (tool_use: the prompt)
        return str(cls.scoring_of_options(config.options))
    options_model = getattr(cls, "options_model", None)
    field = options_model.model_fields.get("scoring") if options_model is not None else None
    if field is None:
        return ""
    return str(config.options.get("scoring", field.default))


def build_suite(name_or_config: str | Mapping[str, Any] | SuiteConfig, name: str | None = None):
    """A suite instance from a registry kind ('coding'), a settings mapping, or a SuiteConfig.

    The instance's `name` (used in results) is `name` when given, else its kind.
    """
    if isinstance(name_or_config, str):
        config = parse_suite_config(name_or_config, None, "build_suite")
    elif isinstance(name_or_config, SuiteConfig):
        config = name_or_config
    elif isinstance(name_or_config, Mapping):
        if "kind" not in name_or_config and name is None:
            raise SuiteConfigError("a suite configuration needs a 'kind' (one of "
                                   f"{', '.join(sorted(SUITES))}) or a name")
        config = parse_suite_config(name or name_or_config["kind"], name_or_config)
    else:
        raise SuiteConfigError(f"cannot build a suite from {type(name_or_config).__name__}")
    suite = suite_class(config.kind)(config)
    suite.name = name or config.kind
    return suite


def load_suite_configs(source: str | Path | Mapping[str, Any]) -> dict[str, SuiteConfig]:
    """Named suite configurations from a YAML file (or its parsed mapping).

    The file is either an experiment YAML with a `suites:` mapping, or that mapping alone:

        suites:
          coding: {limit: 40}                          # kind defaults to the name
          coding_toy: {kind: coding, data: toy, split: test}
          memory: {options: {mode: memory_agent}}
    """
    if isinstance(source, Mapping):
        where, payload = "suite configuration", source
    else:
        import yaml

        path = Path(source)
        where = str(path)
        if not path.is_file():
            raise SuiteConfigError(f"suite configuration file {path} does not exist")
        try:
            payload = yaml.safe_load(path.read_text(encoding="utf-8"))
        except yaml.YAMLError as exc:
            raise SuiteConfigError(f"{path} is not valid YAML: {exc}") from None
    if isinstance(payload, Mapping) and "suites" in payload:
        payload = payload["suites"]
    if not isinstance(payload, Mapping) or not payload:
        raise SuiteConfigError(f"{where}: expected a non-empty mapping of suite name -> settings (or a 'suites:' key)")
    return {str(name): parse_suite_config(str(name), raw, where) for name, raw in payload.items()}


def build_backend(name: str, model: Any, **options: Any):
    """A generator from the BACKENDS table; options the backend does not take are dropped (with a log line)."""
    factory = backend_factory(name)
    accepted = inspect.signature(factory).parameters
    takes_any = any(p.kind is inspect.Parameter.VAR_KEYWORD for p in accepted.values())
    used = {k: v for k, v in options.items() if v is not None and (takes_any or k in accepted)}
    dropped = sorted(k for k, v in options.items() if v is not None and k not in used)
    if dropped:
        log.info("backend %s ignores the options %s", name, ", ".join(dropped))
    return factory(model, **used)
