"""Progress on a terminal for long commands (tqdm): bytes read with their rate and an ETA, and a count beside them
(readings, files, authorizations). Shown only when standard error is a terminal, so piped, redirected and cron runs
stay quiet; ``--progress`` forces it on, ``--no-progress`` off. Lines a command prints while a bar is shown go
through :meth:`Progress.write`, so the bar never garbles them.
"""

from __future__ import annotations

import argparse
import os
import sys
from typing import Any


def add_arguments(parser: argparse.ArgumentParser) -> None:
    """``--progress`` / ``--no-progress`` (default: a bar only when standard error is a terminal)."""
    group = parser.add_mutually_exclusive_group()
    group.add_argument("--progress", action="store_true", default=None,
                       help="always show progress on standard error (default: only on a terminal)")
    group.add_argument("--no-progress", dest="progress", action="store_false", help="never show progress")


def wanted(args: argparse.Namespace) -> bool:
    choice = getattr(args, "progress", None)
    return choice if choice is not None else sys.stderr.isatty()


def file_sizes(paths: list[str]) -> int | None:
    """The bytes of the regular files among ``paths`` (for the ETA); None when one is standard input (``-``)."""
    if "-" in paths:
        return None
    return sum(os.stat(path).st_size for path in paths if os.path.isfile(path))


class Progress:
    """One bar (or nothing at all when ``enabled`` is false): ``advance(n)`` units done, ``count(name, n)`` a total
    shown beside the bar, ``write(line)`` a line printed above it."""

    def __init__(self, enabled: bool, *, total: int | None, unit: str = "B", desc: str = "") -> None:
        self._bar: Any = None
        self._counts: dict[str, int] = {}
        if enabled:
            from tqdm import tqdm

            scaled = unit == "B"
            self._bar = tqdm(total=total, unit=unit, unit_scale=scaled, unit_divisor=1024 if scaled else 1000,
                             desc=desc, file=sys.stderr, leave=False, dynamic_ncols=True)

    @property
    def shown(self) -> bool:
        return self._bar is not None

    def set_total(self, total: int) -> None:
        """The total once known (e.g. after a listing was fetched): from now on the bar has an ETA."""
        if self._bar is not None:
            self._bar.total = total
            self._bar.refresh()

    def advance(self, done: int) -> None:
        if self._bar is not None and done:
            self._bar.update(done)

    def count(self, name: str, added: int) -> None:
        self._counts[name] = self._counts.get(name, 0) + added
        if self._bar is not None:
            self._bar.set_postfix_str(", ".join(f"{n:,} {k}" for k, n in self._counts.items()))

    def write(self, line: str, stream: Any = None) -> None:
        """``line`` on ``stream`` (standard error by default), above the bar when one is shown."""
        stream = stream or sys.stderr
        if self._bar is not None:
            self._bar.write(line, file=stream)
        else:
            print(line, file=stream)

    def close(self) -> None:
        if self._bar is not None:
            self._bar.close()
            self._bar = None

    def __enter__(self) -> Progress:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
