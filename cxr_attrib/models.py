"""Turn any model reference into a loaded adapter, once per process.

A reference is, in order of precedence: an already loaded
:class:`~cxr_attrib.adapter.Adapter`; a registry key from a plugin's model cards
(``cxr-attrib models``); or anything a plugin's ``resolve_adapter`` hook accepts
(a Hugging Face id, a local checkpoint folder).
"""

from __future__ import annotations

import os

from .adapter import Adapter, LoadOptions, Scorer
from .errors import ModelLoadError, UnknownModelError
from .registry import model_cards, plugin_manager

__all__ = ["load_adapter", "clear_adapter_cache"]

_cache: dict[tuple[str, LoadOptions], Adapter] = {}


def load_adapter(reference: str | os.PathLike | Scorer, options: LoadOptions | None = None) -> Scorer:
    """Load (or reuse) the adapter for ``reference``.

    Args:
        reference: registry key, Hugging Face id, local folder, or a loaded adapter
            (any :class:`~cxr_attrib.adapter.Scorer`, returned as is).
        options: how to load. Default: ``LoadOptions()``.

    Returns:
        The adapter; the same object for the same reference and options within a
        process (one model load per process). Options are compared after
        :meth:`LoadOptions.resolved`, so ``dtype="auto"`` on the CPU and
        ``dtype="float32"`` share one entry.

    Raises:
        UnknownModelError: nothing resolves the reference (lists the registry keys).
        ModelLoadError: the model was recognised but could not be loaded.
        LoadOptionsError: options that cannot be honoured here (CUDA absent).
    """
    if isinstance(reference, Scorer):
        return reference
    options = (options or LoadOptions()).resolved()
    ref = os.fspath(reference)
    key = (ref, options)
    if key in _cache:
        return _cache[key]
    cards = model_cards()
    if ref in cards:
        card = cards[ref]
        adapter = card.load(card.source, options, name=ref)
    else:
        adapter = plugin_manager().hook.resolve_adapter(reference=ref, options=options)
        if adapter is None:
            if os.path.exists(ref):
                raise ModelLoadError(
                    f"{ref!r} exists but no adapter recognises it: expected a checkpoint folder "
                    "with a config.json whose model_type is supported (see `cxr-attrib models`)."
                )
            raise UnknownModelError(ref, cards)
    _cache[key] = adapter
    return adapter


def clear_adapter_cache() -> None:
    """Drop every cached adapter (frees their memory once unreferenced)."""
    _cache.clear()
