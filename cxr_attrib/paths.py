"""Where the toolkit may write: never into a data root or a protected folder."""

from __future__ import annotations

import os
from collections.abc import Iterable
from pathlib import Path

from .errors import DataError

__all__ = ["DATA_ENV", "ensure_outside_data", "is_inside"]

DATA_ENV = "CXR_ATTRIB_DATA"
"""Environment variable naming the data root (datasets are read there, never written)."""


def is_inside(path: Path, root: Path) -> bool:
    """Whether ``path`` equals ``root`` or lies below it (both already resolved)."""
    return path == root or path.is_relative_to(root)


def ensure_outside_data(
    path: str | os.PathLike[str],
    *,
    protected: Iterable[str | os.PathLike[str]] = (),
    what: str = "output",
) -> Path:
    """Resolve an output path and refuse it inside the data root or a protected folder.

    Args:
        path (str | PathLike): the file or folder about to be written.
        protected (Iterable[str | PathLike]): further folders never to write into.
            ``$CXR_ATTRIB_DATA``, when set and not empty, always is. Default: ().
        what (str): what is being written, for the message. Default: "output".

    Returns:
        Path: ``path`` expanded and resolved.

    Raises:
        DataError: ``path`` is inside one of those folders.

    Examples::

        >>> ensure_outside_data("/tmp/out", protected=["/data"]).as_posix()
        '/tmp/out'
    """
    target = Path(path).expanduser().resolve()
    roots = [Path(p).expanduser().resolve() for p in protected]
    data_root = os.environ.get(DATA_ENV, "").strip()
    if data_root:
        roots.append(Path(data_root).expanduser().resolve())
    for root in roots:
        if is_inside(target, root):
            raise DataError(
                f"refusing to write {what} to {target}: it is inside the data folder {root}, "
                "which is never written to; choose an output path elsewhere"
            )
    return target
