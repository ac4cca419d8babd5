"""Aggregate per-sample scores: means, bootstrap CIs and a macro average over models.

Input rows are per-sample results (one work unit of a leaderboard): mappings (or
dataclass instances) with the keys ``model``, ``split``, ``method``, ``dataset`` and
one value per metric (a fraction such as an IoU, or a bool such as a pointing-game
hit). Output rows summarise each (model, split, method, dataset) group:

- ``mean``: the sample mean x 100 (fractions become percent);
- ``ci_low`` / ``ci_high``: a seeded percentile bootstrap CI of the mean (x 100):
  ``n_boot`` resamples of the group's values with replacement, their means, and the
  ``(1 - ci) / 2`` and ``(1 + ci) / 2`` percentiles (numpy's linear percentiles);
- ``n``: the number of values.

Then, per (split, method, dataset), one **macro** row (``model="macro"``,
``macro=True``): the unweighted mean of the model means, so a model with many
samples does not dominate (the published code pooled all samples). Its CI comes from
bootstrapping each model's values independently (the very resamples behind that
model's own CI) and averaging the model means replicate by replicate.

Missing values (key absent or ``None``, e.g. a failed work unit) are skipped for that
metric only. Every (group, metric) draws from its own random stream derived from
``seed`` and the group's names, and resamples the group's values in sorted order, so
results do not depend on row order or on which other groups are present.
"""

from __future__ import annotations

import csv
import dataclasses
import hashlib
import io
import json
import math
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, TypeVar

import numpy as np
from rich.table import Table

from cxr_attrib.errors import DataError
from cxr_attrib.outputs import write_files
from cxr_attrib.sanitise import for_csv, for_markdown, for_terminal
from cxr_attrib.safeio import read_text

__all__ = [
    "GROUP_KEYS",
    "DEFAULT_METRICS",
    "MACRO_MODEL",
    "MetricSummary",
    "AggregateRow",
    "aggregate",
    "csv_text",
    "to_csv",
    "to_json",
    "read_json",
    "read_versioned_json",
    "to_markdown",
    "to_rich_table",
]

GROUP_KEYS = ("model", "split", "method", "dataset")
"""The keys every input row must carry; output rows are grouped by them."""

DEFAULT_METRICS = ("iou", "precision", "recall", "f1", "pointing_game", "energy")
"""Metrics summarised when ``aggregate`` is not told otherwise."""

MACRO_MODEL = "macro"
"""The ``model`` value of macro-average rows."""

_SCHEMA_VERSION = 1
T = TypeVar("T")
Lead = Mapping[str, Sequence[object]] | None
"""Extra leading columns of a writer: name -> one value per row (e.g. a rank)."""
_MAX_DRAWS = 1 << 22  # resampled values held in memory at once


@dataclass(frozen=True)
class MetricSummary:
    """One metric of one group, in percent.

    Attributes:
        mean (float): sample mean x 100 (macro rows: mean of model means x 100).
        ci_low (float): lower bootstrap confidence bound x 100.
        ci_high (float): upper bootstrap confidence bound x 100.
        n (int): number of values behind the mean (macro rows: over all models).
    """

    mean: float
    ci_low: float
    ci_high: float
    n: int


@dataclass(frozen=True)
class AggregateRow:
    """Summary of one (model, split, method, dataset) group, or a macro row.

    Attributes:
        model (str): model key, or ``"macro"`` for the macro average over models.
        split (str): benchmark split, e.g. ``"direct"``.
        method (str): attribution method name.
        dataset (str): source dataset, e.g. ``"vindr_cxr"``.
        n (int): input rows in the group (macro rows: summed over models).
        metrics (Mapping[str, MetricSummary]): per metric; a metric with no value in
            the group is absent.
        macro (bool): True for macro rows. Default: False.
        n_models (int): models averaged (1 for per-model rows). Default: 1.
    """

    model: str
    split: str
    method: str
    dataset: str
    n: int
    metrics: Mapping[str, MetricSummary] = field(default_factory=dict)
    macro: bool = False
    n_models: int = 1

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict; :meth:`from_dict` inverts it."""
        return dataclasses.asdict(self)

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> AggregateRow:
        """Rebuild a row written by :meth:`to_dict`."""
        fields = dict(data)
        fields["metrics"] = {
            name: MetricSummary(**summary) for name, summary in fields["metrics"].items()
        }
        return cls(**fields)


def _as_mapping(row: object, position: int) -> Mapping[str, Any]:
    if dataclasses.is_dataclass(row) and not isinstance(row, type):
        return dataclasses.asdict(row)
    if isinstance(row, Mapping):
        return row
    raise DataError(
        f"row {position} must be a mapping or a dataclass instance; received "
        f"{type(row).__name__}. Pass dicts such as {{'model': ..., 'iou': 0.4}}."
    )


def _value(row: Mapping[str, Any], metric: str, position: int) -> float | None:
    value = row.get(metric)
    if value is None:
        return None
    try:
        number = float(value)
    except (TypeError, ValueError):
        raise DataError(
            f"row {position}, metric {metric!r}: expected a number or bool; received "
            f"{value!r}. Store None for a missing value."
        ) from None
    if not math.isfinite(number):
        raise DataError(
            f"row {position}, metric {metric!r}: expected a finite number; received "
            f"{value!r}. Store None for a missing value instead of NaN."
        )
    return number


def _rng(seed: int, *names: str) -> np.random.Generator:
    """A generator seeded by ``seed`` and a stable hash of ``names``."""
    digest = hashlib.blake2b("\x1f".join(names).encode(), digest_size=16).digest()
    return np.random.default_rng([seed, *np.frombuffer(digest, dtype="<u4").tolist()])


def _bootstrap_means(values: np.ndarray, n_boot: int, rng: np.random.Generator) -> np.ndarray:
    """(n_boot,) means of resamples of ``values`` with replacement."""
    size = values.size
    per_chunk = max(1, _MAX_DRAWS // size)
    means = np.empty(n_boot)
    for start in range(0, n_boot, per_chunk):
        stop = min(n_boot, start + per_chunk)
        means[start:stop] = values[rng.integers(0, size, size=(stop - start, size))].mean(axis=1)
    return means


def _summary(mean: float, replicates: np.ndarray, ci: float, n: int) -> MetricSummary:
    low, high = np.percentile(replicates, [50.0 * (1.0 - ci), 50.0 * (1.0 + ci)])
    return MetricSummary(
        mean=100.0 * float(mean), ci_low=100.0 * float(low), ci_high=100.0 * float(high), n=n
    )


def _check_args(metrics: Sequence[str], n_boot: int, seed: int, ci: float) -> None:
    if isinstance(metrics, str) or not metrics:
        raise DataError(
            f"metrics must be a non-empty sequence of names; received {metrics!r}. "
            f"Example: {DEFAULT_METRICS!r}."
        )
    if int(n_boot) != n_boot or n_boot < 1:
        raise DataError(f"n_boot must be an integer >= 1; received {n_boot!r}. Use 1000.")
    if int(seed) != seed or seed < 0:
        raise DataError(f"seed must be a non-negative integer; received {seed!r}.")
    if not 0.0 < ci < 1.0:
        raise DataError(f"ci must be in (0, 1); received {ci!r}. Use 0.95 for a 95% CI.")


def _group(rows: Iterable[object], metrics: Sequence[str]) -> dict[tuple[str, ...], dict]:
    """Rows grouped by GROUP_KEYS: {key: {"n": rows, metric: [values]}}."""
    groups: dict[tuple[str, ...], dict] = {}
    for position, raw in enumerate(rows):
        row = _as_mapping(raw, position)
        missing = [k for k in GROUP_KEYS if row.get(k) is None]
        if missing:
            raise DataError(
                f"row {position} lacks {', '.join(missing)}; every row needs "
                f"{', '.join(GROUP_KEYS)}. Received keys: {sorted(row)}."
            )
        key = tuple(str(row[k]) for k in GROUP_KEYS)
        if key[0] == MACRO_MODEL:
            raise DataError(
                f"row {position} uses the reserved model name {MACRO_MODEL!r}; rename the model."
            )
        group = groups.setdefault(key, {"n": 0, **{m: [] for m in metrics}})
        group["n"] += 1
        for metric in metrics:
            value = _value(row, metric, position)
            if value is not None:
                group[metric].append(value)
    return groups


def aggregate(
    rows: Iterable[object],
    *,
    metrics: Sequence[str] = DEFAULT_METRICS,
    n_boot: int = 1000,
    seed: int = 0,
    ci: float = 0.95,
    macro: bool = True,
) -> list[AggregateRow]:
    """Per-group means with bootstrap CIs, plus macro averages over models.

    Args:
        rows (Iterable[Mapping | dataclass]): per-sample results with the keys
            ``model``, ``split``, ``method``, ``dataset`` and metric values (numbers
            or bools; None or absent = missing).
        metrics (Sequence[str]): metric keys to summarise. Default: ``DEFAULT_METRICS``.
        n_boot (int): bootstrap resamples per group and metric. Default: 1000.
        seed (int): non-negative base seed; equal seeds give equal results. Default: 0.
        ci (float): confidence level of the interval. Default: 0.95.
        macro (bool): add one macro row per (split, method, dataset). Default: True.

    Returns:
        list[AggregateRow]: sorted by (split, method, dataset); within each, the
        models in name order, then the macro row. Values are in percent.

    Raises:
        DataError: a row without a group key, a non-numeric or NaN metric value, the
            reserved model name ``"macro"``, or a bad argument.

    Examples::

        >>> rows = [{"model": "a", "split": "direct", "method": "m", "dataset": "d",
        ...          "iou": v} for v in (0.2, 0.4)]
        >>> out = aggregate(rows, metrics=["iou"], n_boot=200)
        >>> [(r.model, round(r.metrics["iou"].mean, 6), r.metrics["iou"].n) for r in out]
        [('a', 30.0, 2), ('macro', 30.0, 2)]
    """
    metrics = list(dict.fromkeys(metrics)) if not isinstance(metrics, str) else metrics
    _check_args(metrics, n_boot, seed, ci)
    groups = _group(rows, metrics)
    by_setting: dict[tuple[str, ...], list[tuple[str, ...]]] = {}
    for key in sorted(groups, key=lambda k: (k[1], k[2], k[3], k[0])):
        by_setting.setdefault(key[1:], []).append(key)

    out: list[AggregateRow] = []
    for setting, keys in by_setting.items():
        replicates: dict[str, list[tuple[float, np.ndarray, int]]] = {m: [] for m in metrics}
        for key in keys:
            summaries = {}
            for metric in metrics:
                # Sorted, so the result depends on the values, not on row order.
                values = np.sort(np.asarray(groups[key][metric], dtype=np.float64))
                if values.size == 0:
                    continue
                means = _bootstrap_means(values, n_boot, _rng(seed, *key, metric))
                summaries[metric] = _summary(values.mean(), means, ci, values.size)
                replicates[metric].append((float(values.mean()), means, values.size))
            out.append(AggregateRow(*key, n=groups[key]["n"], metrics=summaries))
        if macro:
            summaries = {
                metric: _summary(
                    np.mean([mean for mean, _, _ in parts]),
                    np.mean([means for _, means, _ in parts], axis=0),
                    ci,
                    sum(n for _, _, n in parts),
                )
                for metric, parts in replicates.items()
                if parts
            }
            out.append(
                AggregateRow(
                    MACRO_MODEL,
                    *setting,
                    n=sum(groups[key]["n"] for key in keys),
                    metrics=summaries,
                    macro=True,
                    n_models=len(keys),
                )
            )
    return out


def _metric_names(rows: Sequence[AggregateRow], metrics: Sequence[str] | None) -> list[str]:
    if metrics is not None:
        return list(metrics)
    names: dict[str, None] = {}
    for row in rows:
        names.update(dict.fromkeys(row.metrics))
    return list(names)


def _lead_columns(rows: Sequence[AggregateRow], lead: Lead) -> tuple[list[str], list[list[object]]]:
    """Names of the extra leading columns and, per row, their values."""
    lead = lead or {}
    for name, values in lead.items():
        if len(values) != len(rows):
            raise DataError(
                f"lead column {name!r} has {len(values)} values for {len(rows)} rows; "
                "give one value per row."
            )
    return list(lead), [[values[i] for values in lead.values()] for i in range(len(rows))]


def csv_text(rows: Sequence[AggregateRow], *, lead: Lead = None) -> str:
    """Rows as CSV text, one line per row, four columns per metric.

    Columns: the ``lead`` columns, ``model, split, method, dataset, macro, n, n_models``
    then, per metric ``m``: ``m_mean, m_ci_low, m_ci_high, m_n`` (blank when the row
    lacks ``m``).

    Args:
        rows (Sequence[AggregateRow]): output of :func:`aggregate`.
        lead (Mapping[str, Sequence] | None): extra leading columns, name -> one value
            per row (e.g. a rank). Default: None.

    Returns:
        str: the CSV document (``\\r\\n`` line ends, as :mod:`csv` writes them).
    """
    names = _metric_names(rows, None)
    lead_names, lead_values = _lead_columns(rows, lead)
    header = [*lead_names, "model", "split", "method", "dataset", "macro", "n", "n_models"]
    header += [f"{m}_{part}" for m in names for part in ("mean", "ci_low", "ci_high", "n")]
    handle = io.StringIO(newline="")
    writer = csv.writer(handle)
    writer.writerow([for_csv(name) for name in header])
    for row, extra in zip(rows, lead_values):
        line = [*map(for_csv, extra), *map(for_csv, (row.model, row.split, row.method, row.dataset)), row.macro,
                row.n, row.n_models]
        for name in names:
            summary = row.metrics.get(name)
            line += (
                [summary.mean, summary.ci_low, summary.ci_high, summary.n]
                if summary
                else ["", "", "", ""]
            )
        writer.writerow(line)
    return handle.getvalue()


def to_csv(rows: Sequence[AggregateRow], path: str | Path, *, lead: Lead = None) -> None:
    """Write :func:`csv_text` of the rows to ``path``.

    Args:
        rows (Sequence[AggregateRow]): output of :func:`aggregate`.
        path (str | Path): the file to (over)write, atomically (see
            :func:`cxr_attrib.outputs.write_files`).
        lead (Mapping[str, Sequence] | None): extra leading columns, name -> one value
            per row (e.g. a rank). Default: None.
    """
    write_files({path: csv_text(rows, lead=lead).encode("utf-8")})


def to_json(rows: Sequence[AggregateRow], path: str | Path) -> None:
    """Write rows as JSON ``{"schema_version": 1, "rows": [...]}``; see :func:`read_json`.

    Args:
        rows (Sequence[AggregateRow]): output of :func:`aggregate`.
        path (str | Path): the file to (over)write, atomically.
    """
    document = {"schema_version": _SCHEMA_VERSION, "rows": [row.to_dict() for row in rows]}
    write_files({path: (json.dumps(document, indent=2) + "\n").encode("utf-8")})


def read_json(path: str | Path) -> list[AggregateRow]:
    """Read rows written by :func:`to_json`.

    Args:
        path (str | Path): a file written by :func:`to_json`.

    Returns:
        list[AggregateRow]: equal to the rows that were written.

    Raises:
        DataError: the file is not such a document.
    """
    return read_versioned_json(
        path,
        _SCHEMA_VERSION,
        lambda document: [AggregateRow.from_dict(row) for row in document["rows"]],
        "an aggregate JSON file written by to_json; re-run the aggregation",
    )


def read_versioned_json(
    path: str | Path, version: int, build: Callable[[dict[str, Any]], T], what: str
) -> T:
    """Parse a JSON document carrying ``"schema_version": version`` with ``build``.

    Args:
        path (str | Path): the file.
        version (int): the only schema version accepted.
        build (Callable): document -> object; may raise KeyError, TypeError, ValueError.
        what (str): what the file should be, for the error message.

    Raises:
        DataError: unreadable file, invalid JSON, another version or a malformed
            document, naming ``path`` and ``what``.
    """
    try:
        document = json.loads(read_text(path, what=what))
        if document.get("schema_version") != version:
            raise ValueError(f"schema_version {document.get('schema_version')!r}")
        return build(document)
    except (OSError, ValueError, KeyError, TypeError, AttributeError) as error:
        raise DataError(
            f"{path}: expected {what} (schema_version {version}); could not read it ({error})."
        ) from None


def _cell(summary: MetricSummary | None) -> str:
    if summary is None:
        return "-"
    return f"{summary.mean:.1f} [{summary.ci_low:.1f}, {summary.ci_high:.1f}]"


def _table_rows(
    rows: Sequence[AggregateRow], metrics: Sequence[str] | None, lead: Lead
) -> tuple[list[str], list[list[str]], list[bool]]:
    """Header, cells and, per column, whether it is text (left-aligned, the names)."""
    names = _metric_names(rows, metrics)
    lead_names, lead_values = _lead_columns(rows, lead)
    header = [*lead_names, "model", "split", "method", "dataset", "n", *names]
    body = [
        [*(str(value) for value in extra), row.model, row.split, row.method, row.dataset,
         str(row.n)]
        + [_cell(row.metrics.get(name)) for name in names]
        for row, extra in zip(rows, lead_values)
    ]
    return header, body, [False] * len(lead_names) + [True] * 4 + [False] * (len(names) + 1)


def to_markdown(
    rows: Sequence[AggregateRow], metrics: Sequence[str] | None = None, *, lead: Lead = None
) -> str:
    """A GitHub-flavoured markdown table, cells ``mean [ci_low, ci_high]`` in percent.

    Names are text, never markup (:func:`cxr_attrib.sanitise.for_markdown`): HTML,
    links, images, emphasis and ``|`` are neutralised and line breaks become spaces.

    Args:
        rows (Sequence[AggregateRow]): output of :func:`aggregate`.
        metrics (Sequence[str] | None): columns to show, in order; None = every metric
            present, in order of first appearance. Default: None.
        lead (Mapping[str, Sequence] | None): extra leading columns, name -> one value
            per row. Default: None.

    Returns:
        str: the table, one line per row, ending with a newline.

    Examples::

        >>> row = AggregateRow("a", "direct", "m", "d", n=2,
        ...                    metrics={"iou": MetricSummary(30.0, 20.0, 40.0, 2)})
        >>> print(to_markdown([row]), end="")
        | model | split | method | dataset | n | iou |
        |---|---|---|---|---:|---:|
        | a | direct | m | d | 2 | 30.0 [20.0, 40.0] |
    """
    header, body, text_columns = _table_rows(rows, metrics, lead)
    align = ["---" if is_text else "---:" for is_text in text_columns]

    def line(cells: Sequence[str], texts: Sequence[bool]) -> str:
        # Names (text columns, headers) came from stores and plugins; the numbers are ours.
        return "| " + " | ".join(for_markdown(c) if t else c for c, t in zip(cells, texts)) + " |"

    lines = [line(header, [True] * len(header)), "|" + "|".join(align) + "|",
             *(line(cells, text_columns) for cells in body)]
    return "\n".join(lines) + "\n"


def to_rich_table(
    rows: Sequence[AggregateRow],
    metrics: Sequence[str] | None = None,
    *,
    title: str | None = None,
    lead: Lead = None,
) -> Table:
    """A rich table of the rows (macro rows in bold), for the terminal.

    Cells are text: rich markup in a name (``[red]``) is shown, not interpreted.

    Args:
        rows (Sequence[AggregateRow]): output of :func:`aggregate`.
        metrics (Sequence[str] | None): columns to show; None = all present.
            Default: None.
        title (str | None): table title (text, not markup). Default: None.
        lead (Mapping[str, Sequence] | None): extra leading columns, name -> one value
            per row. Default: None.

    Returns:
        rich.table.Table: print it with ``rich.console.Console().print(table)``.
    """
    header, body, text_columns = _table_rows(rows, metrics, lead)
    table = Table(title=None if title is None else for_terminal(title))
    for name, is_text in zip(header, text_columns):
        table.add_column(for_terminal(name), justify="left" if is_text else "right")
    for row, cells in zip(rows, body):
        table.add_row(*(for_terminal(c) for c in cells), style="bold" if row.macro else None)
    return table
