"""Leaderboard stores as report units: one :class:`UnitResult` per recorded unit.

Several stores (the shards of one run, or a merged store) are read together when
they hold the same run configuration; a unit recorded in two of them counts once,
and two different results for one unit are refused (``cxr-attrib merge`` reports
such conflicts). Heatmaps and image thumbnails are read only for the few units a
report draws (:func:`with_arrays`).
"""

from __future__ import annotations

import dataclasses
from collections.abc import Iterable, Sequence
from pathlib import Path

from cxr_attrib.errors import DataError

from .config import RunConfig
from .report import UnitResult
from .store import RecognitionRecord, UnitRecord, open_store

__all__ = ["read_recognition", "read_units", "store_files", "with_arrays"]


def store_files(paths: Iterable[str | Path]) -> list[Path]:
    """The store files named by ``paths``: files as given, folders -> their ``*.sqlite``.

    Raises:
        DataError: a folder without any ``.sqlite`` file.
    """
    files: list[Path] = []
    for path in map(Path, paths):
        if path.is_dir():
            found = sorted(path.glob("*.sqlite"))
            if not found:
                raise DataError(f"{path} holds no leaderboard store (*.sqlite); pass the store files "
                                "or the folder `cxr-attrib leaderboard --out` wrote.")
            files += found
        else:
            files.append(path)
    return list(dict.fromkeys(files))


def _unit(record: UnitRecord, benchmark: str) -> UnitResult:
    sample = record.sample
    if sample is None:
        raise DataError(f"unit {record.unit_id} names sample {record.sample_id!r}, which its store does "
                        "not record; the store is damaged (re-run or re-merge it).")
    return UnitResult(
        sample_id=record.sample_id, benchmark=benchmark, dataset=sample.dataset, split=sample.split,
        finding=sample.finding, model=record.model, method=record.method, params=record.params,
        mode=record.mode, seed=record.seed, answer=record.answer, pred_boxes=record.boxes,
        gt_boxes=sample.gt_boxes, metrics=record.metrics, wall_time_s=record.wall_time_s,
        passes=record.passes, error=None if record.ok else (record.error or "failed (no message)"),
        image_size=sample.image_size, heatmap=record.heatmap, unit_id=record.unit_id,
    )  # fmt: skip


def read_units(paths: Iterable[str | Path]) -> tuple[RunConfig, list[UnitResult]]:
    """The run configuration and every unit of the stores at ``paths``, without heatmaps.

    Args:
        paths (Iterable[str | Path]): store files, or folders of shard stores.

    Returns:
        tuple[RunConfig, list[UnitResult]]: the stores' common configuration, and one
        unit per distinct unit id, in store order.

    Raises:
        DataError: no store, stores of different runs, a unit with two different
            results, or an unreadable store (:class:`~cxr_attrib.leaderboard.StoreError`).
    """
    files = store_files(paths)
    if not files:
        raise DataError("no store given; pass the .sqlite files (or their folder) of a leaderboard run.")
    first = None
    seen: dict[str, tuple[Path, UnitRecord]] = {}
    units: list[UnitResult] = []
    for path in files:
        with open_store(path) as store:
            config = store.config()
            if first is None:
                first = (path, config)
            elif config != first[1]:
                raise DataError(f"{path} is from another leaderboard run than {first[0]} "
                                f"({config.describe_difference(first[1])}); report one run at a time.")
            for record in store.units(heatmaps=False):
                if record.unit_id in seen:
                    other_path, other = seen[record.unit_id]
                    if (other.status, other.metrics, other.error) != (record.status, record.metrics,
                                                                      record.error):
                        raise DataError(
                            f"unit {record.unit_id} ({record.sample_id}, {record.model}, {record.method}) "
                            f"has different results in {other_path} and {path}; run `cxr-attrib merge` "
                            "to see the conflicts.")
                    continue
                seen[record.unit_id] = (path, record)
                units.append(_unit(record, config.benchmark))
    return first[1], units


def read_recognition(paths: Iterable[str | Path]) -> list[RecognitionRecord]:
    """Every recognition row of the stores at ``paths``; a (model, sample) in two stores counts once."""
    rows: dict[tuple[str, str], RecognitionRecord] = {}
    for path in store_files(paths):
        with open_store(path) as store:
            for record in store.recognition():
                rows.setdefault((record.model, record.sample_id), record)
    return list(rows.values())


def with_arrays(paths: Iterable[str | Path], units: Sequence[UnitResult]) -> list[UnitResult]:
    """``units`` with their stored heatmap and image thumbnail attached.

    Reads each store once (heatmaps of the units' models only), so a report draws a few
    overlays without holding every heatmap of a large run in memory.

    Args:
        paths (Iterable[str | Path]): the stores the units came from.
        units (Sequence[UnitResult]): units read by :func:`read_units`.

    Returns:
        list[UnitResult]: the same units, in order, with ``heatmap`` and ``image`` set
        where the store has them.
    """
    wanted = {u.unit_id for u in units}
    heatmaps: dict[str, object] = {}
    images: dict[str, object] = {}
    for path in store_files(paths):
        with open_store(path) as store:
            for model in sorted({u.model for u in units}):
                for record in store.units(model=model):
                    if record.unit_id in wanted and record.heatmap is not None:
                        heatmaps.setdefault(record.unit_id, record.heatmap)
            for sample_id in {u.sample_id for u in units} - set(images):
                image = store.image(sample_id)
                if image is not None:
                    images[sample_id] = image
    return [dataclasses.replace(u, heatmap=heatmaps.get(u.unit_id), image=images.get(u.sample_id))
            for u in units]
