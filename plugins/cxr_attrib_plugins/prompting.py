"""Prompting: ask the model where its evidence is, and read the boxes it states.

``prompting`` makes ONE greedy generation. The prompt states the question and the
answer being explained and asks for a bounding box in the model family's own format
(:func:`cxr_attrib.grounding.evidence_prompt`; the adapter's
:attr:`~cxr_attrib.grounding.GroundingSurface.box_convention` says the JSON key, the
axis order and the frame of the numbers). The text is read by the strict parser
:func:`cxr_attrib.grounding.parse_boxes` (JSON, then bare ``[a, b, c, d]`` lists;
never ``eval``), mapped from the model's frame to the working frame, and returned as
boxes. What was dropped, and why, is counted in ``meta.info``; when nothing valid is
left the answer is the whole image (the content, never the padding), flagged.

``prompting_refined`` takes the same boxes and refines all of them with a box-prompted
SAM / MedSAM in one batched call (:mod:`cxr_attrib.segmentation`) when ``sam`` names a
local checkpoint folder; without one it returns the raw boxes and says so.

A stated box is what the model SAYS it looked at, not what it USED: see
docs/methods/prompting.md.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np

from cxr_attrib.adapter import Scorer
from cxr_attrib.errors import MethodParameterError
from cxr_attrib.grounding import MAX_BOXES, BoxConvention, GroundingSurface, evidence_prompt, parse_boxes
from cxr_attrib.hookspecs import hookimpl
from cxr_attrib.method import Method, MethodOutput, MethodRequest, Param
from cxr_attrib.pools import mask_box
from cxr_attrib.segmentation import SAM_PARAM, BoxSegmenter, load_segmenter

__all__ = ["MAX_TEXT_CHARS", "Prompting", "PromptingRefined", "StatedBoxes", "ask_for_boxes"]

Box = tuple[float, float, float, float]

MAX_TEXT_CHARS = 2000
"""Characters of the generated text kept in ``meta.info`` (the rest is cut, and said so)."""

UNIT = "boxes the model stated (no scores)"

FALLBACK_REASONS = (
    "empty generation",
    "all stated boxes dropped",
    "generation hit the token limit",
    "no box found",
)
"""Why the whole image was returned, in the order they are checked."""


@dataclass(frozen=True)
class StatedBoxes:
    """The boxes one generation stated, in the working frame, and how they were read.

    Attributes:
        boxes (tuple[Box, ...]): N >= 1 boxes ``(x1, y1, x2, y2)``, working-frame pixels,
            exclusive ends, in the order stated; the content box when nothing valid was
            stated (``info["fallback"] == "whole_image"``).
        info (dict[str, Any]): JSON-safe facts for ``meta.info`` (see the method card).
    """

    boxes: tuple[Box, ...]
    info: dict[str, Any]


def _overlaps(box: Box, region: Box) -> bool:
    """Whether two ``(x1, y1, x2, y2)`` boxes share a positive area."""
    return min(box[2], region[2]) > max(box[0], region[0]) and min(box[3], region[3]) > max(box[1], region[1])


def _inside(box: Box, region: Box) -> bool:
    """Whether ``box`` lies within ``region`` (edges included)."""
    return box[0] >= region[0] and box[1] >= region[1] and box[2] <= region[2] and box[3] <= region[3]


def _fallback_reason(text: str, truncated: bool, stated: int) -> str:
    if not text.strip():
        return FALLBACK_REASONS[0]
    if stated:
        return FALLBACK_REASONS[1]
    return FALLBACK_REASONS[2] if truncated else FALLBACK_REASONS[3]


def _convention_info(convention: BoxConvention) -> dict[str, Any]:
    return {"key": convention.key, "order": convention.order, "frame": [float(v) for v in convention.frame]}


def ask_for_boxes(request: MethodRequest) -> StatedBoxes:
    """One greedy generation asking for the evidence of ``request.query.answer``, parsed.

    Boxes that lie wholly in the padding of the working frame point at no pixel of the
    input image: they are dropped and counted as ``in_padding``. Boxes that lie partly in
    it are kept as stated (the core clips them to the image in the input frame), counted
    as ``partly_in_padding``.

    Args:
        request (MethodRequest): its adapter must be a
            :class:`~cxr_attrib.grounding.GroundingSurface`; ``params`` holds
            ``max_new_tokens`` and ``max_boxes``.

    Returns:
        StatedBoxes: the working-frame boxes (or the content box, flagged) and the facts
        of the reading. Never raises on any model text.
    """
    adapter, query = request.adapter, request.query
    convention = adapter.box_convention
    prompt = evidence_prompt(query.question, query.answer, convention)
    generation = adapter.generate(request.image, prompt, max_new_tokens=request.params["max_new_tokens"])
    text = generation.text
    parsed = parse_boxes(text, convention, max_boxes=request.params["max_boxes"])
    content = mask_box(request.content_mask)
    working = convention.to_working(parsed.boxes, request.size)
    boxes = tuple(box for box in working if _overlaps(box, content))
    partly = sum(1 for box in boxes if not _inside(box, content))
    counts = {**parsed.counts, "in_padding": len(working) - len(boxes), "partly_in_padding": partly}
    counts["kept"] = len(boxes)
    info: dict[str, Any] = {
        "evidence_prompt": prompt,
        "convention": _convention_info(convention),
        "generated_text": text[:MAX_TEXT_CHARS],
        "generated_text_chars": len(text),
        "generated_text_cut": len(text) > MAX_TEXT_CHARS,
        "generated_tokens": len(generation.token_ids),
        "truncated": bool(generation.truncated),
        "source": parsed.source,
        "counts": counts,
        "fallback": None,
        "fallback_reason": None,
    }
    if not boxes:
        boxes = (content,)
        info["fallback"] = "whole_image"
        info["fallback_reason"] = _fallback_reason(text, generation.truncated, counts["stated"])
    return StatedBoxes(boxes=tuple(tuple(float(v) for v in box) for box in boxes), info=info)


class Prompting(Method):
    """The boxes a model states when asked where the evidence for its answer is."""

    name = "prompting"
    summary = "Ask the model for boxes of its evidence (one generation, strict JSON/regex parsing; never eval)."
    reference = ("Xiong et al., 'Rethinking Visual Attribution for Chest X-ray Reasoning in Large Vision "
                 "Language Models', 2026 (prompting baseline); docs/methods/prompting.md.")
    output = "boxes"
    surfaces = (GroundingSurface,)
    defaults = MappingProxyType({"max_new_tokens": 128, "max_boxes": MAX_BOXES})
    param_types = MappingProxyType({
        "max_new_tokens": Param(int, low=1, high=4096, doc="generation budget of the box answer (tokens)"),
        "max_boxes": Param(int, low=1, high=10_000, doc="most boxes kept; further valid ones are counted as capped"),
    })

    def attribute(self, request: MethodRequest) -> MethodOutput:
        stated = ask_for_boxes(request)
        return MethodOutput(boxes=list(stated.boxes), unit=UNIT, info=stated.info)


def _segmenter(params: Mapping[str, Any], adapter: Scorer | None) -> BoxSegmenter | None:
    """The cached segmenter ``params["sam"]`` names (None without one)."""
    sam = params["sam"]
    if sam is None:
        return None
    if not isinstance(sam, (str, os.PathLike)):
        raise MethodParameterError(
            f"method 'prompting_refined' parameter 'sam' = {sam!r} is invalid; expected None or the path of a "
            "local SAM / MedSAM checkpoint folder"
        )
    return load_segmenter(sam, device=getattr(adapter, "device", "cpu"))


class PromptingRefined(Prompting):
    """The stated boxes, each replaced by the tight box of a box-prompted SAM mask."""

    name = "prompting_refined"
    summary = "Prompting, then every stated box refined by SAM/MedSAM in one batched call (raw boxes without weights)."
    reference = ("Xiong et al. 2026 (prompting + MedSAM refinement baseline); Ma et al., 'Segment anything in "
                 "medical images', Nature Communications 2024; docs/methods/prompting_refined.md.")
    defaults = MappingProxyType({**Prompting.defaults, "sam": None})
    param_types = MappingProxyType({
        **Prompting.param_types,
        "sam": SAM_PARAM,
    })

    @classmethod
    def validate(cls, params: Mapping[str, Any], adapter: Scorer | None) -> None:
        """Load the ``sam`` checkpoint (a clear error before any pass)."""
        _segmenter(params, adapter)

    def attribute(self, request: MethodRequest) -> MethodOutput:
        segmenter = _segmenter(request.params, request.adapter)
        stated = ask_for_boxes(request)
        info = dict(stated.info)
        if segmenter is None:
            info["refinement"] = "none: no segmentation weights (raw boxes)"
            return MethodOutput(boxes=list(stated.boxes), unit=UNIT, info=info)
        image = np.asarray(request.image, dtype=np.float32)
        segmentation = segmenter.segment(image, stated.boxes)
        refined, empty = [], []
        for index, (mask, box) in enumerate(zip(segmentation.masks, stated.boxes, strict=True)):
            tight = mask_box(mask & request.content_mask)
            if tight is None:
                empty.append(index)
            refined.append(box if tight is None else tight)
        info.update(
            refinement=f"sam: {segmenter.source}",
            refinement_iou=[float(v) for v in segmentation.iou],
            refinement_kept_raw=empty,
            refined_fallback=info["fallback"] is not None,
        )
        return MethodOutput(boxes=refined, unit=UNIT, info=info)


@hookimpl
def register_methods(register) -> None:
    register(Prompting)
    register(PromptingRefined)
