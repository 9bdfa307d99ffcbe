"""`evomerge merge` never writes over its inputs, cleans up after SIGTERM / SIGHUP / kill -9, turns file
system failures into one-line errors naming the output, and exits 2 only for usage errors.

Each case here reproduced a defect first: the base replaced by `--overwrite`, the staging directory
left behind by SIGTERM, tracebacks for a read-only folder, a full disk, a file-size limit, a `--out`
that is a file and a study.db that is no database, and `-v` refused after the subcommand.
"""

from __future__ import annotations

import fcntl
import hashlib
import os
import resource
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest
import yaml

from evomerge.cli import main

AGENTS = ("coding", "tool_use", "memory")
REPO = Path(__file__).resolve().parents[1]


def _recipe(tmp_path: Path, family, **fields) -> Path:
    data = {"base": str(family["base"]), "models": [str(family[a]) for a in AGENTS], "method": "ties",
            "parameters": {"density": 0.5}, **fields}
    path = tmp_path / "recipe.yaml"
    path.write_text(yaml.safe_dump(data))
    return path


def _digest(folder: Path) -> dict[str, str]:
    return {p.name: hashlib.sha256(p.read_bytes()).hexdigest() for p in sorted(folder.iterdir()) if p.is_file()}


def _debris(parent: Path, name: str) -> list[str]:
    return sorted(p.name for p in parent.iterdir() if p.name.startswith(f".{name}."))


def _env() -> dict[str, str]:
    return {**os.environ, "PYTHONPATH": os.pathsep.join([str(REPO), os.environ.get("PYTHONPATH", "")])}


def _one_line_error(err: str, path) -> None:
    lines = [line for line in err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: ") and str(path) in lines[0], err
    assert "Traceback" not in err


# -- the output must not be, contain or lie inside an input -------------------------------------------


@pytest.fixture()
def family_copy(tiny_family, tmp_path):
    """A private copy of the tiny family (these tests try to overwrite inputs)."""
    import shutil

    root = tmp_path / "family"
    return {k: Path(shutil.copytree(v, root / k)) for k, v in tiny_family.items()}


@pytest.mark.parametrize("target", ["base", "agent", "inside base", "family root", "symlink to base"])
def test_the_output_cannot_be_contain_or_lie_inside_an_input(family_copy, tmp_path, capsys, target):
    recipe = _recipe(tmp_path, family_copy)
    before = {k: _digest(v) for k, v in family_copy.items()}
    link = tmp_path / "link"
    link.symlink_to(family_copy["base"])
    out = {"base": family_copy["base"], "agent": family_copy["memory"], "inside base": family_copy["base"] / "merged",
           "family root": family_copy["base"].parent, "symlink to base": link}[target]
    assert main(["merge", str(recipe), str(out), "--device", "cpu", "--no-progress", "--overwrite"]) == 1
    err = capsys.readouterr().err
    assert "write the merge to another directory" in err
    _one_line_error(err, out)
    assert {k: _digest(v) for k, v in family_copy.items()} == before
    assert not (family_copy["base"] / "merged").exists()


# -- signals: the staging directory is removed; kill -9 debris is removed by the next merge ---------------

# Runs the CLI with the merge held inside its staging block (after every file is written, before the
# rename): the test then knows a staging directory exists and signals the process there.
HELD_MERGE = """
import sys, time, pathlib
import evomerge.engine as engine
ready = pathlib.Path(sys.argv[1])
write_metadata = engine.write_merge_metadata
def held(staging, *args, **kwargs):
    write_metadata(staging, *args, **kwargs)
    ready.write_text(str(staging))
    time.sleep(120)
engine.write_merge_metadata = held
from evomerge.cli import console_main
sys.argv = ["evomerge"] + sys.argv[2:]
console_main()
"""


def _held_merge(recipe: Path, out: Path, ready: Path) -> subprocess.Popen:
    proc = subprocess.Popen([sys.executable, "-c", HELD_MERGE, str(ready), "merge", str(recipe), str(out),
                             "--device", "cpu", "--no-progress"], env=_env(), stderr=subprocess.PIPE, text=True)
    deadline = time.monotonic() + 240
    while not ready.exists():
        assert proc.poll() is None, proc.stderr.read()
        assert time.monotonic() < deadline, "the merge never reached its staging directory"
        time.sleep(0.05)
    return proc


@pytest.mark.parametrize("signum", [signal.SIGTERM, signal.SIGHUP])
def test_sigterm_and_sighup_remove_the_staging_directory(tiny_family, tmp_path, signum):
    recipe = _recipe(tmp_path, tiny_family)
    out = tmp_path / "out"
    proc = _held_merge(recipe, out, tmp_path / "ready")
    staging = Path((tmp_path / "ready").read_text())
    assert staging.is_dir() and staging.name.startswith(".out.partial-")
    proc.send_signal(signum)
    proc.wait(timeout=60)
    assert proc.returncode == -signum  # it dies of the signal, as a shell expects (128 + N)
    assert not out.exists() and _debris(tmp_path, "out") == []


def test_kill_9_debris_is_removed_by_the_next_merge_to_the_same_output(tiny_family, tmp_path):
    recipe = _recipe(tmp_path, tiny_family)
    out = tmp_path / "out"
    proc = _held_merge(recipe, out, tmp_path / "ready")
    proc.kill()
    proc.wait(timeout=60)
    assert len(_debris(tmp_path, "out")) == 1  # what kill -9 leaves
    assert main(["merge", str(recipe), str(out), "--device", "cpu", "--no-progress"]) == 0
    assert (out / "config.json").is_file() and _debris(tmp_path, "out") == []


def _dead_pid() -> int:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()
    return child.pid


def test_only_staging_directories_of_dead_processes_are_removed(tmp_path):
    from evomerge.io.staging import remove_dead_leftovers

    dead = _dead_pid()
    leftovers = {
        "dead": tmp_path / f".out.partial-{dead}-0123abcd",
        "dead replaced output": tmp_path / f".out.old-{dead}-0123abcd",
        "alive (this process)": tmp_path / f".out.partial-{os.getpid()}-0123abcd",
        "dead pid, locked by a live process": tmp_path / f".out.partial-{dead}-4567abcd",
        "another output": tmp_path / f".other.partial-{dead}-0123abcd",
    }
    for path in leftovers.values():
        path.mkdir()
        (path / "model.safetensors").write_bytes(b"x")
    # another host or pid namespace: the pid means nothing here, but the owner holds the lock
    holder = subprocess.Popen([sys.executable, "-c", (
        "import fcntl, os, sys, time; fd = os.open(sys.argv[1], os.O_RDONLY | os.O_DIRECTORY); "
        "fcntl.flock(fd, fcntl.LOCK_EX); print('locked', flush=True); time.sleep(60)"),
        str(leftovers["dead pid, locked by a live process"])], stdout=subprocess.PIPE, text=True)
    try:
        assert holder.stdout.readline().strip() == "locked"
        removed = remove_dead_leftovers(tmp_path / "out")
    finally:
        holder.kill()
        holder.wait()
    assert sorted(removed) == sorted([leftovers["dead"], leftovers["dead replaced output"]])
    assert {k for k, p in leftovers.items() if p.exists()} == {
        "alive (this process)", "dead pid, locked by a live process", "another output"}


def test_a_live_staging_directory_is_locked(tmp_path):
    from evomerge.io.staging import remove_dead_leftovers, staged_output_dir

    with staged_output_dir(tmp_path / "out") as staging:
        fd = os.open(staging, os.O_RDONLY | os.O_DIRECTORY)
        try:
            with pytest.raises(BlockingIOError):
                fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        finally:
            os.close(fd)
        assert remove_dead_leftovers(tmp_path / "out") == []
    assert (tmp_path / "out").is_dir() and _debris(tmp_path, "out") == []


# -- file system failures: one line naming the output, nothing left behind -------------------------------


@pytest.mark.parametrize("error, converted", [
    (OSError(28, "No space left on device"), True),  # a write() names no file
    (OSError(27, "File too large"), True),
    (OSError(5, "Input/output error"), False),  # e.g. reading an input: not the output's fault
    (PermissionError(13, "Permission denied", "/elsewhere/input.safetensors"), False),
])
def test_only_errors_of_writing_the_output_are_reported_as_such(tmp_path, error, converted):
    from evomerge.errors import CheckpointError
    from evomerge.io.staging import staged_output_dir

    with pytest.raises(CheckpointError if converted else type(error)) as raised:
        with staged_output_dir(tmp_path / "out"):
            raise error
    if converted:
        assert str(raised.value).startswith(f"{tmp_path / 'out'}: could not write the output: ")
    assert list(tmp_path.iterdir()) == []


def _model_bytes(family) -> int:
    return sum(p.stat().st_size for p in family["base"].glob("*.safetensors"))


def _unshare_works() -> bool:
    try:
        return subprocess.run(["unshare", "-m", "true"], capture_output=True, timeout=30).returncode == 0
    except (OSError, subprocess.SubprocessError):
        return False


@pytest.mark.parametrize("mount", ["read-only", "disk full"])
def test_read_only_folder_and_full_disk(tiny_family, tmp_path, mount):
    """A real read-only file system and a real full one: a tmpfs mounted in a private mount namespace
    (needs root or user namespaces; skipped without)."""
    if not _unshare_works():
        pytest.skip("cannot create a mount namespace here (unshare -m)")
    recipe = _recipe(tmp_path, tiny_family)
    folder = tmp_path / "mnt"
    folder.mkdir()
    options = "ro,size=1m" if mount == "read-only" else f"size={max(_model_bytes(tiny_family) // 2, 4096)}"
    script = (f'mount -t tmpfs -o {options} tmpfs "$1" || exit 99; shift; "$@"; rc=$?; '
              'echo "listing:$(ls -A "$MNT")" >&2; exit $rc')
    out = folder / "out"
    done = subprocess.run(["unshare", "-m", "sh", "-c", script, "sh", str(folder), sys.executable, "-m", "evomerge.cli",
                           "merge", str(recipe), str(out), "--device", "cpu", "--no-progress"],
                          env={**_env(), "MNT": str(folder)}, capture_output=True, text=True, timeout=600)
    assert done.returncode != 99, done.stderr
    err, listing = done.stderr.rsplit("listing:", 1)
    assert done.returncode == 1, done.stderr
    _one_line_error(err, out)
    assert ("Read-only file system" if mount == "read-only" else "No space left on device") in err
    assert listing.strip() == ""  # neither the output nor a staging directory


def test_file_size_limit(tiny_family, tmp_path):
    recipe = _recipe(tmp_path, tiny_family)
    out = tmp_path / "out"
    limit = _model_bytes(tiny_family) // 2

    def lower_the_limit():
        resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))

    done = subprocess.run([sys.executable, "-m", "evomerge.cli", "merge", str(recipe), str(out), "--device", "cpu",
                           "--no-progress"], env=_env(), capture_output=True, text=True, timeout=600,
                          preexec_fn=lower_the_limit)
    assert done.returncode == 1, done.stderr
    _one_line_error(done.stderr, out)
    assert "File too large" in done.stderr and "--shard-size" in done.stderr
    assert not out.exists() and _debris(tmp_path, "out") == []


# -- run directories: --out naming a file, a study.db that is no database --------------------------------


def _experiment(tmp_path: Path, family, **extra) -> Path:
    exp = {"name": "safety", "base": str(family["base"]), "models": {a: str(family[a]) for a in AGENTS},
           "search_space": "weights_densities", "objectives": {"tool_use": {"kind": "tool_use", "limit": 2}},
           "budget": 1, "references": False, "workers": {"kind": "inline", "threads": 1},
           "cache": {"enabled": False}, **extra}
    path = tmp_path / "exp.yaml"
    path.write_text(yaml.safe_dump(exp))
    return path


def test_out_naming_an_existing_file(tiny_family, tmp_path, capsys):
    exp = _experiment(tmp_path, tiny_family)
    afile = tmp_path / "afile"
    afile.write_text("mine")
    assert main(["search", str(exp), "--out", str(afile), "--no-progress"]) == 1
    _one_line_error(capsys.readouterr().err, afile)
    assert afile.read_text() == "mine"


def _corrupt_study(path: Path, how: str) -> None:
    if how == "not a database":
        path.write_text("these are my notes, not an SQLite database\n" * 100)
        return
    import optuna

    study = optuna.create_study(storage=f"sqlite:///{path}", study_name="x", directions=["maximize"])
    for i in range(30):
        study.enqueue_trial({"x": i})
    del study
    size = path.stat().st_size
    with path.open("r+b") as f:  # keep the header, cut the pages the schema points at
        f.truncate(size // 3)


@pytest.mark.parametrize("how", ["not a database", "truncated"])
def test_a_study_db_that_is_no_database(tiny_family, tmp_path, capsys, how):
    bad = tmp_path / "study.db"
    _corrupt_study(bad, how)
    before = bad.read_bytes()
    capsys.readouterr()  # Optuna's own log line from making the file
    exp = _experiment(tmp_path, tiny_family, storage=f"sqlite:///{bad}")
    out = tmp_path / "run"
    assert main(["search", str(exp), "--out", str(out), "--no-progress"]) == 1
    _one_line_error(capsys.readouterr().err, bad)
    assert not out.exists()  # checked before the run directory is created
    assert bad.read_bytes() == before


# -- exit codes and -v --------------------------------------------------------------------------------------


def test_usage_errors_exit_2_and_failed_runs_exit_1(tiny_family, tmp_path, capsys):
    with pytest.raises(SystemExit) as usage:
        main(["merge"])  # missing arguments: argparse
    assert usage.value.code == 2
    with pytest.raises(SystemExit) as usage:
        main(["merge", "r.yaml", "out", "--no-such-option"])
    assert usage.value.code == 2
    assert main([]) == 2  # no command
    assert main(["merge", str(tmp_path / "missing.yaml"), str(tmp_path / "out")]) == 1
    assert "exit status" in _help(["merge", "--help"])


def _help(argv) -> str:
    import contextlib
    import io

    buf = io.StringIO()
    with contextlib.redirect_stdout(buf), pytest.raises(SystemExit):
        main(argv)
    return buf.getvalue()


def test_verbose_after_the_subcommand(tiny_family, tmp_path):
    recipe = _recipe(tmp_path, tiny_family)
    code = ("import logging, sys; from evomerge.cli import main; rc = main(sys.argv[1:]); "
            "print('level', logging.getLogger().level); sys.exit(rc)")
    for flags, level in ((["-v"], 20), (["-vv"], 10), ([], 30)):
        out = tmp_path / f"out{len(flags)}{level}"
        done = subprocess.run([sys.executable, "-c", code, "merge", str(recipe), str(out), "--device", "cpu",
                               "--no-progress", *flags], env=_env(), capture_output=True, text=True, timeout=300)
        assert done.returncode == 0, done.stderr
        assert f"level {level}" in done.stdout
