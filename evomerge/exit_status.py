"""The `evomerge` command's exit statuses, and the one-line form of an error.

    0    success
    1    the run failed: an error that names the file, tensor or key at fault (an invalid recipe or
         experiment, a corrupt checkpoint, a full disk, ...); nothing half-written is left behind
    2    usage error: the command line itself is wrong (argparse), or no command was given
    130  interrupted by Ctrl-C (SIGINT)
    killed by SIGTERM / SIGHUP: `evomerge merge` removes its staging directory first, then dies of the
         same signal, so a shell sees 128 + the signal number (143 / 129)
"""

from __future__ import annotations

import argparse
import os

OK = 0
FAILED = 1
USAGE = 2
INTERRUPTED = 130

EPILOG = ("exit status: 0 success; 1 the run failed (the error names the file or key at fault); "
          "2 usage error; 130 interrupted (Ctrl-C); 128+N killed by signal N (SIGTERM 143)")


def error_line(exc: OSError) -> str:
    """An OSError as one line naming the path(s): '<path>: <reason>' (or '<src> -> <dst>: ...')."""
    reason = exc.strerror or str(exc)
    if exc.filename is None:
        return reason
    where = os.fsdecode(exc.filename)
    if exc.filename2 is not None:
        where += f" -> {os.fsdecode(exc.filename2)}"
    return f"{where}: {reason}"


def verbosity_parent() -> argparse.ArgumentParser:
    """`-v` accepted after the subcommand too (`evomerge merge ... -v`). SUPPRESS as the default keeps
    the value given before the subcommand when none is given after it."""
    parent = argparse.ArgumentParser(add_help=False)
    parent.add_argument("-v", "--verbose", action="count", default=argparse.SUPPRESS,
                        help="more logging (-vv for debug)")
    return parent
