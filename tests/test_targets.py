"""Tests of cxr_attrib.targets: prompts, span policies and strict yes/no reading."""

from __future__ import annotations

import doctest
import re

import pytest
from hypothesis import assume, given, settings
from hypothesis import strategies as st

from cxr_attrib import targets
from cxr_attrib.errors import CxrAttribError
from cxr_attrib.targets import (
    DIRECT_SUFFIX,
    MODES,
    PROMPT_SUFFIXES,
    REASONING_SUFFIX,
    SPAN_POLICIES,
    TargetError,
    answer_char_span,
    build_prompt,
    finding_question,
    parse_yes_no,
    validate_mode,
    validate_span_policy,
)

LONG_RATIONALE = (
    "The cardiac silhouette is within normal limits. The costophrenic angles are "
    "blunted bilaterally, and there is a meniscus sign at the right base, which is "
    "typical of fluid. No pneumothorax is identified. "
)

# (response, verdict): default mode ("reasoning": the last explicit verdict decides).
VERDICTS = [
    ("Yes.", "yes"),
    ("No", "no"),
    ("yes", "yes"),
    ("NO.", "no"),
    ("Yes\n", "yes"),
    (" no ", "no"),
    ("**Yes**", "yes"),
    ("__No__.", "no"),
    ("Yes!", "yes"),
    ('"No."', "no"),
    ("- Yes", "yes"),
    ("Answer: yes", "yes"),
    ("Answer: NO", "no"),
    ("The answer is no.", "no"),
    ("The answer is: **Yes**", "yes"),
    ("**Final answer:** No", "no"),
    ("The answer is 'yes'.", "yes"),
    ("Answer: no pneumothorax", "no"),
    ("Yes, there is a small nodule", "yes"),
    ("Yes there is a small nodule in the left apex.", "yes"),
    ("No, there is no effusion.", "no"),
    ("No it is not.", "no"),
    ("Yes, and no other findings.", "yes"),
    ("no evidence of effusion", "no"),
    ("There is no evidence of pneumothorax.", "no"),
    ("No effusion.", "no"),
    ("There are no signs of consolidation.", "no"),
    ("Effusion is absent.", "no"),
    ("The effusion is not seen.", "no"),
    ("It is negative for cardiomegaly.", "no"),
    ("The image doesn't show any effusion.", "no"),
    ("Some might say yes, but looking closely the angles are sharp. Answer: no.", "no"),
    ("At first glance no, but the meniscus is clear. The answer is yes.", "yes"),
    (LONG_RATIONALE + "Answer: yes.", "yes"),
    ("There is no effusion here; however, the question asks about the nodule.\nYes", "yes"),
    ("The findings are not seen. Answer: no.", "no"),
    ("Effusion is present. Answer: yes.", "yes"),
    ("Step 1: lungs clear.\nStep 2: no consolidation.\n\nAnswer: **No**", "no"),
    ("Therefore, yes.", "yes"),
    ("I would say yes, there is", "yes"),
    ("Yes. Wait, actually no.", "no"),
    ("", "unparseable"),
    ("   \n\t", "unparseable"),
    ("maybe", "unparseable"),
    ("I cannot determine", "unparseable"),
    ("I cannot tell.", "unparseable"),
    ("yes or no", "unparseable"),
    ("Yes/No", "unparseable"),
    ("Yes and no.", "unparseable"),
    ("Is this a yes or no question?", "unparseable"),
    ("maybe yes, maybe no", "unparseable"),
    ("I'd say yes, but perhaps no", "unparseable"),
    ("The answer is not yes", "unparseable"),
    ("I cannot say yes.", "unparseable"),
    ("Nope", "unparseable"),
    ("Yeah", "unparseable"),
    ("Yesterday", "unparseable"),
    ("Nobody", "unparseable"),
    ("nodule", "unparseable"),
    ("There is a nodule.", "unparseable"),
    ("no-one knows", "unparseable"),
    ("Effusion is present.", "unparseable"),
    ("There is a large effusion. No pneumothorax.", "unparseable"),
    ("Effusion is not absent.", "unparseable"),
    ("Ｙｅｓ", "unparseable"),
    ("yeſ", "unparseable"),
]


@pytest.mark.parametrize(("response", "expected"), VERDICTS)
def test_parse_yes_no_table(response: str, expected: str) -> None:
    assert parse_yes_no(response) == expected


@pytest.mark.parametrize(
    ("response", "direct", "reasoning"),
    [
        ("Yes. Wait, actually no.", "yes", "no"),
        ("No. The heart is normal; yes, the lungs are clear.", "no", "yes"),
        ("No effusion. Answer: yes", "yes", "yes"),
        ("Yes, there is a small nodule", "yes", "yes"),
    ],
)
def test_direct_mode_is_decided_by_a_leading_verdict(
    response: str, direct: str, reasoning: str
) -> None:
    assert parse_yes_no(response, mode="direct") == direct
    assert parse_yes_no(response, mode="reasoning") == reasoning


# (response, mode, span): offsets counted by hand.
SPANS = [
    ("Yes.", "direct", (0, 3)),
    ("**Yes**", "direct", (2, 5)),
    (" no ", "direct", (1, 3)),
    ("Yes, there is a small nodule", "direct", (0, 3)),
    ("The answer is no.", "direct", (14, 16)),
    ("Answer: yes", "reasoning", (8, 11)),
    ("There is no evidence of pneumothorax.", "direct", (9, 11)),
    ("no evidence of effusion", "direct", (0, 2)),
    ("No, there is no effusion.", "reasoning", (0, 2)),
    ("Some might say yes, but no. Answer: no.", "reasoning", (36, 38)),
    ("Yes. Wait, actually no.", "direct", (0, 3)),
    ("Yes. Wait, actually no.", "reasoning", (20, 22)),
    ("Effusion is present. Answer: yes.", "reasoning", (29, 32)),
    ("I would say yes, there is", "reasoning", (12, 15)),
    ("No effusion. There is no evidence of pneumothorax.", "direct", (22, 24)),
    ("No effusion. It is absent.", "reasoning", (0, 2)),
    ("Effusion is absent.", "direct", None),
    ("It is negative for cardiomegaly.", "reasoning", None),
    ("yes or no", "direct", None),
    ("", "reasoning", None),
    ("Nope", "direct", None),
]


@pytest.mark.parametrize(("response", "mode", "span"), SPANS)
def test_answer_char_span_table(response: str, mode: str, span: tuple[int, int] | None) -> None:
    assert answer_char_span(response, mode) == span  # type: ignore[arg-type]


def test_span_of_a_long_rationale_is_the_final_word() -> None:
    text = LONG_RATIONALE + "Answer: yes."
    start, end = answer_char_span(text, "reasoning")  # type: ignore[misc]
    assert (start, end) == (len(LONG_RATIONALE) + 8, len(LONG_RATIONALE) + 11)
    assert text[start:end] == "yes"


def test_prompts_are_question_plus_suffix() -> None:
    question = finding_question("pleural effusion")
    assert question == "Is there evidence of pleural effusion in the image?"
    assert DIRECT_SUFFIX == " Answer directly with yes or no without any explanation."
    assert REASONING_SUFFIX == " Think step by step and answer with yes or no."
    assert build_prompt(question) == question + DIRECT_SUFFIX
    assert build_prompt(question, "reasoning") == question + REASONING_SUFFIX
    assert build_prompt("  Is it?  \n", "direct") == "Is it?" + DIRECT_SUFFIX
    assert finding_question("  cardiomegaly ") == "Is there evidence of cardiomegaly in the image?"
    assert PROMPT_SUFFIXES == {"direct": DIRECT_SUFFIX, "reasoning": REASONING_SUFFIX}


def test_names_and_validation() -> None:
    assert MODES == ("direct", "reasoning")
    assert SPAN_POLICIES == ("answer", "response", "turn")
    assert [validate_span_policy(name) for name in SPAN_POLICIES] == list(SPAN_POLICIES)
    assert [validate_mode(name) for name in MODES] == list(MODES)
    assert issubclass(TargetError, CxrAttribError) and issubclass(TargetError, ValueError)


@pytest.mark.parametrize(
    ("call", "fragments"),
    [
        (
            lambda: validate_span_policy("anwser"),
            ["'anwser'", "'answer', 'response', 'turn'", "Did you mean 'answer'?"],
        ),
        (lambda: validate_span_policy(None), ["None", "'answer', 'response', 'turn'"]),
        (
            lambda: validate_mode("Reasoning"),
            ["'Reasoning'", "'direct', 'reasoning'", "Did you mean 'reasoning'?"],
        ),
        (lambda: build_prompt("Is it?", "cot"), ["prompt mode 'cot'", "'direct', 'reasoning'"]),
        (lambda: answer_char_span("Yes", "fast"), ["prompt mode 'fast'"]),
        (lambda: parse_yes_no("Yes", mode="slow"), ["prompt mode 'slow'"]),
        (lambda: build_prompt("   "), ["non-empty", "question"]),
        (lambda: finding_question(""), ["non-empty", "finding"]),
        (lambda: parse_yes_no(b"yes"), ["str", "bytes"]),
    ],
)
def test_errors_say_what_was_expected(call, fragments: list[str]) -> None:
    with pytest.raises(TargetError) as caught:
        call()
    for fragment in fragments:
        assert fragment in str(caught.value)


def test_docstring_examples() -> None:
    assert doctest.testmod(targets, raise_on_error=False).failed == 0


VERDICT_FREE = re.compile(r"yes|no", re.IGNORECASE)
WORDS = [
    "yes", "Yes", "NO", "no", "answer", "Answer:", "is", "not", "maybe", "or", "and", "/",
    "there", "evidence", "of", "effusion", "absent", "seen", "the", "**", ".", ",", "\n",
    "Yesterday", "nodule", "'", "negative", "for", ":", "it",
]


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_parse_never_raises_and_spans_slice_the_verdict(text: str) -> None:
    for mode in MODES:
        verdict = parse_yes_no(text, mode=mode)
        span = answer_char_span(text, mode)
        assert verdict in ("yes", "no", "unparseable")
        if span is not None:
            assert text[span[0] : span[1]].lower() == verdict


@settings(max_examples=300, deadline=None)
@given(st.text())
def test_a_final_answer_line_decides_verdict_free_text(text: str) -> None:
    assume(VERDICT_FREE.search(text) is None)
    response = text + "\nAnswer: yes."
    for mode in MODES:
        assert parse_yes_no(response, mode=mode) == "yes"
        assert answer_char_span(response, mode) == (len(text) + 9, len(text) + 12)


@settings(max_examples=400, deadline=None)
@given(st.lists(st.sampled_from(WORDS), max_size=14), st.sampled_from(["", " ", "\n"]))
def test_word_salad_spans_agree_and_case_does_not_matter(words: list[str], glue: str) -> None:
    text = glue.join(words)
    for mode in MODES:
        verdict = parse_yes_no(text, mode=mode)
        span = answer_char_span(text, mode)
        assert parse_yes_no(text.upper(), mode=mode) == verdict
        assert parse_yes_no(text.lower(), mode=mode) == verdict
        if verdict == "unparseable":
            assert span is None
        elif span is not None:
            assert text[span[0] : span[1]].lower() == verdict
        else:
            assert verdict == "no"


def test_long_input_is_fast_enough() -> None:
    text = ("no evidence of effusion, maybe yes or no. **" * 5000) + "Answer: yes."
    assert parse_yes_no(text) == "yes"
    assert answer_char_span(text, "reasoning") == (len(text) - 4, len(text) - 1)
