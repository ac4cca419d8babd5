"""The phantom suite's plugin module: the ``phantom`` benchmark, pool and ``demo`` command."""

from .benchmark import register_benchmarks
from .commands import register_commands
from .pool import register_pools

__all__ = ["register_benchmarks", "register_commands", "register_pools"]
