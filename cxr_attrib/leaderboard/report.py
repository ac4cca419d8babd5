"""A leaderboard report: scored work units -> ranked aggregate, failures, per finding.

A *unit* is one (sample, model, method, params, mode, seed) result of a leaderboard
run (:class:`UnitResult`). :func:`build_report` summarises units with
:func:`cxr_attrib.scoring.aggregate` (per model, split, method and dataset, with
bootstrap CIs and the macro average over models, never pooled), counts failed
units, ranks the methods of each (split, dataset) by the macro mean of one metric
and repeats the aggregation per finding. :func:`write_tables` writes the result as
markdown, CSV and JSON; :func:`read_report_json` reads the JSON back.
"""

from __future__ import annotations

import json
from collections import Counter
from collections.abc import Callable, Iterable, Mapping, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import numpy as np

from cxr_attrib.errors import DataError
from cxr_attrib.outputs import write_files
from cxr_attrib.registry import methods
from cxr_attrib.sanitise import for_markdown
from cxr_attrib.scoring.aggregate import (
    MACRO_MODEL,
    AggregateRow,
    aggregate,
    csv_text,
    read_versioned_json,
    to_markdown,
)

__all__ = [
    "FAITHFULNESS_METRICS",
    "LOWER_IS_BETTER",
    "REFERENCE_RANK",
    "REPORT_METRICS",
    "Report",
    "UnitResult",
    "build_report",
    "labeller",
    "method_label",
    "reference_labels",
    "read_report_json",
    "table_files",
    "write_tables",
]

REPORT_METRICS = (
    "iou", "f1", "precision", "recall", "pointing_game", "energy",
    "deletion_auc", "insertion_auc", "deletion_gain", "insertion_gain", "morf_lerf", "beats_random",
)  # fmt: skip
"""Metrics a report summarises (each a fraction in [0, 1], a gain in [-1, 1] or a bool,
shown x 100)."""

LOWER_IS_BETTER = frozenset({"deletion_auc"})
"""Metrics where a smaller value ranks higher."""

FAITHFULNESS_METRICS = frozenset({
    "deletion_auc", "insertion_auc", "deletion_gain", "insertion_gain", "morf_lerf", "drop_gain", "beats_random",
})  # fmt: skip
"""Metrics that need ``truth`` to beat ``random`` on a model to mean anything there."""

REFERENCE_RANK = "ref"
"""The rank a reference row (``truth``, ``random``) shows: it is never ranked."""

_SCHEMA_VERSION = 1
_LEAD = ("rank", "failures", "seconds")
_GroupKey = tuple[str, str, str, str]  # (model, split, method, dataset)


@dataclass(frozen=True, eq=False)
class UnitResult:
    """One scored work unit of a leaderboard run, as a report reads it.

    Attributes:
        sample_id (str): the benchmark's stable sample id, e.g. ``"phantom/direct/mass/7"``.
        benchmark (str): registered benchmark name, e.g. ``"phantom"``.
        dataset (str): source dataset, e.g. ``"vindr_cxr"``.
        split (str): benchmark split, e.g. ``"direct"``.
        finding (str): the finding asked about.
        model (str): model key.
        method (str): attribution method name.
        params (Mapping[str, Any]): the method's hyper-parameters (JSON values).
        mode (str): prompt mode, ``"direct"`` or ``"reasoning"``.
        seed (int): the unit's seed.
        answer (str | None): the model's answer text (model-written: data, not markup).
        pred_boxes (np.ndarray): (N, 4) predicted boxes, input-frame pixels, exclusive ends.
        gt_boxes (np.ndarray): (M, 4) ground-truth boxes, input-frame pixels, exclusive ends.
        metrics (Mapping[str, float | bool | None]): scores of the unit (fractions and
            bools as the scorer returns them; None = not computed).
        wall_time_s (float | None): the unit's wall time in seconds.
        passes (Mapping[str, int]): forward / backward passes the method made.
        error (str | None): why the unit failed; None when it succeeded.
        image_size (tuple[int, int] | None): (H, W) of the input frame in pixels, if known.
        heatmap (np.ndarray | None): (h, w) input-frame heatmap at any resolution with
            the frame's aspect (a store keeps it shrunk), if available.
        image (np.ndarray | None): (h, w) uint8 input image at any resolution with the
            frame's aspect (a store's thumbnail), if available.
        unit_id (str | None): the store's unit id, if read from a store.
    """

    sample_id: str
    benchmark: str
    dataset: str
    split: str
    finding: str
    model: str
    method: str
    params: Mapping[str, Any] = field(default_factory=dict)
    mode: str = "direct"
    seed: int = 0
    answer: str | None = None
    pred_boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))
    gt_boxes: np.ndarray = field(default_factory=lambda: np.zeros((0, 4)))
    metrics: Mapping[str, float | bool | None] = field(default_factory=dict)
    wall_time_s: float | None = None
    passes: Mapping[str, int] = field(default_factory=dict)
    error: str | None = None
    image_size: tuple[int, int] | None = None
    heatmap: np.ndarray | None = None
    image: np.ndarray | None = None
    unit_id: str | None = None


@dataclass(frozen=True)
class Report:
    """The summary of a leaderboard, ready to print or write.

    Attributes:
        rank_by (str): the metric methods are ranked by (macro mean over models).
        metrics (tuple[str, ...]): metrics summarised, in column order.
        rows (tuple[AggregateRow, ...]): per (split, dataset), the methods in rank
            order; per method its model rows (name order), then its macro row.
        ranks (tuple[int | str, ...]): per row, its method's rank within (split,
            dataset); 1 is best, ties share the better rank; reference rows show
            :data:`REFERENCE_RANK` and follow the ranked methods.
        failures (tuple[int, ...]): per row, failed units (macro rows: over models).
        seconds (tuple[float | None, ...]): per row, the mean wall time of its
            successful units in seconds, to the millisecond (macro rows: the mean of the
            model means); None without a timed unit.
        findings (Mapping[str, tuple[AggregateRow, ...]]): per finding, the same
            aggregation restricted to that finding's units (aggregate order).
        errors (Mapping[str, tuple[str, ...]]): per method, up to three distinct
            error messages of its failed units.
        n_units (int): units read.
        references (tuple[str, ...]): the method labels that are reference rows.
        uninformative (tuple[tuple[str, str, str, str], ...]): (model, split, dataset,
            metric) where ``truth`` does not beat ``random`` on a faithfulness metric
            (model ``macro``: the macro means), so that metric says nothing there.
    """

    rank_by: str
    metrics: tuple[str, ...]
    rows: tuple[AggregateRow, ...]
    ranks: tuple[int | str, ...]
    failures: tuple[int, ...]
    seconds: tuple[float | None, ...]
    findings: Mapping[str, tuple[AggregateRow, ...]]
    errors: Mapping[str, tuple[str, ...]]
    n_units: int
    references: tuple[str, ...] = ()
    uninformative: tuple[tuple[str, str, str, str], ...] = ()

    @property
    def lead(self) -> dict[str, tuple[int, ...]]:
        """Leading columns of the written tables: ``rank``, ``failures``, ``seconds``."""
        return {"rank": self.ranks, "failures": self.failures,
                "seconds": ["" if s is None else s for s in self.seconds]}

    def to_dict(self) -> dict[str, Any]:
        """A JSON-safe dict; :meth:`from_dict` inverts it."""
        return {
            "schema_version": _SCHEMA_VERSION,
            "rank_by": self.rank_by,
            "metrics": list(self.metrics),
            "n_units": self.n_units,
            "rows": [
                {"rank": rank, "failures": failed, "seconds": sec, **row.to_dict()}
                for rank, failed, sec, row in zip(self.ranks, self.failures, self.seconds,
                                                  self.rows)
            ],
            "findings": {
                name: [row.to_dict() for row in rows] for name, rows in self.findings.items()
            },
            "errors": {name: list(messages) for name, messages in self.errors.items()},
            "references": list(self.references),
            "uninformative": [list(flag) for flag in self.uninformative],
        }

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> Report:
        """Rebuild a report written by :meth:`to_dict`."""
        rows = [dict(row) for row in data["rows"]]
        return cls(
            rank_by=data["rank_by"],
            metrics=tuple(data["metrics"]),
            rows=tuple(AggregateRow.from_dict({k: v for k, v in r.items()
                                               if k not in _LEAD}) for r in rows),
            ranks=tuple(r["rank"] if r["rank"] == REFERENCE_RANK else int(r["rank"]) for r in rows),
            failures=tuple(int(r["failures"]) for r in rows),
            seconds=tuple(r["seconds"] for r in rows),
            findings={
                name: tuple(AggregateRow.from_dict(row) for row in found)
                for name, found in data["findings"].items()
            },
            errors={name: tuple(messages) for name, messages in data["errors"].items()},
            n_units=int(data["n_units"]),
            references=tuple(data.get("references", ())),
            uninformative=tuple(tuple(flag) for flag in data.get("uninformative", ())),
        )


def method_label(unit: UnitResult, varied: frozenset[str] = frozenset()) -> str:
    """The method's name in tables: ``name`` or, when ``name`` ran with several
    parameter sets (``name in varied``), ``name[k=v, ...]``."""
    if unit.method not in varied:
        return unit.method
    inner = ", ".join(f"{key}={json.dumps(unit.params[key])}" for key in sorted(unit.params))
    return f"{unit.method}[{inner}]"


def labeller(units: Sequence[UnitResult]) -> Callable[[UnitResult], str]:
    """A unit -> method label function for these units (see :func:`method_label`)."""
    settings: dict[str, set[str]] = {}
    for unit in units:
        settings.setdefault(unit.method, set()).add(json.dumps(unit.params, sort_keys=True))
    varied = frozenset(name for name, seen in settings.items() if len(seen) > 1)
    return lambda unit: method_label(unit, varied)


def _records(units: Sequence[UnitResult], label: Callable[[UnitResult], str],
             metrics: Sequence[str]) -> list[dict[str, Any]]:
    """Aggregation input: one dict per unit; failed units carry no metric value."""
    return [
        {
            "model": unit.model, "split": unit.split, "method": label(unit),
            "dataset": unit.dataset,
            **({} if unit.error is not None else {m: unit.metrics.get(m) for m in metrics}),
        }
        for unit in units
    ]  # fmt: skip


def _ranked(rows: list[AggregateRow], rank_by: str,
            references: frozenset[str] = frozenset()) -> tuple[list[AggregateRow], list[int | str]]:
    """Rows reordered by method rank within each (split, dataset), and each row's rank.

    Reference rows are not ranked: they follow the ranked methods (name order) with
    the rank :data:`REFERENCE_RANK`.
    """
    sign = 1.0 if rank_by in LOWER_IS_BETTER else -1.0
    blocks: dict[tuple[str, str], dict[str, list[AggregateRow]]] = {}
    for row in rows:
        blocks.setdefault((row.split, row.dataset), {}).setdefault(row.method, []).append(row)
    ordered: list[AggregateRow] = []
    ranks: list[int | str] = []
    for setting in sorted(blocks):
        scores = {}
        for method, method_rows in blocks[setting].items():
            if method in references:
                continue
            summary = method_rows[-1].metrics.get(rank_by)  # the macro row comes last
            scores[method] = np.inf if summary is None else sign * summary.mean
        previous, rank = None, 0
        for position, method in enumerate(sorted(scores, key=lambda m: (scores[m], m)), 1):
            rank = rank if scores[method] == previous else position
            previous = scores[method]
            ordered += blocks[setting][method]
            ranks += [rank] * len(blocks[setting][method])
        for method in sorted(set(blocks[setting]) & references):
            ordered += blocks[setting][method]
            ranks += [REFERENCE_RANK] * len(blocks[setting][method])
    return ordered, ranks


def reference_labels(units: Sequence[UnitResult], label: Callable[[UnitResult], str]) -> frozenset[str]:
    """Labels of the units whose method is a registered reference (``is_reference``)."""
    registered = methods()
    found = set()
    for unit in units:
        cls = registered.get(unit.method.split("[", 1)[0])  # a label is NAME or NAME[...]
        if cls is not None and cls.is_reference:
            found.add(label(unit))
    return frozenset(found)


def _uninformative(rows: Sequence[AggregateRow], metrics: Sequence[str]) -> tuple[tuple[str, str, str, str], ...]:
    """(model, split, dataset, metric) where ``truth``'s mean does not beat ``random``'s."""
    means: dict[tuple[str, str, str, str], dict[str, float]] = {}
    for row in rows:
        if row.method in ("truth", "random"):
            for metric in metrics:
                summary = row.metrics.get(metric)
                if metric in FAITHFULNESS_METRICS and summary is not None:
                    key = (row.model, row.split, row.dataset, metric)
                    means.setdefault(key, {})[row.method] = summary.mean
    flags = []
    for key, pair in means.items():
        if len(pair) == 2:
            better = pair["truth"] < pair["random"] if key[3] in LOWER_IS_BETTER else pair["truth"] > pair["random"]
            if not better:
                flags.append(key)
    return tuple(sorted(flags))


def _seconds(units: Sequence[UnitResult], label: Callable[[UnitResult], str],
             rows: Sequence[AggregateRow]) -> tuple[float | None, ...]:
    """Per row, the mean wall time (s) of its successful units; macro: mean of model means."""
    times: dict[_GroupKey, list[float]] = {}
    for u in units:
        if u.error is None and u.wall_time_s is not None:
            times.setdefault((u.model, u.split, label(u), u.dataset), []).append(u.wall_time_s)
    means = {key: float(np.mean(values)) for key, values in times.items()}
    out = []
    for r in rows:
        found = [v for (model, *rest), v in means.items()
                 if tuple(rest) == (r.split, r.method, r.dataset) and (r.macro or model == r.model)]
        out.append(round(float(np.mean(found)), 3) if found else None)
    return tuple(out)


def _check_metrics(metrics: Sequence[str], rank_by: str) -> tuple[str, ...]:
    chosen = tuple(dict.fromkeys(metrics))
    if not chosen or isinstance(metrics, str):
        raise DataError(f"metrics must be a non-empty list of names; received {metrics!r}. "
                        f"Example: {list(REPORT_METRICS)}.")
    if rank_by not in chosen:
        raise DataError(f"rank_by={rank_by!r} is not among the report's metrics {list(chosen)}; "
                        "rank by one of them or add it.")
    return chosen


def build_report(
    units: Iterable[UnitResult],
    *,
    rank_by: str = "iou",
    metrics: Sequence[str] = REPORT_METRICS,
    n_boot: int = 1000,
    seed: int = 0,
) -> Report:
    """Aggregate, rank and count failures of a leaderboard's units.

    Args:
        units (Iterable[UnitResult]): the scored (or failed) work units.
        rank_by (str): metric that orders the methods of each (split, dataset): the
            macro mean over models, descending (ascending for :data:`LOWER_IS_BETTER`);
            methods without a value come last. Reference rows (registered methods
            with ``is_reference``: ``truth``, ``random``) are not ranked; they follow
            with rank :data:`REFERENCE_RANK`, and every faithfulness metric on which
            ``truth`` does not beat ``random`` is listed in ``Report.uninformative``.
            Default: ``"iou"``.
        metrics (Sequence[str]): metrics to summarise; those no unit has are dropped.
            Default: :data:`REPORT_METRICS`.
        n_boot (int): bootstrap resamples per group and metric. Default: 1000.
        seed (int): bootstrap seed. Default: 0.

    Returns:
        Report: values in percent (see :func:`cxr_attrib.scoring.aggregate`). A group's
        ``n`` counts all its units, failed ones included; each metric's ``n`` counts
        the values behind its mean.

    Raises:
        DataError: no units, ``rank_by`` not among ``metrics`` or without any value,
            or a bad metric value.
    """
    units = list(units)
    if not units:
        raise DataError("the report has no units to summarise; check the store paths and "
                        "that the leaderboard run finished at least one unit.")
    chosen = _check_metrics(metrics, rank_by)
    present = {m for u in units if u.error is None for m, v in u.metrics.items() if v is not None}
    if rank_by not in present:
        raise DataError(f"no unit has a value for rank_by={rank_by!r}; rank by one of the metrics "
                        f"the units have: {sorted(present) or 'none (did every unit fail?)'}.")
    chosen = tuple(m for m in chosen if m in present)
    label = labeller(units)
    references = reference_labels(units, label)
    summary = dict(metrics=chosen, n_boot=n_boot, seed=seed)
    rows, ranks = _ranked(aggregate(_records(units, label, chosen), **summary), rank_by, references)
    failed: Counter[_GroupKey] = Counter(
        (u.model, u.split, label(u), u.dataset) for u in units if u.error is not None
    )
    for (_, split, method, dataset), count in list(failed.items()):
        failed[(MACRO_MODEL, split, method, dataset)] += count
    failures = [failed[(r.model, r.split, r.method, r.dataset)] for r in rows]
    seconds = _seconds(units, label, rows)
    findings = {
        finding: tuple(aggregate(
            _records([u for u in units if u.finding == finding], label, chosen), **summary))
        for finding in sorted({u.finding for u in units})
    }  # fmt: skip
    errors: dict[str, tuple[str, ...]] = {}
    for unit in units:
        if unit.error is not None:
            seen = errors.get(label(unit), ())
            if unit.error not in seen and len(seen) < 3:
                errors[label(unit)] = (*seen, unit.error)
    return Report(rank_by, chosen, tuple(rows), tuple(ranks), tuple(failures), seconds, findings,
                  dict(sorted(errors.items())), len(units), tuple(sorted(references)),
                  _uninformative(rows, chosen))


def table_files(
    report: Report, out: str | Path, kinds: Sequence[str] = ("markdown", "csv", "json")
) -> dict[Path, bytes]:
    """The contents of ``report.md``, ``report.csv`` and / or ``report.json`` in ``out``.

    The markdown has the ranked table (rank, failures, seconds, every row) and one
    macro table per finding; the CSV has the ranked table's rows with every number
    (:func:`cxr_attrib.scoring.aggregate.csv_text` columns after ``rank``,
    ``failures`` and ``seconds``, blank without a time); the JSON is
    :meth:`Report.to_dict`.

    Args:
        report (Report): output of :func:`build_report`.
        out (str | Path): the folder the files are meant for.
        kinds (Sequence[str]): which of ``markdown``, ``csv``, ``json``. Default: all three.

    Returns:
        dict[Path, bytes]: destination -> UTF-8 contents, for
        :func:`cxr_attrib.outputs.write_files`.
    """
    makers = {
        "markdown": ("md", lambda: _markdown(report)),
        "csv": ("csv", lambda: csv_text(report.rows, lead=report.lead)),
        "json": ("json", lambda: json.dumps(report.to_dict(), indent=2) + "\n"),
    }
    unknown = sorted(set(kinds) - set(makers))
    if unknown:
        raise DataError(f"unknown table kinds {unknown}; choose from {sorted(makers)}.")
    return {Path(out) / f"report.{suffix}": make().encode("utf-8")
            for kind, (suffix, make) in makers.items() if kind in kinds}


def write_tables(
    report: Report, out: str | Path, kinds: Sequence[str] = ("markdown", "csv", "json")
) -> list[Path]:
    """Write :func:`table_files` atomically (all or none); returns the files written."""
    files = table_files(report, out, kinds)
    write_files(files, root=out)
    return list(files)


def _markdown(report: Report) -> str:
    parts = [
        f"# Leaderboard\n\nMethods ranked by the macro mean of `{report.rank_by}` over "
        f"models (percent, bootstrap 95% CI); {report.n_units} units.\n",
        to_markdown(report.rows, report.metrics, lead=report.lead),
    ]
    parts += _reference_notes(report)
    for finding, rows in report.findings.items():
        macro = [row for row in rows if row.macro]
        parts += [f"## {_heading(finding)} (macro over models)\n", to_markdown(macro, report.metrics)]
    return "\n".join(parts)


def _reference_notes(report: Report) -> list[str]:
    """Markdown lines on the reference rows and the metrics they show to be uninformative."""
    if not report.references:
        return []
    notes = [f"Reference rows ({', '.join(_heading(r) for r in report.references)}) are shown after "
             f"the ranked methods with rank `{REFERENCE_RANK}`: `truth` is the ceiling, `random` the floor; "
             "neither is a method.\n"]
    for model, split, dataset, metric in report.uninformative:
        notes.append(f"- **uninformative**: `{metric}` on {_heading(model)} ({_heading(split)}, "
                     f"{_heading(dataset)}): `truth` does not beat `random`.")
    return notes


def _heading(text: str) -> str:
    """A finding name as markdown heading text (no markup, one line)."""
    return for_markdown(" ".join(text.split()))


def read_report_json(path: str | Path) -> Report:
    """Read a ``report.json`` written by :func:`write_tables`.

    Raises:
        DataError: the file is not such a document.
    """
    return read_versioned_json(path, _SCHEMA_VERSION, Report.from_dict,
                               "a report JSON written by `cxr-attrib report`")
