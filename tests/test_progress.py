"""Progress bars: off when stderr is no terminal or TQDM_DISABLE is set, `evaluate --no-progress`, and the
libraries' own bars and INFO lines (transformers' "Loading weights", vLLM's "Processed prompts") silenced
with ours. The vLLM backend's switches are tested against a stand-in `vllm` module: the real one runs
only in CI's separate environment (tests/test_vllm_backend.py)."""

from __future__ import annotations

import dataclasses
import fcntl
import io
import logging
import os
import pty
import struct
import subprocess
import sys
import termios
import types
from pathlib import Path

import pytest
import yaml


REPO = Path(__file__).resolve().parents[1]
AGENTS = ("coding", "tool_use", "memory")


class _Stream(io.StringIO):
    def __init__(self, tty: bool):
        super().__init__()
        self.tty = tty

    def isatty(self):
        return self.tty


def test_the_rule(monkeypatch):
    from evaluators.progress import progress_allowed, tqdm_disabled_by_env

    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    assert progress_allowed(True, _Stream(tty=True))
    assert not progress_allowed(False, _Stream(tty=True))
    assert not progress_allowed(True, _Stream(tty=False))  # a log file or a pipe
    assert progress_allowed(True, _Stream(tty=False), need_terminal=False)
    assert not progress_allowed(True, object())  # a replaced sys.stderr without isatty
    for value, disabled in (("1", True), ("true", True), ("0", True), ("", False)):  # tqdm's own reading
        monkeypatch.setenv("TQDM_DISABLE", value)
        assert tqdm_disabled_by_env() is disabled
        assert progress_allowed(True, _Stream(tty=True)) is not disabled


def _env(**extra) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if k not in ("TQDM_DISABLE", "HF_HUB_DISABLE_PROGRESS_BARS")}
    env["PYTHONPATH"] = os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])
    return {**env, **extra}


def _run_cli(argv, terminal: bool, **env) -> tuple[int, str]:
    """Run `evomerge ARGV` with stderr on a pseudo-terminal (terminal=True) or a pipe; (exit code, stderr)."""
    cmd = [sys.executable, "-m", "evomerge", *map(str, argv)]
    if not terminal:
        done = subprocess.run(cmd, env=_env(**env), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE,
                              text=True, timeout=600)
        return done.returncode, done.stderr
    master, slave = pty.openpty()
    # a new pseudo-terminal is 0 columns wide, and tqdm draws a bar as wide as the terminal: make it 120
    fcntl.ioctl(slave, termios.TIOCSWINSZ, struct.pack("HHHH", 40, 120, 0, 0))
    proc = subprocess.Popen(cmd, env=_env(**env), stdout=subprocess.DEVNULL, stderr=slave)
    os.close(slave)
    chunks = []
    while True:
        try:
            data = os.read(master, 65536)
        except OSError:  # EIO: the child closed its end
            break
        if not data:
            break
        chunks.append(data)
    os.close(master)
    return proc.wait(timeout=600), b"".join(chunks).decode(errors="replace")


@pytest.fixture(scope="module")
def recipe(tiny_family, tmp_path_factory):
    path = tmp_path_factory.mktemp("progress") / "recipe.yaml"
    path.write_text(yaml.safe_dump({"base": str(tiny_family["base"]), "models": [str(tiny_family[a]) for a in AGENTS],
                                    "method": "ties", "parameters": {"density": 0.5}}))
    return path


@pytest.mark.parametrize("terminal, env, shown", [
    (True, {}, True),                         # a person at a terminal sees the bar
    (False, {}, False),                       # a log file or a pipe does not get one
    (True, {"TQDM_DISABLE": "1"}, False),     # tqdm's switch
])
def test_merge_bar_follows_the_terminal_and_tqdm_disable(recipe, tmp_path, terminal, env, shown):
    rc, err = _run_cli(["merge", recipe, tmp_path / "out", "--device", "cpu"], terminal, **env)
    assert rc == 0, err
    assert ("merging" in err) is shown, err


@pytest.mark.parametrize("flag, shown", [([], True), (["--no-progress"], False)])
def test_evaluate_no_progress_silences_ours_and_transformers_bars(tmp_path, flag, shown):
    config = tmp_path / "suites.yaml"
    config.write_text(yaml.safe_dump({"suites": {"memory": {"kind": "memory", "data": "toy", "chat": True,
                                                            "generation": {"max_new_tokens": 2}}}}))
    rc, err = _run_cli(["evaluate", REPO / "zoo" / "base", "--config", config, "--suite", "memory", "--limit", "4",
                        "--batch-size", "2", "--device", "cpu", *flag], terminal=True)
    assert rc == 0, err
    assert ("Loading weights" in err) is shown, err  # transformers' own bar
    assert ("generate (hf)" in err) is shown, err  # ours, per generate call


def test_hf_backend_restores_transformers_bars(tiny_family):
    from transformers.utils import logging as hf_logging

    from evaluators.backends.hf import HFGenerator
    from evaluators.progress import transformers_bars

    assert hf_logging.is_progress_bar_enabled()
    with transformers_bars(False):
        assert not hf_logging.is_progress_bar_enabled()
    assert hf_logging.is_progress_bar_enabled()
    gen = HFGenerator(tiny_family["base"], device="cpu", progress=False)
    assert not gen.progress and hf_logging.is_progress_bar_enabled()


# -- the vLLM backend's switches, against a stand-in vllm module ---------------------------------------------


@dataclasses.dataclass
class _EngineArgs:
    model: str = ""
    use_tqdm_on_load: bool = True


class _FakeLLM:
    made: list["_FakeLLM"] = []

    def __init__(self, **kwargs):
        self.kwargs = kwargs
        self.logging_level_env = os.environ.get("VLLM_LOGGING_LEVEL")
        self.generate_calls: list[bool] = []
        config = types.SimpleNamespace(model_config=types.SimpleNamespace(max_model_len=512),
                                       parallel_config=types.SimpleNamespace(distributed_executor_backend="uni"))
        self.llm_engine = types.SimpleNamespace(vllm_config=config)
        _FakeLLM.made.append(self)

    def get_tokenizer(self):
        from transformers import AutoTokenizer

        return AutoTokenizer.from_pretrained(str(REPO / "zoo" / "base"))

    def generate(self, prompts, params, use_tqdm=True):
        self.generate_calls.append(use_tqdm)
        done = types.SimpleNamespace(index=0, token_ids=[1, 2], finish_reason="length", stop_reason=None)
        return [types.SimpleNamespace(outputs=[done]) for _ in prompts]


@pytest.fixture()
def fake_vllm(monkeypatch):
    def module(name, **attrs):
        mod = types.ModuleType(name)
        mod.__dict__.update(attrs)
        monkeypatch.setitem(sys.modules, name, mod)
        return mod

    module("vllm", LLM=_FakeLLM, SamplingParams=lambda **kw: kw)
    module("vllm.inputs", TokensPrompt=lambda **kw: kw)
    module("vllm.platforms", current_platform=types.SimpleNamespace(is_cpu=lambda: True, device_type="cpu"))
    module("vllm.engine")
    module("vllm.engine.arg_utils", EngineArgs=_EngineArgs)
    monkeypatch.delenv("TQDM_DISABLE", raising=False)
    monkeypatch.delenv("VLLM_LOGGING_LEVEL", raising=False)
    vllm_logger = logging.getLogger("vllm")
    saved = vllm_logger.level
    vllm_logger.setLevel(logging.INFO)  # as vLLM configures it
    _FakeLLM.made.clear()
    yield
    vllm_logger.setLevel(saved)


def _requests(n):
    from evaluators.protocol import Request

    return [Request(id=str(i), prompt=f"question {i}") for i in range(n)]


def test_vllm_without_progress_has_no_bars_and_no_info_lines(fake_vllm):
    from evaluators.backends.vllm import VLLMGenerator
    from evaluators.protocol import GenerationSettings

    gen = VLLMGenerator(REPO / "zoo" / "base", progress=False)
    llm = _FakeLLM.made[-1]
    assert llm.kwargs["use_tqdm_on_load"] is False  # the weight-loading bars
    assert llm.logging_level_env == "WARNING"  # engine processes configure their logging from it
    assert os.environ.get("VLLM_LOGGING_LEVEL") is None  # only while the engine starts
    assert logging.getLogger("vllm").getEffectiveLevel() == logging.WARNING  # no INFO lines in this process
    gen.generate(_requests(20), GenerationSettings(max_new_tokens=2))
    assert llm.generate_calls == [False]  # no "Processed prompts" bar


def test_vllm_with_progress_keeps_vllms_defaults(fake_vllm):
    from evaluators.backends.vllm import VLLMGenerator
    from evaluators.protocol import GenerationSettings

    gen = VLLMGenerator(REPO / "zoo" / "base")
    llm = _FakeLLM.made[-1]
    assert "use_tqdm_on_load" not in llm.kwargs and llm.logging_level_env is None
    assert logging.getLogger("vllm").getEffectiveLevel() == logging.INFO
    gen.generate(_requests(20), GenerationSettings(max_new_tokens=2))
    gen.generate(_requests(3), GenerationSettings(max_new_tokens=2))
    assert llm.generate_calls == [True, False]  # a bar for a long call only, as before


def test_a_search_worker_builds_the_vllm_backend_without_progress(fake_vllm):
    from evomerge.workers import default_generator_factory

    gen = default_generator_factory(str(REPO / "zoo" / "base"), "cpu", {"backend": "vllm"})
    assert gen.progress is False and _FakeLLM.made[-1].kwargs["use_tqdm_on_load"] is False


def test_vllm_load_options_only_when_the_version_has_them():
    from evaluators.progress import vllm_load_options

    assert vllm_load_options({"model", "use_tqdm_on_load"}, progress=False) == {"use_tqdm_on_load": False}
    assert vllm_load_options({"model"}, progress=False) == {}
    assert vllm_load_options({"model", "use_tqdm_on_load"}, progress=True) == {}


@pytest.mark.parametrize("on_cpu", [True, False])
def test_vllm_keeps_cuda_graphs_on_a_gpu_and_runs_eager_on_a_cpu(fake_vllm, on_cpu):
    from evaluators.backends.vllm import VLLMGenerator

    platform = sys.modules["vllm.platforms"].current_platform
    platform.is_cpu, platform.device_type = (lambda: on_cpu), ("cpu" if on_cpu else "cuda")
    VLLMGenerator(REPO / "zoo" / "base", progress=False)
    assert _FakeLLM.made[-1].kwargs["enforce_eager"] is on_cpu
    VLLMGenerator(REPO / "zoo" / "base", progress=False, enforce_eager=True)  # an explicit choice wins
    assert _FakeLLM.made[-1].kwargs["enforce_eager"] is True
