"""Model-free prior baselines: what a leaderboard must beat to mean anything.

``whole_image`` says "the evidence is everywhere"; ``center`` says "the evidence is
in the middle of the image"; ``anatomy_prior`` says "the evidence is where this
finding usually is" (the anatomical region a fixed table names for the finding in
the question, transferred onto the image from a concept pool). None looks at the
model, so a method that scores no better than them has not shown that it found
what the model used.
"""

from __future__ import annotations

import re
from types import MappingProxyType

import numpy as np

from cxr_attrib.hookspecs import hookimpl
from cxr_attrib.method import Method, MethodOutput, MethodRequest, Param
from cxr_attrib.pools import mask_box

from .medfocus import (
    CONCEPT_PARAM_TYPES,
    TRANSFER_DEFAULTS,
    NoSupportError,
    TransferCache,
    TransportFailure,
    check_transfer_params,
    transfer_concepts,
)

FINDING_CONCEPTS: dict[str, str] = {
    "pleural effusion": "bilateral_costophrenic",
    "effusion": "bilateral_costophrenic",
    "cardiomegaly": "cardiac_silhouette",
    "enlarged cardiac silhouette": "cardiac_silhouette",
    "nodule": "bilateral_lungs",
    "mass": "bilateral_lungs",
    "consolidation": "bilateral_lungs",
    "pneumothorax": "bilateral_lungs",
    "pneumonia": "bilateral_lungs",
    "atelectasis": "bilateral_lungs",
    "lung opacity": "bilateral_lungs",
    "edema": "bilateral_lungs",
}
"""Finding (as written in a question, lower case) -> the concept or composite where it lies."""

_FINDING_PATTERN = re.compile(
    r"\b(" + "|".join(re.escape(f) for f in sorted(FINDING_CONCEPTS, key=len, reverse=True)) + r")(?:e?s)?\b",
    re.IGNORECASE,
)


def parse_finding(question: str) -> str | None:
    """The first finding of :data:`FINDING_CONCEPTS` named in a question (plurals too).

    Args:
        question (str): e.g. "Is there evidence of pleural effusion in the image?".

    Returns:
        str | None: the table key (the longest name that matches at the first
        mention, so "pleural effusion" beats "effusion"), or None.

    Examples::

        >>> parse_finding("Is there evidence of Pleural Effusion in the image?")
        'pleural effusion'
        >>> parse_finding("Any nodules?"), parse_finding("Is the patient rotated?")
        ('nodule', None)
    """
    found = _FINDING_PATTERN.search(question)
    return None if found is None else found.group(1).lower()


def _content_box(mask: np.ndarray) -> tuple[float, float, float, float]:
    """Exclusive-end box (x1, y1, x2, y2) of the True pixels of a (S, S) content mask."""
    box = mask_box(mask)
    if box is None:
        raise ValueError("the content mask is empty; the working image shows nothing")
    return box


class WholeImage(Method):
    """Uniform attribution over the image content and one box around all of it."""

    name = "whole_image"
    summary = "Prior baseline: the whole image is the evidence (ignores the model)."
    reference = "Baseline used by Xiong et al. 2026 (MedFocus) when no concept matters."
    output = "boxes"
    uses_model = False

    def attribute(self, request: MethodRequest) -> MethodOutput:
        heat = request.content_mask.astype(np.float32)
        return MethodOutput(heatmap=heat, boxes=[_content_box(request.content_mask)], unit="uniform prior")


class Center(Method):
    """A centred Gaussian prior and the central box covering ``fraction`` of each side."""

    name = "center"
    summary = "Prior baseline: the evidence is in the centre of the image (ignores the model)."
    reference = "Center-bias baseline (Judd et al., ICCV 2009, 'Learning to predict where humans look')."
    output = "boxes"
    uses_model = False
    defaults = MappingProxyType({"fraction": 0.5})
    param_types = MappingProxyType({
        "fraction": Param(float, low=0.0, high=1.0, low_open=True, doc="box side as a fraction of the image side"),
    })

    def attribute(self, request: MethodRequest) -> MethodOutput:
        fraction = request.params["fraction"]
        x1, y1, x2, y2 = _content_box(request.content_mask)
        cx, cy, w, h = (x1 + x2) / 2, (y1 + y2) / 2, x2 - x1, y2 - y1
        ys, xs = np.mgrid[0 : request.size, 0 : request.size].astype(np.float32) + 0.5
        heat = np.exp(-0.5 * (((xs - cx) / (w * fraction / 2)) ** 2 + ((ys - cy) / (h * fraction / 2)) ** 2))
        box = (cx - w * fraction / 2, cy - h * fraction / 2, cx + w * fraction / 2, cy + h * fraction / 2)
        return MethodOutput(heatmap=heat * request.content_mask, boxes=[box], unit="gaussian prior")


class AnatomyPrior(Method):
    """The transferred box(es) of the concept a fixed table names for the question's finding."""

    name = "anatomy_prior"
    summary = "Prior baseline: the anatomical region where the finding usually is, from a concept pool (ignores the model)."
    reference = ("Concept transfer of Xiong et al. 2026 (MedFocus) with a fixed finding-to-concept table; "
                 "docs/methods/anatomy_prior.md.")
    output = "boxes"
    uses_model = False
    defaults = MappingProxyType({"pool": "phantom", "cache_dir": None, **TRANSFER_DEFAULTS})
    param_types = CONCEPT_PARAM_TYPES

    def attribute(self, request: MethodRequest) -> MethodOutput:
        params = dict(request.params)
        pool, cache_dir = params.pop("pool"), params.pop("cache_dir")
        checked = check_transfer_params(params, request.size)
        finding = parse_finding(request.query.question)
        concept = None if finding is None else FINDING_CONCEPTS[finding]
        info = {"finding": finding, "concept": concept, "pool": pool, "fallback": None}
        if concept is None:
            info["fallback"] = "whole_image: no finding of the table in the question"
            return self._whole(request, info)
        cache = None if cache_dir is None else TransferCache(cache_dir)
        try:
            transfer = transfer_concepts(request.image, pool, cache=cache, **checked)
        except (NoSupportError, TransportFailure) as exc:
            info["fallback"] = f"whole_image: {exc}"
            return self._whole(request, info, (f"anatomy_prior fell back to the whole image: {exc}",))
        warnings = tuple(transfer.info.get("warnings", ()))
        info.update(reference=transfer.reference_id, untransferred=list(transfer.info["untransferred"]),
                    transport_warnings=list(warnings))
        heat = (transfer.member_mask(concept) & request.content_mask).astype(np.float32)
        return MethodOutput(heatmap=heat, boxes=transfer.member_boxes(concept), unit="anatomical prior (0/1)",
                            info=info, warnings=warnings)

    @staticmethod
    def _whole(request: MethodRequest, info: dict, warnings: tuple[str, ...] = ()) -> MethodOutput:
        return MethodOutput(heatmap=request.content_mask.astype(np.float32),
                            boxes=[_content_box(request.content_mask)], unit="anatomical prior (0/1)", info=info,
                            warnings=warnings)


@hookimpl
def register_methods(register) -> None:
    register(WholeImage)
    register(Center)
    register(AnatomyPrior)
