"""Where the command line writes output files (``-o PATH`` of ``greenbridge translate``, ``generate`` …).

A regular file is written atomically: under a temporary name beside it, renamed over it only once complete, so a
failed run leaves the old file (or nothing) and never half a file. Anything that is not a regular file is written
to directly and never replaced: ``/dev/null``, ``/dev/stdout``, a FIFO another process reads, a socket, a device.
(Renaming over those, as every command once did, replaced ``/dev/null`` with a regular file when run as root.)
``-`` means standard output. A symbolic link is followed: its target is replaced, and the link stays a link.
"""

from __future__ import annotations

import contextlib
import os
import stat
import sys
import tempfile
from collections.abc import Iterator
from typing import IO


@contextlib.contextmanager
def output_stream(path: str | None, *, text: bool = False) -> Iterator[IO]:
    """A stream to write ``path``'s new content to (see the module docstring); binary unless ``text`` (UTF-8).

    None or ``-``: standard output, flushed, not closed. On an exception inside the block, a regular file keeps
    its old content and the temporary file is removed; a device or FIFO has received what was written so far.
    """
    if path is None or path == "-":
        stream = sys.stdout if text else sys.stdout.buffer
        yield stream
        stream.flush()
        return
    mode = "w" if text else "wb"
    encoding = "utf-8" if text else None
    try:
        existing = os.stat(path)  # follows symbolic links: what matters is what gets written
    except FileNotFoundError:
        existing = None
    if existing is not None and not stat.S_ISREG(existing.st_mode):
        with open(path, mode, encoding=encoding) as handle:
            yield handle
        return
    target = os.path.realpath(path)
    handle_fd, partial = tempfile.mkstemp(prefix=f"{os.path.basename(target)}.", suffix=".part",
                                          dir=os.path.dirname(target))
    try:
        with os.fdopen(handle_fd, mode, encoding=encoding) as handle:
            # mkstemp makes the file 0600: give it what a plain open() would (the old file's mode, else 0666 − umask)
            os.fchmod(handle.fileno(), stat.S_IMODE(existing.st_mode) if existing is not None else 0o666 & ~_umask())
            yield handle
        os.replace(partial, target)
    except BaseException:
        with contextlib.suppress(FileNotFoundError):
            os.unlink(partial)
        raise


def _umask() -> int:
    mask = os.umask(0o022)
    os.umask(mask)
    return mask
