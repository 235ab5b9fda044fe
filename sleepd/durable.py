"""fsync for files and folders: what makes a write or a rename survive a crash (spool, registry, snapshots);
and the opener for files that hold session content."""

from __future__ import annotations

import os
from pathlib import Path


def fsync_path(path: Path) -> None:
    fd = os.open(path, os.O_RDONLY)
    try:
        os.fsync(fd)
    finally:
        os.close(fd)


def private(path: str, flags: int) -> int:
    """`open(..., opener=private)`: a new file readable by its owner only (session content)."""
    return os.open(path, flags, 0o600)
