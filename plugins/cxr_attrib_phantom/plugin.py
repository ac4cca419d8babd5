"""The phantom suite's plugin module: the ``phantom`` benchmark and the ``demo`` command."""

from .benchmark import register_benchmarks
from .commands import register_commands

__all__ = ["register_benchmarks", "register_commands"]
