"""What the causal filter needs from a counterfactual source: three edits of a sample's image.

Below both :mod:`cxr_attrib.benchmark` (a benchmark may offer a provider) and
:mod:`cxr_attrib.filtering` (the filter uses one), so neither imports the other.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from dataclasses import dataclass

from .sample import Sample
from .typing import GreyImage

__all__ = ["Counterfactuals", "CounterfactualProvider"]


@dataclass(frozen=True, eq=False)
class Counterfactuals:
    """Three edits of one sample's image, in the sample's input frame.

    Attributes:
        removed (GreyImage): (H, W) uint8, the finding removed inside its box(es).
        kept (GreyImage): (H, W) uint8, edited only outside the box(es) ("No {finding}").
        kept_normal (GreyImage): (H, W) uint8, edited only outside the box(es)
            ("No abnormality").
        approximate (bool): True when the edits are not faithful counterfactuals
            (e.g. in-painting rather than a generative editor or the phantom's truth).
    """

    removed: GreyImage
    kept: GreyImage
    kept_normal: GreyImage
    approximate: bool


class CounterfactualProvider(ABC):
    """Makes the counterfactual images of a :class:`~cxr_attrib.benchmark.Sample`."""

    @abstractmethod
    def counterfactuals(self, sample: Sample) -> Counterfactuals:
        """The three edits of ``sample``'s image.

        Args:
            sample (Sample): the benchmark item (image, boxes in its input frame).

        Returns:
            Counterfactuals: uint8 images of the same (H, W) as the sample's image.

        Raises:
            DataError: the edits cannot be produced (missing files, ...).
        """
