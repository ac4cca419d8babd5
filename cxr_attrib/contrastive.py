"""The text side of contrastive (dual-encoder) models, family-free.

A dual encoder answers a yes/no question about a finding by comparing the image with
two prompts: a positive one ("{finding}") and a negative one ("no {finding}"). This
module reads the finding out of a query and checks the prompt templates and the
answer threshold; the adapters (``register_adapters``) do the model side.

* :func:`finding_from_query`: ``"Is there evidence of pleural effusion in the image?"``
  (the benchmark question, with or without a prompt-mode suffix) and a bare phrase
  (``"pleural effusion"``) both give ``"pleural effusion"``;
* :class:`PromptPair`: the positive and negative templates (each must hold
  ``{finding}`` once and nothing else in braces);
* :func:`check_threshold`: p(positive) >= threshold answers "Yes"; threshold in (0, 1).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from numbers import Real

from .errors import InputError
from .targets import PROMPT_SUFFIXES

__all__ = ["DEFAULT_THRESHOLD", "PromptPair", "check_threshold", "finding_from_query"]

DEFAULT_THRESHOLD = 0.5
"""p(positive) at or above which a dual encoder answers "Yes"."""

_QUESTION = re.compile(r"^\s*is there (?:any )?evidence of\s+(?P<finding>.+?)\s+in (?:the|this) image\s*\?\s*$",
                       re.IGNORECASE | re.DOTALL)
_QUESTION_WORDS = re.compile(r"^\s*(?:is|are|does|do|can|where|what|which|how)\b", re.IGNORECASE)
_FIELD = re.compile(r"\{([^{}]*)\}")
MAX_FINDING_CHARS = 200
"""Longest finding phrase accepted (characters)."""


def finding_from_query(text: str) -> str:
    """The finding a query names.

    Args:
        text (str): the benchmark question ``"Is there evidence of X in the image?"``
            (a prompt-mode suffix such as " Answer directly with yes or no ..." is
            removed first), or a bare phrase ``"X"``.

    Returns:
        str: ``X`` with surrounding whitespace removed and inner runs of whitespace
        collapsed.

    Raises:
        InputError: no finding in the text (empty, another kind of question, or a
            phrase longer than :data:`MAX_FINDING_CHARS`); the message names the text.

    Examples::

        >>> finding_from_query("Is there evidence of pleural effusion in the image?")
        'pleural effusion'
        >>> finding_from_query("  cardiomegaly ")
        'cardiomegaly'
    """
    if not isinstance(text, str):
        raise InputError(f"expected the query as a str naming a finding, got {type(text).__name__}")
    stripped = text.strip()
    for suffix in PROMPT_SUFFIXES.values():
        if stripped.endswith(suffix.strip()):
            stripped = stripped[: -len(suffix.strip())].strip()
    match = _QUESTION.match(stripped)
    finding = match.group("finding") if match else stripped
    finding = " ".join(finding.split())
    shown = text if len(text) <= 80 else text[:77] + "..."
    if not finding or (match is None and (stripped.endswith("?") or _QUESTION_WORDS.match(finding))):
        raise InputError(
            f"query {shown!r} names no finding; expected 'Is there evidence of <finding> in the image?' "
            "or a bare finding phrase such as 'pleural effusion'."
        )
    if len(finding) > MAX_FINDING_CHARS:
        raise InputError(f"the finding in query {shown!r} has {len(finding)} characters; at most {MAX_FINDING_CHARS}.")
    return finding


@dataclass(frozen=True)
class PromptPair:
    """Positive and negative prompt templates of a dual encoder.

    Attributes:
        positive (str): e.g. ``"{finding}"``; must hold ``{finding}`` exactly once.
        negative (str): e.g. ``"no {finding}"``; likewise.

    Raises:
        InputError: an empty template, one without ``{finding}``, or any other
            ``{field}`` (the message names the template).
    """

    positive: str = "{finding}"
    negative: str = "no {finding}"

    def __post_init__(self) -> None:
        for role in ("positive", "negative"):
            value = getattr(self, role)
            if not isinstance(value, str) or not value.strip():
                raise InputError(f"the {role} prompt template {value!r} is empty; expected text holding '{{finding}}'")
            fields = _FIELD.findall(value)
            if fields != ["finding"]:
                raise InputError(
                    f"the {role} prompt template {value!r} must hold '{{finding}}' exactly once and no other "
                    f"{{field}}; found {['{' + f + '}' for f in fields] or 'none'}"
                )

    def prompts(self, finding: str) -> tuple[str, str]:
        """``(positive, negative)`` prompts for ``finding``.

        Examples::

            >>> PromptPair().prompts("mass")
            ('mass', 'no mass')
        """
        return self.positive.replace("{finding}", finding), self.negative.replace("{finding}", finding)


def check_threshold(value: object) -> float:
    """``value`` as a float threshold in the open interval (0, 1), or a clear error.

    Raises:
        InputError: not a real number strictly between 0 and 1 (names the value).
    """
    if isinstance(value, bool) or not isinstance(value, Real) or not 0.0 < float(value) < 1.0:
        raise InputError(f"threshold={value!r} is invalid; expected a number strictly between 0 and 1")
    return float(value)
