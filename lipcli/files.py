"""Files written atomically: a crash or a full disk leaves the old file or the new one, never half of one.

The content goes to a temporary file in the same folder, is fsynced, then renamed over the target.
"""

from __future__ import annotations

import hashlib

import os
import tempfile
from pathlib import Path
from collections.abc import Mapping
from typing import IO, Callable


def atomic_write(path: Path, write: Callable[[IO[bytes]], None]) -> None:
    """Create or replace ``path`` with what ``write(binary_file)`` writes."""
    atomic_write_many({Path(path): write})


def atomic_write_many(files: Mapping[Path, Callable[[IO[bytes]], None]]) -> None:
    """Create or replace several files: every one is written in full and fsynced before the first replaces its
    old version, so a failed write (a full disk) leaves all the old files, never some old and some new."""
    written: list[tuple[str, Path]] = []
    try:
        for path, write in files.items():
            path = Path(path)
            path.parent.mkdir(parents=True, exist_ok=True)
            handle, tmp_name = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
            written.append((tmp_name, path))
            with os.fdopen(handle, "wb") as tmp:
                write(tmp)
                tmp.flush()
                os.fsync(tmp.fileno())
        for tmp_name, path in written:
            os.replace(tmp_name, path)
    except BaseException:
        for tmp_name, _ in written:
            Path(tmp_name).unlink(missing_ok=True)
        raise
    for folder in {path.parent for _, path in written}:
        _fsync_dir(folder)


def write_text(path: Path, text: str) -> None:
    """Atomically write ``text`` as UTF-8."""
    atomic_write(path, lambda handle: handle.write(text.encode("utf-8")))


def _fsync_dir(folder: Path) -> None:
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:  # not supported on some platforms; the rename itself is still atomic
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def sha256(path: Path) -> str:
    """The hex SHA-256 of a file's bytes: results name the exact checkpoint they measured, wherever it moved."""
    digest = hashlib.sha256()
    with Path(path).open("rb") as handle:
        for block in iter(lambda: handle.read(1 << 20), b""):
            digest.update(block)
    return digest.hexdigest()
