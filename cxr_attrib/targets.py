"""Text side of the explained target (SPEC 3.5): prompts, span policies, yes/no verdicts.

The scalar every method explains is the teacher-forced log-probability of target
tokens of the model's answer. This module owns the text rules that pick them:
the prompt suffix of each mode, the names of the span policies, and a strict,
regex-based reader of yes/no verdicts that also says *where* the verdict word is,
so adapters can map it to tokens through the tokenizer's offsets.

Verdict rules (:func:`parse_yes_no`, :func:`answer_char_span`):

1. Only the whole words ``yes`` and ``no`` (any case) are verdict words.
   ``Yesterday``, ``nodule``, ``Nobody``, ``no-one``, ``Nope``, ``Yeah`` and
   ``Yep`` are not: slang answers are unparseable, so every decided span slices
   exactly ``yes`` or ``no``.
2. ``no`` followed on the same line by a content word (``no evidence``,
   ``no effusion``) is a *determiner*, not a verdict, unless an answer cue precedes
   it (``Answer: no pneumothorax``). Before punctuation or a clause word (the, it,
   there, but, ...) it is a verdict word: ``No, ...``, ``No it is not``.
3. A verdict word is *ambiguous* when it is joined to another one by or / and /
   nor / ``/`` (``yes or no``, ``Yes/No``) or when not, never, cannot, -n't,
   maybe, perhaps or possibly comes at most two words before it
   (``I cannot say yes``, ``maybe no``).
4. Any other verdict word is *explicit* when an answer cue precedes it
   (``Answer: yes``, ``the answer is no``, ``**Final answer:** Yes``), when it
   opens a clause (start of text, or after ``. ! ? : ;`` or a line break) or when
   it closes a sentence (before ``. ! ?``, a line break or the end); markdown
   emphasis, quotes, brackets and bullets around it are skipped. Otherwise it is
   *in passing* (``some might say yes, but``).
5. Decision: the last explicit verdict wins. In ``"direct"`` mode a response that
   opens with an explicit verdict is decided by that first word instead. With no
   explicit verdict: any ambiguous word makes the text unparseable; otherwise
   verdict words in passing decide when they all agree (the last one is the span)
   and make it unparseable when they disagree.
6. With no verdict word at all, a negation phrase means ``no``: ``no evidence
   of``, ``no sign(s) of``, ``there is/are no``, ``there is not``, ``shows no``,
   ``not seen / present / visible / identified / detected / observed``,
   ``absent`` (not ``not absent``), ``negative for``, ``without evidence of``,
   ``does not show``, or a response whose first word is the determiner ``No``. Its span is the last determiner
   ``no`` inside such a phrase (``There is no evidence`` -> the ``no``), or ``None``
   when the phrase has none (``Effusion is absent.``). Affirmative phrases
   (``is present``) are never read as ``yes``: only the word ``yes`` says yes.
7. Anything else (empty, ``maybe``, ``I cannot tell``) is ``"unparseable"``.
"""

from __future__ import annotations

import re
from bisect import bisect_right
from dataclasses import dataclass
from typing import Literal, get_args

from cxr_attrib.errors import CxrAttribError, check_choice

__all__ = [
    "DIRECT_SUFFIX",
    "MODES",
    "Mode",
    "PROMPT_SUFFIXES",
    "REASONING_SUFFIX",
    "SPAN_POLICIES",
    "SpanPolicy",
    "TargetError",
    "Verdict",
    "answer_char_span",
    "build_prompt",
    "finding_question",
    "parse_yes_no",
    "validate_mode",
    "validate_span_policy",
]

Mode = Literal["direct", "reasoning"]
"""Prompt mode: ``"direct"`` asks for a bare yes/no, ``"reasoning"`` for steps first."""

SpanPolicy = Literal["answer", "response", "turn"]
"""Which response tokens form the target (SPEC 3.5): the yes/no answer word, every
generated token (template end-of-turn tokens excluded) or the whole assistant turn."""

Verdict = Literal["yes", "no", "unparseable"]
"""What :func:`parse_yes_no` reads from a response."""

MODES: tuple[Mode, ...] = get_args(Mode)
SPAN_POLICIES: tuple[SpanPolicy, ...] = get_args(SpanPolicy)

DIRECT_SUFFIX = " Answer directly with yes or no without any explanation."
REASONING_SUFFIX = " Think step by step and answer with yes or no."
PROMPT_SUFFIXES: dict[Mode, str] = {"direct": DIRECT_SUFFIX, "reasoning": REASONING_SUFFIX}


class TargetError(CxrAttribError, ValueError):
    """A prompt mode, span policy, question or response that cannot be used."""


def _check_choice(value: object, choices: tuple[str, ...], what: str, argument: str) -> str:
    return check_choice(value, choices, what=what, argument=argument, error=TargetError)


def validate_mode(name: object) -> Mode:
    """Check a prompt mode name.

    Args:
        name (object): the mode asked for, e.g. from a CLI option.

    Returns:
        Mode: ``name`` itself, typed.

    Raises:
        TargetError: ``name`` is not one of :data:`MODES`; the message lists them.

    Examples::

        >>> validate_mode("reasoning")
        'reasoning'
    """
    return _check_choice(name, MODES, "prompt mode", "mode")  # type: ignore[return-value]


def validate_span_policy(name: object) -> SpanPolicy:
    """Check a target span policy name (SPEC 3.5).

    Args:
        name (object): the policy asked for, e.g. from a CLI option.

    Returns:
        SpanPolicy: ``name`` itself, typed.

    Raises:
        TargetError: ``name`` is not one of :data:`SPAN_POLICIES`; the message lists them.

    Examples::

        >>> validate_span_policy("answer")
        'answer'
    """
    policy = _check_choice(name, SPAN_POLICIES, "span policy", "span_policy")
    return policy  # type: ignore[return-value]


def _non_empty(text: object, what: str) -> str:
    if not isinstance(text, str) or not text.strip():
        raise TargetError(f"expected {what} as a non-empty str, got {text!r}; pass some text.")
    return text.strip()


def build_prompt(question: str, mode: Mode = "direct") -> str:
    """Append the mode's instruction to a question.

    Args:
        question (str): the question, e.g. from :func:`finding_question`; surrounding
            whitespace is removed.
        mode (Mode, optional): ``"direct"`` appends :data:`DIRECT_SUFFIX`,
            ``"reasoning"`` appends :data:`REASONING_SUFFIX`. Default: ``"direct"``.

    Returns:
        str: the prompt text (the image is added by the adapter's chat template).

    Raises:
        TargetError: empty question or unknown mode.

    Examples::

        >>> build_prompt("Is it?  ")
        'Is it? Answer directly with yes or no without any explanation.'
    """
    mode = validate_mode(mode)
    return _non_empty(question, "a question") + PROMPT_SUFFIXES[mode]


def finding_question(finding: str) -> str:
    """The base question asked about one finding (SPEC 3.5).

    Args:
        finding (str): the finding as it should read in the sentence, e.g.
            ``"pleural effusion"``; surrounding whitespace is removed.

    Returns:
        str: ``"Is there evidence of {finding} in the image?"``.

    Raises:
        TargetError: empty finding.

    Examples::

        >>> finding_question("cardiomegaly")
        'Is there evidence of cardiomegaly in the image?'
    """
    return f"Is there evidence of {_non_empty(finding, 'a finding')} in the image?"


# ---------------------------------------------------------------- verdict reading

_WORD = re.compile(r"(?<![^\W_])(?<![^\W_]-)([Yy][Ee][Ss]|[Nn][Oo])(?![^\W_])(?!-[^\W_])")
_NEXT_WORD = re.compile(r"[ \t]+([^\W\d_]+)")
_CLAUSE_WORDS = frozenset(
    "the a an there it i this that these those we they he she you not but because as since"
    " so and or however though although which".split()
)
_CUE = re.compile(
    r"\banswer\b(?:\s+(?:is|was|would\s+be|will\s+be|should\s+be|must\s+be)\b)?"
    r"[\s:=>\-–—*_\"'`“”‘’]*",
    re.IGNORECASE,
)
_QUALIFIER = re.compile(
    r"(?:\b(?:not|never|cannot|maybe|perhaps|possibly)|n['’]t)\b"
    r"(?:[ \t]+[^\W\d_]+){0,2}[ \t*_\"'`“”‘’]*\Z",
    re.IGNORECASE,
)
_QUALIFIER_REACH = 80
_CHOICE_JOIN = re.compile(r"[ \t]*(?:,[ \t]*)?(?:(or|nor|and)\b|/|\|)[ \t]*", re.IGNORECASE)
_NEGATION = re.compile(
    r"\bno\s+(?:[^\W\d_]+\s+){0,2}?(?:evidence|signs?|indications?)\s+of\b"
    r"|\bthere\s*(?:is|are|was|were|['’]s)\s+no\b"
    r"|\bthere\s+(?:is|are|was|were)\s+not\b"
    r"|\bthere\s+(?:is|are|was|were)n['’]t\b"
    r"|\b(?:see|sees|show|shows|demonstrates?|reveals?)\s+no\b"
    r"|\b(?:not|never|(?:is|are)n['’]t)\s+(?:be\s+)?"
    r"(?:seen|present|visible|identified|detected|observed|evident|appreciated)\b"
    r"|(?<!\bnot\s)\babsent\b"
    r"|\bnegative\s+for\b"
    r"|\bwithout\s+(?:[^\W\d_]+\s+){0,2}?(?:evidence|signs?)\s+of\b"
    r"|\b(?:does|do|did)\s*(?:not|n['’]t)\s+(?:show|demonstrate|reveal|depict)\b",
    re.IGNORECASE,
)
_LEAD_DECOR = frozenset(" \t*_#>\"'`“”‘’([-–—•")
_TRAIL_DECOR = frozenset(" \t*_\"'`“”‘’)]")
_CLAUSE_START = frozenset(".!?:;\n\r")
_SENTENCE_END = frozenset(".!?\n\r")

_Kind = Literal["explicit", "passing", "ambiguous", "determiner"]


@dataclass(frozen=True)
class _Mention:
    start: int
    end: int
    value: Literal["yes", "no"]
    kind: _Kind


def _opens_clause(text: str, start: int) -> bool:
    i = start - 1
    while i >= 0 and text[i] in _LEAD_DECOR:
        i -= 1
    return i < 0 or text[i] in _CLAUSE_START


def _is_leading(text: str, start: int) -> bool:
    return all(char in _LEAD_DECOR or char.isspace() for char in text[:start])


def _closes_sentence(text: str, end: int) -> bool:
    i = end
    while i < len(text) and text[i] in _TRAIL_DECOR:
        i += 1
    return i == len(text) or text[i] in _SENTENCE_END


def _mentions(text: str) -> list[_Mention]:
    cue_ends = {match.end() for match in _CUE.finditer(text)}
    found: list[tuple[int, int, Literal["yes", "no"]]] = [
        (m.start(), m.end(), "yes" if m.group(1).lower() == "yes" else "no")
        for m in _WORD.finditer(text)
    ]
    kinds: list[_Kind | None] = []
    for start, end, value in found:
        following = _NEXT_WORD.match(text, end)
        determiner = (
            value == "no"
            and start not in cue_ends
            and following is not None
            and following.group(1).lower() not in _CLAUSE_WORDS
        )
        kinds.append("determiner" if determiner else None)
    for i in range(len(found) - 1):
        join = _CHOICE_JOIN.fullmatch(text, found[i][1], found[i + 1][0])
        joined_by_and = join is not None and (join.group(1) or "").lower() == "and"
        if join is None or (joined_by_and and kinds[i + 1] == "determiner"):
            continue
        kinds[i] = kinds[i + 1] = "ambiguous"
    mentions = []
    for (start, end, value), kind in zip(found, kinds):
        if kind is None:
            if _QUALIFIER.search(text, max(0, start - _QUALIFIER_REACH), start):
                kind = "ambiguous"
            elif start in cue_ends or _opens_clause(text, start) or _closes_sentence(text, end):
                kind = "explicit"
            else:
                kind = "passing"
        mentions.append(_Mention(start, end, value, kind))
    return mentions


def _decide(text: str, mode: Mode) -> tuple[Verdict, tuple[int, int] | None]:
    mentions = _mentions(text)
    explicit = [m for m in mentions if m.kind == "explicit"]
    if explicit:
        leading = mode == "direct" and _is_leading(text, explicit[0].start)
        chosen = explicit[0] if leading else explicit[-1]
        return chosen.value, (chosen.start, chosen.end)
    if any(m.kind == "ambiguous" for m in mentions):
        return "unparseable", None
    passing = [m for m in mentions if m.kind == "passing"]
    if passing:
        if len({m.value for m in passing}) > 1:
            return "unparseable", None
        return passing[-1].value, (passing[-1].start, passing[-1].end)
    phrases = [match.span() for match in _NEGATION.finditer(text)]
    determiners = [m for m in mentions if m.kind == "determiner"]
    leading_no = determiners[0] if determiners and _is_leading(text, determiners[0].start) else None
    if not phrases and leading_no is None:
        return "unparseable", None
    starts = [start for start, _ in phrases]  # finditer: sorted, non-overlapping
    for m in reversed(determiners):
        k = bisect_right(starts, m.start) - 1
        if m is leading_no or (k >= 0 and m.end <= phrases[k][1]):
            return "no", (m.start, m.end)
    return "no", None


def _check_text(text: object) -> str:
    if not isinstance(text, str):
        raise TargetError(
            f"expected the model's response as str, got {type(text).__name__}; "
            "decode the generated tokens to text first."
        )
    return text


def parse_yes_no(text: str, *, mode: Mode = "reasoning") -> Verdict:
    """Read the yes/no verdict of a model response, strictly (rules in the module docstring).

    Deterministic, regex-based, never evaluates anything and never raises on a str.

    Args:
        text (str): the model's response (the assistant turn's text, no template).
        mode (Mode, optional): the prompt mode the response answers. ``"direct"``
            lets a response that opens with an explicit yes/no be decided by that
            first word; ``"reasoning"`` takes the last explicit verdict. Both agree
            on any response with a single verdict. Default: ``"reasoning"``.

    Returns:
        Verdict: ``"yes"``, ``"no"`` or ``"unparseable"``.

    Raises:
        TargetError: ``text`` is not a str, or unknown mode.

    Examples::

        >>> parse_yes_no("Some might say yes, but the angles are sharp. Answer: no.")
        'no'
        >>> parse_yes_no("There is no evidence of pneumothorax.")
        'no'
        >>> parse_yes_no("yes or no")
        'unparseable'
    """
    return _decide(_check_text(text), validate_mode(mode))[0]


def answer_char_span(response: str, mode: Mode) -> tuple[int, int] | None:
    """Where, in characters, the verdict word that :func:`parse_yes_no` decides on lies.

    Adapters map the span to tokens with the tokenizer's offsets (span policy
    ``"answer"``), so it is exact: ``response[start:end].lower()`` is ``"yes"`` or
    ``"no"`` and equals ``parse_yes_no(response, mode=mode)``.

    Args:
        response (str): the model's response text.
        mode (Mode): the prompt mode the response answers (see :func:`parse_yes_no`).

    Returns:
        tuple[int, int] | None: ``(start, end)`` character offsets into ``response``,
        end exclusive; ``None`` when the response is unparseable or its ``no`` comes
        from a negation phrase that has no word ``no`` (``"Effusion is absent."``).

    Raises:
        TargetError: ``response`` is not a str, or unknown mode.

    Examples::

        >>> answer_char_span("Yes, there is a small nodule.", "direct")
        (0, 3)
        >>> text = "The heart is normal. No effusion is seen. **Answer:** No"
        >>> start, end = answer_char_span(text, "reasoning")
        >>> (start, end, text[start:end])
        (54, 56, 'No')
    """
    return _decide(_check_text(response), validate_mode(mode))[1]
