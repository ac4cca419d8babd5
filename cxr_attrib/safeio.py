"""The read side of the file boundary: regular files only, within a size budget.

Every read of a user-named or data-root path in the core, plugins and adapters goes
through this module (``tests/test_io_boundary.py`` fails when code goes around it):

* :func:`open_regular` / :func:`read_bytes` / :func:`read_text` / :func:`read_json`:
  a path with a null byte is refused; FIFOs, sockets and devices are refused before
  any ``open`` (and again on the opened descriptor, so a swap in between is caught);
  a file over its byte budget is refused before it is read;
* :func:`load_npz` / :func:`load_npy`: arrays with a budget over the **total**
  decoded bytes of one file and a bound on decoded / stored bytes per member, both
  checked from the headers and again while decoding, so a compression bomb is
  refused without being expanded;
* :func:`connect_sqlite` and :func:`building_sqlite`: SQLite stores opened only
  when they are regular files, and built under an exclusive, unpredictable name that
  is linked into place only when complete;
* :func:`exclusive_lock`: an advisory lock beside a file, refused at once (never
  waited for) when another process holds it.

The write side is :mod:`cxr_attrib.outputs`; the data-root rule is
:mod:`cxr_attrib.paths`.
"""

from __future__ import annotations

import io
import json
import os
import secrets
import sqlite3
import stat
import zipfile
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np

from .errors import FileInUseError, OutputError, UnreadableFileError

__all__ = [
    "DEFAULT_MAX_BYTES",
    "MAX_ARRAY_RATIO",
    "building_sqlite",
    "checked_path",
    "connect_sqlite",
    "exclusive_lock",
    "load_npy",
    "load_npz",
    "open_regular",
    "read_bytes",
    "read_json",
    "read_text",
    "regular_file_exists",
]

DEFAULT_MAX_BYTES = 1 << 30
"""Largest file read (bytes) when a caller names no smaller budget: 1 GiB."""

MAX_ARRAY_RATIO = 1100
"""Largest decoded / stored byte ratio of one compressed array member. Deflate tops
out near 1032:1, so any honest ``np.savez_compressed`` file passes, while bzip2 or
lzma bombs (ratios of millions) are refused."""

_LOCK_SUFFIX = ".lock"

_TRIES = 16
"""Fresh temporary names tried before giving up (a collision means a planted file)."""


def checked_path(path: Any, *, what: str = "path") -> Path:
    """``path`` as a :class:`Path`, after refusing a wrong type or a null byte.

    Args:
        path (str | PathLike): the path as the user gave it.
        what (str): what the path is, for the message. Default: "path".

    Returns:
        Path: the path, ``~`` expanded.

    Raises:
        TypeError: ``path`` is not a str or PathLike (names ``what`` and the type).
        UnreadableFileError: the path contains a null byte.

    Examples::

        >>> checked_path("~/x.json").name
        'x.json'
    """
    if isinstance(path, bytes) or not isinstance(path, (str, os.PathLike)):
        raise TypeError(f"{what} must be a str or os.PathLike path, got {type(path).__name__}")
    text = os.fspath(path)
    if not isinstance(text, str):
        raise TypeError(f"{what} must be a text path, got {type(text).__name__}")
    if "\x00" in text:
        raise UnreadableFileError(f"{what} {_short(text)} contains a null byte; no file has such a name")
    return Path(text).expanduser()


def _short(text: str, limit: int = 80) -> str:
    """``repr`` of at most ``limit`` characters of ``text``, with its length when cut."""
    return repr(text) if len(text) <= limit else f"{text[:limit]!r}... ({len(text)} characters)"


def _kind(mode: int) -> str:
    return ("a FIFO (named pipe)" if stat.S_ISFIFO(mode) else "a socket" if stat.S_ISSOCK(mode)
            else "a device file" if stat.S_ISCHR(mode) or stat.S_ISBLK(mode)
            else "a folder" if stat.S_ISDIR(mode) else "not a regular file")


def _require_regular(mode: int, name: str, what: str) -> None:
    if not stat.S_ISREG(mode):
        raise UnreadableFileError(f"{what} {name} is {_kind(mode)}, which is never read; expected a regular file")


def regular_file_exists(path: str | os.PathLike[str], *, what: str = "file") -> bool:
    """Whether a regular file is at ``path`` (symlinks followed), without opening anything.

    Use it instead of ``Path.is_file()`` where a missing file gets its own message:
    ``is_file()`` is False for a FIFO too, which would then be reported as missing.

    Returns:
        bool: True for a regular file; False when nothing is there.

    Raises:
        TypeError: ``path`` is not a path.
        UnreadableFileError: something that is not a regular file is there (a FIFO,
            socket, device or folder; the message names the kind), or a null byte.

    Examples::

        >>> regular_file_exists("/nonexistent-folder/a.json")
        False
    """
    target = checked_path(path, what=what)
    try:
        mode = os.stat(target).st_mode
    except (FileNotFoundError, NotADirectoryError):
        return False
    _require_regular(mode, repr(os.fspath(path)), what)
    return True


@contextmanager
def open_regular(path: str | os.PathLike[str], *, what: str = "file",
                 max_bytes: int = DEFAULT_MAX_BYTES) -> Iterator[BinaryIO]:
    """Open a regular file for binary reading, refusing anything that is not one.

    Args:
        path (str | PathLike): the file (symlinks to regular files are followed).
        what (str): what the file is, for messages. Default: "file".
        max_bytes (int): largest accepted size in bytes. Default: ``DEFAULT_MAX_BYTES``.

    Yields:
        BinaryIO: the open file, positioned at its start.

    Raises:
        TypeError: ``path`` is not a path.
        UnreadableFileError: missing, a folder, a FIFO / socket / device, over
            ``max_bytes``, unreadable, or a null byte in the path.
    """
    target = checked_path(path, what=what)
    name = repr(os.fspath(path))
    try:
        _require_regular(os.stat(target).st_mode, name, what)
        # Non-blocking, so a FIFO swapped in after the check cannot hang the open; the
        # descriptor is checked again before anything is read.
        fd = os.open(target, os.O_RDONLY | getattr(os, "O_NONBLOCK", 0) | getattr(os, "O_BINARY", 0))
    except FileNotFoundError:
        raise UnreadableFileError(f"{what} {name}: no such file; check the path") from None
    except OSError as exc:
        raise UnreadableFileError(f"{what} {name}: cannot be read ({exc.strerror or exc})") from None
    with os.fdopen(fd, "rb") as handle:
        info = os.fstat(fd)
        _require_regular(info.st_mode, name, what)
        if info.st_size > max_bytes:
            raise UnreadableFileError(
                f"{what} {name} is {info.st_size:,} bytes, over the budget of {max_bytes:,} bytes; "
                "it is not read"
            )
        yield handle


def read_bytes(path: str | os.PathLike[str], *, what: str = "file", max_bytes: int = DEFAULT_MAX_BYTES) -> bytes:
    """The whole content of a regular file (see :func:`open_regular` for the refusals).

    A file that grows past ``max_bytes`` while being read is refused too.

    Examples::

        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "a.txt"
        >>> _ = path.write_bytes(b"abc")
        >>> read_bytes(path)
        b'abc'
    """
    with open_regular(path, what=what, max_bytes=max_bytes) as handle:
        data = handle.read(max_bytes + 1)
    if len(data) > max_bytes:
        raise UnreadableFileError(f"{what} {os.fspath(path)!r} grew over the budget of {max_bytes:,} bytes")
    return data


def read_text(path: str | os.PathLike[str], *, what: str = "file", max_bytes: int = DEFAULT_MAX_BYTES,
              encoding: str = "utf-8", errors: str = "strict") -> str:
    """A regular file decoded as text; bad encoding is an :class:`UnreadableFileError`.

    ``encoding`` and ``errors`` are those of :meth:`bytes.decode`; the refusals are
    those of :func:`open_regular`.
    """
    data = read_bytes(path, what=what, max_bytes=max_bytes)
    try:
        return data.decode(encoding, errors)
    except UnicodeDecodeError as exc:
        raise UnreadableFileError(f"{what} {os.fspath(path)!r} is not {encoding.upper()} text ({exc.reason} at byte "
                                  f"{exc.start})") from None


def read_json(path: str | os.PathLike[str], *, what: str = "file", max_bytes: int = DEFAULT_MAX_BYTES) -> Any:
    """A regular UTF-8 JSON file, parsed; malformed JSON names the file, line and column.

    Examples::

        >>> import tempfile, pathlib
        >>> path = pathlib.Path(tempfile.mkdtemp()) / "a.json"
        >>> _ = path.write_text('{"a": 1}')
        >>> read_json(path)
        {'a': 1}
    """
    text = read_text(path, what=what, max_bytes=max_bytes)
    try:
        return json.loads(text)
    except json.JSONDecodeError as exc:
        raise UnreadableFileError(f"{what} {os.fspath(path)!r} is not valid JSON: {exc.msg} at line {exc.lineno} "
                                  f"column {exc.colno}") from None


def load_npy(blob: bytes, *, what: str = "array", max_bytes: int = DEFAULT_MAX_BYTES) -> np.ndarray:
    """Decode one ``.npy`` payload (no pickles), refusing a header that claims too much.

    Args:
        blob (bytes): the bytes ``np.save`` wrote.
        what (str): what the array is, for messages. Default: "array".
        max_bytes (int): largest decoded size in bytes. Default: ``DEFAULT_MAX_BYTES``.

    Returns:
        np.ndarray: the array, shape and dtype as stored.

    Raises:
        UnreadableFileError: not an ``.npy`` payload, an object dtype, a header
            claiming more than ``max_bytes`` or more bytes than the payload holds.

    Examples::

        >>> import io
        >>> buffer = io.BytesIO(); np.save(buffer, np.arange(3))
        >>> load_npy(buffer.getvalue()).tolist()
        [0, 1, 2]
    """
    stream = io.BytesIO(blob)
    try:
        version = np.lib.format.read_magic(stream)
        reader = {(1, 0): np.lib.format.read_array_header_1_0, (2, 0): np.lib.format.read_array_header_2_0}
        if version not in reader:
            raise ValueError(f"unsupported .npy format version {version}")
        shape, _, dtype = reader[version](stream, max_header_size=10_000)
    except (ValueError, EOFError, SyntaxError, TypeError) as exc:
        raise UnreadableFileError(f"{what} is not a .npy array ({exc})") from None
    if dtype.hasobject:
        raise UnreadableFileError(f"{what} holds Python objects (dtype {dtype}); only plain numeric arrays are read")
    claimed = int(np.prod(shape, dtype=np.float64)) * dtype.itemsize
    if claimed > max_bytes or claimed > len(blob) - stream.tell():
        raise UnreadableFileError(
            f"{what} claims shape {shape} of {dtype} = {claimed:,} bytes, but holds {len(blob) - stream.tell():,} "
            f"bytes (budget {max_bytes:,}); the file is damaged or hostile"
        )
    stream.seek(0)
    try:
        return np.load(stream, allow_pickle=False)
    except (ValueError, OSError, EOFError) as exc:
        raise UnreadableFileError(f"{what} cannot be decoded ({exc})") from None


def load_npz(source: str | os.PathLike[str] | bytes, *, what: str = "array file",
             max_bytes: int = DEFAULT_MAX_BYTES, max_ratio: float = MAX_ARRAY_RATIO) -> dict[str, np.ndarray]:
    """Every array of an ``.npz`` file, within one decoded-size budget for them all.

    Args:
        source (str | PathLike | bytes): the file, or its bytes.
        what (str): what the file is, for messages. Default: "array file".
        max_bytes (int): budget in bytes for the stored file and, separately, for
            the decoded total of all its arrays. Default: ``DEFAULT_MAX_BYTES``.
        max_ratio (float): largest decoded / stored ratio of a compressed member.
            Default: ``MAX_ARRAY_RATIO``.

    Returns:
        dict[str, np.ndarray]: member name (without ``.npy``) -> array.

    Raises:
        UnreadableFileError: not an npz, over either budget or the ratio (checked
            from the headers and again on the decoded bytes), or a bad member.

    Examples::

        >>> import io
        >>> buffer = io.BytesIO(); np.savez_compressed(buffer, a=np.zeros(4))
        >>> load_npz(buffer.getvalue())["a"].shape
        (4,)
    """
    if isinstance(source, bytes):
        data, name = source, what
    else:
        data, name = read_bytes(source, what=what, max_bytes=max_bytes), f"{what} {os.fspath(source)!r}"
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except (zipfile.BadZipFile, OSError, ValueError) as exc:
        raise UnreadableFileError(f"{name} is not an .npz array file ({exc})") from None
    arrays: dict[str, np.ndarray] = {}
    with archive:
        members = archive.infolist()
        total = sum(m.file_size for m in members)
        if total > max_bytes:
            raise UnreadableFileError(f"{name} claims {total:,} decoded bytes over all its arrays, over the budget "
                                      f"of {max_bytes:,}; it is not decoded")
        for member in members:
            if member.compress_type != zipfile.ZIP_STORED and member.file_size > max_ratio * max(member.compress_size, 1):
                raise UnreadableFileError(
                    f"{name}: member {member.filename!r} expands {member.file_size:,} / {member.compress_size:,} "
                    f"bytes, over the ratio {max_ratio:g}; a decompression bomb is not decoded")
            try:
                with archive.open(member) as stream:
                    payload = stream.read(member.file_size + 1)
            except (zipfile.BadZipFile, OSError, EOFError, NotImplementedError, RuntimeError) as exc:
                raise UnreadableFileError(f"{name}: member {member.filename!r} cannot be decoded ({exc})") from None
            if len(payload) != member.file_size:
                raise UnreadableFileError(f"{name}: member {member.filename!r} decodes to a size other than its "
                                          "header says; the file is damaged or hostile")
            key = member.filename[:-4] if member.filename.endswith(".npy") else member.filename
            arrays[key] = load_npy(payload, what=f"{name} member {member.filename!r}", max_bytes=max_bytes)
    return arrays


def connect_sqlite(path: str | os.PathLike[str], *, writable: bool, what: str = "store") -> sqlite3.Connection:
    """Open an existing SQLite file (a regular file only), read-only unless ``writable``.

    Args:
        path (str | PathLike): the .sqlite file.
        writable (bool): open for writing; otherwise SQLite's ``mode=ro``.
        what (str): what the file is, for messages. Default: "store".

    Returns:
        sqlite3.Connection: autocommit (``isolation_level=None``).

    Raises:
        UnreadableFileError: missing, not a regular file, or a null byte in the path.
        OutputError: ``writable`` and the path is a symbolic link.
        sqlite3.Error: SQLite refuses the file.
    """
    target = checked_path(path, what=what)
    try:
        _require_regular(os.stat(target).st_mode, repr(os.fspath(path)), what)
    except FileNotFoundError:
        raise UnreadableFileError(f"{what} {os.fspath(path)!r}: no such file; check the path") from None
    if writable:
        if os.path.islink(target):  # written through, the link's target (any file) would change
            raise OutputError(f"refusing to write {what} {os.fspath(path)!r}: it is a symbolic link; "
                              "writes never follow links, so point at the store itself")
        return sqlite3.connect(target, isolation_level=None)
    return sqlite3.connect(target.resolve().as_uri() + "?mode=ro", uri=True, isolation_level=None)


@contextmanager
def building_sqlite(path: str | os.PathLike[str], *, what: str = "store") -> Iterator[sqlite3.Connection]:
    """Build a new SQLite file under a hidden exclusive name; link it to ``path`` when complete.

    The temporary file is created with ``O_CREAT | O_EXCL | O_NOFOLLOW`` under an
    unpredictable name beside ``path``; on success it is hard-linked to ``path``
    (which must not exist: never replaced, never followed), on any failure or
    interruption it is removed and ``path`` is untouched.

    Args:
        path (str | PathLike): the file to create; its folder must exist and lie
            outside the data root.
        what (str): what the file is, for messages. Default: "store".

    Yields:
        sqlite3.Connection: open on the temporary file (closed before the link).

    Raises:
        OutputError: ``path`` exists or appears meanwhile, or lies in the data root.
    """
    from .paths import ensure_outside_data

    target = checked_path(path, what=what)
    ensure_outside_data(target, what=what)
    if os.path.lexists(target):
        raise OutputError(f"refusing to overwrite {target}: a {what} already exists there")
    flags = os.O_WRONLY | os.O_CREAT | os.O_EXCL | getattr(os, "O_NOFOLLOW", 0)
    for _ in range(_TRIES):
        building = target.with_name(f".{target.name}.{secrets.token_hex(8)}.building")
        try:
            os.close(os.open(building, flags, 0o666))
            break
        except FileExistsError:
            continue
    else:
        raise OutputError(f"cannot create a temporary file beside {str(target)!r}: {_TRIES} fresh names were all taken")
    try:
        db = sqlite3.connect(building, isolation_level=None)
        try:
            yield db
        finally:
            db.close()
        try:
            os.link(building, target, follow_symlinks=False)
        except FileExistsError:
            raise OutputError(f"refusing to overwrite {target}: a {what} appeared there meanwhile") from None
    finally:
        for leftover in (building, *(building.with_name(building.name + s) for s in ("-journal", "-wal", "-shm"))):
            leftover.unlink(missing_ok=True)


@contextmanager
def exclusive_lock(path: str | os.PathLike[str], *, what: str = "file") -> Iterator[None]:
    """Hold an advisory lock on ``path`` (through a hidden ``.NAME.lock`` beside it).

    A second process asking for the same lock is refused at once with
    :class:`FileInUseError`, never left waiting. The lock file is opened without
    following symlinks and is left in place (removing it would race).

    Args:
        path (str | PathLike): the file to guard (e.g. a shard store).
        what (str): what the file is, for the message. Default: "file".

    Raises:
        FileInUseError: another process holds the lock.
    """
    import fcntl

    target = checked_path(path, what=what)
    lock = target.with_name(f".{target.name}{_LOCK_SUFFIX}")
    fd = os.open(lock, os.O_RDWR | os.O_CREAT | getattr(os, "O_NOFOLLOW", 0), 0o666)
    try:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            raise FileInUseError(
                f"{what} {str(target)!r} is in use by another process (lock {lock.name}); wait for it to finish, "
                "or run another shard"
            ) from None
        yield
    finally:
        os.close(fd)  # closing releases the lock
