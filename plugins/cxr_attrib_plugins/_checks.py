"""Parameter checks shared by the built-in methods (run before any model pass)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from cxr_attrib.errors import MethodParameterError

__all__ = ["check_choice", "check_positive_int"]


def check_positive_int(method: str, name: str, value: Any) -> int:
    """``value`` as an int >= 1, else a MethodParameterError naming ``method`` and ``name``.

    Examples::

        >>> check_positive_int("integrated_gradients", "steps", 24)
        24
    """
    if isinstance(value, bool) or not isinstance(value, int) or value < 1:
        raise MethodParameterError(
            f"{method}: parameter {name!r} must be an integer >= 1, got {value!r}."
        )
    return value


def check_choice(method: str, name: str, value: Any, choices: Sequence[str]) -> str:
    """``value`` if it is one of ``choices``, else a MethodParameterError listing them.

    Examples::

        >>> check_choice("integrated_gradients", "baseline", "blur", ("black", "blur", "mean"))
        'blur'
    """
    if value not in choices:
        raise MethodParameterError(
            f"{method}: parameter {name!r} must be one of {', '.join(map(repr, choices))}, got {value!r}."
        )
    return value
