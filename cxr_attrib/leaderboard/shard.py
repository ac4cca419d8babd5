"""Deterministic sharding over existing launchers (torchrun, Slurm), no scheduler of our own.

A shard ``K/N`` (``0 <= K < N``) owns the units whose stable key hash is ``K``
modulo ``N``. The shard comes from ``--shard K/N`` or, when that is absent, from the
environment, in this order:

1. ``RANK`` / ``WORLD_SIZE`` (torchrun, torch.distributed launchers);
2. ``SLURM_ARRAY_TASK_ID`` / ``SLURM_ARRAY_TASK_COUNT`` (a Slurm job array; the
   index is taken relative to ``SLURM_ARRAY_TASK_MIN``);
3. ``SLURM_PROCID`` / ``SLURM_NTASKS`` (tasks of one Slurm job step);

and is ``0/1`` (everything) otherwise. The device follows ``LOCAL_RANK`` when CUDA
is available.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from dataclasses import dataclass

from cxr_attrib.errors import CxrAttribError

__all__ = ["Shard", "ShardError", "device_from_env", "parse_shard", "resolve_shard"]

_ENV_PAIRS = (
    ("RANK", "WORLD_SIZE", "torchrun"),
    ("SLURM_ARRAY_TASK_ID", "SLURM_ARRAY_TASK_COUNT", "Slurm array"),
    ("SLURM_PROCID", "SLURM_NTASKS", "Slurm tasks"),
)


class ShardError(CxrAttribError, ValueError):
    """A shard specification outside ``0 <= K < N`` or not of the form ``K/N``."""


@dataclass(frozen=True)
class Shard:
    """Shard ``index`` of ``count``.

    Attributes:
        index (int): K, in ``0 .. count - 1``.
        count (int): N >= 1.
        source (str): where it came from (``"--shard"``, ``"torchrun"``, ...).
    """

    index: int
    count: int
    source: str = "--shard"

    def __post_init__(self) -> None:
        if self.count < 1 or not 0 <= self.index < self.count:
            raise ShardError(
                f"shard {self.index}/{self.count} (from {self.source}) is invalid: expected K/N with N >= 1 "
                f"and 0 <= K <= N - 1, e.g. 0/{max(self.count, 2)}"
            )

    @property
    def label(self) -> str:
        """``"K/N"``."""
        return f"{self.index}/{self.count}"

    @property
    def filename(self) -> str:
        """The store file of this shard: ``leaderboard.sqlite`` or ``shard-K-of-N.sqlite``."""
        return "leaderboard.sqlite" if self.count == 1 else f"shard-{self.index}-of-{self.count}.sqlite"

    def owns(self, key: str) -> bool:
        """Whether this shard runs the group whose hex SHA-256 key is ``key``.

        >>> Shard(1, 2).owns("0" * 63 + "1"), Shard(0, 2).owns("0" * 63 + "1")
        (True, False)
        """
        return int(key[-16:], 16) % self.count == self.index


def parse_shard(text: str, source: str = "--shard") -> Shard:
    """Parse ``"K/N"``.

    Raises:
        ShardError: not two integers separated by ``/``, or K outside ``0 .. N - 1``.
    """
    match = re.fullmatch(r"\s*(-?\d+)\s*/\s*(-?\d+)\s*", text)
    if not match:
        raise ShardError(f"{source} {text!r} is not of the form K/N (two integers, 0 <= K < N), e.g. 0/4")
    return Shard(int(match[1]), int(match[2]), source)


def _int(environ: Mapping[str, str], name: str) -> int:
    try:
        return int(environ[name])
    except ValueError:
        raise ShardError(f"environment variable {name}={environ[name]!r} is not an integer") from None


def resolve_shard(option: str | None, environ: Mapping[str, str] | None = None) -> Shard:
    """The shard of this process: ``--shard`` first, then the launcher's environment.

    Args:
        option (str | None): the ``--shard K/N`` value, or None.
        environ (Mapping | None): environment to read. Default: ``os.environ``.

    Returns:
        Shard: ``0/1`` when nothing says otherwise.

    Raises:
        ShardError: a malformed or out-of-range specification.
    """
    if option is not None:
        return parse_shard(option)
    environ = os.environ if environ is None else environ
    for rank_name, size_name, source in _ENV_PAIRS:
        if rank_name in environ and size_name in environ:
            rank = _int(environ, rank_name)
            if rank_name == "SLURM_ARRAY_TASK_ID":
                rank -= _int(environ, "SLURM_ARRAY_TASK_MIN") if "SLURM_ARRAY_TASK_MIN" in environ else 0
            return Shard(rank, _int(environ, size_name), f"{source} ({rank_name}/{size_name})")
    return Shard(0, 1, "default")


def device_from_env(environ: Mapping[str, str] | None = None) -> str | None:
    """``cuda:<LOCAL_RANK>`` when CUDA is available and ``LOCAL_RANK`` is set, else None."""
    environ = os.environ if environ is None else environ
    if "LOCAL_RANK" not in environ:
        return None
    import torch

    if not torch.cuda.is_available():
        return None
    return f"cuda:{_int(environ, 'LOCAL_RANK') % max(torch.cuda.device_count(), 1)}"
