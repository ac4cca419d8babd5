"""``cxr-attrib merge``: combine shard stores of one run into one store.

Every input must hold the same run configuration. A unit found in several inputs
with the same results (status, answer, boxes, metrics within ``1e-6`` relative) is a
duplicate and kept once; one with different results is a **conflict**: the first
input's row is kept and every conflict is reported. The output is built under an
exclusive hidden name beside it and linked into place at the end
(:meth:`Store.building`), so an existing file is never overwritten and a failed
merge leaves nothing behind.
"""

from __future__ import annotations

import math
import os
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field, replace
from pathlib import Path
from typing import Any

import numpy as np

from cxr_attrib.paths import ensure_outside_data

from .store import Store, StoreError, UnitRecord, open_store

__all__ = ["Conflict", "MergeStats", "merge_stores", "same_results"]


@dataclass(frozen=True)
class Conflict:
    """One unit with different results in two inputs.

    Attributes:
        unit_id (str): the unit.
        kept (str): the input whose row was kept.
        other (str): the input with the different row.
        fields (tuple[str, ...]): what differs (``status``, ``answer``, ``boxes`` or
            ``metrics.<name>``).
    """

    unit_id: str
    kept: str
    other: str
    fields: tuple[str, ...]


@dataclass
class MergeStats:
    """What :func:`merge_stores` did: rows written, duplicates dropped, conflicts found."""

    units: int = 0
    duplicates: int = 0
    conflicts: list[Conflict] = field(default_factory=list)


def _close(a: Any, b: Any) -> bool:
    if isinstance(a, float) and isinstance(b, float):
        return math.isclose(a, b, rel_tol=1e-6, abs_tol=1e-9)
    return a == b


def _metric_differences(a: Mapping[str, Any], b: Mapping[str, Any]) -> list[str]:
    return [f"metrics.{k}" for k in sorted(set(a) | set(b)) if not _close(a.get(k), b.get(k))]


def same_results(a: UnitRecord, b: UnitRecord) -> tuple[str, ...]:
    """The result fields in which two rows of one unit differ (empty: a duplicate).

    Times, workers and library versions are not results and are ignored.
    """
    diffs = [name for name in ("status", "answer") if getattr(a, name) != getattr(b, name)]
    if a.boxes.shape != b.boxes.shape or not np.allclose(a.boxes, b.boxes, rtol=1e-6, atol=1e-6):
        diffs.append("boxes")
    return tuple(diffs + _metric_differences(a.metrics, b.metrics))


def merge_stores(out: str | os.PathLike, inputs: Sequence[str | os.PathLike]) -> MergeStats:
    """Merge shard stores of one run into a new store ``out``.

    Args:
        out (str | PathLike): the merged .sqlite file; must not exist.
        inputs (Sequence[str | PathLike]): shard stores (at least one).

    Returns:
        MergeStats: units written, duplicates dropped, conflicts (first input wins).

    Raises:
        StoreError: ``out`` exists, an input is not a store, or the inputs hold
            different run configurations (named, with the differing fields).
        DataError: ``out`` lies inside ``$CXR_ATTRIB_DATA``.
    """
    out = ensure_outside_data(out, what="the merged store")  # before any input is read
    if not inputs:
        raise StoreError("merge needs at least one shard store")
    if out.exists():
        raise StoreError(f"refusing to overwrite {out}: choose a new output file for the merged store")
    if any(Path(p).resolve() == out.resolve() for p in inputs):
        raise StoreError(f"the output {out} is also an input")
    stores = [open_store(p) for p in inputs]
    try:
        config = stores[0].config()
        for store in stores[1:]:
            other = store.config()
            if other.digest != config.digest:
                raise StoreError(
                    f"cannot merge {store.path} with {stores[0].path}: they are different runs "
                    f"({other.describe_difference(config)}); merge only shards of one configuration"
                )
        with Store.building(out, config, "merged") as target:  # linked into place only when complete
            stats = _copy_all(target, stores)
    finally:
        for store in stores:
            store.close()
    return stats


def _copy_all(target: Store, stores: Sequence[Store]) -> MergeStats:
    stats = MergeStats()
    seen: dict[str, tuple[UnitRecord, str]] = {}
    verdicts: set[tuple[str, str, str]] = set()
    with target:
        for store in stores:
            for sample in store.samples(thumbnails=True).values():
                target.add_sample(sample)
            for outcome in store.filter_outcomes():
                key = (outcome.sample_id, outcome.model, outcome.mode)
                if key not in verdicts:
                    verdicts.add(key)
                    target.add_filter_outcome(outcome)
            for load in store.model_loads():
                target.add_model_load(load)
            target.add_recognition(store.recognition())
            for unit in store.units():
                if unit.unit_id in seen:
                    first, where = seen[unit.unit_id]
                    diffs = same_results(first, unit)
                    if diffs:
                        stats.conflicts.append(Conflict(unit.unit_id, where, str(store.path), diffs))
                    else:
                        stats.duplicates += 1
                    continue
                target.add_unit(unit)
                seen[unit.unit_id] = (replace(unit, heatmap=None, traceback=None, sample=None), str(store.path))
                stats.units += 1
    return stats
