"""The installed wheel, not the checkout: build it, install it in a fresh venv and search from elsewhere.

A non-editable install used to miss the bundled search spaces (search_spaces/ sat outside the
package), so `search_space: method_per_layer` - the default - failed with "no bundled search space
named ...; known: " and an empty list.

Installing torch, transformers and the rest from the registry into the fresh venv takes minutes on
the 2-core machine (234 s measured), so by default the venv gets the
dependencies from the running environment's site-packages through a .pth file written after the
wheel is installed (so pip never sees them). Only directories are added that way: the editable
install's own .pth (which points at the checkout) is not processed, and the test checks that
`evomerge` is imported from the venv. EVOMERGE_WHEEL_TEST_FULL_INSTALL=1 installs the dependencies
from the registry instead (CPU torch first), as a new user would.
"""

from __future__ import annotations

import json
import os
import shutil
import subprocess
import sys
import sysconfig
import venv
from pathlib import Path

import pytest
import yaml

REPO = Path(__file__).resolve().parents[1]
# what the wheel is built from (a copy, so the build's build/ and *.egg-info never land in the checkout)
SOURCES = ("pyproject.toml", "setup.py", "README.md", "evomerge", "evaluators", "search_spaces")
FULL_INSTALL = os.environ.get("EVOMERGE_WHEEL_TEST_FULL_INSTALL") == "1"

pytestmark = pytest.mark.slow


def _run(cmd, cwd, env, timeout=900):
    done = subprocess.run([str(c) for c in cmd], cwd=cwd, env=env, capture_output=True, text=True, timeout=timeout)
    assert done.returncode == 0, f"{cmd} failed ({done.returncode}):\n{done.stdout[-3000:]}\n{done.stderr[-3000:]}"
    return done


def _clean_env() -> dict[str, str]:
    # nothing that points back at the checkout or the test's environment
    env = {k: v for k, v in os.environ.items() if k not in ("PYTHONPATH", "PYTHONHOME", "VIRTUAL_ENV")}
    env["PYTHONNOUSERSITE"] = "1"
    return env


def _build_wheel(tmp: Path, env) -> Path:
    src = tmp / "src"
    src.mkdir()
    for name in SOURCES:
        if not (REPO / name).exists():
            continue
        if (REPO / name).is_dir():
            shutil.copytree(REPO / name, src / name, ignore=shutil.ignore_patterns("__pycache__", "*.pyc"))
        else:
            shutil.copy2(REPO / name, src / name)
    try:  # the running environment's setuptools when it is recent enough: no registry needed
        import setuptools

        isolation = [] if int(setuptools.__version__.split(".")[0]) >= 68 else None
    except ImportError:
        isolation = None
    flags = ["--no-build-isolation"] if isolation is not None else []
    _run([sys.executable, "-m", "pip", "wheel", "--no-deps", *flags, "-w", tmp / "dist", src], tmp, env)
    (wheel,) = (tmp / "dist").glob("evomerge-*.whl")
    return wheel


def _site_packages(python: Path, env) -> Path:
    out = _run([python, "-c", "import sysconfig; print(sysconfig.get_paths()['purelib'])"], python.parent, env)
    return Path(out.stdout.strip())


@pytest.fixture(scope="module")
def installed(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("wheel")
    env = _clean_env()
    wheel = _build_wheel(tmp, env)
    target = tmp / "venv"
    venv.EnvBuilder(with_pip=True, clear=True).create(target)
    python = target / "bin" / "python"
    if FULL_INSTALL:
        _run([python, "-m", "pip", "install", "-q", "torch==2.13.0"], tmp, env, timeout=3600)
        _run([python, "-m", "pip", "install", "-q", wheel], tmp, env, timeout=3600)
    else:
        _run([python, "-m", "pip", "install", "-q", "--no-deps", "--no-index", wheel], tmp, env)
        here = {Path(p) for p in (sysconfig.get_paths()["purelib"], sysconfig.get_paths()["platlib"])}
        (_site_packages(python, env) / "_evomerge_test_deps.pth").write_text(
            "".join(f"{p}\n" for p in sorted(here)))
    return {"tmp": tmp, "python": python, "bin": target / "bin", "env": env, "wheel": wheel}


def test_the_wheel_ships_the_bundled_search_spaces(installed):
    import zipfile

    names = set(zipfile.ZipFile(installed["wheel"]).namelist())
    for space in sorted((REPO / "search_spaces").glob("*.yaml")):
        assert f"evomerge/search_spaces/{space.name}" in names


def test_python_m_evomerge_is_the_installed_cli(installed):
    outside = installed["tmp"]
    where = _run([installed["python"], "-c", "import evomerge; print(evomerge.__file__)"], outside, installed["env"])
    assert Path(where.stdout.strip()).is_relative_to(installed["tmp"] / "venv"), where.stdout
    assert not Path(where.stdout.strip()).is_relative_to(REPO)
    version = _run([installed["python"], "-m", "evomerge", "--version"], outside, installed["env"])
    assert version.stdout.startswith("evomerge ")
    usage = subprocess.run([installed["python"], "-m", "evomerge", "no-such-command"], cwd=outside,
                           env=installed["env"], capture_output=True, text=True)
    assert usage.returncode == 2 and "invalid choice" in usage.stderr


def test_installed_search_with_a_bundled_space_on_the_zoo(installed):
    outside = installed["tmp"] / "elsewhere"
    outside.mkdir()
    exp = {
        "name": "wheel",
        "base": str(REPO / "zoo" / "base"),
        "models": {a: str(REPO / "zoo" / a) for a in ("coding", "tool_use", "memory")},
        "search_space": "method_per_layer",  # the default, from the installed package
        "space": {"layer_groups": {"count": 1}},
        "objectives": {
            "tool_use": {"kind": "tool_use", "data": "toy", "chat": True, "limit": 2, "generation": {"max_new_tokens": 8}},
            "memory": {"kind": "memory", "data": "toy", "chat": True, "limit": 2, "generation": {"max_new_tokens": 4}},
        },
        "optimizer": {"name": "random", "population": 2},
        "budget": 2,
        "references": False,
        "heldout": {"enabled": False},
        "workers": {"kind": "inline", "threads": 1},
        "cache": {"enabled": False},
    }
    (outside / "exp.yaml").write_text(yaml.safe_dump(exp))
    _run([installed["bin"] / "evomerge", "search", "exp.yaml", "--out", "run", "--no-progress"],
         outside, installed["env"])
    front = json.loads((outside / "run" / "front.json").read_text())
    assert front["members"]
    assert len((outside / "run" / "trials.csv").read_text().splitlines()) == 1 + 2
