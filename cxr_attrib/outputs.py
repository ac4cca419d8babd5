"""The write side of the file boundary: validated up front, atomic, several as one unit.

Every file the toolkit writes goes through :func:`write_files` (or :func:`write_file`):

* the data-root rule (:func:`cxr_attrib.paths.ensure_outside_data`) is applied to
  every destination, so nothing is ever written inside ``$CXR_ATTRIB_DATA``;
* below the folder the caller names (``root``), every level is opened with
  ``O_NOFOLLOW`` relative to its parent's descriptor: a symlink planted as a
  sub-folder (or swapped in meanwhile) is refused, never followed;
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
from collections.abc import Iterable, Mapping, Sequence
from pathlib import Path

from .errors import OutputError
from .paths import ensure_outside_data
from .safeio import _TRIES, checked_path

__all__ = ["check_outputs", "write_file", "write_files"]


def check_outputs(
    paths: Sequence[str | os.PathLike],
    *,
    inputs: Iterable[str | os.PathLike] = (),
    overwrite: bool = True,
    protected: Iterable[str | os.PathLike] = (),
) -> list[Path]:
    """Refuse output paths that must not be written, before any work is done.

    Args:
        paths (Sequence[str | PathLike]): the files about to be written.
        inputs (Iterable[str | PathLike]): files the run reads (e.g. the input
            image); an output that resolves to one of them (symlinks followed) is
            refused. Default: ().
        overwrite (bool): whether an existing output may be replaced. Default: True.
        protected (Iterable[str | PathLike]): folders never written into, besides
            ``$CXR_ATTRIB_DATA``. Default: ().

    Returns:
        list[Path]: the outputs that exist now and will be replaced (empty with
        ``overwrite=False``).

    Raises:
        OutputError: an output is a folder, resolves to an input, repeats another
            output, or exists while ``overwrite`` is False.
        DataError: an output lies inside the data root or a ``protected`` folder.

    Examples::

        >>> check_outputs(["/nonexistent-folder/out.json"])
        []
    """
    sources = {Path(p).expanduser().resolve() for p in inputs}
    identities = {_identity(p) for p in sources} - {None}  # also catches hard links
    seen: set[Path] = set()
    existing = []
    protected = list(protected)
    for raw in paths:
        path = checked_path(raw, what="output path")
        real = ensure_outside_data(path, protected=protected)
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


_FILE_FLAGS = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
_DIR_FLAGS = os.O_RDONLY | getattr(os, "O_DIRECTORY", 0)


def _open_levels(root: Path, folder: Path, opened: dict[Path, int], created: list[tuple[Path, str]]) -> int:
    """A descriptor of ``folder``, created level by level below ``root`` without following links.

    Each sub-folder made here is appended to ``created`` as (its parent, its name)."""
    if folder in opened:
        return opened[folder]
    if folder == root:
        root.mkdir(parents=True, exist_ok=True)  # the folder the caller named: links above it are theirs
        opened[folder] = os.open(root, _DIR_FLAGS)
        return opened[folder]
    parent = _open_levels(root, folder.parent, opened, created)
    try:
        os.mkdir(folder.name, 0o777, dir_fd=parent)
        created.append((folder.parent, folder.name))
    except FileExistsError:
        pass
    try:
        opened[folder] = os.open(folder.name, _DIR_FLAGS | getattr(os, "O_NOFOLLOW", 0), dir_fd=parent)
    except (NotADirectoryError, OSError) as exc:
        if os.path.islink(folder):
            raise OutputError(f"refusing to write through {str(folder)!r}: it is a symbolic link below the output "
                              f"folder {str(root)!r}; remove it") from None
        raise OutputError(f"cannot write into {str(folder)!r}: {exc.strerror or exc}") from None
    return opened[folder]


def _temporary(name: str, folder: int, payload: bytes, shown: Path) -> str:
    """Write ``payload`` to a new, exclusively created file named after ``name`` in ``folder``."""
    for _ in range(_TRIES):
        tmp = f".{name}.{secrets.token_hex(8)}.tmp"
        try:
            fd = os.open(tmp, _FILE_FLAGS, 0o666, dir_fd=folder)
        except FileExistsError:
            continue
        try:
            with os.fdopen(fd, "wb") as handle:
                handle.write(payload)
                handle.flush()
                os.fsync(handle.fileno())
        except BaseException:
            os.unlink(tmp, dir_fd=folder)
            raise
        return tmp
    raise OutputError(f"cannot create a temporary file beside {str(shown)!r}: {_TRIES} fresh names were all taken")


def _backup(name: str, folder: int, shown: Path) -> str | None:
    """A hidden hard link to an existing ``name`` in ``folder`` (the link itself if a symlink), or None."""
    try:
        os.stat(name, dir_fd=folder, follow_symlinks=False)
    except FileNotFoundError:
        return None
    for _ in range(_TRIES):
        backup = f".{name}.{secrets.token_hex(8)}.old"
        try:
            os.link(name, backup, src_dir_fd=folder, dst_dir_fd=folder, follow_symlinks=False)
        except FileExistsError:
            continue
        return backup
    raise OutputError(f"cannot back up {str(shown)!r} before replacing it: {_TRIES} fresh names were all taken")


def _unlink(name: str, folder: int) -> None:
    try:
        os.unlink(name, dir_fd=folder)
    except FileNotFoundError:
        pass


def write_files(
    files: Mapping[str | os.PathLike, bytes],
    *,
    overwrite: bool = True,
    root: str | os.PathLike | None = None,
    protected: Iterable[str | os.PathLike] = (),
) -> list[Path]:
    """Write several files as one unit: all new, or (after any failure) all as before.

    Folders are created as needed. Each payload is written to an exclusively created
    temporary file (``O_CREAT | O_EXCL | O_NOFOLLOW``, random name) beside its
    destination; only then are the files moved into place (``os.replace``, which
    swaps the directory entry and never writes through a symlink). A failure or
    ``KeyboardInterrupt`` before the last move restores every destination's
    previous state and removes the temporary files. No destination may lie inside
    ``$CXR_ATTRIB_DATA`` or a ``protected`` folder.

    Args:
        files (Mapping[str | PathLike, bytes]): destination -> complete contents.
        overwrite (bool): replace existing destinations (atomically); with False an
            existing destination is refused, also when it appears during the write.
            Default: True.
        root (str | PathLike | None): the folder the user named; no level between it
            and a destination may be a symbolic link (each is opened with
            ``O_NOFOLLOW``). Default: None, meaning each destination's own folder.
        protected (Iterable[str | PathLike]): further folders never written into.
            Default: ().

    Returns:
        list[Path]: the destinations that existed and were replaced.

    Raises:
        OutputError: see :func:`check_outputs`; a symbolic link below ``root``; or a
            destination appeared while ``overwrite`` was False.
        DataError: a destination inside the data root or a protected folder.
        OSError: the folder cannot be written (nothing is changed).

    Examples::

        >>> import tempfile, pathlib
        >>> folder = pathlib.Path(tempfile.mkdtemp())
        >>> write_files({folder / "a.json": b"{}", folder / "sub" / "a.png": b"png"}, root=folder)
        []
        >>> sorted(str(p.relative_to(folder)) for p in folder.rglob("*"))
        ['a.json', 'sub', 'sub/a.png']
    """
    paths = [Path(os.path.abspath(checked_path(p, what="output path"))) for p in files]
    replaced = check_outputs(paths, overwrite=overwrite, protected=protected)
    base = None if root is None else Path(os.path.abspath(checked_path(root, what="output folder")))
    for path in paths:
        if base is not None and not path.parent.is_relative_to(base):
            raise OutputError(f"output {str(path)!r} lies outside its output folder {str(base)!r}")
    opened: dict[Path, int] = {}
    temps: list[tuple[int, str]] = []
    done: list[tuple[int, str, str | None]] = []  # (folder, name, backup of its old file)
    created: list[tuple[Path, str]] = []  # sub-folders made by this call, removed again on failure
    try:
        folders = [_open_levels(base or path.parent, path.parent, opened, created) for path in paths]
        for path, folder, payload in zip(paths, folders, files.values()):
            temps.append((folder, _temporary(path.name, folder, payload, path)))
        for path, (folder, tmp) in zip(paths, temps):
            if overwrite:
                backup = _backup(path.name, folder, path)
                done.append((folder, path.name, backup))
                os.replace(tmp, path.name, src_dir_fd=folder, dst_dir_fd=folder)
            else:
                try:
                    os.link(tmp, path.name, src_dir_fd=folder, dst_dir_fd=folder, follow_symlinks=False)
                except FileExistsError:
                    raise OutputError(
                        f"output {str(path)!r} appeared while writing and replacing it was not allowed; "
                        "nothing was written"
                    ) from None
                done.append((folder, path.name, None))
                _unlink(tmp, folder)
    except BaseException:
        for folder, name, backup in reversed(done):
            if backup is not None:
                os.replace(backup, name, src_dir_fd=folder, dst_dir_fd=folder)  # a no-op when still one file
                _unlink(backup, folder)
            else:
                _unlink(name, folder)
        for folder, tmp in temps:
            _unlink(tmp, folder)
        for parent, name in reversed(created):
            try:
                os.rmdir(name, dir_fd=opened[parent])
            except OSError:  # no longer empty: another writer's files are there
                pass
        raise
    else:
        for folder, _, backup in done:
            if backup is not None:
                _unlink(backup, folder)
    finally:
        for fd in opened.values():
            os.close(fd)
    return replaced


def write_file(path: str | os.PathLike, payload: bytes, *, overwrite: bool = True,
               root: str | os.PathLike | None = None) -> bool:
    """Write one file through :func:`write_files`; True when it replaced an existing file.

    Examples::

        >>> import tempfile, pathlib
        >>> write_file(pathlib.Path(tempfile.mkdtemp()) / "a.txt", b"hello")
        False
    """
    return bool(write_files({path: payload}, overwrite=overwrite, root=root))
