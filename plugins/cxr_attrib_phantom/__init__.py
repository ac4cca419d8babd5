"""Phantom suite: procedural chest X-rays with exact masks, findings and counterfactuals.

Ground truth by construction (see docs/phantom.md): every phantom has exact masks for the 11
MedFocus concepts, every finding an exact box, and every case its exact
counterfactual images. Tiny models trained on phantom VQA items are the embedded
default models, and every attribution method is checked against these boxes.

Examples::

    >>> from cxr_attrib_phantom import generate_phantom, make_case
    >>> phantom = generate_phantom(0)  # (224, 224) float32 image + 11 concept masks
    >>> case = make_case(0, "pleural_effusion")
    >>> case.boxes.shape  # one exact box, x1, y1, x2, y2 (exclusive ends)
    (1, 4)
"""

from .anatomy import (
    COMPOSITES,
    CONCEPTS,
    SIDES,
    Anatomy,
    Phantom,
    PhantomParameterError,
    cardiothoracic_ratio,
    generate_phantom,
)
from .findings import DISPLAY_NAMES, FINDINGS, Case, UnknownFindingError, make_case
from .vqa import VQAItem, make_vqa_item, reference_pool, vqa_items

__all__ = [
    "COMPOSITES",
    "CONCEPTS",
    "DISPLAY_NAMES",
    "FINDINGS",
    "SIDES",
    "Anatomy",
    "Case",
    "Phantom",
    "PhantomParameterError",
    "UnknownFindingError",
    "VQAItem",
    "cardiothoracic_ratio",
    "generate_phantom",
    "make_case",
    "make_vqa_item",
    "reference_pool",
    "vqa_items",
]
