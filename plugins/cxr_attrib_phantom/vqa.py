"""Phantom VQA items: yes/no questions about findings, in direct and reasoning modes.

Each item shows one :class:`~cxr_attrib_phantom.findings.Case` and asks
"Is there evidence of {finding} in the image?". Positives show the finding asked
about; negatives show either a normal phantom or a phantom with a *different*
finding (about half each by default). Direct answers are ``"Yes"`` / ``"No"``;
reasoning answers are a short templated rationale that names the region and ends
with ``"Answer: yes."`` or ``"Answer: no."``.

Grounding items ask "Where is the {finding}? Answer with a bounding box." (or, as the
``prompting`` method does, where the evidence for a stated answer is); the answer is
the exact box of the finding written in the model family's convention
(:class:`~cxr_attrib.grounding.BoxConvention`), or ``[]`` when it is absent.
"""

from __future__ import annotations

from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from typing import Literal

import numpy as np

from cxr_attrib.grounding import BoxConvention
from cxr_attrib.targets import Mode, build_prompt, finding_question, validate_mode

from ._geometry import check_seed_size
from .anatomy import Phantom, PhantomParameterError, cardiothoracic_ratio, generate_phantom
from .findings import DISPLAY_NAMES, FINDINGS, Case, UnknownFindingError, make_case

__all__ = [
    "VQAItem", "box_answer", "grounding_answer", "make_vqa_item", "reference_pool", "reference_seeds", "vqa_items",
    "where_question",
]

NegativeKind = Literal["normal", "other"]

_POSITIVE: dict[str, tuple[str, ...]] = {
    "nodule": (
        "There is a small round opacity in {region}, about {size} pixels across,"
        " consistent with a nodule.",
        "{Region} contains a well-defined round density of about {size} pixels, which is a nodule.",
        "A discrete rounded opacity is seen in {region}; this is a nodule.",
    ),
    "mass": (
        "There is a large lobulated opacity in {region}, about {size} pixels across,"
        " consistent with a mass.",
        "{Region} contains a bulky rounded density, larger than a nodule, which is a mass.",
        "A large focal opacity occupies part of {region}; this is a mass.",
    ),
    "pleural_effusion": (
        "{Region} is blunted by dense fluid with a meniscus at the lung base,"
        " consistent with a pleural effusion.",
        "Fluid layers at the base of the {side} lung, hiding the hemidiaphragm and filling"
        " {region}; this is a pleural effusion.",
    ),
    "consolidation": (
        "There is a patchy, ill-defined airspace opacity in {region}, consistent with consolidation.",
        "{Region} shows confluent patchy opacification, which is consolidation.",
    ),
    "pneumothorax": (
        "Along {region} a thin pleural line is seen with a dark band devoid of lung markings"
        " beyond it, consistent with a pneumothorax.",
        "{Region} shows a lucent rim without vessels outside a visible pleural line;"
        " this is a pneumothorax.",
    ),
    "cardiomegaly": (
        "The cardiac silhouette is enlarged, with a cardiothoracic ratio of about {ctr},"
        " consistent with cardiomegaly.",
        "The cardiac silhouette is wider than half of the thorax (cardiothoracic ratio about {ctr}),"
        " which is cardiomegaly.",
    ),
}
"""Positive rationales; ``{region}`` names where the finding is drawn."""

_ABSENT: dict[str, tuple[str, ...]] = {
    "nodule": (
        "No small, well-defined round opacity is seen in either lung.",
        "Neither lung contains a discrete round density of nodule size.",
    ),
    "mass": (
        "No large lobulated opacity is seen in either lung.",
        "Neither lung contains a bulky, well-defined mass-like density.",
    ),
    "pleural_effusion": (
        "Both costophrenic angles are sharp and the hemidiaphragms are clearly outlined.",
        "Both costophrenic angles are sharp, without fluid at the lung bases.",
    ),
    "consolidation": (
        "No patchy, ill-defined airspace opacity is seen in either lung.",
        "Neither lung shows confluent patchy opacification.",
    ),
    "pneumothorax": (
        "Lung markings extend to the chest wall at both apices, without a pleural line.",
        "Both lungs are fully expanded to the chest wall.",
    ),
    "cardiomegaly": (
        "The cardiac silhouette is normal in size, with a cardiothoracic ratio of about {ctr}.",
        "The cardiac silhouette is less than half as wide as the thorax"
        " (cardiothoracic ratio about {ctr}).",
    ),
}
"""Negative rationales: true of every image without the finding asked about."""

_NOUN_PHRASES: dict[str, str] = {
    "nodule": "a nodule",
    "mass": "a mass",
    "pleural_effusion": "a pleural effusion",
    "consolidation": "consolidation",
    "pneumothorax": "a pneumothorax",
    "cardiomegaly": "cardiomegaly",
}


@dataclass(frozen=True, eq=False)
class VQAItem:
    """One phantom question with its image, answer and ground truth.

    Attributes:
        seed (int): phantom seed of the image.
        finding (str): the finding asked about (a name in :data:`FINDINGS`).
        present (bool): whether the image shows that finding (the reference answer).
        mode (Mode): ``"direct"`` or ``"reasoning"``.
        question (str): the base question,
            ``"Is there evidence of {display name} in the image?"``.
        prompt (str): the question with the mode's instruction appended.
        answer (str): reference answer: ``"Yes"`` / ``"No"`` (direct) or a rationale
            ending in ``"Answer: yes."`` / ``"Answer: no."`` (reasoning).
        case (Case): the image shown (``case.image``, ``(S, S)`` float32), its boxes
            and counterfactuals; ``case.finding`` is what is actually drawn.
        negative (str | None): ``"normal"`` or ``"other"`` for negatives, None for positives.
    """

    seed: int
    finding: str
    present: bool
    mode: Mode
    question: str
    prompt: str
    answer: str
    case: Case
    negative: NegativeKind | None

    @property
    def image(self) -> np.ndarray:
        """The ``(S, S)`` float32 image in [0, 1] shown with the question."""
        return self.case.image


def where_question(finding: str) -> str:
    """The grounding question about ``finding``: "Where is the {display name}? Answer with a bounding box."

    Raises:
        UnknownFindingError: unknown ``finding``.
    """
    return f"Where is the {DISPLAY_NAMES[_check_asked(finding)]}? Answer with a bounding box."


def grounding_answer(item: VQAItem, convention: BoxConvention) -> str:
    """The exact answer to a grounding question about ``item``, in a family's convention.

    Args:
        item (VQAItem): the image and the finding asked about.
        convention (BoxConvention): how the model writes boxes.

    Returns:
        str: see :func:`box_answer`; ``[]`` when the item is a negative.
    """
    boxes = item.case.boxes if item.present else np.zeros((0, 4))
    return box_answer(item.finding, boxes, item.image.shape[0], convention)


def box_answer(finding: str, boxes: np.ndarray, size: int, convention: BoxConvention) -> str:
    """``boxes`` of ``finding`` written as a model of ``convention`` states them.

    Args:
        finding (str): a name in :data:`FINDINGS` (its display name labels each box).
        boxes (np.ndarray): ``(N, 4)`` working-frame boxes ``x1, y1, x2, y2`` (pixels).
        size (int): side ``S`` of the working frame.
        convention (BoxConvention): how the model writes boxes.

    Returns:
        str: e.g. ``[{"bbox_2d": [31, 120, 90, 171], "label": "pleural effusion"}]``
        (coordinates rounded as the convention writes them); ``[]`` for no boxes.
    """
    return convention.format(convention.from_working(np.asarray(boxes).tolist(), size), DISPLAY_NAMES[finding])


def _region_text(case: Case) -> str:
    side = str(case.details.get("side", ""))
    return {
        "nodule": f"the {side} lung",
        "mass": f"the {side} lung",
        "pleural_effusion": f"the {side} costophrenic angle",
        "consolidation": f"the {side} lung",
        "pneumothorax": f"the {side} lung apex",
        "cardiomegaly": "the cardiac silhouette",
    }[str(case.finding)]


def _rationale(case: Case, asked: str, present: bool, rng: np.random.Generator) -> str:
    ctr = f"{cardiothoracic_ratio(case.masks):.2f}"
    if present:
        template = str(rng.choice(_POSITIVE[asked]))
        region = _region_text(case)
        size = f"{float(case.details.get('diameter_px', 0.0)):.0f}"
        text = template.format(
            region=region, Region=region[0].upper() + region[1:], size=size, ctr=ctr,
            side=case.details.get("side", ""),
        )
        return f"{text} Answer: yes."
    text = str(rng.choice(_ABSENT[asked])).format(ctr=ctr)
    if case.finding is None:
        text = f"The image shows a normal chest. {text}"
    else:
        other = _NOUN_PHRASES[case.finding]
        text = f"{text} The image does show {other} in {_region_text(case)}, which is a different finding."
    return f"{text} Answer: no."


def _check_asked(finding: object) -> str:
    if isinstance(finding, str) and finding in FINDINGS:
        return finding
    raise UnknownFindingError(str(finding), FINDINGS)


def make_vqa_item(
    seed: int,
    finding_asked: str,
    present: bool,
    mode: Mode,
    size: int = 224,
    *,
    negative: NegativeKind | None = None,
    other: str | None = None,
) -> VQAItem:
    """One VQA item about ``finding_asked`` on phantom ``seed``.

    Args:
        seed (int): non-negative phantom seed (the same anatomy whatever is drawn).
        finding_asked (str): a name in :data:`FINDINGS`.
        present (bool): True shows the finding (answer yes), False a negative.
        mode (Mode): ``"direct"`` or ``"reasoning"``.
        size (int, optional): image side ``S`` in pixels. Default: ``224``.
        negative (str | None, optional): for negatives, ``"normal"`` (a normal
            phantom: the exact counterfactual of the positive of the same seed) or
            ``"other"`` (a different finding, chosen by the seed); None draws one of
            the two with probability 1/2 from the seed. Ignored for positives.
            Default: ``None``.
        other (str | None, optional): the finding shown by an ``"other"`` negative (a
            name in :data:`FINDINGS` other than ``finding_asked``); None draws it from
            the seed. Default: ``None``.

    Returns:
        VQAItem: question, prompt, reference answer and the case shown.

    Raises:
        UnknownFindingError: unknown ``finding_asked``.
        TargetError: unknown ``mode``.
        PhantomParameterError: unknown ``negative`` or ``other``, bad seed or size.

    Examples::

        >>> item = make_vqa_item(7, "cardiomegaly", True, "reasoning")
        >>> item.question
        'Is there evidence of cardiomegaly in the image?'
        >>> item.answer.endswith("Answer: yes.")
        True
    """
    asked = _check_asked(finding_asked)
    mode = validate_mode(mode)
    seed, size = check_seed_size(seed, size)
    if negative not in (None, "normal", "other"):
        raise PhantomParameterError(
            f"expected negative='normal', 'other' or None, got {negative!r}."
        )
    rng = np.random.default_rng([seed, 4, FINDINGS.index(asked), int(bool(present))])
    kind: NegativeKind | None = None
    if present:
        case = make_case(seed, asked, size)
    else:
        kind = negative or ("normal" if rng.random() < 0.5 else "other")
        others = [f for f in FINDINGS if f != asked]
        if other is not None and other not in others:
            raise PhantomParameterError(
                f"expected other= a finding other than {asked!r} (one of {others}), got {other!r}."
            )
        shown = None if kind == "normal" else (other or str(rng.choice(others)))
        case = make_case(seed, shown, size)
    question = finding_question(DISPLAY_NAMES[asked])
    if mode == "direct":
        answer = "Yes" if present else "No"
    else:
        answer = _rationale(case, asked, bool(present), rng)
    return VQAItem(
        seed=seed,
        finding=asked,
        present=bool(present),
        mode=mode,
        question=question,
        prompt=build_prompt(question, mode),
        answer=answer,
        case=case,
        negative=kind,
    )


def vqa_items(
    seeds: Iterable[int],
    mode: Mode,
    *,
    findings: tuple[str, ...] = FINDINGS,
    size: int = 224,
    normal_fraction: float = 0.5,
    paired: bool = False,
) -> Iterator[VQAItem]:
    """A balanced stream of VQA items: as many yes as no answers, for every finding.

    Unpaired, the i-th seed asks about ``findings[(i // 2) % len(findings)]`` and is a
    positive when ``i`` is even, so every ``2 * len(findings)`` consecutive items hold
    one positive and one negative per finding. Paired, each seed yields a positive and
    then a negative of the *same* seed (same anatomy; with a ``"normal"`` negative it
    is the positive's exact counterfactual), asking about ``findings[i % len(findings)]``.

    Args:
        seeds (Iterable[int]): phantom seeds, consumed lazily.
        mode (Mode): ``"direct"`` or ``"reasoning"``.
        findings (tuple[str, ...], optional): findings to ask about.
            Default: :data:`FINDINGS`.
        size (int, optional): image side ``S`` in pixels. Default: ``224``.
        normal_fraction (float, optional): probability that a negative is a normal
            phantom rather than a different finding, in [0, 1]. Default: ``0.5``.
        paired (bool, optional): yield positive/negative pairs per seed. Default: ``False``.

    Yields:
        VQAItem: the items, in order.

    Raises:
        UnknownFindingError: a name in ``findings`` is unknown.
        PhantomParameterError: empty ``findings``, ``normal_fraction`` outside [0, 1]
            or a bad seed.

    Examples::

        >>> items = list(vqa_items(range(4), "direct", findings=("nodule", "cardiomegaly")))
        >>> [(item.finding, item.answer) for item in items]
        [('nodule', 'Yes'), ('nodule', 'No'), ('cardiomegaly', 'Yes'), ('cardiomegaly', 'No')]
    """
    findings = tuple(_check_asked(f) for f in findings)
    if not findings:
        raise PhantomParameterError("expected at least one finding to ask about, got none.")
    if not 0.0 <= normal_fraction <= 1.0:
        raise PhantomParameterError(
            f"expected normal_fraction in [0, 1], got {normal_fraction!r}; 0.5 mixes evenly."
        )

    def kind(seed: int, asked: str) -> NegativeKind:
        draw = np.random.default_rng([seed, 6, FINDINGS.index(asked)]).random()
        return "normal" if draw < normal_fraction else "other"

    for i, raw_seed in enumerate(seeds):
        seed, _ = check_seed_size(raw_seed, size)
        if paired:
            asked = findings[i % len(findings)]
            yield make_vqa_item(seed, asked, True, mode, size)
            yield make_vqa_item(seed, asked, False, mode, size, negative=kind(seed, asked))
        else:
            asked = findings[(i // 2) % len(findings)]
            present = i % 2 == 0
            neg = None if present else kind(seed, asked)
            yield make_vqa_item(seed, asked, present, mode, size, negative=neg)


def reference_pool(n: int = 16, seed: int = 0, size: int = 224) -> list[Phantom]:
    """Normal phantoms with exact concept masks: a MedFocus reference pool (see docs/phantom.md).

    Args:
        n (int, optional): number of references (the paper used 16). Default: ``16``.
        seed (int, optional): seeds the choice of the references' phantom seeds.
            Default: ``0``.
        size (int, optional): image side ``S`` in pixels. Default: ``224``.

    Returns:
        list[Phantom]: ``n`` normal phantoms of distinct seeds, each with ``image``
        ``(S, S)`` float32 and ``masks`` for every concept.

    Raises:
        PhantomParameterError: ``n`` < 1, negative seed or bad size.

    Examples::

        >>> pool = reference_pool(n=2, seed=0)
        >>> len(pool), sorted(pool[0].masks)[:2]
        (2, ['cardiac_silhouette', 'left_clavicle'])
    """
    seeds = reference_seeds(n, seed)
    size = check_seed_size(0, size)[1]
    return [generate_phantom(s, size) for s in seeds]


def reference_seeds(n: int = 16, seed: int = 0) -> tuple[int, ...]:
    """The phantom seeds of :func:`reference_pool` (distinct, deterministic in ``seed``).

    Args:
        n (int, optional): number of references. Default: ``16``.
        seed (int, optional): seeds the choice. Default: ``0``.

    Returns:
        tuple[int, ...]: ``n`` distinct seeds in ``[0, 2**31)``.

    Raises:
        PhantomParameterError: ``n`` < 1 or a negative seed.
    """
    if isinstance(n, bool) or not isinstance(n, (int, np.integer)) or n < 1:
        raise PhantomParameterError(f"expected n as an int >= 1, got {n!r}; the paper used n=16.")
    seed = check_seed_size(seed, 224)[0]
    chosen = np.random.default_rng([seed, 5]).choice(2**31, size=n, replace=False)
    return tuple(int(s) for s in chosen)
