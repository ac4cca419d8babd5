"""Said vs used: the box a model *states* against the regions that *drive* its answer.

From the units of a leaderboard store, for every sample a model answered "yes" to and
that has ground-truth boxes, the **said** region is the first box of a box-stating
method (e.g. one that asks the model where its evidence is) and each **used** region
is the union of another method's boxes (e.g. an intervention method's winner, or the
boxes derived from a perturbation heatmap). Per (model, finding) it reports the mean
IoU of said with each used region and with the truth, of each used region with the
truth, and the share of samples whose said box overlaps a used region at IoU >= 0.5.
Methods are named by the caller; nothing here knows any method or model family.

Every box is in the sample's input frame (as the store keeps it); IoUs are union-region
IoUs (:func:`~cxr_attrib.scoring.region_metrics`), exact areas.

Example::

    >>> rows = agreement_from_store("runs/phantom/leaderboard.sqlite",  # doctest: +SKIP
    ...                             said="prompting", used=("medfocus", "occlusion"))
    >>> print(agreement_markdown(rows))  # doctest: +SKIP
"""

from __future__ import annotations

import os
from collections.abc import Iterable, Sequence
from dataclasses import dataclass
from typing import Any

import numpy as np

from cxr_attrib.errors import DataError
from cxr_attrib.sanitise import for_markdown
from cxr_attrib.scoring import MetricSummary, aggregate, region_metrics
from cxr_attrib.scoring.aggregate import _cell as summary_cell
from cxr_attrib.targets import parse_yes_no

from .records import UnitRecord
from .store import open_store

__all__ = [
    "AGREEMENT_IOU",
    "AgreementRow",
    "agreement_from_store",
    "agreement_markdown",
    "box_agreement",
    "sample_agreement",
]

AGREEMENT_IOU = 0.5
"""IoU at or above which the said box counts as agreeing with a used region."""


@dataclass(frozen=True)
class AgreementRow:
    """Said vs used on the yes-answered samples of one (model, finding); values in percent.

    Every value is a :class:`~cxr_attrib.scoring.MetricSummary` (mean x 100 with a
    seeded bootstrap 95% interval, and its ``n``).

    Attributes:
        model (str): model reference as stored.
        finding (str): the sample's finding.
        mode (str): the prompt mode of the explained answers.
        n (int): samples with an ok unit of the said method and of every used method.
        said_used (dict[str, MetricSummary]): used method -> IoU(said box, its region).
        said_truth (MetricSummary): IoU(said box, ground truth).
        used_truth (dict[str, MetricSummary]): used method -> IoU(its region, ground truth).
        agreement (dict[str, MetricSummary]): used method -> share of samples with
            IoU(said box, its region) >= :data:`AGREEMENT_IOU`.
    """

    model: str
    finding: str
    mode: str
    n: int
    said_used: dict[str, MetricSummary]
    said_truth: MetricSummary
    used_truth: dict[str, MetricSummary]
    agreement: dict[str, MetricSummary]


def _iou(boxes: np.ndarray, other: np.ndarray) -> float:
    return float(region_metrics(boxes, other).iou)


def _check_names(said: str, used: Sequence[str]) -> tuple[str, ...]:
    used = tuple(used)
    if not isinstance(said, str) or not said or not used or not all(isinstance(u, str) and u for u in used):
        raise DataError(f"expected said= one method name and used= one or more, got said={said!r}, used={used!r}.")
    if said in used or len(set(used)) != len(used):
        raise DataError(f"expected distinct methods in said={said!r} and used={list(used)!r}.")
    return used


def _groups(units: Iterable[UnitRecord], wanted: set[str]) -> dict[tuple[str, str, str], dict[str, UnitRecord]]:
    """(model, sample, mode) -> method -> unit, for the wanted methods."""
    by_sample: dict[tuple[str, str, str], dict[str, UnitRecord]] = {}
    for unit in units:
        if unit.method not in wanted:
            continue
        group = by_sample.setdefault((unit.model, unit.sample_id, unit.mode), {})
        if unit.method in group:
            raise DataError(
                f"two units of method {unit.method!r} for model {unit.model!r}, sample {unit.sample_id!r}, "
                f"mode {unit.mode!r} (different params or seeds); pass the units of one configuration."
            )
        group[unit.method] = unit
    return by_sample


def sample_agreement(units: Iterable[UnitRecord], *, said: str, used: Sequence[str]) -> list[dict[str, Any]]:
    """Said vs used per sample: one row per counted (model, sample, mode), IoUs in [0, 1].

    A sample counts for a model when its said unit and every used unit are ok, the
    explained answer (of the said unit) parses as yes, and the sample has ground-truth
    boxes. The said region is the said unit's **first** method box (no box: IoU 0 with
    any non-empty region); a used region is the union of that unit's method boxes.

    Args:
        units (Iterable[UnitRecord]): units with their ``sample`` attached (as
            :meth:`~cxr_attrib.leaderboard.Store.units` yields them).
        said (str): the method whose first box is what the model says.
        used (Sequence[str]): methods whose boxes are the regions the answer depends on.

    Returns:
        list[dict]: rows with ``model``, ``split`` (the mode), ``method`` (= ``said``),
        ``dataset``, ``sample``, ``finding`` and, for each used method ``u``,
        ``said_{u}`` (IoU), ``{u}_truth`` (IoU), ``agrees_{u}`` (bool), plus
        ``said_truth`` (IoU); ready for :func:`~cxr_attrib.scoring.aggregate`.

    Raises:
        DataError: bad method names, or two units of one method for one (model,
            sample, mode) (a store with several params or seeds: filter the units first).
    """
    used = _check_names(said, used)
    rows = []
    for (model, sample_id, mode), group in sorted(_groups(units, {said, *used}).items()):
        if not all(name in group and group[name].ok for name in (said, *used)):
            continue
        sample = group[said].sample
        if sample is None or len(sample.gt_boxes) == 0:
            continue
        if parse_yes_no(group[said].answer or "", mode=mode) != "yes":  # type: ignore[arg-type]
            continue
        first, truth = group[said].method_boxes[:1], sample.gt_boxes
        row: dict[str, Any] = {"model": model, "split": mode, "method": said, "dataset": sample.dataset,
                               "sample": sample_id, "finding": sample.finding, "said_truth": _iou(first, truth)}
        for name in used:
            region = group[name].method_boxes
            row[f"said_{name}"] = _iou(first, region)
            row[f"{name}_truth"] = _iou(region, truth)
            row[f"agrees_{name}"] = row[f"said_{name}"] >= AGREEMENT_IOU
        rows.append(row)
    return rows


def box_agreement(
    units: Iterable[UnitRecord], *, said: str, used: Sequence[str], n_boot: int = 1000, seed: int = 0
) -> list[AgreementRow]:
    """Said vs used per (model, finding), means with bootstrap intervals (:func:`sample_agreement` rows).

    Args:
        units (Iterable[UnitRecord]): units with their ``sample`` attached.
        said (str): the method whose first box is what the model says.
        used (Sequence[str]): methods whose boxes are the regions the answer depends on.
        n_boot (int): bootstrap resamples per cell. Default: 1000.
        seed (int): seed of the resamples. Default: 0.

    Returns:
        list[AgreementRow]: sorted by model then finding (then mode); pairs without a
        counted sample are left out.

    Raises:
        DataError: as :func:`sample_agreement`.
    """
    used = _check_names(said, used)
    rows = sample_agreement(units, said=said, used=used)
    metrics = ["said_truth", *(f"{kind}_{u}" for kind in ("said", "agrees") for u in used),
               *(f"{u}_truth" for u in used)]
    out = []
    for finding in sorted({row["finding"] for row in rows}):
        chosen = [row for row in rows if row["finding"] == finding]
        for group in aggregate(chosen, metrics=metrics, n_boot=n_boot, seed=seed, macro=False):
            m = group.metrics
            out.append(AgreementRow(
                model=group.model, finding=finding, mode=group.split, n=group.n, said_truth=m["said_truth"],
                said_used={u: m[f"said_{u}"] for u in used}, used_truth={u: m[f"{u}_truth"] for u in used},
                agreement={u: m[f"agrees_{u}"] for u in used},
            ))
    return sorted(out, key=lambda r: (r.model, r.finding, r.mode))


def agreement_from_store(path: str | os.PathLike, *, said: str, used: Sequence[str]) -> list[AgreementRow]:
    """:func:`box_agreement` over every unit of a leaderboard store (a shard's or a merged one).

    Args:
        path (str | PathLike): the .sqlite store.
        said (str): the method whose first box is what the model says.
        used (Sequence[str]): methods whose boxes are the regions the answer depends on.

    Returns:
        list[AgreementRow]: per (model, finding).

    Raises:
        StoreError: not a leaderboard store. DataError: a named method is not in the
            store's run, or as :func:`box_agreement`.
    """
    used = _check_names(said, used)
    with open_store(path) as store:
        stored = store.config().methods
        missing = [name for name in (said, *used) if name not in stored]
        if missing:
            raise DataError(f"{os.fspath(path)}: method(s) {', '.join(map(repr, missing))} not in this store; "
                            f"it holds {', '.join(stored)}.")
        return box_agreement(store.units(heatmaps=False), said=said, used=used)


def agreement_markdown(rows: Sequence[AgreementRow]) -> str:
    """A markdown table of :func:`box_agreement` rows: ``mean [95% CI]`` in percent.

    Columns: model, finding (and mode, when the rows hold several), n, IoU(said, u) for each used method u, IoU(said, truth),
    IoU(u, truth) for each u, and "said ~ u" (share of IoU(said, u) >= 0.5) for each u.
    Model and finding names are text, never markup (``|`` escaped, line breaks removed).
    """
    if not rows:
        return "(no sample answered yes with every method ok)"
    used = list(rows[0].said_used)
    modes = len({row.mode for row in rows}) > 1
    names = [_text(u) for u in used]
    lead = ["model", "finding", "mode"] if modes else ["model", "finding"]
    head = (lead + ["n"] + [f"IoU(said, {u})" for u in names] + ["IoU(said, truth)"]
            + [f"IoU({u}, truth)" for u in names] + [f"said ~ {u} (IoU >= {AGREEMENT_IOU:g})" for u in names])
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(lead) + "---:|" * (len(head) - len(lead))]
    for row in rows:
        cells = ([_text(row.model), _text(row.finding)] + ([row.mode] if modes else []) + [str(row.n)]
                 + [summary_cell(row.said_used[u]) for u in used] + [summary_cell(row.said_truth)]
                 + [summary_cell(row.used_truth[u]) for u in used] + [summary_cell(row.agreement[u]) for u in used])
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def _text(text: str) -> str:
    return for_markdown(text)
