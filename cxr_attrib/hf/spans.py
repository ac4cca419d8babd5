"""Where the explained tokens are: the target span of each policy, and the image tokens.

A conversation tokenised by :func:`cxr_attrib.hf.chat.encode_conversation` knows
the characters of the answer; :func:`target_token_indices` picks the tokens whose
characters overlap the span the query's policy names (docs/user-guide.md):

* ``answer``: the verdict word found by :func:`cxr_attrib.targets.answer_char_span`
  (direct mode: the answer word; reasoning mode: the last yes/no);
* ``response``: the response characters, template end-of-turn tokens excluded;
* ``turn``: everything after the generation prompt, i.e. the response plus the
  template's closing tokens. The assistant's **role header belongs to the prompt**
  the model is given, so it is never a target.

Example::

    >>> from cxr_attrib.hf.chat import PlainText
    >>> from cxr_attrib.adapter import Query
    >>> text = PlainText("<u>Q?<a>Yes.</a>\\n", [1, 2, 3, 4, 5, 6, 7],
    ...                  [(0, 3), (3, 5), (5, 8), (8, 11), (11, 12), (12, 16), (16, 17)], (3, 5), (8, 12))
    >>> target_token_indices(text, Query("Q?", "direct", "Q?", "Yes.", "answer"))
    [3]
    >>> target_token_indices(text, Query("Q?", "direct", "Q?", "Yes.", "turn"))
    [3, 4, 5, 6]
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..adapter import Query
from ..errors import ModelLoadError
from ..targets import TargetError, answer_char_span, validate_span_policy
from .chat import PlainText

__all__ = ["image_token_positions", "target_char_span", "target_token_indices"]


def target_char_span(text: PlainText, query: Query) -> tuple[int, int]:
    """Characters of ``text.text`` that the query's span policy targets.

    Args:
        text (PlainText): a conversation rendered with an answer.
        query (Query): its ``policy`` and ``mode`` decide the span.

    Returns:
        tuple[int, int]: (start, end) characters, end exclusive.

    Raises:
        TargetError: an empty answer, or policy ``answer`` without a yes/no verdict word.
    """
    policy = validate_span_policy(query.policy)
    if text.answer_span is None or not text.response.strip():
        raise TargetError(f"the answer {query.answer!r} is empty; pass a non-empty answer to explain.")
    start, response = text.answer_span[0], text.response
    if policy == "answer":
        span = answer_char_span(response, query.mode)
        if span is None:
            raise TargetError(
                f"no yes/no verdict word to target in the answer {response!r}; use span "
                "policy 'response' or 'turn' for answers without a verdict word."
            )
        return start + span[0], start + span[1]
    if policy == "response":
        return text.answer_span
    return start, len(text.text)  # "turn": the response and the template's closing tokens


def target_token_indices(text: PlainText, query: Query) -> list[int]:
    """Indices of the tokens of ``text`` whose characters overlap the target span.

    Args:
        text (PlainText): a conversation rendered with an answer.
        query (Query): what is explained.

    Returns:
        list[int]: T token indices, increasing (the target positions).

    Raises:
        TargetError: see :func:`target_char_span`, or the span holds no token.
    """
    lo, hi = target_char_span(text, query)
    picked = [i for i, (s, e) in enumerate(text.offsets) if s < hi and e > lo and e > s]
    if not picked or picked[0] == 0:
        raise TargetError(f"the {query.policy!r} span of {text.response!r} holds no tokens; pass a longer answer.")
    return picked


def image_token_positions(ids: Sequence[int], image_token_id: int, grid: tuple[int, int], name: str) -> torch.Tensor:
    """(N,) long positions of the image tokens in ``ids``, checked against the (gh, gw) grid.

    Raises:
        ModelLoadError: the count is not gh * gw (the template placed no image or several).
    """
    positions = torch.tensor([i for i, t in enumerate(ids) if t == image_token_id], dtype=torch.long)
    gh, gw = grid
    if positions.numel() != gh * gw:
        raise ModelLoadError(
            f"model {name!r}: the prompt holds {positions.numel()} image tokens; expected "
            f"{gh * gw} ({gh}x{gw} grid). The chat template must place exactly one image."
        )
    return positions
