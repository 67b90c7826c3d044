"""Result folders that are never replaced or mixed without being asked.

Every evaluation (``curve``, ``attack``, ``robust``, ``stats``, ``data-lipschitz``) writes its summary with a
``settings`` object: what its numbers depend on (checkpoint hash, data set, image selection, attacks and
their options, seed, batch size). Before any work starts, :func:`claim` checks that the folder can be created
and written, takes an exclusive lock on it (two runs never interleave their files), and compares the settings
recorded there with the ones asked for: a folder holding results of other settings, results lipcli cannot
identify, or files of the names it would write is refused, naming what differs, unless ``overwrite``.
The results themselves are checked, never a marker beside them.
"""

from __future__ import annotations

import json
import os
import shutil
from collections.abc import Iterator, Mapping
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import IO, Any

import torch

from lipcli.distributed import broadcast, current
from lipcli.errors import LipcliError
from lipcli.files import write_text
from lipcli.layout import LOCK_FILE, PARTIAL
from lipcli.version import VERSION

SETTINGS_KEY = "settings"
PARTIAL_SETTINGS = "settings.json"

try:  # POSIX; elsewhere folders are not locked (the settings check still holds)
    import fcntl
except ImportError:  # pragma: no cover - Windows
    fcntl = None  # type: ignore[assignment]

_MISSING = object()


def provenance(device: torch.device) -> dict[str, Any]:
    """Where and with what a result was computed (recorded, not compared: the settings decide identity)."""
    return {"lipcli_version": VERSION, "torch_version": torch.__version__, "device": str(device),
            "dtype": str(torch.get_default_dtype()).removeprefix("torch.")}


def resume_settings(device: torch.device) -> dict[str, Any]:
    """What partial results depend on besides the settings: a batch measured on another kind of device or by
    another version may classify a borderline image differently, so it is not resumed there."""
    return {"device_type": device.type, "lipcli_version": VERSION, "torch_version": torch.__version__}


@dataclass(frozen=True)
class Layout:
    """What a command writes in a folder: its summary (holding ``settings``) and every other result file."""

    summary: str
    files: tuple[str, ...]


def differing(recorded: Mapping[str, Any], wanted: Mapping[str, Any]) -> list[tuple[str, ...]]:
    """The key paths whose values differ between two settings trees (a key missing on one side differs)."""
    paths: list[tuple[str, ...]] = []
    for key in sorted(set(recorded) | set(wanted), key=str):
        mine, theirs = recorded.get(key, _MISSING), wanted.get(key, _MISSING)
        if isinstance(mine, Mapping) and isinstance(theirs, Mapping):
            paths += [(str(key), *rest) for rest in differing(mine, theirs)]
        elif mine is _MISSING or theirs is _MISSING or _as_json(mine) != _as_json(theirs):
            paths.append((str(key),))
    return paths


def _as_json(value: Any) -> Any:
    return json.loads(json.dumps(value, default=repr))


def _read_settings(path: Path, key: str | None) -> dict[str, Any] | None:
    try:
        data = json.loads(path.read_text())
    except (OSError, ValueError):
        return None
    settings = data.get(key) if key and isinstance(data, dict) else data
    return settings if isinstance(settings, dict) else None


def recorded_settings(folder: Path, layout: Layout) -> dict[str, Any] | None:
    """The settings of the results in ``folder``, or None where there is no summary or it records none."""
    return _read_settings(folder / layout.summary, SETTINGS_KEY)


def conflict(folder: Path, layout: Layout, settings: Mapping[str, Any],
             partial: Mapping[str, Any] | None = None) -> str | None:
    """Why writing results of ``settings`` into ``folder`` would replace or mix others, or None. ``partial``:
    the settings partial results must have been written under to be resumed (None: partial results are no
    concern of this command)."""
    present = [name for name in (layout.summary, *layout.files) if (folder / name).exists()]
    if present:
        recorded = recorded_settings(folder, layout)
        if recorded is None:
            return f"{folder} holds {', '.join(present)} that lipcli cannot match to these settings"
        found = _differences(folder, recorded, settings, "results")
        if found:
            return found
    if partial is not None and (folder / PARTIAL).exists():
        recorded = _read_settings(folder / PARTIAL / PARTIAL_SETTINGS, None) or {}
        return _differences(folder, recorded, partial, "partial results of an interrupted run")
    return None


def _differences(folder: Path, recorded: Mapping[str, Any], settings: Mapping[str, Any], what: str) -> str | None:
    paths = differing(recorded, settings)
    if not paths:
        return None
    shown = "; ".join(f"{'.'.join(path)}: {_short(_lookup(recorded, path))} there, "
                      f"{_short(_lookup(settings, path))} now" for path in paths[:3])
    more = f" and {len(paths) - 3} more" if len(paths) > 3 else ""
    return f"{folder} holds {what} of other settings ({shown}{more})"


def _short(value: Any, width: int = 40) -> str:
    text = "nothing" if value is _MISSING else repr(value)
    return text if len(text) <= width else text[: width - 3] + "..."


def _lookup(tree: Mapping[str, Any], path: tuple[str, ...]) -> Any:
    value: Any = tree
    for part in path:
        value = value.get(part, _MISSING) if isinstance(value, Mapping) else _MISSING
    return value


@contextmanager
def claim(
    folders: Mapping[Path, Mapping[str, Any]], layout: Layout, *, overwrite: bool = False,
    partial: Mapping[str, Any] | None = None,
) -> Iterator[None]:
    """Hold ``folders`` (each with the settings of the results it will get) for writing, on the main process.

    Raises :class:`LipcliError` on every process, before any work, when a folder cannot be created or
    written, another process holds it, or it holds results of other settings (unless ``overwrite``: those
    results are then removed, so old and new files never mix). A refused folder is left as it was.
    ``partial`` (what resuming depends on besides the settings, :func:`resume_settings`): partial results of
    the same settings are kept, for the run to resume, and the settings of the ones about to be written are
    recorded.
    """
    with ExitStack() as stack:
        problem = None
        if current().main:
            try:
                for folder, settings in folders.items():
                    resumable = None if partial is None else {**settings, **partial}
                    _check(folder, layout, settings, resumable, overwrite)  # before anything is created
                    stack.enter_context(locked(folder))
                    found = _check(folder, layout, settings, resumable, overwrite)  # another may have written
                    if found:
                        for name in (layout.summary, *layout.files):
                            (folder / name).unlink(missing_ok=True)
                        if resumable is not None:
                            shutil.rmtree(folder / PARTIAL, ignore_errors=True)
                    if resumable is not None:
                        write_text(folder / PARTIAL / PARTIAL_SETTINGS, json.dumps(resumable, default=repr) + "\n")
            except LipcliError as exc:
                problem = str(exc)
            except OSError as exc:
                problem = f"cannot write to {exc.filename or 'the results folder'}: {exc.strerror or exc}"
        problem = broadcast(problem)
        if problem:
            raise LipcliError(problem)
        yield


def _check(folder: Path, layout: Layout, settings: Mapping[str, Any], partial: Mapping[str, Any] | None,
           overwrite: bool) -> str | None:
    """The conflict in ``folder`` (raised unless ``overwrite``, returned when overwriting)."""
    found = conflict(folder, layout, settings, partial)
    if found and not overwrite:
        raise LipcliError(f"{found}; use --overwrite to replace them, or another --out")
    return found


@contextmanager
def locked(folder: Path) -> Iterator[None]:
    """An exclusive lock on ``folder`` (created, and checked writable, first), held by this process until the
    context ends; another process asking for it gets a :class:`LipcliError` at once. The lock file stays
    (removing it would let a process that opened it just before lock a file no longer in the folder)."""
    try:
        folder.mkdir(parents=True, exist_ok=True)
        handle: IO[str] = open(folder / LOCK_FILE, "a+")
    except OSError as exc:
        raise LipcliError(f"cannot write to {folder}: {exc.strerror or exc}") from None
    with handle:
        if fcntl is not None:
            try:
                fcntl.flock(handle.fileno(), fcntl.LOCK_EX | fcntl.LOCK_NB)
            except OSError:
                handle.seek(0)
                holder = handle.read().strip()
                raise LipcliError(
                    f"{folder} is being written by another lipcli process{f' (pid {holder})' if holder else ''}; "
                    "wait for it to finish or use another --out"
                ) from None
        handle.seek(0)
        handle.truncate()
        handle.write(str(os.getpid()))
        handle.flush()
        try:
            yield
        finally:
            handle.seek(0)
            handle.truncate()


@contextmanager
def locked_everywhere(folder: Path) -> Iterator[None]:
    """:func:`locked` on the main process; its error raised on every process (none is left in a collective)."""
    with ExitStack() as stack:
        problem = None
        if current().main:
            try:
                stack.enter_context(locked(folder))
            except LipcliError as exc:
                problem = str(exc)
        problem = broadcast(problem)
        if problem:
            raise LipcliError(problem)
        yield
