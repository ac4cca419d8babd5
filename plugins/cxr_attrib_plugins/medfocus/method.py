"""MedFocus: concept-based causal attribution (the toolkit's default method).

1. Transfer 11 anatomical concepts from a pool of normal references onto the image
   by unbalanced optimal transport (:func:`.transfer.transfer_concepts`).
2. Optionally refine every concept box with a box-prompted SAM (all boxes in one call).
3. Hide each concept and each composite (fill with the baseline) and score the
   original and all 15 interventions in the same batched call(s).
4. The winner is the region whose removal drops the target log-prob most; when
   no removal matters (``exp(-delta_best) >= tau``) the whole image is the answer.

See docs/methods/medfocus.md for every parameter, the passes and the failure modes.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from dataclasses import dataclass
from types import MappingProxyType
from typing import Any

import numpy as np
import numpy.typing as npt

from cxr_attrib.errors import MethodParameterError
from cxr_attrib.hookspecs import hookimpl
from cxr_attrib.method import BATCH_SIZE, ConceptScore, Method, MethodOutput, MethodRequest, Param
from cxr_attrib.perturb import FILL, baseline_image
from cxr_attrib.pools import CONCEPTS, ConceptPool, mask_box
from cxr_attrib.registry import get_pool
from cxr_attrib.segmentation import SAM_PARAM, BoxSegmenter, load_segmenter

from .cache import TransferCache
from .decision import NORMALISATIONS, concept_heatmap, decide, region_scores
from .interventions import SHAPES, concept_regions, measure_drops
from .transfer import (CONCEPT_PARAM_TYPES, TRANSFER_DEFAULTS, ConceptTransfer, check_transfer_params,
                       transfer_concepts)
from .transport import NoSupportError, TransportFailure

__all__ = ["MedFocus"]

UNIT = "drop of target log-prob (nats)"


@dataclass(frozen=True)
class _Settings:
    """Validated parameters and the resources they name (built before any model pass)."""

    pool: ConceptPool
    transfer: dict[str, Any]
    shape: str
    baseline: npt.NDArray[np.float32]
    tau: float
    normalise: str
    segmenter: BoxSegmenter | None
    cache: TransferCache | None
    batch_size: int


def _choice(params: Mapping[str, Any], name: str, valid: tuple[str, ...]) -> str:
    value = params[name]
    if value not in valid:
        raise MethodParameterError(f"medfocus: {name} must be one of {', '.join(valid)}, got {value!r}")
    return value


def _settings(request: MethodRequest) -> _Settings:
    """Check every parameter and load what they name; raises before any model pass."""
    params = request.params
    tau = params["tau"]
    if isinstance(tau, bool) or not isinstance(tau, (int, float)) or not 0.0 < tau <= 1.0:
        raise MethodParameterError(f"medfocus: tau must be a number in (0, 1], got {tau!r}")
    batch_size = params["batch_size"]
    if isinstance(batch_size, bool) or not isinstance(batch_size, int) or batch_size < 1:
        raise MethodParameterError(f"medfocus: batch_size must be an int >= 1, got {batch_size!r}")
    try:
        baseline = baseline_image(np.asarray(request.image, dtype=np.float32), params["fill"])
    except ValueError as err:
        raise MethodParameterError(f"medfocus: fill: {err}") from err
    transfer = check_transfer_params({key: params[key] for key in TRANSFER_DEFAULTS}, request.size)
    shape = _choice(params, "shape", SHAPES)
    normalise = _choice(params, "normalise", NORMALISATIONS)
    pool = get_pool(params["pool"])
    segmenter = None
    if params["sam"] is not None:
        device = request.adapter.device if request.adapter is not None else "cpu"
        segmenter = load_segmenter(params["sam"], device=device)
    cache = None if params["cache_dir"] is None else TransferCache(os.fspath(params["cache_dir"]))
    return _Settings(pool, transfer, shape, baseline, float(tau), normalise, segmenter, cache, batch_size)


def _concept_layout(
    transfer: ConceptTransfer, settings: _Settings, image: npt.NDArray[np.float32]
) -> tuple[dict[str, Any], dict[str, npt.NDArray[np.bool_]], dict[str, Any]]:
    """Concept boxes and masks: transferred, or refined by SAM in one batched call."""
    boxes = {c: tuple(map(float, transfer.boxes[c])) for c in CONCEPTS}
    masks = {c: np.asarray(transfer.masks[c], dtype=bool) for c in CONCEPTS}
    if settings.segmenter is None:
        return boxes, masks, {"refinement": "none: raw transport boxes (pass sam=PATH to refine)"}
    seg = settings.segmenter.segment(image, [boxes[c] for c in CONCEPTS])
    for i, concept in enumerate(CONCEPTS):
        if i not in seg.empty:
            boxes[concept] = seg.boxes[i]
            masks[concept] = seg.masks[i]
    kept = [CONCEPTS[i] for i in seg.empty]
    return boxes, masks, {"refinement": f"sam: {settings.segmenter.source}", "refinement_kept_transport": kept}


class MedFocus(Method):
    """Concept transfer by unbalanced OT, then causal interventions on each concept."""

    name = "medfocus"
    summary = ("Transfer 11 anatomical concepts by unbalanced optimal transport, hide each; "
               "the concept whose removal drops the answer most (or the whole image).")
    reference = ("Xiong et al., 'Rethinking Visual Attribution for Chest X-ray Reasoning in Large "
                 "Vision Language Models', 2026 (MedFocus).")
    output = "concepts"
    defaults = MappingProxyType({
        "pool": "phantom",
        **TRANSFER_DEFAULTS,
        "shape": "box",
        "fill": "zero",
        "tau": 0.75,
        "normalise": "none",
        "sam": None,
        "cache_dir": None,
        "batch_size": 64,
    })
    param_types = MappingProxyType({
        **CONCEPT_PARAM_TYPES,
        "shape": Param(str, choices=SHAPES, doc="hide each concept's box or its mask"),
        "fill": FILL,
        "tau": Param(float, low=0.0, high=1.0, low_open=True, doc="share of the largest drop a concept must reach"),
        "normalise": Param(str, choices=NORMALISATIONS, doc="drop per concept as is, or per unit area"),
        "sam": SAM_PARAM,
        "batch_size": BATCH_SIZE,
    })

    def attribute(self, request: MethodRequest) -> MethodOutput:
        settings = _settings(request)
        image = np.asarray(request.image, dtype=np.float32)
        device = request.adapter.device
        try:
            transfer = transfer_concepts(
                image, settings.pool, cache=settings.cache,
                device=device if device.type != "cpu" else None, **settings.transfer,
            )
        except NoSupportError as err:
            return self._blank(request, settings, f"no concept transfer: {err}")
        except TransportFailure as err:
            return self._blank(request, settings, f"concept transfer failed: {err}")
        boxes, masks, refinement = _concept_layout(transfer, settings, image)
        regions = concept_regions(boxes, masks, settings.shape, request.size)
        drops = measure_drops(request.adapter, request.query, image, settings.baseline, list(regions.values()),
                              batch_size=settings.batch_size)
        delta = drops.delta
        content_area = int(np.count_nonzero(request.content_mask))
        scores = region_scores(delta, regions, settings.normalise, content_area)
        decision = decide(scores, delta, regions, settings.tau)
        winner = regions[decision.winner]
        out_boxes = [mask_box(request.content_mask)] if decision.fallback else list(winner.boxes)
        return MethodOutput(
            heatmap=concept_heatmap(scores, regions, request.size),
            boxes=out_boxes,
            concepts={name: ConceptScore(scores[name], region.boxes) for name, region in regions.items()},
            token_scores=drops.per_token[drops.names.index(decision.winner)].astype(np.float32),
            unit=UNIT if settings.normalise == "none" else f"{UNIT} per share of the image hidden",
            info={
                "pool": settings.pool.name,
                "reference": transfer.reference,
                "reference_id": transfer.reference_id,
                "transport_cost": float(transfer.cost),
                "winner": decision.winner,
                "winner_delta": float(delta[decision.winner]),
                "ratio": decision.ratio,
                "fallback": decision.fallback,
                "token_scores": f"per-token drops when {decision.winner} is hidden",
                "transport_warnings": list(transfer.info.get("warnings", [])),
                **refinement,
            },
            warnings=tuple(transfer.info.get("warnings", [])),
        )

    @staticmethod
    def _blank(request: MethodRequest, settings: _Settings, reason: str) -> MethodOutput:
        """Recorded whole-image fallback when no concept could be transferred (``reason`` says why)."""
        return MethodOutput(
            heatmap=np.zeros((request.size, request.size), dtype=np.float32),
            boxes=[mask_box(request.content_mask)],
            unit=UNIT,
            info={"pool": settings.pool.name, "fallback": True, "fallback_reason": reason},
            warnings=(f"medfocus fell back to the whole image: {reason}",),
        )


@hookimpl
def register_methods(register) -> None:
    register(MedFocus)
