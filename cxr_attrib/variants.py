"""Method variants: ``name[key=value,...]`` labels that run one method with set parameters.

A leaderboard's ``--methods "medfocus,medfocus[transfer=warp]"`` runs two rows of one
method. Inside the brackets, comma-separated ``key=value`` items; a value is a JSON
literal (``0.5``, ``true``, ``null``, ``"text"``) or else a plain string (``warp``).
Commas inside brackets, braces or quotes do not split. A label is stored in its
canonical form: keys sorted, no spaces (:func:`canonical_label`), so the same variant
written two ways is one row.
"""

from __future__ import annotations

import json
import re
from dataclasses import dataclass, field
from typing import Any

from .errors import MethodParameterError

__all__ = ["MethodVariant", "canonical_label", "parse_variant", "split_method_list"]

_LABEL = re.compile(r"^\s*([A-Za-z0-9_.-]+)\s*(?:\[(.*)\])?\s*$", re.DOTALL)


def split_method_list(text: str) -> list[str]:
    """Split a comma list of method labels, keeping commas inside ``[...]``, ``{...}`` and quotes.

    >>> split_method_list('occlusion, medfocus[transfer=warp,shape=mask],rise')
    ['occlusion', 'medfocus[transfer=warp,shape=mask]', 'rise']
    """
    return [part.strip() for part in _split_top(text, ",") if part.strip()]


def _split_top(text: str, separator: str) -> list[str]:
    parts, depth, quote, start = [], 0, False, 0
    for position, char in enumerate(text):
        if char == '"':
            quote = not quote
        elif not quote and char in "[{":
            depth += 1
        elif not quote and char in "]}":
            depth -= 1
        elif not quote and depth == 0 and char == separator:
            parts.append(text[start:position])
            start = position + 1
    parts.append(text[start:])
    return parts


def _value(raw: str) -> Any:
    try:
        return json.loads(raw)
    except json.JSONDecodeError:
        return raw


def _text(value: Any) -> str:
    """A value as a label writes it: a plain string bare when it reads back as itself."""
    if isinstance(value, str) and value and not set(value) & set(',[]{}"= ') and _value(value) == value:
        return value
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


@dataclass(frozen=True)
class MethodVariant:
    """One method with some parameters set.

    Attributes:
        name (str): the registered method name.
        params (dict[str, Any]): the parameters the label sets (not the defaults).
    """

    name: str
    params: dict[str, Any] = field(default_factory=dict)

    @property
    def label(self) -> str:
        """The canonical label: ``name`` or ``name[k=v,...]`` with sorted keys."""
        return canonical_label(self.name, self.params)


def canonical_label(name: str, params: dict[str, Any]) -> str:
    """``name`` when ``params`` is empty, else ``name[k1=v1,k2=v2]`` with sorted keys.

    >>> canonical_label("medfocus", {"transfer": "warp", "mass_quantile": 0.5})
    'medfocus[mass_quantile=0.5,transfer=warp]'
    """
    if not params:
        return name
    return f"{name}[{','.join(f'{key}={_text(params[key])}' for key in sorted(params))}]"


def parse_variant(label: str) -> MethodVariant:
    """Parse ``name`` or ``name[key=value,...]``.

    Raises:
        MethodParameterError: a label that does not parse, an empty or repeated key.
            (Whether the method and its keys exist is the registry's check:
            :meth:`~cxr_attrib.method.Method.check_params`.)

    >>> parse_variant("medfocus[transfer=warp, mass_quantile=0.5]").params
    {'transfer': 'warp', 'mass_quantile': 0.5}
    """
    match = _LABEL.match(label) if isinstance(label, str) else None
    if match is None:
        raise MethodParameterError(
            f"method label {label!r} does not parse; expected NAME or NAME[key=value,...], "
            "e.g. medfocus[transfer=warp]"
        )
    name, inner = match.group(1), match.group(2)
    params: dict[str, Any] = {}
    if inner is None:
        return MethodVariant(name)
    if not inner.strip():
        raise MethodParameterError(f"method label {label!r} has empty brackets; write {name!r} or {name}[key=value]")
    for item in _split_top(inner, ","):
        key, sep, raw = item.partition("=")
        key = key.strip()
        if not sep or not re.fullmatch(r"[A-Za-z_][A-Za-z0-9_]*", key):
            raise MethodParameterError(
                f"method label {label!r}: item {item.strip()!r} is not key=value (e.g. {name}[transfer=warp])"
            )
        if key in params:
            raise MethodParameterError(f"method label {label!r} sets parameter {key!r} twice")
        params[key] = _value(raw.strip())
    return MethodVariant(name, params)
