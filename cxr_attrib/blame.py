"""Whose bug is it: an exception inside a method run is blamed on the code it came from.

A method calls its adapter, so a traceback that ends inside the adapter's code (its
class, the classes it inherits, their packages) is the adapter's bug, not the
method's; one that ends in the method's code is the method's. Library frames
(torch, transformers, numpy) are skipped: the innermost frame of either party decides.
"""

from __future__ import annotations

import os
import sys
import traceback
from collections.abc import Iterable
from types import CodeType
from typing import Literal

__all__ = ["blamed_party"]

_CONTRACT_MODULES = frozenset({"builtins", "abc", "cxr_attrib.adapter", "cxr_attrib.grounding", "cxr_attrib.method"})
"""Modules that only declare contracts (abstract classes): never the culprit."""


def _code_of(classes: Iterable[type]) -> tuple[set[CodeType], set[str]]:
    """Code objects of the functions defined in ``classes`` and the folders of their modules."""
    codes: set[CodeType] = set()
    folders: set[str] = set()
    for cls in classes:
        if cls.__module__ in _CONTRACT_MODULES:
            continue
        for value in vars(cls).values():
            for function in (value, getattr(value, "fget", None), getattr(value, "__func__", None)):
                code = getattr(function, "__code__", None)
                if code is not None:
                    codes.add(code)
        path = getattr(sys.modules.get(cls.__module__), "__file__", None)
        if path:
            folders.add(os.path.dirname(os.path.abspath(path)) + os.sep)
    return codes, folders


def blamed_party(exc: BaseException, method: type, adapter: object | None) -> Literal["method", "adapter"]:
    """``"adapter"`` when the innermost frame of ``exc`` that belongs to either party is the adapter's.

    Args:
        exc (BaseException): what the method run raised (with its traceback).
        method (type): the method class.
        adapter (object | None): the adapter it was given.

    Returns:
        str: ``"adapter"`` or ``"method"`` (also when neither party's code is on the stack).
    """
    if adapter is None:
        return "method"
    method_codes, method_folders = _code_of(method.__mro__)
    adapter_codes, adapter_folders = _code_of(type(adapter).__mro__)
    frames = [frame for frame, _ in traceback.walk_tb(exc.__traceback__)]
    for frame in reversed(frames):
        if frame.f_code in adapter_codes:
            return "adapter"
        if frame.f_code in method_codes:
            return "method"
    for frame in reversed(frames):
        path = os.path.abspath(frame.f_code.co_filename)
        in_adapter = any(path.startswith(folder) for folder in adapter_folders)
        in_method = any(path.startswith(folder) for folder in method_folders)
        if in_adapter != in_method:
            return "adapter" if in_adapter else "method"
    return "method"
