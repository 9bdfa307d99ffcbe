"""Hugging Face Hub ids as checkpoint names: `org/name` or `org/name@revision`, resolved to a local snapshot.

The rule that tells a Hub id from a local path, everywhere a checkpoint is named (recipes, experiments,
`evaluate`, `analyze`, `search`, `merge`):
  1. a local file or directory of that name exists (relative names: relative to the recipe or experiment
     file, or to the current directory on the command line) -> the local path;
  2. otherwise a name shaped `org/name` or `org/name@revision` (Hub repo-id characters, one slash, no
     leading `.`, `/` or `~`) -> a Hub id, resolved through `huggingface_hub.snapshot_download`:
     downloaded when online, taken from the local Hugging Face cache when offline (`HF_HUB_OFFLINE=1`);
  3. anything else -> a local path that does not exist (the reader says so).
`hf://org/name[@revision]` is always a Hub id. A recipe or experiment file's Hub ids are stored in that
form once classified (`locate`), so that a later step running in another directory cannot mistake them
for a folder of the same relative name there.
Errors say which reading was tried. A resolved checkpoint is a directory `<cache>/models--org--name/
snapshots/<commit>`: the directory itself says which repo and which commit it is (`hub_origin`), so
provenance can record the commit after the name has become a path.

Nothing here imports huggingface_hub at import time (it costs ~0.3 s); it is imported on first resolution.
"""

from __future__ import annotations

import functools
import os
import re
from dataclasses import dataclass
from pathlib import Path

from evomerge.errors import CheckpointError

# one slash, Hub repo-id characters on both sides (huggingface_hub's validate_repo_id: [A-Za-z0-9_.-], no
# '--' or '..', at most 96 characters, not starting or ending with '-' or '.'); the revision is a branch,
# a tag or a commit hash
_HUB_ID = re.compile(r"(?P<repo>[A-Za-z0-9_][A-Za-z0-9_.-]*/[A-Za-z0-9_][A-Za-z0-9_.-]*)(?:@(?P<rev>[A-Za-z0-9_./-]+))?")
_COMMIT = re.compile(r"[0-9a-f]{40}")

# what a merge reads from a Hub repo besides the tokenizer / chat template / generation files
# (evomerge.io.input_files.SIDE_FILE_PATTERNS): the weights and the config
WEIGHT_PATTERNS = ("*.safetensors", "*.safetensors.index.json", "config.json")


@dataclass(frozen=True)
class HubOrigin:
    """Which Hub repo and which commit a snapshot directory of the Hugging Face cache holds."""

    repo_id: str
    revision: str  # the commit hash

    @property
    def pinned(self) -> str:
        """`org/name@<commit>`: the name that gives these exact files again."""
        return f"{self.repo_id}@{self.revision}"


@dataclass(frozen=True)
class ResolvedCheckpoint:
    """A checkpoint name made a local directory; `origin` is set when it came from the Hub (or its cache)."""

    path: Path
    origin: HubOrigin | None = None

    @property
    def repo_id(self) -> str | None:
        return self.origin.repo_id if self.origin else None

    @property
    def revision(self) -> str | None:
        return self.origin.revision if self.origin else None


HF_PREFIX = "hf://"


def parse_hub_id(name: str) -> tuple[str, str | None] | None:
    """('org/name', revision or None) when `name` is shaped like a Hub id (`hf://` optional), else None."""
    m = _HUB_ID.fullmatch(name.removeprefix(HF_PREFIX))
    if m is None:
        return None
    repo = m.group("repo")
    if len(repo) > 96 or "--" in repo or ".." in repo or repo.endswith((".", "-", ".git")) \
            or any(part.endswith((".", "-")) for part in repo.split("/")):
        return None
    return repo, m.group("rev")


def is_hub_id(name: str, base_dir: Path | None = None) -> bool:
    """True when `name` names a Hub repo: Hub-id shaped and no local file or directory of that name
    (relative to `base_dir`, default the current directory) exists. A local directory always wins,
    except over the explicit `hf://org/name`."""
    if name.startswith(HF_PREFIX):
        return parse_hub_id(name) is not None
    local = Path(name).expanduser()
    if not local.is_absolute() and base_dir is not None:
        local = base_dir / local
    return parse_hub_id(name) is not None and not local.exists()


def locate(name: str, base_dir: Path) -> str:
    """A checkpoint name as written in a recipe or experiment file at `base_dir`: a Hub id becomes
    `hf://org/name[@revision]` (it is resolved when the checkpoint is opened), a relative path becomes
    absolute. Reads no network."""
    if is_hub_id(name, base_dir):
        return name if name.startswith(HF_PREFIX) else HF_PREFIX + name
    local = Path(name).expanduser()
    return str(local if local.is_absolute() else base_dir / local)


def hub_origin(path: str | Path) -> HubOrigin | None:
    """The repo and commit of a snapshot directory of the Hugging Face cache (`.../models--org--name/
    snapshots/<commit>`, after following links), None for any other directory. Repo ids cannot contain
    '--', so the folder name maps back to exactly one id."""
    real = Path(path).expanduser().resolve()
    repo_folder = real.parent.parent
    if real.parent.name != "snapshots" or not repo_folder.name.startswith("models--"):
        return None
    parts = repo_folder.name[len("models--"):].split("--")
    if len(parts) != 2 or not _COMMIT.fullmatch(real.name):
        return None
    return HubOrigin("/".join(parts), real.name)


def blobs_folder(checkpoint_dir: str | Path) -> Path | None:
    """The blobs folder that the files of a Hub-cache snapshot directory link into, or None for a
    directory outside the Hub cache layout."""
    real = Path(checkpoint_dir).expanduser().resolve()
    if hub_origin(real) is None:
        return None
    return real.parent.parent / "blobs"


def hub_cache_dir() -> Path:
    """The Hugging Face cache folder, read from the environment now (huggingface_hub reads it once, at its
    import: a script or test that sets HF_HUB_CACHE / HF_HOME later is still obeyed)."""
    env = os.environ
    for key in ("HF_HUB_CACHE", "HUGGINGFACE_HUB_CACHE"):
        if env.get(key):
            return Path(os.path.expandvars(env[key])).expanduser()
    if env.get("HF_HOME"):
        return Path(os.path.expandvars(env["HF_HOME"])).expanduser() / "hub"
    from huggingface_hub import constants

    return Path(constants.HF_HUB_CACHE)


def hub_offline() -> bool:
    """HF_HUB_OFFLINE (or TRANSFORMERS_OFFLINE) as set now; when neither is set, as huggingface_hub read it at import."""
    flags = [os.environ[k] for k in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE") if os.environ.get(k)]
    if flags:
        return any(f.upper() in {"1", "ON", "YES", "TRUE"} for f in flags)
    from huggingface_hub import constants

    return bool(constants.HF_HUB_OFFLINE)


def resolve_checkpoint(name: str | Path) -> ResolvedCheckpoint:
    """The local directory a checkpoint name stands for (see the module's rule), downloading a Hub id's
    safetensors, config and tokenizer files when online. Within one process a name resolves once: every
    later open reads the same commit even if the branch moves meanwhile."""
    text = str(name)
    if not is_hub_id(text):
        local = Path(text).expanduser()
        return ResolvedCheckpoint(local, hub_origin(local) if local.is_dir() else None)
    offline = hub_offline()
    return _download(text, str(hub_cache_dir().resolve()), offline)


@functools.lru_cache(maxsize=None)
def _download(name: str, cache_dir: str, offline: bool) -> ResolvedCheckpoint:
    from huggingface_hub import snapshot_download
    from huggingface_hub.errors import (
        GatedRepoError, HFValidationError, HfHubHTTPError, LocalEntryNotFoundError, RepositoryNotFoundError,
        RevisionNotFoundError,
    )

    from evomerge.io.input_files import SIDE_FILE_PATTERNS  # imported here: input_files imports this module

    repo_id, revision = parse_hub_id(name)  # type: ignore[misc]  # is_hub_id checked the shape
    where = (f"'{name}' is not a local directory ({Path(name).expanduser().absolute()} does not exist), so it was "
             f"read as a Hugging Face Hub id")
    try:
        folder = snapshot_download(repo_id, revision=revision, cache_dir=cache_dir,
                                   allow_patterns=[*WEIGHT_PATTERNS, *SIDE_FILE_PATTERNS], local_files_only=offline)
    except LocalEntryNotFoundError as exc:
        how = "HF_HUB_OFFLINE is set" if offline else "the Hub could not be reached"
        raise CheckpointError(
            f"{where}: {how} and the Hugging Face cache {cache_dir} has no snapshot of {repo_id} at revision "
            f"{revision or 'main'} ({type(exc).__name__}); download it once online (unset HF_HUB_OFFLINE) or "
            "point HF_HUB_CACHE / HF_HOME at the cache that holds it") from None
    except RevisionNotFoundError:
        raise CheckpointError(f"{where}: the Hub repo {repo_id} has no revision {revision!r}") from None
    except (RepositoryNotFoundError, GatedRepoError) as exc:
        raise CheckpointError(
            f"{where}: the Hub has no repo {repo_id} that this machine may read ({type(exc).__name__}; a private "
            "or gated repo needs `hf auth login` or HF_TOKEN)") from None
    except (HfHubHTTPError, HFValidationError, OSError) as exc:
        raise CheckpointError(f"{where}: resolving it failed ({type(exc).__name__}: {exc})") from None
    path = Path(folder)
    origin = hub_origin(path)
    if origin is None:  # snapshot_download returns <cache>/models--org--name/snapshots/<commit>
        raise CheckpointError(f"{name}: huggingface_hub returned {path}, which is not a Hub cache snapshot folder")
    return ResolvedCheckpoint(path, origin)


def with_local_checkpoints(experiment):
    """An experiment (search or sweep: anything with `base` and a `models` mapping) whose Hub ids are
    replaced by the local snapshot directories they resolve to, downloading them if needed. Called once
    when a run starts, before anything is written: every worker then reads the same commit, and the run
    record's checkpoint paths (`.../models--org--name/snapshots/<commit>`) say which commit that was."""
    from evomerge.errors import ExperimentError

    def local(key: str, name: str | None) -> str | None:
        if name is None or not is_hub_id(name):
            return name
        try:
            return str(resolve_checkpoint(name).path)
        except CheckpointError as exc:
            hint = getattr(experiment, "hint", None)
            raise ExperimentError(f"the checkpoint of '{key}' ({name}): {exc}" + (f"; {hint}" if hint else "")) from None

    base = local("base", experiment.base)
    models = {k: local(k, v) for k, v in experiment.models.items()}
    if base == experiment.base and models == dict(experiment.models):
        return experiment
    return experiment.model_copy(update={"base": base, "models": models})
