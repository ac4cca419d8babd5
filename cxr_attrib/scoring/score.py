"""Score one :class:`~cxr_attrib.result.Attribution`: localisation and faithfulness.

Two independent parts, each run when its inputs are given:

* **Localisation** (``ground_truth`` boxes, native input pixels; the paper protocol):
  the input-frame heatmap is mapped to the working frame the method worked in
  (:class:`~cxr_attrib.frames.ResizePad` of ``meta.image_size`` and
  ``meta.working_size``), turned into boxes there, over the image content only, with
  :func:`~cxr_attrib.scoring.boxes.heatmap_to_boxes`, and the boxes are mapped back to
  the input frame, where :func:`~cxr_attrib.scoring.localisation.region_metrics`
  compares their union with the ground-truth union. A result without a heatmap is
  judged on its own boxes (already in the input frame). Pointing game and energy use
  the input-frame heatmap directly (None without a heatmap).
* **Faithfulness** (``model``): deletion / insertion / random-order curves of the
  answer's probability (AUCs in [0, 1], gains over chance in [-1, 1]) and the
  random-region drop of :mod:`cxr_attrib.scoring.faithfulness`, all from one batch, in the adapter's
  working frame. The image is ``image`` or the one the result holds; the query is
  ``query`` or rebuilt from ``meta`` and ``target`` (question, prompt, answer, mode,
  span policy). A result without a heatmap is ranked by its boxes: box ``i`` of ``K``
  scores ``K - i`` (the first box is the most important), overlaps take the maximum.
"""

from __future__ import annotations

import os
import warnings
from dataclasses import dataclass, fields
from typing import Any, ClassVar, Literal, get_args

import numpy as np
import numpy.typing as npt

from cxr_attrib.adapter import Adapter, Query
from cxr_attrib.errors import DataError, check_choice
from cxr_attrib.frames import ResizePad
from cxr_attrib.perturb import check_removal_fill
from cxr_attrib.result import Attribution
from cxr_attrib.scoring.boxes import input_heatmap_boxes
from cxr_attrib.scoring.faithfulness import Curves, RegionDrop, _check_count, _check_fraction, faithfulness
from cxr_attrib.scoring.localisation import as_boxes, energy, region_metrics
from cxr_attrib.scoring.pixel_grounding import pointing_game
from cxr_attrib.typing import BoxArray, GreyImage

__all__ = ["ScoreWarning", "Scores", "score"]

Regions = Literal["auto", "heatmap", "boxes"]


class ScoreWarning(UserWarning):
    """Scores that were computed but may not mean what they seem (see ``Scores.warnings``)."""


@dataclass(frozen=True, eq=False)
class Scores:
    """Every score of one attribution; a metric that was not computed is None.

    Attributes:
        model (str): model reference (``meta.model``).
        split (str): benchmark split, e.g. ``"direct"``.
        method (str): method name (``meta.method``).
        dataset (str): source dataset, e.g. ``"vindr_cxr"`` (``""`` when unknown).
        sample (str): sample id (``""`` when unknown).
        iou (float | None): union-region IoU with the ground truth, in [0, 1].
        precision (float | None): share of the predicted union inside the GT union.
        recall (float | None): share of the GT union covered by the prediction.
        f1 (float | None): harmonic mean of precision and recall.
        pointing_game (float | None): whether the heatmap peak lies in the GT union
            (1.0 / 0.0; a plateau peak scores the share of its pixels inside).
        energy (float | None): share of positive attribution inside the GT union.
        deletion_auc (float | None): area under the deletion curve of the answer's
            probability, in [0, 1] (lower is better; the MoRF AUC).
        insertion_auc (float | None): area under the insertion curve, in [0, 1]
            (higher is better; equal to the LeRF AUC).
        random_auc (float | None): area under the deletion curve of a seeded random
            pixel order on the same image, in [0, 1] (chance).
        deletion_gain (float | None): ``random_auc - deletion_auc`` in [-1, 1];
            positive means better than chance.
        insertion_gain (float | None): ``insertion_auc - random_auc`` in [-1, 1].
        morf_lerf (float | None): ROAD-style ``LeRF AUC - MoRF AUC`` in [-1, 1].
        top_drop (float | None): probability drop when the top region is removed, in [-1, 1].
        random_drop (float | None): mean drop over random regions of equal area, in [-1, 1].
        drop_gain (float | None): ``top_drop - random_drop`` in [-1, 1].
        beats_random (float | None): share of random regions with a smaller drop.
        pred_boxes (tuple): the predicted boxes judged against the ground truth (input
            frame, exclusive ends); empty when localisation was not scored.
        curves (Curves | None): the raw log-prob curves (deletion, insertion, random).
        region_drop (RegionDrop | None): the random-region comparison.
        warnings (tuple[str, ...]): what makes these scores doubtful, e.g. faithfulness
            measured with a model other than the one that made the result (also
            issued as a :class:`ScoreWarning`).
    """

    METRICS: ClassVar[tuple[str, ...]] = (
        "iou", "precision", "recall", "f1", "pointing_game", "energy",
        "deletion_auc", "insertion_auc", "random_auc", "deletion_gain", "insertion_gain", "morf_lerf",
        "top_drop", "random_drop", "drop_gain", "beats_random",
    )

    model: str
    split: str
    method: str
    dataset: str
    sample: str = ""
    iou: float | None = None
    precision: float | None = None
    recall: float | None = None
    f1: float | None = None
    pointing_game: float | None = None
    energy: float | None = None
    deletion_auc: float | None = None
    insertion_auc: float | None = None
    random_auc: float | None = None
    deletion_gain: float | None = None
    insertion_gain: float | None = None
    morf_lerf: float | None = None
    top_drop: float | None = None
    random_drop: float | None = None
    drop_gain: float | None = None
    beats_random: float | None = None
    pred_boxes: tuple[tuple[float, float, float, float], ...] = ()
    curves: Curves | None = None
    region_drop: RegionDrop | None = None
    warnings: tuple[str, ...] = ()

    def as_row(self) -> dict[str, Any]:
        """A flat row for :func:`~cxr_attrib.scoring.aggregate.aggregate`.

        Returns:
            dict: ``model``, ``split``, ``method``, ``dataset``, ``sample`` and every
            name of :attr:`METRICS` (None where not computed).
        """
        row: dict[str, Any] = {
            "model": self.model, "split": self.split, "method": self.method,
            "dataset": self.dataset, "sample": self.sample,
        }
        row.update({name: getattr(self, name) for name in self.METRICS})
        return row

    def raw_curves(self) -> dict[str, Any] | None:
        """The raw target log-probs (nats) behind the faithfulness scores, JSON-safe.

        Returns:
            dict | None: ``fractions``, ``deletion``, ``insertion``, ``random``
            ((steps + 1,) lists), ``region_original``, ``region_top`` and
            ``region_random`` (list of n); None when faithfulness was not scored.
        """
        if self.curves is None or self.region_drop is None:
            return None
        curves, drop = self.curves, self.region_drop
        return {
            "fractions": curves.fractions.tolist(), "deletion": curves.deletion.tolist(),
            "insertion": curves.insertion.tolist(), "random": curves.random.tolist(),
            "region_original": drop.original, "region_top": drop.top, "region_random": drop.random.tolist(),
        }

    def __eq__(self, other: object) -> bool:
        if not isinstance(other, Scores):
            return NotImplemented
        skip = {"curves", "region_drop"}
        return all(getattr(self, f.name) == getattr(other, f.name) for f in fields(self) if f.name not in skip)

    __hash__ = None  # type: ignore[assignment]


def _input_shape(attribution: Attribution) -> tuple[int, int]:
    size = tuple(attribution.meta.image_size)
    known = [a.shape for a in (attribution.heatmap, attribution.image) if a is not None]
    if size == (0, 0):
        if not known:
            raise DataError(
                f"attribution of method {attribution.meta.method!r} records no image size "
                "(meta.image_size is (0, 0)) and holds no heatmap or image; cannot place it in a frame"
            )
        size = known[0]
    for shape in known:
        if tuple(shape) != size:
            raise DataError(
                f"attribution meta.image_size {size} differs from its heatmap/image shape {shape}; "
                "both must describe the input frame"
            )
    return int(size[0]), int(size[1])


def _predicted_boxes(attribution: Attribution, frame: ResizePad, regions: Regions) -> BoxArray:
    use_heatmap = regions == "heatmap" or (regions == "auto" and attribution.heatmap is not None)
    if use_heatmap:
        if attribution.heatmap is None:
            raise DataError(
                f"regions='heatmap' but method {attribution.meta.method!r} produced no heatmap; "
                "use regions='boxes' or 'auto'"
            )
        return input_heatmap_boxes(attribution.heatmap, frame)
    return as_boxes(list(attribution.boxes), name="attribution boxes")


def _ranking_map(attribution: Attribution, frame: ResizePad) -> np.ndarray | None:
    """(S, S) working-frame ranking: the heatmap, or the boxes scored K - i; None if neither."""
    if attribution.heatmap is not None:
        return frame.heatmap_to_working(attribution.heatmap)
    boxes = frame.boxes_to_working(np.asarray(attribution.boxes, dtype=np.float64).reshape(-1, 4))
    if boxes.shape[0] == 0:
        return None
    ranking = np.zeros((frame.size, frame.size), dtype=np.float32)
    centres = np.arange(frame.size) + 0.5
    for i, (x1, y1, x2, y2) in enumerate(boxes):
        inside = ((y1 <= centres) & (centres < y2))[:, None] & ((x1 <= centres) & (centres < x2))[None, :]
        ranking[inside] = np.maximum(ranking[inside], len(boxes) - i)
    return ranking


def _query(attribution: Attribution) -> Query:
    meta, target = attribution.meta, attribution.target
    if not meta.prompt or not target.text:
        raise DataError(
            f"attribution of method {meta.method!r} lacks meta.prompt or target.text, so the "
            "explained query cannot be rebuilt; pass query=Query(...)"
        )
    return Query(question=meta.question, mode=target.mode, prompt=meta.prompt,  # type: ignore[arg-type]
                 answer=target.text, policy=target.policy)  # type: ignore[arg-type]


def score(
    attribution: Attribution,
    ground_truth: npt.ArrayLike | None = None,
    *,
    model: Adapter | str | os.PathLike | None = None,
    image: GreyImage | None = None,
    query: Query | None = None,
    steps: int = 10,
    fraction: float = 0.1,
    n_random: int = 8,
    fill: str | float = "noisy_linear",
    seed: int = 0,
    batch_size: int | None = None,
    regions: Regions = "auto",
    split: str | None = None,
    dataset: str = "",
    sample: str = "",
) -> Scores:
    """Localisation (with ground truth) and faithfulness (with a model) of one result.

    Args:
        attribution (Attribution): the result, everything in the input frame.
        ground_truth (array-like | None): (N, 4) GT boxes ``x1, y1, x2, y2`` in native
            input pixels, exclusive ends; None skips localisation. Default: None.
        model (Adapter | str | PathLike | None): the adapter (or a reference that
            :func:`~cxr_attrib.models.load_adapter` loads) whose answer is explained;
            None skips faithfulness. Default: None.
        image (GreyImage | None): (H, W) uint8 input image; None uses
            ``attribution.image``. Default: None.
        query (Query | None): the explained query; None rebuilds it from ``meta`` and
            ``target``. Default: None.
        steps (int): deletion / insertion fractions ``k / steps``. Default: 10.
        fraction (float): share of the content in the top and random regions. Default: 0.1.
        n_random (int): random regions. Default: 8.
        fill (str | float): how removed pixels are filled: ``"zero"``, ``"mean"``,
            ``"blur"``, a number in [0, 1] or ``"noisy_linear"`` (ROAD's imputation, the
            fill under which the ``truth`` reference beats ``random`` most clearly on the
            phantom models; docs/benchmark-protocol.md); see
            :func:`~cxr_attrib.perturb.pixel_remover`. Default: ``"noisy_linear"``.
        seed (int): seed of tie-breaks and random regions. Default: 0.
        batch_size (int | None): images per forward call. Default: None (all at once).
        regions ({"auto", "heatmap", "boxes"}): what localisation judges: the
            heatmap's thresholded boxes, the method's own boxes, or ``"auto"`` (the
            heatmap when there is one, else the boxes). Default: ``"auto"``.
        split (str | None): split name for the row; None uses ``target.mode``.
            Default: None.
        dataset (str): dataset name for the row. Default: ``""``.
        sample (str): sample id for the row. Default: ``""``.

    Returns:
        Scores: the metrics that could be computed; the others None.

    Raises:
        DataError: inconsistent frames, malformed boxes, a missing image or query for
            faithfulness, or bad parameters.

    Examples::

        >>> s = score(result, sample.boxes, model=adapter)   # doctest: +SKIP
        >>> s.iou, s.deletion_auc, s.deletion_gain          # doctest: +SKIP
        (0.41, 0.18, 0.35)
    """
    meta = attribution.meta
    check_choice(regions, get_args(Regions), what="region source", argument="regions")
    if model is not None:  # every faithfulness option is checked before the model loads
        check_removal_fill(fill)
        _check_count("steps", steps, 1)
        _check_count("n_random", n_random, 1)
        _check_fraction(fraction)
        if batch_size is not None:
            _check_count("batch_size", batch_size, 1)
    height, width = _input_shape(attribution)
    values: dict[str, Any] = {}
    truth_notes: tuple[str, ...] = ()
    if ground_truth is not None:
        gt, truth_notes = _inside_image(as_boxes(ground_truth, name="ground_truth", allow_inverted=False),
                                        height, width)
        frame = ResizePad(height, width, meta.working_size)
        pred = _predicted_boxes(attribution, frame, regions)
        values.update(region_metrics(pred, gt).to_dict())
        values["pred_boxes"] = tuple(tuple(float(v) for v in box) for box in pred)
        if attribution.heatmap is not None:
            values["pointing_game"] = pointing_game(attribution.heatmap, gt)
            values["energy"] = energy(attribution.heatmap, gt)
    if model is not None:
        values.update(
            _faithfulness(attribution, model, image, query, (height, width), steps=steps, fraction=fraction,
                          n=n_random, fill=fill, seed=seed, batch_size=batch_size)
        )
    if truth_notes:
        values["warnings"] = (*truth_notes, *values.get("warnings", ()))
    return Scores(
        model=meta.model, split=split if split is not None else attribution.target.mode,
        method=meta.method, dataset=dataset, sample=sample, **values,
    )


def _inside_image(gt: np.ndarray, height: int, width: int) -> tuple[np.ndarray, tuple[str, ...]]:
    """Ground-truth boxes clipped to the (H, W) input image, with a warning per clipped box.

    Raises:
        DataError: a box lies wholly outside the image (it cannot be ground truth of it).
    """
    clipped = gt.copy()
    clipped[:, [0, 2]] = np.clip(gt[:, [0, 2]], 0, width)
    clipped[:, [1, 3]] = np.clip(gt[:, [1, 3]], 0, height)
    notes = []
    for i, (box, kept) in enumerate(zip(gt, clipped)):
        if kept[2] <= kept[0] or kept[3] <= kept[1]:
            raise DataError(f"ground_truth box {i} {tuple(float(v) for v in box)} lies wholly outside the "
                            f"{width} x {height} (width x height) input image; check the annotation's frame")
        if not np.array_equal(box, kept):
            notes.append(f"ground_truth box {i} {tuple(float(v) for v in box)} extends beyond the {width} x {height} "
                         f"input image; scored as {tuple(float(v) for v in kept)}")
    for note in notes:
        warnings.warn(note, ScoreWarning, stacklevel=4)
    return clipped, tuple(notes)


def _faithfulness(
    attribution: Attribution,
    model: Adapter | str | os.PathLike,
    image: GreyImage | None,
    query: Query | None,
    shape: tuple[int, int],
    **options: Any,
) -> dict[str, Any]:
    from cxr_attrib.models import load_adapter

    adapter = load_adapter(model)
    notes = ()
    if adapter.name != attribution.meta.model:
        notes = (
            f"faithfulness was measured with model {adapter.name!r}, but the attribution was made with "
            f"{attribution.meta.model!r} (meta.model); its curves say nothing about that model's answer",
        )
        warnings.warn(notes[0], ScoreWarning, stacklevel=3)
    pixels = attribution.image if image is None else np.asarray(image)
    if pixels is None:
        raise DataError(
            f"faithfulness needs the input image, but the attribution of method "
            f"{attribution.meta.method!r} holds none; pass image=<(H, W) uint8 array>"
        )
    if pixels.shape != shape:
        raise DataError(f"image shape {pixels.shape} differs from the attribution's input frame {shape}")
    frame = ResizePad(shape[0], shape[1], adapter.working_size)
    ranking = _ranking_map(attribution, frame)
    if ranking is None:
        return {"warnings": notes}
    curves, drop = faithfulness(
        adapter, frame.image_to_working(pixels), query or _query(attribution), ranking,
        content_mask=frame.content_mask(), **options,
    )
    return {
        "deletion_auc": curves.deletion_auc,
        "insertion_auc": curves.insertion_auc,
        "random_auc": curves.random_auc,
        "deletion_gain": curves.deletion_gain,
        "insertion_gain": curves.insertion_gain,
        "morf_lerf": curves.morf_lerf,
        "top_drop": drop.top_drop,
        "random_drop": drop.random_drop,
        "drop_gain": drop.gain,
        "beats_random": drop.beats_random,
        "curves": curves,
        "region_drop": drop,
        "warnings": notes,
    }
