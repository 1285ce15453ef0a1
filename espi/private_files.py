"""Files and directories only their owner can read: 0600 and 0700 whatever the process umask.

Green Button data on disk (downloads, bulk files and their per-subscription parts, SFTP ``.part`` files) holds
customers' usage, names and addresses; the data directory also holds the store and the secret key. A umask of
0022 (the usual default) would make them readable by every local user, so the modes are set explicitly: new
directories are created 0700 level by level (``mkdir -p`` gives parents the umask's mode), and files are created
0600 and set to 0600 again when they already existed (a ``.part`` resumed from an older version of the code).
"""

from __future__ import annotations

import os
from pathlib import Path
from typing import IO

DIRECTORY_MODE = 0o700
FILE_MODE = 0o600


def private_dir(path: str | os.PathLike) -> Path:
    """``path`` as a directory, every level this call creates 0700 (existing ones are left as they are)."""
    path = Path(path)
    missing = []
    for level in (path, *path.parents):
        if level.is_dir():
            break
        missing.append(level)
    for level in reversed(missing):
        try:
            os.mkdir(level, DIRECTORY_MODE)
        except FileExistsError:  # another process made it first: not ours to change
            continue
        os.chmod(level, DIRECTORY_MODE)  # the umask may have removed bits of the owner's too
    return path


def private_fd(path: str | os.PathLike, flags: int) -> int:
    """``os.open(path, flags | O_CREAT | O_CLOEXEC)`` with the file 0600 (also when it existed)."""
    fd = os.open(path, flags | os.O_CREAT | os.O_CLOEXEC, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)
    except BaseException:
        os.close(fd)
        raise
    return fd


def open_private(path: str | os.PathLike, mode: str) -> IO[bytes]:
    """A binary file opened like ``open(path, mode)`` for ``"wb"``, ``"ab"`` or ``"r+b"``, but 0600."""
    flags = {"wb": os.O_WRONLY | os.O_TRUNC, "ab": os.O_WRONLY | os.O_APPEND, "r+b": os.O_RDWR}[mode]
    return os.fdopen(private_fd(path, flags), mode)
