"""Leaderboards: every method on every model over a benchmark, in a resumable SQLite store.

``cxr-attrib leaderboard`` runs the work units (one per sample, model, method,
params, mode and seed) of one shard into one store file; ``cxr-attrib merge``
combines shard stores; :func:`open_store` reads any of them; :func:`agreement_from_store`
compares the box a model states with the regions other methods find it used ("said vs used").
"""

from .agreement import AgreementRow, agreement_from_store, agreement_markdown, box_agreement
from .config import RunConfig, unit_id
from .merge import merge_stores
from .store import FilterOutcome, ModelLoad, SampleRecord, Store, StoreError, UnitRecord, open_store

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
