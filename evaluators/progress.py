"""When progress bars show, for evomerge's own bars and for the libraries it drives.

The rule (the `evomerge` command applies it to every subcommand's --no-progress):
- a bar shows only when asked for (no --no-progress / `progress=True`),
- and `TQDM_DISABLE` is not set: tqdm's own switch, read as tqdm reads it (any non-empty value,
  "0" included, disables; tqdm ignores it whenever a caller passes `disable=` itself, as ours do);
- and, for the command line, only when stderr is a terminal: a bar redrawn into a log file or a
  pipe is hundreds of lines of noise.
When bars are off, the libraries' own output is silenced through their public switches as well:
transformers' (and huggingface_hub's) bars such as "Loading weights", and vLLM's "Processed prompts"
bar, its weight-loading bars and its INFO lines.
"""

from __future__ import annotations

import contextlib
import logging
import os
import sys
from collections.abc import Iterator
from typing import IO, Any

HUB_BARS_ENV = "HF_HUB_DISABLE_PROGRESS_BARS"  # read by huggingface_hub (and so transformers) at import


def tqdm_disabled_by_env() -> bool:
    """TQDM_DISABLE as tqdm itself reads it (tqdm.utils.envwrap casts the string to bool: non-empty = on)."""
    return bool(os.environ.get("TQDM_DISABLE"))


def progress_allowed(requested: bool = True, stream: IO[str] | None = None, need_terminal: bool = True) -> bool:
    """Whether a progress bar should show (see the module docstring). `stream` defaults to stderr, where
    tqdm draws; `need_terminal=False` skips the terminal test (a library caller that asked explicitly)."""
    if not requested or tqdm_disabled_by_env():
        return False
    if not need_terminal:
        return True
    stream = sys.stderr if stream is None else stream
    try:
        return bool(stream.isatty())
    except (AttributeError, ValueError):  # no isatty, or a closed stream
        return False


@contextlib.contextmanager
def transformers_bars(enabled: bool) -> Iterator[None]:
    """transformers' and huggingface_hub's progress bars on or off within the block, as they were after.
    Uses transformers.utils.logging.disable_progress_bar (which also turns huggingface_hub's off)."""
    if enabled:
        yield
        return
    from transformers.utils import logging as hf_logging

    was_enabled = hf_logging.is_progress_bar_enabled()
    hf_logging.disable_progress_bar()
    try:
        yield
    finally:
        if was_enabled:
            hf_logging.enable_progress_bar()


@contextlib.contextmanager
def quiet_libraries(enabled_bars: bool) -> Iterator[None]:
    """For a whole command: with bars off, transformers' bars are off in this process and in the worker
    processes it starts (huggingface_hub's environment switch, inherited by children), until the block
    ends. With bars on it changes nothing."""
    if enabled_bars:
        yield
        return
    saved = os.environ.get(HUB_BARS_ENV)
    os.environ[HUB_BARS_ENV] = "1"
    try:
        if "transformers" in sys.modules:  # imported already: the environment switch was read at import
            with transformers_bars(False):
                yield
        else:
            yield
    finally:
        if saved is None:
            os.environ.pop(HUB_BARS_ENV, None)
        else:
            os.environ[HUB_BARS_ENV] = saved


def quiet_vllm() -> None:
    """vLLM's INFO lines (several per engine start and weight reload) off: its loggers live under the
    "vllm" logger, which vLLM configures at INFO (VLLM_LOGGING_LEVEL); warnings and errors still show.
    Process-wide, as vLLM's own setting is."""
    logging.getLogger("vllm").setLevel(logging.WARNING)


def vllm_load_options(engine_arg_names: set[str], progress: bool) -> dict[str, Any]:
    """Engine arguments that turn vLLM's weight-loading bars off when `progress` is False, among the
    ones this vLLM version accepts (`use_tqdm_on_load` is an EngineArgs field since vLLM 0.8)."""
    if progress or "use_tqdm_on_load" not in engine_arg_names:
        return {}
    return {"use_tqdm_on_load": False}
