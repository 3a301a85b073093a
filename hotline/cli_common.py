"""What every `hotline` subcommand module shares: exit codes and how a rejected file is shown."""

from __future__ import annotations

import sys
from collections.abc import Sequence

# Exit codes, the same for every command: 1 when what the command names does not exist (a
# resident, staff member, center, line, shift, leave, closure), 2 for bad input, an unreachable
# server or a refused change. `roster check` also exits 1 when it finds gaps.
EXIT_NOT_FOUND = 1
EXIT_ERROR = 2
# A rejected file lists this many problems; the rest are counted.
PROBLEMS_SHOWN = 50


class NotFound(Exception):
    """What the command names does not exist; the message says what (exit code 1)."""


def print_rejected(file: str, problems: Sequence[object]) -> int:
    """Every problem of a file refused as a whole (nothing was written); the exit code."""
    print(f"hotline: {file}: rejected, nothing was imported:", file=sys.stderr)
    for problem in problems[:PROBLEMS_SHOWN]:
        print(f"  {problem}", file=sys.stderr)
    if len(problems) > PROBLEMS_SHOWN:
        print(f"  … and {len(problems) - PROBLEMS_SHOWN} more", file=sys.stderr)
    return EXIT_ERROR
