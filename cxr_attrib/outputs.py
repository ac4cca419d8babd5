"""Safe output files: validated up front, written atomically, several as one pair.

Every file the toolkit writes goes through :func:`write_files`:

* each payload first goes to a temporary file created exclusively (``O_CREAT |
  O_EXCL | O_NOFOLLOW``) under a fresh random name in the destination's own folder,
  so a file or symlink planted at a predictable name is never opened or followed;
* only when every temporary file is complete are they moved into place, one
  ``os.replace`` each (``os.link`` when existing files must not be replaced), which
  swaps the directory entry and never writes through a symlink at the destination;
* if anything fails or is interrupted (``KeyboardInterrupt`` included) before the
  last move, the moves already made are undone: the destinations hold the old
  files again (or nothing, where there was none) and no temporary file is left.

:func:`check_outputs` runs the same refusals (a destination that is the input
image or a folder, or an existing file when replacing is not allowed) before any
model work.
"""

from __future__ import annotations

import os
import secrets
import shutil
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from .errors import OutputError

__all__ = ["check_outputs", "write_files"]

_TRIES = 16
"""Fresh temporary names tried before giving up (a collision means a planted file)."""


def check_outputs(
    paths: Sequence[str | os.PathLike],
    *,
    inputs: Iterable[str | os.PathLike] = (),
    overwrite: bool = True,
) -> list[Path]:
    """Refuse output paths that must not be written, before any work is done.

    Args:
        paths (Sequence[str | PathLike]): the files about to be written.
        inputs (Iterable[str | PathLike]): files the run reads (e.g. the input
            image); an output that resolves to one of them (symlinks followed) is
            refused. Default: ().
        overwrite (bool): whether an existing output may be replaced. Default: True.

    Returns:
        list[Path]: the outputs that exist now and will be replaced (empty with
        ``overwrite=False``).

    Raises:
        OutputError: an output is a folder, resolves to an input, repeats another
            output, or exists while ``overwrite`` is False.

    Examples::

        >>> check_outputs(["/nonexistent-folder/out.json"])
        []
    """
    sources = {Path(p).expanduser().resolve() for p in inputs}
    identities = {_identity(p) for p in sources} - {None}  # also catches hard links
    seen: set[Path] = set()
    existing = []
    for raw in paths:
        path = Path(raw).expanduser()
        real = path.resolve()
        if real in sources or _identity(real) in identities:
            raise OutputError(
                f"refusing to write {os.fspath(raw)!r}: it is the input file {str(real)!r}, which would be "
                "overwritten; choose another output path"
            )
        if real in seen:
            raise OutputError(f"output path {os.fspath(raw)!r} is given twice; each output needs its own file")
        seen.add(real)
        if path.is_dir():
            raise OutputError(f"output path {os.fspath(raw)!r} is a folder; expected a file name")
        if os.path.lexists(path):
            if not overwrite:
                raise OutputError(
                    f"output {os.fspath(raw)!r} exists and replacing it was not allowed (no-clobber); "
                    "remove it or choose another path"
                )
            existing.append(path)
    return existing


def _identity(path: Path) -> tuple[int, int] | None:
    """(device, inode) of an existing file, else None."""
    try:
        info = path.stat()
    except OSError:
        return None
    return info.st_dev, info.st_ino


def _temporary(path: Path, payload: bytes) -> Path:
    """Write ``payload`` to a new, exclusively created file beside ``path``."""
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0) | getattr(os, "O_BINARY", 0)
    for _ in range(_TRIES):
        tmp = path.with_name(f".{path.name}.{secrets.token_hex(8)}.tmp")
        try:
            fd = os.open(tmp, flags, 0o666)
        except FileExistsError:
            continue
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(payload)
                handle.flush()
                os.fsync(handle.fileno())
        except BaseException:
            tmp.unlink(missing_ok=True)
            raise
        return tmp
    raise OutputError(f"cannot create a temporary file beside {str(path)!r}: {_TRIES} fresh names were all taken")


def _backup(path: Path) -> Path | None:
    """A hidden copy (hard link when possible) of an existing ``path``, or None."""
    if not os.path.lexists(path):
        return None
    for _ in range(_TRIES):
        backup = path.with_name(f".{path.name}.{secrets.token_hex(8)}.old")
        try:
            os.link(path, backup, follow_symlinks=False)
        except FileExistsError:
            continue
        except OSError:  # no hard links here: copy (a symlink is copied as a link)
            if os.path.lexists(backup):
                continue
            shutil.copy2(path, backup, follow_symlinks=False)
        return backup
    raise OutputError(f"cannot back up {str(path)!r} before replacing it: {_TRIES} fresh names were all taken")


def write_files(files: Mapping[str | os.PathLike, bytes], *, overwrite: bool = True) -> list[Path]:
    """Write several files as one unit: all new, or (after any failure) all as before.

    Folders are created as needed. Each payload is written to an exclusively created
    temporary file beside its destination; only then are the files moved into place.
    A failure or ``KeyboardInterrupt`` before the last move restores every
    destination's previous state and removes the temporary files.

    Args:
        files (Mapping[str | PathLike, bytes]): destination -> complete contents.
        overwrite (bool): replace existing destinations (atomically); with False an
            existing destination is refused, also when it appears during the write.
            Default: True.

    Returns:
        list[Path]: the destinations that existed and were replaced.

    Raises:
        OutputError: see :func:`check_outputs`; or a destination appeared while
            ``overwrite`` was False.
        OSError: the folder cannot be written (nothing is changed).

    Examples::

        >>> import tempfile, pathlib
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> write_files({folder / "a.json": b"{}", folder / "a.png": b"png"})
        []
        >>> sorted(p.name for p in folder.iterdir())
        ['a.json', 'a.png']
    """
    paths = [Path(p).expanduser() for p in files]
    replaced = check_outputs(paths, overwrite=overwrite)
    temps: list[Path] = []
    done: list[tuple[Path, Path | None]] = []  # (destination, backup of its old file)
    try:
        for path, payload in zip(paths, files.values()):
            path.parent.mkdir(parents=True, exist_ok=True)
            temps.append(_temporary(path, payload))
        for path, tmp in zip(paths, temps):
            if overwrite:
                backup = _backup(path)
                done.append((path, backup))
                os.replace(tmp, path)
            else:
                try:
                    os.link(tmp, path, follow_symlinks=False)
                except FileExistsError:
                    raise OutputError(
                        f"output {str(path)!r} appeared while writing and replacing it was not allowed; "
                        "nothing was written"
                    ) from None
                done.append((path, None))
                tmp.unlink()
    except BaseException:
        for path, backup in reversed(done):
            if backup is not None:
                os.replace(backup, path)  # a no-op when both are still links to the old file
                backup.unlink(missing_ok=True)
            else:
                path.unlink(missing_ok=True)
        for tmp in temps:
            tmp.unlink(missing_ok=True)
        raise
    for _, backup in done:
        if backup is not None:
            backup.unlink(missing_ok=True)
    return replaced
