"""The report's XBench section: pixel grounding at a calibrated tau, recognition, their correlation.

From the units of a leaderboard run (each ok unit carries the pixel metrics of
:func:`cxr_attrib.scoring.pixel_grounding.grounding_metrics`) and the store's
recognition rows:

- **grounding** per (model, method): tau chosen as the best mean Dice on the
  calibration split (:func:`~cxr_attrib.scoring.pixel_grounding.calibration_split` of
  the sample id, 30%), then on the *test* split (the other samples) the mean pixel IoU
  and Dice at that tau and both pointing games, each with a bootstrap 95% interval,
  and the test split's tau curves;
- **recognition** per (model, finding): AUC, accuracy and F1 of p(positive), with
  stratified bootstrap intervals;
- **recognition vs grounding** per method: Spearman correlation over the (model,
  finding) pairs of recognition AUC and test Dice at the calibrated tau, with a
  bootstrap interval; one scatter plot of every method's pairs.

``cxr-attrib report`` appends :func:`xbench_markdown` to ``report.md`` and writes
:func:`xbench_files` (``xbench.json``, ``xbench_tau_curves.png``, ``xbench_correlation.png``).
"""

from __future__ import annotations

import html
import io
import json
from collections.abc import Sequence
from dataclasses import asdict, dataclass
from pathlib import Path
from typing import Any

import numpy as np

from cxr_attrib.scoring.aggregate import _bootstrap_means, _rng
from cxr_attrib.scoring.pixel_grounding import TAU_GRID, calibration_split, metric_key
from cxr_attrib.scoring.recognition import Interval, RecognitionScores, correlation, recognition_scores

from .records import RecognitionRecord
from .report import UnitResult

__all__ = ["XBENCH_FILES", "CorrelationRow", "GroundingRow", "RecognitionRow", "XBench", "build_xbench", "xbench_files",
           "xbench_html", "xbench_markdown"]

_POINTING = ("pointing_any", "pointing_share")

XBENCH_FILES = ("xbench.json", "xbench_tau_curves.png", "xbench_correlation.png")
"""The files :func:`xbench_files` may write beside the report (the figures only when there is data)."""


@dataclass(frozen=True)
class GroundingRow:
    """Pixel grounding of one (model, method), tau calibrated on the calibration split.

    Attributes:
        model (str), method (str): the key.
        tau (float | None): the calibrated tau (None: no calibration sample).
        n_calibration (int): calibration units; n_test (int): test units.
        iou, dice, pointing_any, pointing_share (Interval | None): test-split means with
            bootstrap intervals (None without a tau or test units).
        curve_iou, curve_dice (list[float]): test-split mean IoU / Dice at each tau of :data:`TAU_GRID`.
        findings (dict[str, float]): finding -> test-split mean Dice at the calibrated tau.
    """

    model: str
    method: str
    tau: float | None
    n_calibration: int
    n_test: int
    iou: Interval | None
    dice: Interval | None
    pointing_any: Interval | None
    pointing_share: Interval | None
    curve_iou: list[float]
    curve_dice: list[float]
    findings: dict[str, float]


@dataclass(frozen=True)
class RecognitionRow:
    """Recognition of one finding by one model (rows that failed are left out and counted)."""

    model: str
    finding: str
    scores: RecognitionScores
    failed: int


@dataclass(frozen=True)
class CorrelationRow:
    """Spearman correlation of recognition AUC and grounding Dice over (model, finding) pairs of one method."""

    method: str
    rho: Interval
    points: list[tuple[str, str, float, float]]  # (model, finding, AUC, Dice)


@dataclass(frozen=True)
class XBench:
    """The XBench section: grounding rows, recognition rows, correlation rows, the tau grid."""

    grounding: list[GroundingRow]
    recognition: list[RecognitionRow]
    correlation: list[CorrelationRow]
    taus: tuple[float, ...] = TAU_GRID

    def to_dict(self) -> dict[str, Any]:
        """JSON-safe dict (NaN becomes None)."""
        return _json_safe(asdict(self))


def _json_safe(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _json_safe(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_json_safe(v) for v in value]
    if isinstance(value, float) and not np.isfinite(value):
        return None
    return value


def _mean_interval(values: np.ndarray, n_boot: int, seed: int, *names: str) -> Interval | None:
    if not values.size:
        return None
    replicates = _bootstrap_means(values, n_boot, _rng(seed, *names))
    low, high = np.percentile(replicates, [2.5, 97.5])
    return Interval(float(values.mean()), float(low), float(high))


def _has_pixels(unit: UnitResult) -> bool:
    return unit.error is None and metric_key("pixel_dice", TAU_GRID[0]) in unit.metrics


def _curves(units: Sequence[UnitResult], metric: str) -> np.ndarray:
    """(N, K) values of ``metric`` at each tau of the grid."""
    return np.array([[float(u.metrics[metric_key(metric, tau)]) for tau in TAU_GRID] for u in units]).reshape(
        len(units), len(TAU_GRID))


def _grounding(model: str, method: str, units: list[UnitResult], n_boot: int, seed: int) -> GroundingRow:
    calibration = [u for u in units if calibration_split(u.sample_id)]
    test = [u for u in units if not calibration_split(u.sample_id)]
    tau = None
    if calibration:
        mean_dice = _curves(calibration, "pixel_dice").mean(axis=0)
        tau = TAU_GRID[int(np.argmax(mean_dice))]  # smallest tau on ties
    iou_curve, dice_curve = _curves(test, "pixel_iou"), _curves(test, "pixel_dice")
    stats: dict[str, Interval | None] = dict.fromkeys(("iou", "dice", *_POINTING))
    findings: dict[str, float] = {}
    if tau is not None and test:
        k = TAU_GRID.index(tau)
        stats["iou"] = _mean_interval(iou_curve[:, k], n_boot, seed, model, method, "iou")
        stats["dice"] = _mean_interval(dice_curve[:, k], n_boot, seed, model, method, "dice")
        for name in _POINTING:
            values = np.array([float(u.metrics[name]) for u in test])
            stats[name] = _mean_interval(values, n_boot, seed, model, method, name)
        for finding in sorted({u.finding for u in test}):
            findings[finding] = float(np.mean([dice_curve[i, k] for i, u in enumerate(test) if u.finding == finding]))
    return GroundingRow(
        model, method, tau, len(calibration), len(test), stats["iou"], stats["dice"], stats["pointing_any"],
        stats["pointing_share"], iou_curve.mean(axis=0).tolist() if test else [], dice_curve.mean(axis=0).tolist()
        if test else [], findings,
    )


def build_xbench(
    units: Sequence[UnitResult], recognition: Sequence[RecognitionRecord], *, n_boot: int = 1000, seed: int = 0
) -> XBench | None:
    """The XBench section of a run, or None when no unit has pixel metrics and no recognition row exists.

    Args:
        units (Sequence[UnitResult]): the run's units (failed ones are ignored).
        recognition (Sequence[RecognitionRecord]): the store's recognition rows.
        n_boot (int): bootstrap replicates per interval. Default: 1000.
        seed (int): bootstrap seed. Default: 0.

    Returns:
        XBench | None: rows sorted by model then method / finding.
    """
    pixel = [u for u in units if _has_pixels(u)]
    if not pixel and not recognition:
        return None
    groups: dict[tuple[str, str], list[UnitResult]] = {}
    for unit in pixel:
        groups.setdefault((unit.model, unit.method), []).append(unit)
    grounding = [_grounding(model, method, members, n_boot, seed) for (model, method), members in sorted(groups.items())]
    by_pair: dict[tuple[str, str], list[RecognitionRecord]] = {}
    for record in recognition:
        by_pair.setdefault((record.model, record.finding), []).append(record)
    recognised = []
    for (model, finding), records in sorted(by_pair.items()):
        scored = [r for r in records if r.p_positive is not None]
        scores = recognition_scores([r.label for r in scored], [r.p_positive for r in scored], n_boot=n_boot, seed=seed)
        recognised.append(RecognitionRow(model, finding, scores, len(records) - len(scored)))
    aucs = {(r.model, r.finding): r.scores.auc.value for r in recognised if np.isfinite(r.scores.auc.value)}
    correlations = []
    for method in sorted({row.method for row in grounding}):
        points = [(row.model, finding, aucs[row.model, finding], dice)
                  for row in grounding if row.method == method
                  for finding, dice in row.findings.items() if (row.model, finding) in aucs]
        if len(points) >= 2:
            rho = correlation([p[2] for p in points], [p[3] for p in points], n_boot=n_boot, seed=seed)
            correlations.append(CorrelationRow(method, rho, points))
    return XBench(grounding, recognised, correlations)


def _pct(interval: Interval | None) -> str:
    if interval is None or not np.isfinite(interval.value):
        return "n/a"
    if not np.isfinite(interval.low):
        return f"{interval.value:.3f}"
    return f"{interval.value:.3f} [{interval.low:.3f}, {interval.high:.3f}]"


def _table(header: Sequence[str], rows: Sequence[Sequence[str]]) -> list[str]:
    def cell(text: str) -> str:
        return html.escape(" ".join(str(text).splitlines()), quote=False).replace("|", "\\|")

    return ["| " + " | ".join(map(cell, header)) + " |", "|" + "---|" * len(header),
            *("| " + " | ".join(map(cell, row)) + " |" for row in rows)]


_NOTE = ("Pixel masks: the map min-max normalised per image, thresholded at tau; tau is the best mean Dice on the "
         "calibration split (30% of the samples by a stable hash of their id) and every grounding number is on the "
         "other samples (test split). Pointing game: `any` = some maximal pixel in the truth (lenient), `share` = "
         "share of maximal pixels in it. Intervals: bootstrap 95%.")


def _tables(section: XBench) -> list[tuple[str, str, tuple[str, ...], list[tuple[str, ...]]]]:
    """(id, title, header, rows of text) of each table; the first column(s) of names are text."""
    shown = (0.1, 0.3, 0.5, 0.7, 0.9)
    return [
        ("xbench-grounding", "Grounding at the calibrated tau (test split)",
         ("model", "method", "tau (calibration n)", "test n", "pixel IoU", "pixel Dice", "pointing (any)",
          "pointing (share)"),
         [(r.model, r.method, "n/a" if r.tau is None else f"{r.tau:.2f} ({r.n_calibration})", str(r.n_test),
           _pct(r.iou), _pct(r.dice), _pct(r.pointing_any), _pct(r.pointing_share)) for r in section.grounding]),
        ("xbench-tau", "Tau curves (test split, mean Dice)",
         ("model", "method", *(f"tau {t:.1f}" for t in shown)),
         [(r.model, r.method, *(f"{r.curve_dice[TAU_GRID.index(t)]:.3f}" if r.curve_dice else "n/a" for t in shown))
          for r in section.grounding]),
        ("xbench-recognition", "Recognition (p(positive) over positives and negatives; answer Yes at p >= 0.5)",
         ("model", "finding", "positives", "negatives", "AUC", "accuracy", "F1", "failed"),
         [(r.model, r.finding, str(r.scores.n_pos), str(r.scores.n_neg), _pct(r.scores.auc),
           _pct(r.scores.accuracy), _pct(r.scores.f1), str(r.failed)) for r in section.recognition]),
        ("xbench-correlation", "Recognition vs grounding (Spearman over (model, finding) pairs: AUC vs test Dice)",
         ("method", "pairs", "Spearman rho"),
         [(r.method, str(len(r.points)), _pct(r.rho)) for r in section.correlation]),
    ]


_NO_PAIRS = ("No method has two (model, finding) pairs with both a recognition AUC and a grounding score "
             "(run the leaderboard with `--recognition N`).")


def xbench_markdown(section: XBench) -> str:
    """The section as markdown: grounding, tau curves, recognition, correlation tables."""
    lines = ["## XBench-style grounding and recognition", "", _NOTE]
    for _, title, header, rows in _tables(section):
        lines += ["", f"### {title}", "", *_table(header, rows)]
    if not section.correlation:
        lines += ["", _NO_PAIRS]
    return "\n".join(lines) + "\n"


def xbench_html(section: XBench) -> dict[str, Any]:
    """The section for the HTML page: ``note``, sortable ``tables`` (with ``title``) and ``figures`` (data URIs)."""
    import base64

    from .report_html import cell, table

    tables = []
    for table_id, title, header, rows in _tables(section):
        names = 2 if table_id != "xbench-correlation" else 1  # leading text columns
        built = table(table_id, [(name, k < names) for k, name in enumerate(header)],
                      [[cell(text, text_cell=k < names) for k, text in enumerate(row)] for row in rows])
        tables.append({**built, "title": title})
    figures = [{"uri": "data:image/png;base64," + base64.b64encode(data).decode("ascii"), "alt": name}
               for name, data in _figures(section).items()]
    return {"note": _NOTE, "tables": tables, "figures": figures,
            "empty": "" if section.correlation else _NO_PAIRS}


def _png(figure: Any) -> bytes:
    buffer = io.BytesIO()
    figure.savefig(buffer, format="png", dpi=100)
    return buffer.getvalue()


def _figures(section: XBench) -> dict[str, bytes]:
    from matplotlib.figure import Figure

    out = {}
    curves = [r for r in section.grounding if r.curve_dice]
    if curves:
        figure = Figure(figsize=(8, 4.5))
        axes = figure.add_subplot()
        models = list(dict.fromkeys(row.model for row in curves))
        methods = list(dict.fromkeys(row.method for row in curves))
        for row in curves:  # one colour per method, one line style per model
            axes.plot(TAU_GRID, row.curve_dice, label=f"{row.model} / {row.method}",
                      color=f"C{methods.index(row.method) % 10}",
                      linestyle=("-", "--", ":", "-.")[models.index(row.model) % 4])
        axes.set(xlabel="tau", ylabel="mean pixel Dice (test split)", title="Tau curves")
        axes.legend(fontsize=6, loc="center left", bbox_to_anchor=(1.0, 0.5))
        figure.tight_layout()
        out["xbench_tau_curves.png"] = _png(figure)
    if section.correlation:
        figure = Figure(figsize=(7, 4.5))
        axes = figure.add_subplot()
        for k, row in enumerate(section.correlation):  # one colour per method; rho in the legend
            rho = "n/a" if not np.isfinite(row.rho.value) else f"{row.rho.value:.2f}"
            axes.scatter([p[2] for p in row.points], [p[3] for p in row.points], s=14, color=f"C{k % 10}",
                         label=f"{row.method} (rho {rho}, {len(row.points)} pairs)")
        axes.set(xlabel="recognition AUC", ylabel="pixel Dice at calibrated tau (test split)",
                 title="Recognition vs grounding per (model, finding)")
        axes.legend(fontsize=6, loc="center left", bbox_to_anchor=(1.0, 0.5))
        figure.tight_layout()
        out["xbench_correlation.png"] = _png(figure)
    return out


def xbench_files(section: XBench, out: str | Path) -> dict[Path, bytes]:
    """``xbench.json`` and the PNG figures, for :func:`cxr_attrib.outputs.write_files`."""
    folder = Path(out)
    files = {folder / "xbench.json": (json.dumps(section.to_dict(), indent=2) + "\n").encode("utf-8")}
    files.update({folder / name: data for name, data in _figures(section).items()})
    return files
