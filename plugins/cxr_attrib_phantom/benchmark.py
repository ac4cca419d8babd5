"""The phantom benchmark and its exact counterfactual provider.

``phantom`` yields positive cases (every reference answer is "Yes", as in
MedGround-Bench) drawn from held-out seeds, with the exact ground-truth box of the
finding. :class:`PhantomCounterfactuals` gives the causal filter the exact
counterfactuals of each case: the same phantom without the finding (differs only
inside the box) and two edits outside the box that keep it.

Seed ranges: training uses seeds below :data:`HELD_OUT_START`; this benchmark and
every held-out evaluation use seeds from :data:`HELD_OUT_START` on.
"""

from __future__ import annotations

from collections.abc import Iterator
from dataclasses import replace
from functools import lru_cache, partial

import numpy as np

from cxr_attrib.benchmark import Benchmark, Sample
from cxr_attrib.errors import DataError
from cxr_attrib.filtering import CounterfactualProvider, Counterfactuals
from cxr_attrib.hookspecs import hookimpl
from cxr_attrib.targets import finding_question, validate_mode
from .evaluation import HELD_OUT_SEED_START
from .findings import DISPLAY_NAMES, FINDINGS, Case, make_case

__all__ = ["HELD_OUT_START", "PhantomBench", "PhantomCounterfactuals", "phantom_sample"]

HELD_OUT_START = HELD_OUT_SEED_START
"""First held-out seed; training never uses seeds at or above it."""


def _uint8(image: np.ndarray) -> np.ndarray:
    return np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)


def _removed(seed: int, finding: str, size: int) -> np.ndarray:
    return _uint8(_case(seed, finding, size).removed)


@lru_cache(maxsize=64)
def _case(seed: int, finding: str, size: int) -> Case:
    return make_case(seed, finding, size)


def phantom_sample(seed: int, finding: str, *, size: int = 224, mode: str = "direct") -> Sample:
    """The benchmark sample of phantom ``seed`` showing ``finding``.

    Args:
        seed: phantom seed.
        finding: a name in :data:`~cxr_attrib_phantom.FINDINGS`.
        size: image side in pixels. Default: 224.
        mode: "direct" or "reasoning" (the split). Default: "direct".

    Returns:
        Sample: input frame = the (size, size) phantom; boxes exact, exclusive ends.

    Raises:
        TargetError: an unknown mode (the message lists the modes).
    """
    mode = validate_mode(mode)
    case = _case(seed, finding, size)
    return Sample(
        id=f"phantom/{mode}/{finding}/{seed}",
        dataset="phantom",
        index=seed,
        finding=DISPLAY_NAMES[finding],
        question=finding_question(DISPLAY_NAMES[finding]),
        answer="Yes",
        boxes=np.array(case.boxes, dtype=np.float64),
        load_image=lambda: _uint8(_case(seed, finding, size).image),
        mode=mode,  # type: ignore[arg-type]
        split=mode,
        extra={"finding_key": finding, "seed": seed, "size": size, "region": case.region},
    )


class PhantomBench(Benchmark):
    """Procedural chest X-ray phantoms with exact finding boxes (see docs/phantom.md).

    Args:
        n_per_finding: cases per finding. Default: 20.
        start: first seed. Default: :data:`HELD_OUT_START`.
        size: image side in pixels. Default: 224.
    """

    name = "phantom"
    summary = "Procedural CXR phantoms: six findings with exact boxes and exact counterfactuals."

    def __init__(self, n_per_finding: int = 20, start: int = HELD_OUT_START, size: int = 224) -> None:
        self.n_per_finding = n_per_finding
        self.start = start
        self.size = size

    def samples(self, *, split: str | None = None, model: str | None = None) -> Iterator[Sample]:
        """Positive cases, findings interleaved; ``model`` is ignored (none are model-specific)."""
        modes = ("direct", "reasoning") if split is None else (split,)
        for mode in modes:
            if mode not in ("direct", "reasoning"):
                raise DataError(f"phantom has splits 'direct' and 'reasoning', not {mode!r}")
            for i in range(self.n_per_finding * len(FINDINGS)):
                finding = FINDINGS[i % len(FINDINGS)]
                yield phantom_sample(self.start + i, finding, size=self.size, mode=mode)

    def negatives(self, *, split: str | None = None) -> Iterator[Sample]:
        """The exact negative of each positive: the same phantom with the finding removed.

        Id ``phantom/<mode>/no <finding>/<seed>``, answer "No", no boxes; the image is the
        causal filter's ``removed`` counterfactual (it differs from the positive only
        inside the finding's box), so recognition is judged on the finding alone.
        """
        for positive in self.samples(split=split):
            seed, finding = positive.extra["seed"], positive.extra["finding_key"]
            yield replace(
                positive, id=f"phantom/{positive.mode}/no {finding}/{seed}", answer="No",
                boxes=np.zeros((0, 4), dtype=np.float64),
                load_image=partial(_removed, seed, finding, self.size), extra={**positive.extra, "negative": True},
            )

    def sample(self, sample_id: str, *, split: str | None = None) -> Sample:
        """Rebuild the sample ``phantom/<mode>/<finding>/<seed>`` from its id alone.

        Raises:
            DataError: the id is not of that form, names an unknown finding or mode, or
                its mode differs from ``split``.
        """
        parts = sample_id.split("/")
        valid = (len(parts) == 4 and parts[0] == "phantom" and parts[1] in ("direct", "reasoning")
                 and parts[2] in FINDINGS and parts[3].isdigit())
        if not valid or (split is not None and parts[1] != split):
            raise DataError(
                f"{sample_id!r} is not a phantom sample id of split {split or 'direct|reasoning'}; "
                f"expected phantom/<direct|reasoning>/<{'|'.join(FINDINGS)}>/<seed>"
            )
        return phantom_sample(int(parts[3]), parts[2], size=self.size, mode=parts[1])

    def counterfactual_provider(self) -> PhantomCounterfactuals:
        """The phantom's exact counterfactuals (``cxr-attrib filter --benchmark phantom``)."""
        return PhantomCounterfactuals()


class PhantomCounterfactuals(CounterfactualProvider):
    """Exact counterfactuals of phantom samples (``approximate=False``)."""

    def counterfactuals(self, sample: Sample) -> Counterfactuals:
        try:
            seed, finding, size = sample.extra["seed"], sample.extra["finding_key"], sample.extra["size"]
        except KeyError as exc:
            raise DataError(f"sample {sample.id!r} is not a phantom sample (no {exc} in extra)") from exc
        case = _case(seed, finding, size)
        return Counterfactuals(
            removed=_uint8(case.removed), kept=_uint8(case.kept), kept_normal=_uint8(case.kept_normal),
            approximate=False,
        )


@hookimpl
def register_benchmarks(register) -> None:
    register(PhantomBench())
