"""The environment a sandboxed program gets: built from scratch, nothing inherited (no tokens, no keys)."""

from __future__ import annotations

PATH = "/usr/local/bin:/usr/bin:/bin"


def program_environment(home: str, tmpdir: str) -> dict[str, str]:
    return {"PATH": PATH, "HOME": home, "TMPDIR": tmpdir, "LANG": "C.UTF-8", "LC_ALL": "C.UTF-8"}
