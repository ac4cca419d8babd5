"""Chat-template rendering and tokenisation in which user text stays plain text.

The prompt and the teacher-forced answer are data: control tokens typed into them
(an end-of-turn marker, a role header, an image placeholder, ...) must be read as
ordinary characters, never as the template's turn or image markers. So the
conversation is rendered twice with the checkpoint's own template:

* the **skeleton**, with private-use sentinels in place of the prompt and the
  answer: only template text, where the image placeholder is expanded (so the
  image count never depends on user text);
* the **real** rendering, which tells how the template placed the user text
  (verbatim, or trimmed of surrounding whitespace as some templates do).

The text is then tokenised in runs: added tokens (special or not) that the template
wrote are kept as they are, and each run of characters between them, template text
and user text together, is tokenised with ``split_special_tokens=True``. Because a
tokenizer splits at added tokens before anything else, a run tokenises exactly as
in one whole-text call, so benign text gets the ids the model's own processor gives;
only control-token strings inside user text change (into ordinary pieces).
"""

from __future__ import annotations

import re
from collections.abc import Callable, Collection
from dataclasses import dataclass
from typing import Any

from cxr_attrib.errors import ModelLoadError
from cxr_attrib.targets import TargetError

__all__ = ["PlainText", "encode_conversation", "expand_placeholder", "render_chat"]

_PROMPT = "\ue000cxr-attrib:prompt\ue001"
_ANSWER = "\ue000cxr-attrib:answer\ue001"
_SENTINELS = re.compile(f"({re.escape(_PROMPT)}|{re.escape(_ANSWER)})")


@dataclass(frozen=True)
class PlainText:
    """One tokenised conversation with the user text located.

    Attributes:
        text (str): the rendered conversation, image placeholder expanded.
        ids (list[int]): its token ids.
        offsets (list[tuple[int, int]]): (start, end) characters of each token in ``text``.
        prompt_span (tuple[int, int]): characters of the prompt in ``text``.
        answer_span (tuple[int, int] | None): characters of the answer (the
            response as the template placed it), None for a generation prompt.
    """

    text: str
    ids: list[int]
    offsets: list[tuple[int, int]]
    prompt_span: tuple[int, int]
    answer_span: tuple[int, int] | None

    @property
    def response(self) -> str:
        """The answer as placed in the conversation (empty for a generation prompt)."""
        return "" if self.answer_span is None else self.text[slice(*self.answer_span)]

    def user_token_count(self) -> int:
        """How many tokens hold user text (prompt and answer)."""
        spans = [self.prompt_span] + ([self.answer_span] if self.answer_span else [])
        return sum(any(s < hi and e > lo for lo, hi in spans) for s, e in self.offsets)


def render_chat(tokenizer: Any, template: str, prompt: str, answer: str | None) -> str:
    """``user: [image, prompt]`` (then ``assistant: answer``) rendered by ``template``.

    Without an answer the generation prompt is rendered (up to the assistant header).
    The image placeholder is not expanded.
    """
    messages: list[dict[str, Any]] = [
        {"role": "user", "content": [{"type": "image"}, {"type": "text", "text": prompt}]}
    ]
    if answer is not None:
        messages.append({"role": "assistant", "content": answer})
    return tokenizer.apply_chat_template(
        messages, chat_template=template, tokenize=False, add_generation_prompt=answer is None
    )


def _fill(skeleton: str, prompt: str, answer: str | None) -> str:
    """The skeleton with its sentinels replaced (never re-scanning inserted text)."""
    values = {_PROMPT: prompt, _ANSWER: answer or ""}
    return "".join(values.get(part, part) for part in _SENTINELS.split(skeleton))


def _placed(skeleton: str, real: str, prompt: str, answer: str | None, name: str) -> tuple[str, str | None]:
    """How the template placed the user text: verbatim or trimmed (the variant that renders ``real``)."""
    answers = (None,) if answer is None else dict.fromkeys((answer, answer.strip()))
    for p in dict.fromkeys((prompt, prompt.strip())):
        for a in answers:
            if _fill(skeleton, p, a) == real:
                return p, a
    raise ModelLoadError(
        f"model {name!r}: its chat template changes the user text beyond trimming whitespace; expected a "
        "standard chat template that places the prompt and the answer as given"
    )


def _runs(
    tokenizer: Any, text: str, template_spans: list[tuple[int, int]], added_ids: Collection[int]
) -> tuple[list[int], list[tuple[int, int]]]:
    """Token ids and offsets: template added tokens kept, the text between them split plainly."""
    anchors = []
    for lo, hi in template_spans:
        out = tokenizer(text[lo:hi], add_special_tokens=False, return_offsets_mapping=True)
        anchors += [(lo + s, lo + e, i) for i, (s, e) in zip(out["input_ids"], out["offset_mapping"]) if i in added_ids]
    ids: list[int] = []
    offsets: list[tuple[int, int]] = []
    cursor = 0
    for start, end, token in [*anchors, (len(text), len(text), None)]:
        if start > cursor:
            out = tokenizer(text[cursor:start], add_special_tokens=False, return_offsets_mapping=True,
                            split_special_tokens=True)
            ids += out["input_ids"]
            offsets += [(cursor + s, cursor + e) for s, e in out["offset_mapping"]]
        if token is not None:
            ids.append(token)
            offsets.append((start, end))
        cursor = max(cursor, end)
    return ids, offsets


def encode_conversation(
    tokenizer: Any,
    template: str,
    expand_image: Callable[[str], str],
    prompt: str,
    answer: str | None,
    added_ids: Collection[int],
    *,
    name: str,
) -> PlainText:
    """Render ``user: [image, prompt]`` (then ``assistant: answer``) and tokenise it plainly.

    Args:
        tokenizer: the fast HF tokenizer.
        template (str): the checkpoint's chat template.
        expand_image (Callable[[str], str]): the family's placeholder expansion; it
            sees template text only (raises unless it holds exactly one image).
        prompt (str): the user turn's text.
        answer (str | None): the assistant response; None renders the generation prompt.
        added_ids (Collection[int]): ids of the tokenizer's added (control) tokens.
        name (str): the model's name, for messages.

    Returns:
        PlainText: ids, offsets and where the prompt and the answer lie.

    Raises:
        ModelLoadError: the template does not render the conversation as the
            generation prompt followed by the answer, or rewrites user text.
        TargetError: user text holds a token this tokenizer always reads as a
            control token (an added token that is not marked special).
    """
    skeleton = render_chat(tokenizer, template, _PROMPT, _ANSWER if answer is not None else None)
    if answer is not None:
        head = render_chat(tokenizer, template, _PROMPT, None)
        if not skeleton.startswith(head) or not skeleton[len(head) :].startswith(_ANSWER):
            raise ModelLoadError(
                f"model {name!r}: its chat template does not render the conversation as the generation "
                "prompt followed by the answer; expected a standard chat template."
            )
    if skeleton.count(_PROMPT) != 1 or skeleton.count(_ANSWER) != (answer is not None):
        raise ModelLoadError(f"model {name!r}: its chat template does not place the prompt (and answer) exactly once.")
    real = render_chat(tokenizer, template, prompt, answer)
    placed_prompt, placed_answer = _placed(skeleton, real, prompt, answer, name)
    values = {_PROMPT: placed_prompt, _ANSWER: placed_answer or ""}
    text, template_spans, spans = "", [], {}
    for part in _SENTINELS.split(expand_image(skeleton)):
        start = len(text)
        text += values.get(part, part)
        if part in values:
            spans[part] = (start, len(text))
        else:
            template_spans.append((start, len(text)))
    ids, offsets = _runs(tokenizer, text, template_spans, added_ids)
    plain = PlainText(text, ids, offsets, spans[_PROMPT], spans.get(_ANSWER))
    user = [plain.prompt_span] + ([plain.answer_span] if plain.answer_span else [])
    for token, (s, e) in zip(ids, offsets):
        if token in added_ids and any(s < hi and e > lo for lo, hi in user):
            raise TargetError(
                f"the text {text[s:e]!r} in the prompt or answer is a control token of this tokenizer that "
                "cannot be read as plain text; remove it from the question or answer."
            )
    return plain


def expand_placeholder(text: str, placeholder: str, expansion: str, name: str) -> str:
    """``text`` (template text only) with its one image ``placeholder`` replaced by ``expansion``.

    Args:
        text (str): rendered template text (user text is never passed here).
        placeholder (str): the template's image marker, e.g. ``"<image>"``.
        expansion (str): what the processor puts there (the image tokens, markers around them).
        name (str): the model's name, for messages.

    Raises:
        ModelLoadError: the template wrote the placeholder other than exactly once.

    Examples::

        >>> expand_placeholder("USER: <image>\\nQ?", "<image>", "<image>" * 3, "m")
        'USER: <image><image><image>\\nQ?'
    """
    count = text.count(placeholder)
    if count != 1:
        raise ModelLoadError(
            f"model {name!r}: the rendered prompt holds {count} {placeholder!r} placeholders; expected exactly one image."
        )
    return text.replace(placeholder, expansion)
