"""The leaderboard store: one SQLite file per shard, one row per finished work unit.

The schema (version :data:`SCHEMA_VERSION`) is documented in docs/leaderboard.md,
section "Store schema". Writers commit one transaction per unit, so a crash loses at
most the unit in flight; readers use :func:`open_store` and the typed records
:class:`UnitRecord`, :class:`SampleRecord`, :class:`FilterOutcome` and
:class:`ModelLoad`. Every spatial value is in the **input frame** of its sample
(native pixels, ``x1, y1, x2, y2`` with exclusive ends).

Example::

    >>> with open_store("runs/phantom/leaderboard.sqlite") as store:  # doctest: +SKIP
    ...     rows = [u.as_row() for u in store.units() if u.ok]
"""

from __future__ import annotations

import io
import json
import math
import os
import sqlite3
from collections.abc import Iterator, Sequence
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import numpy as np

from cxr_attrib.errors import DataError, OutputError
from cxr_attrib.safeio import building_sqlite, connect_sqlite, load_npy, open_regular, regular_file_exists

from .config import RunConfig
from .records import (
    FilterOutcome,
    ModelLoad,
    RecognitionRecord,
    SampleRecord,
    UnitRecord,
    heatmap_thumbnail,
    image_thumbnail,
)

__all__ = [
    "FORMAT",
    "SCHEMA_VERSION",
    "FilterOutcome",
    "ModelLoad",
    "RecognitionRecord",
    "SampleRecord",
    "Store",
    "StoreError",
    "UnitRecord",
    "heatmap_thumbnail",
    "image_thumbnail",
    "open_store",
]

FORMAT = "cxr-attrib-leaderboard"
"""Value of ``meta.format``: marks a SQLite file as a leaderboard store."""

SCHEMA_VERSION = 2
"""Schema written by this version; a store with a larger one is refused (version 1 has
no ``units.curves`` column: its units read with ``curves`` None)."""

_SQLITE_MAGIC = b"SQLite format 3\x00"

_SCHEMA = """
CREATE TABLE meta (key TEXT PRIMARY KEY, value TEXT NOT NULL);
CREATE TABLE samples (
    sample_id TEXT PRIMARY KEY, dataset TEXT NOT NULL, idx INTEGER NOT NULL, finding TEXT NOT NULL,
    question TEXT NOT NULL, split TEXT NOT NULL, gt_boxes TEXT NOT NULL,
    height INTEGER NOT NULL, width INTEGER NOT NULL, thumbnail BLOB);
CREATE TABLE filter_outcomes (
    sample_id TEXT NOT NULL, model TEXT NOT NULL, mode TEXT NOT NULL, kept INTEGER, approximate INTEGER,
    predictions TEXT NOT NULL, wall_time_s REAL NOT NULL, error TEXT, worker TEXT NOT NULL,
    finished_at REAL NOT NULL, PRIMARY KEY (sample_id, model, mode));
CREATE TABLE units (
    unit_id TEXT PRIMARY KEY, sample_id TEXT NOT NULL, model TEXT NOT NULL, method TEXT NOT NULL,
    params TEXT NOT NULL, mode TEXT NOT NULL, seed INTEGER NOT NULL,
    status TEXT NOT NULL CHECK (status IN ('ok', 'error')), answer TEXT, boxes TEXT NOT NULL,
    method_boxes TEXT NOT NULL, metrics TEXT NOT NULL, heatmap BLOB, wall_time_s REAL NOT NULL,
    score_time_s REAL NOT NULL, passes TEXT NOT NULL, versions TEXT NOT NULL, error TEXT,
    traceback TEXT, worker TEXT NOT NULL, finished_at REAL NOT NULL, curves TEXT);
CREATE INDEX units_by_model ON units (model, method);
CREATE TABLE model_loads (
    worker TEXT NOT NULL, model TEXT NOT NULL, load_s REAL NOT NULL, started_at REAL NOT NULL);
"""

_RECOGNITION = """CREATE TABLE IF NOT EXISTS recognition (
    model TEXT NOT NULL, sample_id TEXT NOT NULL, finding TEXT NOT NULL, label INTEGER NOT NULL CHECK (label IN (0, 1)),
    p_positive REAL, error TEXT, worker TEXT NOT NULL, finished_at REAL NOT NULL, PRIMARY KEY (model, sample_id))"""
"""The recognition pass's table (added to schema 1 without a version change: a store
without it simply has no recognition rows; a writer creates it)."""


_TABLES = frozenset({"meta", "samples", "filter_outcomes", "units", "model_loads"})
"""Tables every store has (``recognition`` is added on first write)."""


class StoreError(DataError):
    """A store that cannot be used: not SQLite, not a leaderboard store, too new, in use."""


def _boxes_json(boxes: Any) -> str:
    array = np.asarray(boxes, dtype=np.float64).reshape(-1, 4)
    return json.dumps(array.tolist())


def _boxes(text: str) -> np.ndarray:
    return np.asarray(json.loads(text), dtype=np.float64).reshape(-1, 4)


def _pack(array: np.ndarray | None) -> bytes | None:
    if array is None:
        return None
    buffer = io.BytesIO()
    np.save(buffer, np.ascontiguousarray(array), allow_pickle=False)
    return buffer.getvalue()


def _unpack(blob: bytes | None) -> np.ndarray | None:
    return None if blob is None else load_npy(blob, what="a stored heatmap", max_bytes=len(blob))


def _finite(value: Any) -> Any:
    """JSON-safe metric value: NaN and infinities become None, numpy scalars plain."""
    if isinstance(value, (bool, np.bool_)):
        return bool(value)
    if isinstance(value, (int, float, np.integer, np.floating)):
        value = float(value)
        return value if math.isfinite(value) else None
    return value


def _check_sqlite_file(path: Path) -> None:
    if not regular_file_exists(path, what="leaderboard store"):
        raise StoreError(f"no leaderboard store at {path}: expected a .sqlite file written by `cxr-attrib leaderboard`")
    with open_regular(path, what="leaderboard store", max_bytes=1 << 44) as stream:
        head = stream.read(len(_SQLITE_MAGIC))
    if head != _SQLITE_MAGIC:
        raise StoreError(
            f"{path} is not a SQLite file (its first bytes are {head[:16]!r}); a leaderboard store is the "
            "SQLite file `cxr-attrib leaderboard` writes"
        )


class Store:
    """One leaderboard store file: the run configuration and every finished unit.

    Create one with :meth:`create`, reopen one with :meth:`open` (or :func:`open_store`
    to read). Each ``add_*`` call is one committed transaction.
    """

    def __init__(self, connection: sqlite3.Connection, path: Path, *, writable: bool) -> None:
        self._db = connection
        self.path = path
        self.writable = writable
        self._meta = dict(connection.execute("SELECT key, value FROM meta"))

    # -- opening -------------------------------------------------------------------

    @classmethod
    def create(cls, path: str | os.PathLike, config: RunConfig, shard: str) -> Store:
        """Create a new store holding ``config`` (refuses an existing file).

        Args:
            path (str | PathLike): the .sqlite file to create; its folder must exist.
            config (RunConfig): the run configuration, recorded once.
            shard (str): ``"K/N"`` or ``"merged"``.

        Raises:
            StoreError: the file exists or cannot be created.
        """
        with cls.building(path, config, shard) as store:
            store.close()
        return cls.open(path, writable=True)

    @classmethod
    @contextmanager
    def building(cls, path: str | os.PathLike, config: RunConfig, shard: str) -> Iterator[Store]:
        """A new store built under a hidden exclusive name, linked to ``path`` only when complete.

        A process scanning the folder (another shard starting at the same moment)
        never sees a half-made store; a failure leaves nothing behind
        (:func:`cxr_attrib.safeio.building_sqlite`).

        Raises:
            StoreError: the file exists or cannot be created.
        """
        path = Path(path)
        try:
            with building_sqlite(path, what="leaderboard store") as db:
                db.execute("PRAGMA journal_mode=WAL")
                with _transaction(db):
                    for statement in _SCHEMA.strip().split(";"):
                        if statement.strip():
                            db.execute(statement)
                    db.execute(_RECOGNITION)
                    meta = {"format": FORMAT, "schema_version": str(SCHEMA_VERSION), "config": json.dumps(
                        config.to_dict(), sort_keys=True), "config_digest": config.digest, "shard": shard}
                    db.executemany("INSERT INTO meta (key, value) VALUES (?, ?)", meta.items())
                store = cls(db, path, writable=True)
                try:
                    yield store
                finally:
                    store.close()
        except OutputError as exc:
            raise StoreError(str(exc)) from None
        except (sqlite3.Error, OSError) as exc:
            raise StoreError(f"cannot create the store {path}: {exc}; is its folder writable?") from exc

    @classmethod
    def open(cls, path: str | os.PathLike, *, writable: bool = False) -> Store:
        """Open an existing store, checking that it is one and that its schema is known.

        Args:
            path (str | PathLike): the .sqlite file.
            writable (bool): open for appending units (a resumed run). Default: False.

        Raises:
            StoreError: missing, not SQLite, not a leaderboard store, or a newer schema.
        """
        path = Path(path)
        _check_sqlite_file(path)
        try:
            db = connect_sqlite(path, writable=writable, what="leaderboard store")
            if writable:
                db.execute("PRAGMA journal_mode=WAL")
                db.execute("PRAGMA synchronous=NORMAL")
                db.execute(_RECOGNITION)
            rows = dict(db.execute("SELECT key, value FROM meta"))
        except sqlite3.Error as exc:
            raise StoreError(f"{path} is not a readable leaderboard store: {exc}") from exc
        if rows.get("format") != FORMAT:
            db.close()
            raise StoreError(f"{path} is a SQLite file but not a cxr-attrib leaderboard store (no meta.format)")
        try:
            version = int(rows.get("schema_version", "0"))
        except ValueError:
            version = 0
        if version > SCHEMA_VERSION:
            db.close()
            raise StoreError(
                f"{path} has store schema version {version}, newer than the {SCHEMA_VERSION} this cxr-attrib "
                "reads; upgrade cxr-attrib to read it"
            )
        if version < 1:
            db.close()
            raise StoreError(f"{path} has an invalid store schema version {rows.get('schema_version')!r}; expected "
                             f"1..{SCHEMA_VERSION}")
        tables = {name for (name,) in db.execute("SELECT name FROM sqlite_master WHERE type = 'table'")}
        missing = sorted(_TABLES - tables)
        if missing:
            db.close()
            raise StoreError(f"{path} lacks the table(s) {', '.join(missing)} of a leaderboard store; the file was "
                             "changed outside cxr-attrib or is corrupt")
        return cls(db, path, writable=writable)

    def close(self) -> None:
        """Close the file; a writer first folds the WAL back so readers need no -wal file."""
        if self.writable:
            try:
                self._db.execute("PRAGMA journal_mode=DELETE")
            except sqlite3.Error:
                pass  # another reader holds it; the WAL stays valid and is recovered on open
        self._db.close()

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- run-level facts -----------------------------------------------------------

    @property
    def schema_version(self) -> int:
        """The store's schema version."""
        return int(self._meta["schema_version"])

    @property
    def shard(self) -> str:
        """``"K/N"`` for a shard store, ``"merged"`` for the output of ``cxr-attrib merge``."""
        return self._meta["shard"]

    def config(self) -> RunConfig:
        """The run configuration this store was created with."""
        with self._row("meta", "config"):
            return RunConfig.from_dict(json.loads(self._meta["config"]))

    @contextmanager
    def _row(self, table: str, key: object) -> Iterator[None]:
        """Turn a damaged value (broken JSON, wrong type, impossible size) into one clear StoreError."""
        try:
            yield
        except (ValueError, TypeError, KeyError, sqlite3.Error) as exc:
            raise StoreError(f"store {self.path}: table {table!r}, row {key!r} is damaged "
                             f"({' '.join(str(exc).split())[:200]}); the file was changed outside cxr-attrib "
                             "or is corrupt") from None

    # -- reading -------------------------------------------------------------------

    def samples(self, *, thumbnails: bool = False) -> dict[str, SampleRecord]:
        """Every recorded sample by id; ``thumbnails`` also decodes the images."""
        column = "thumbnail" if thumbnails else "NULL"
        out = {}
        for sid, dataset, idx, finding, question, split, gt, h, w, thumb in self._db.execute(
            f"SELECT sample_id, dataset, idx, finding, question, split, gt_boxes, height, width, {column} "
            "FROM samples ORDER BY sample_id"
        ):
            with self._row("samples", sid):
                # (0, 0) is how a sample whose image did not load is recorded; any other
                # size must be positive on both axes.
                if not (isinstance(h, int) and isinstance(w, int) and h >= 0 and w >= 0 and (h > 0) == (w > 0)):
                    raise ValueError(f"impossible image size {h!r} x {w!r}")
                out[sid] = SampleRecord(sid, dataset, idx, finding, question, split, _boxes(gt), (h, w),
                                        _unpack(thumb))
        return out

    def image(self, sample_id: str) -> np.ndarray | None:
        """The (h, w) uint8 thumbnail of one sample (long side <= 128 px), or None."""
        row = self._db.execute("SELECT thumbnail FROM samples WHERE sample_id = ?", (sample_id,)).fetchone()
        return None if row is None else _unpack(row[0])

    def units(self, *, model: str | None = None, heatmaps: bool = True) -> Iterator[UnitRecord]:
        """Every finished unit (optionally of one model), ordered by unit id, with its sample."""
        samples = self.samples()
        where, args = ("WHERE model = ?", (model,)) if model is not None else ("", ())
        heat = "heatmap" if heatmaps else "NULL"
        curves = "curves" if self.schema_version >= 2 else "NULL"
        for row in self._db.execute(
            "SELECT unit_id, sample_id, model, method, params, mode, seed, status, answer, boxes, method_boxes, "
            f"metrics, {heat}, wall_time_s, score_time_s, passes, versions, error, traceback, worker, finished_at, "
            f"{curves} FROM units {where} ORDER BY unit_id", args,
        ):
            (uid, sid, mdl, method, params, mode, seed, status, answer, boxes, mboxes, metrics, heatmap,
             wall, score_s, passes, versions, error, tb, worker, finished, raw_curves) = row
            with self._row("units", uid):
                unit = UnitRecord(
                    uid, sid, mdl, method, json.loads(params), mode, seed, status, answer, _boxes(boxes),
                    _boxes(mboxes), json.loads(metrics), _unpack(heatmap), wall, score_s, json.loads(passes),
                    json.loads(versions), error, tb, worker, finished, samples.get(sid),
                    None if raw_curves is None else json.loads(raw_curves),
                )
            yield unit

    def filter_outcomes(self) -> Iterator[FilterOutcome]:
        """Every causal-filter verdict, ordered by (sample, model, mode)."""
        for sid, model, mode, kept, approx, preds, wall, error, worker, finished in self._db.execute(
            "SELECT sample_id, model, mode, kept, approximate, predictions, wall_time_s, error, worker, finished_at "
            "FROM filter_outcomes ORDER BY sample_id, model, mode"
        ):
            with self._row("filter_outcomes", (sid, model, mode)):
                outcome = FilterOutcome(sid, model, mode, None if kept is None else bool(kept),
                                        None if approx is None else bool(approx), tuple(json.loads(preds)), wall,
                                        error, worker, finished)
            yield outcome

    def recognition(self) -> list[RecognitionRecord]:
        """Every recognition row, ordered by (model, sample); empty for a store without the table."""
        found = self._db.execute("SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = 'recognition'").fetchone()
        if found is None:
            return []
        return [RecognitionRecord(model, sid, finding, int(label), p, error, worker, finished)
                for model, sid, finding, label, p, error, worker, finished in self._db.execute(
                    "SELECT model, sample_id, finding, label, p_positive, error, worker, finished_at "
                    "FROM recognition ORDER BY model, sample_id")]

    def model_loads(self) -> list[ModelLoad]:
        """Every model load, in the order they happened."""
        return [ModelLoad(*row) for row in self._db.execute(
            "SELECT worker, model, load_s, started_at FROM model_loads ORDER BY started_at, rowid")]

    def finished_unit_ids(self) -> set[str]:
        """Ids of every recorded unit (ok or failed): a resumed run skips them."""
        return {uid for (uid,) in self._db.execute("SELECT unit_id FROM units")}

    def counts(self) -> dict[str, int]:
        """``{"ok": n, "error": m}`` unit counts."""
        found = dict(self._db.execute("SELECT status, COUNT(*) FROM units GROUP BY status"))
        return {"ok": found.get("ok", 0), "error": found.get("error", 0)}

    # -- writing -------------------------------------------------------------------

    def add_sample(self, record: SampleRecord) -> None:
        """Record a sample once (a second call with the same id does nothing)."""
        self._write(
            "INSERT OR IGNORE INTO samples VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (record.sample_id, record.dataset, int(record.index), record.finding, record.question, record.split,
             _boxes_json(record.gt_boxes), int(record.image_size[0]), int(record.image_size[1]),
             _pack(record.thumbnail)),
        )

    def add_filter_outcome(self, outcome: FilterOutcome) -> None:
        """Record one filter verdict (one committed transaction)."""
        self._write(
            "INSERT INTO filter_outcomes VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (outcome.sample_id, outcome.model, outcome.mode, None if outcome.kept is None else int(outcome.kept),
             None if outcome.approximate is None else int(outcome.approximate), json.dumps(list(outcome.predictions)),
             outcome.wall_time_s, outcome.error, outcome.worker, outcome.finished_at),
        )

    def add_unit(self, unit: UnitRecord) -> None:
        """Record one finished unit (one committed transaction).

        Raises:
            StoreError: the unit is already recorded (a store never holds a unit twice).
        """
        heat = None if unit.heatmap is None else np.asarray(unit.heatmap, dtype=np.float32)
        self._write(
            "INSERT INTO units VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
            (unit.unit_id, unit.sample_id, unit.model, unit.method, json.dumps(unit.params, sort_keys=True),
             unit.mode, int(unit.seed), unit.status, unit.answer, _boxes_json(unit.boxes),
             _boxes_json(unit.method_boxes), json.dumps({k: _finite(v) for k, v in unit.metrics.items()}),
             _pack(heat), float(unit.wall_time_s), float(unit.score_time_s), json.dumps(unit.passes),
             json.dumps(unit.versions), unit.error, unit.traceback, unit.worker, float(unit.finished_at),
             None if unit.curves is None else json.dumps(unit.curves, allow_nan=False)),
        )

    def add_recognition(self, records: Sequence[RecognitionRecord]) -> None:
        """Record p(positive) rows of one batch (one committed transaction; a row already
        recorded for that (model, sample) is kept)."""
        if not self.writable:
            raise StoreError(f"{self.path} was opened read-only")
        rows = [(r.model, r.sample_id, r.finding, int(r.label), None if r.p_positive is None else float(r.p_positive),
                 r.error, r.worker, float(r.finished_at)) for r in records]
        try:
            with _transaction(self._db):
                self._db.executemany("INSERT OR IGNORE INTO recognition VALUES (?, ?, ?, ?, ?, ?, ?, ?)", rows)
        except sqlite3.Error as exc:
            raise StoreError(f"cannot write to the store {self.path}: {exc}") from exc

    def add_model_load(self, load: ModelLoad) -> None:
        """Record one model load."""
        self._write("INSERT INTO model_loads VALUES (?, ?, ?, ?)",
                    (load.worker, load.model, load.load_s, load.started_at))

    def _write(self, sql: str, values: Sequence[Any]) -> None:
        if not self.writable:
            raise StoreError(f"{self.path} was opened read-only")
        try:
            with _transaction(self._db):
                self._db.execute(sql, values)
        except sqlite3.IntegrityError as exc:
            raise StoreError(f"{self.path}: {exc} (a unit is never recorded twice)") from exc
        except sqlite3.Error as exc:
            raise StoreError(f"cannot write to the store {self.path}: {exc}") from exc


class _transaction:
    """``BEGIN IMMEDIATE`` ... ``COMMIT`` (``ROLLBACK`` on any exception, Ctrl-C included)."""

    def __init__(self, db: sqlite3.Connection) -> None:
        self.db = db

    def __enter__(self) -> None:
        self.db.execute("BEGIN IMMEDIATE")

    def __exit__(self, kind: type[BaseException] | None, *exc: object) -> None:
        self.db.execute("COMMIT" if kind is None else "ROLLBACK")


def open_store(path: str | os.PathLike) -> Store:
    """Open a leaderboard store (a shard's or a merged one) for reading.

    Args:
        path (str | PathLike): the .sqlite file.

    Returns:
        Store: use :meth:`Store.config`, :meth:`Store.units`, :meth:`Store.samples`,
        :meth:`Store.filter_outcomes`, :meth:`Store.model_loads`; close it (or use
        ``with``).

    Raises:
        StoreError: missing, not SQLite, not a leaderboard store, or a newer schema.
    """
    return Store.open(path, writable=False)
