"""Leaderboards: every method on every model over a benchmark, in a resumable SQLite store.

``cxr-attrib leaderboard`` runs the work units (one per sample, model, method,
params, mode and seed) of one shard into one store file; ``cxr-attrib merge``
combines shard stores; :func:`open_store` reads any of them; :func:`agreement_from_store`
compares the box a model states with the regions other methods find it used ("said vs used").
"""

from __future__ import annotations

import importlib
from typing import Any

_EXPORTS = {
    "AgreementRow": "agreement", "agreement_from_store": "agreement", "agreement_markdown": "agreement",
    "box_agreement": "agreement", "RunConfig": "config", "unit_id": "config", "merge_stores": "merge",
    "FilterOutcome": "store", "ModelLoad": "store", "SampleRecord": "store", "Store": "store",
    "StoreError": "store", "UnitRecord": "store", "open_store": "store",
}

__all__ = [
    "AgreementRow",
    "FilterOutcome",
    "ModelLoad",
    "RunConfig",
    "SampleRecord",
    "Store",
    "StoreError",
    "UnitRecord",
    "agreement_from_store",
    "agreement_markdown",
    "box_agreement",
    "merge_stores",
    "open_store",
    "unit_id",
]


def __getattr__(name: str) -> Any:
    """Import a public name on first use, so the CLI's leaderboard commands start without torch."""
    if name in _EXPORTS:
        return getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
