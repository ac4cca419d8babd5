"""Boxes a model *states*: how each family writes them, and a strict parser of its text.

A :class:`BoxConvention` says how a model family writes a box: the JSON key, the
axis order and the frame of its numbers (Qwen2.5-VL: absolute pixels of its own
resized input, ``{"bbox_2d": [x1, y1, x2, y2]}``; Gemma-family models:
``{"box_2d": [y1, x1, y2, x2]}`` normalised to 0-1000). Adapters own their
convention (:class:`GroundingSurface`); this module only reads and writes text.

:func:`parse_boxes` never evaluates model output (no ``eval``: text is data). It tries strict
JSON first (each fenced code block, then every JSON value embedded in the whole
text), then a tight regular expression for bare ``[a, b, c, d]`` lists of ASCII
numbers. Boxes that are degenerate (zero area), inverted or outside the model's
frame (or not finite) are dropped and counted; anything else is ignored. Its cost is
linear in the text: every character the JSON scan reads (the search for code fences,
each decoding attempt, successful or failed, and the error position a failure
computes) is charged to one budget of :data:`MAX_RETRY_CHARS` characters; when it is
spent the JSON scan stops (counted as ``scan_stopped``) and only the bare-list
expression reads the text, once. So ``"[" * 200_000`` is read in milliseconds, not hours.

Example::

    >>> convention = BoxConvention(key="bbox_2d", order="xyxy", frame=(224, 224))
    >>> parsed = parse_boxes('[{"bbox_2d": [10, 20, 110, 120], "label": "mass"}]', convention)
    >>> parsed.boxes, parsed.source
    (((10.0, 20.0, 110.0, 120.0),), 'json')
    >>> convention.to_working(parsed.boxes, 448)
    ((20.0, 40.0, 220.0, 240.0),)
"""

from __future__ import annotations

import json
import math
import re
from abc import ABC, abstractmethod
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from typing import Any, Literal

__all__ = [
    "BOX_KEYS",
    "MAX_BOXES",
    "MAX_RETRY_CHARS",
    "BoxConvention",
    "GroundingSurface",
    "ParsedBoxes",
    "evidence_prompt",
    "parse_boxes",
]

Box = tuple[float, float, float, float]
AxisOrder = Literal["xyxy", "yxyx"]

MAX_BOXES = 64
"""Default cap on the boxes kept from one answer (the rest are counted, not kept)."""

MAX_RETRY_CHARS = 1_000_000
"""Characters that failed JSON decoding attempts may read in all, per text. Each failed
attempt is charged what it cost: up to where it failed (the decoder's error re-reads the
text from its beginning to find the line), or the rest of the text when the decoder gives
no position. Valid JSON is never charged, so a 10,000-box answer is read whole; only
garbage such as ``"[" * 200_000`` exhausts it."""

BOX_KEYS: tuple[str, ...] = ("bbox_2d", "box_2d", "bbox", "box")
"""JSON keys read as a box besides the convention's own (which is tried first)."""

EVIDENCE_REQUEST = "Where is the evidence for this answer? Answer with a bounding box."
"""The sentence :func:`evidence_prompt` adds after the stated answer."""


@dataclass(frozen=True)
class BoxConvention:
    """How one model family writes boxes in text.

    Attributes:
        key (str): JSON key of a box, e.g. ``"bbox_2d"``.
        order (str): ``"xyxy"`` (``[x1, y1, x2, y2]``) or ``"yxyx"`` (``[y1, x1, y2, x2]``).
        frame (tuple[float, float]): ``(width, height)`` of the model's coordinate
            frame, which spans the whole working image: the model's resized input in
            pixels (Qwen2.5-VL) or ``(1000, 1000)`` (normalised coordinates).
        instruction (str): the sentence that asks for this format (appended to prompts).
        integer (bool): coordinates are written as integers. Default: True.
    """

    key: str
    order: AxisOrder
    frame: tuple[float, float]
    instruction: str = ""
    integer: bool = True

    def __post_init__(self) -> None:
        if self.order not in ("xyxy", "yxyx"):
            raise ValueError(f"expected order 'xyxy' or 'yxyx', got {self.order!r}.")
        if len(self.frame) != 2 or not all(math.isfinite(v) and v > 0 for v in self.frame):
            raise ValueError(f"expected frame as two positive sizes (width, height), got {self.frame!r}.")

    def from_working(self, boxes: Sequence[Sequence[float]], working_size: int) -> tuple[Box, ...]:
        """Working-frame ``(x1, y1, x2, y2)`` boxes -> the model's frame (still x first).

        Args:
            boxes: N boxes in working-frame pixels (exclusive ends).
            working_size (int): side S of the square working frame.

        Returns:
            tuple[Box, ...]: N boxes ``(x1, y1, x2, y2)`` in model units.
        """
        sx, sy = self.frame[0] / working_size, self.frame[1] / working_size
        return tuple((b[0] * sx, b[1] * sy, b[2] * sx, b[3] * sy) for b in boxes)

    def to_working(self, boxes: Sequence[Sequence[float]], working_size: int) -> tuple[Box, ...]:
        """Model-frame ``(x1, y1, x2, y2)`` boxes (as :func:`parse_boxes` returns) -> working frame.

        Args:
            boxes: N boxes in model units, x first.
            working_size (int): side S of the square working frame.

        Returns:
            tuple[Box, ...]: N boxes ``(x1, y1, x2, y2)`` in working-frame pixels.
        """
        sx, sy = working_size / self.frame[0], working_size / self.frame[1]
        return tuple((b[0] * sx, b[1] * sy, b[2] * sx, b[3] * sy) for b in boxes)

    def format(self, boxes: Sequence[Sequence[float]], labels: Sequence[str] | str = "") -> str:
        """The answer text stating ``boxes`` (model frame, x first) in this convention.

        Args:
            boxes: N boxes ``(x1, y1, x2, y2)`` in model units.
            labels: one label per box, or one label for all. Default: ``""`` (no label).

        Returns:
            str: a JSON list, e.g. ``[{"bbox_2d": [10, 20, 110, 120], "label": "mass"}]``;
            ``[]`` for no boxes.
        """
        names = [labels] * len(boxes) if isinstance(labels, str) else list(labels)
        items = []
        for box, label in zip(boxes, names, strict=True):
            x1, y1, x2, y2 = (round(v) if self.integer else float(v) for v in box)
            values = [x1, y1, x2, y2] if self.order == "xyxy" else [y1, x1, y2, x2]
            items.append({self.key: values, "label": label} if label else {self.key: values})
        return json.dumps(items, ensure_ascii=False)


@dataclass(frozen=True)
class ParsedBoxes:
    """What :func:`parse_boxes` read from one answer.

    Attributes:
        boxes (tuple[Box, ...]): valid boxes ``(x1, y1, x2, y2)``, model frame, x first,
            in the order stated (at most ``max_boxes``).
        source (str): ``"json"``, ``"regex"`` or ``"none"`` (nothing box-like found).
        counts (dict[str, int]): ``stated`` (box-like values found), ``kept``, and the
            dropped ones: ``degenerate`` (zero area), ``inverted``, ``out_of_range``
            (outside the frame, or not finite), ``capped`` (valid but beyond
            ``max_boxes``); and ``scan_stopped`` (1 when the JSON scan ran out of
            :data:`MAX_RETRY_CHARS` and stopped early, else 0).
    """

    boxes: tuple[Box, ...]
    source: Literal["json", "regex", "none"]
    counts: dict[str, int] = field(default_factory=dict)


_FENCE = re.compile(r"```[A-Za-z0-9_-]*[ \t]*\n?(.*?)(?:```|\Z)", re.DOTALL)
_OPEN = re.compile(r'\[(?=\s*[-0-9\[{\]"])|\{(?=\s*["}])')
"""Where a JSON value that may hold a box can start: ``[`` before a number, list, object,
string or ``]``; ``{`` before a key or ``}`` (so prose such as ``[Note]`` is never decoded)."""
_NUMBER = r"-?[0-9]+(?:\.[0-9]+)?"
_BARE_LIST = re.compile(
    rf"\[\s*({_NUMBER})\s*,\s*({_NUMBER})\s*,\s*({_NUMBER})\s*,\s*({_NUMBER})\s*\]"
)


def _is_number(value: Any) -> bool:
    """A JSON number (``bool`` is not one); it may be huge or not finite (then out of range)."""
    return isinstance(value, (int, float)) and not isinstance(value, bool)


def _is_box(value: Any) -> bool:
    return isinstance(value, list) and len(value) == 4 and all(_is_number(v) for v in value)


def _coordinate(value: float | int | str) -> float:
    """A stated coordinate as a float; an integer too large for a float becomes ``inf``."""
    try:
        return float(value)
    except OverflowError:
        return math.inf


def _json_boxes(value: Any, key: str, depth: int = 0) -> Iterator[list[float]]:
    """Box-like lists in a decoded JSON value: under a box key, or bare lists of four numbers."""
    if depth > 16:
        return
    if _is_box(value):
        yield value
    elif isinstance(value, list):
        for item in value:
            yield from _json_boxes(item, key, depth + 1)
    elif isinstance(value, dict):
        for name in (key, *BOX_KEYS):
            if _is_box(value.get(name)):
                yield value[name]
                return
        for item in value.values():
            if isinstance(item, (list, dict)):
                yield from _json_boxes(item, key, depth + 1)


class _Budget:
    """Characters the JSON scan may still read (see :data:`MAX_RETRY_CHARS`)."""

    def __init__(self, chars: int) -> None:
        self.left = chars

    def charge(self, chars: int) -> None:
        """Count ``chars`` characters read."""
        self.left -= chars

    @property
    def exhausted(self) -> bool:
        return self.left <= 0


def _embedded_json(text: str, budget: _Budget) -> Iterator[Any]:
    """Every JSON array or object that starts somewhere in ``text`` (strict ``json`` only).

    A failed attempt at one bracket is retried from the next one, so a value nested in
    broken JSON is still found. Every character read is charged to ``budget`` (the
    search for the next bracket, each decoded value, each failure with the error
    position it computes) and the scan stops when it is spent.
    """
    decoder = json.JSONDecoder()
    position = 0
    while not budget.exhausted:
        opening = _OPEN.search(text, position)
        if opening is None:
            return
        start = opening.start()
        budget.charge(start - position + 1)
        try:
            value, end = decoder.raw_decode(text, start)
        except json.JSONDecodeError as err:  # its line/column cost a scan of text[:err.pos]
            budget.charge(err.pos + 1)
            position = start + 1
            continue
        except (ValueError, RecursionError):  # an integer of > 4300 digits; nesting deeper than the stack
            budget.charge(len(text) - start)
            position = start + 1
            continue
        budget.charge(end - start)
        yield value
        position = end


def _candidates(text: str, budget: _Budget) -> Iterator[str]:
    """Each fenced code block, then the whole text (the fence search is charged to ``budget``)."""
    budget.charge(len(text))
    fenced = [m.group(1) for m in _FENCE.finditer(text)]
    yield from fenced
    yield text


def _stated(text: str, key: str, budget: _Budget) -> tuple[list[list[Any]], Literal["json", "regex", "none"]]:
    for candidate in _candidates(text, budget):
        found = [box for value in _embedded_json(candidate, budget) for box in _json_boxes(value, key)]
        if found:
            return found, "json"
    found = [list(m.groups()) for m in _BARE_LIST.finditer(text)]
    return (found, "regex") if found else ([], "none")


def parse_boxes(text: str, convention: BoxConvention, *, max_boxes: int = MAX_BOXES) -> ParsedBoxes:
    """Read the boxes a model stated, strictly; never raises on any text.

    Args:
        text (str): the model's answer.
        convention (BoxConvention): the family's key, axis order and frame.
        max_boxes (int): most boxes kept; valid boxes beyond it are counted as ``capped``.
            Default: :data:`MAX_BOXES`.

    Returns:
        ParsedBoxes: the valid boxes in the model frame (x first) and what was dropped.
    """
    if not isinstance(text, str):
        text = ""
    budget = _Budget(MAX_RETRY_CHARS)
    stated, source = _stated(text, convention.key, budget)
    width, height = convention.frame
    counts = {"stated": len(stated), "kept": 0, "degenerate": 0, "inverted": 0, "out_of_range": 0, "capped": 0,
              "scan_stopped": int(budget.exhausted)}
    kept: list[Box] = []
    for values in stated:
        a, b, c, d = (_coordinate(v) for v in values)
        x1, y1, x2, y2 = (a, b, c, d) if convention.order == "xyxy" else (b, a, d, c)
        inside = all(math.isfinite(v) for v in (x1, y1, x2, y2))
        if not inside or min(x1, x2, y1, y2) < 0 or max(x1, x2) > width or max(y1, y2) > height:
            counts["out_of_range"] += 1
        elif x2 < x1 or y2 < y1:
            counts["inverted"] += 1
        elif x2 == x1 or y2 == y1:
            counts["degenerate"] += 1
        elif len(kept) >= max_boxes:
            counts["capped"] += 1
        else:
            kept.append((x1, y1, x2, y2))
    counts["kept"] = len(kept)
    return ParsedBoxes(boxes=tuple(kept), source=source, counts=counts)


def evidence_prompt(question: str, answer: str, convention: BoxConvention) -> str:
    """The user turn that asks a model where the evidence for a given answer is.

    The answer already given is stated, so the model explains that answer rather than
    giving a new one; the family's format instruction ends the prompt.

    Args:
        question (str): the base question, e.g. ``"Is there evidence of mass in the image?"``.
        answer (str): the answer being explained (e.g. ``"Yes"``), stated verbatim.
        convention (BoxConvention): the family's convention (its ``instruction`` is appended).

    Returns:
        str: e.g. ``'Is there evidence of mass in the image? The answer is "Yes". Where is
        the evidence for this answer? Answer with a bounding box. <instruction>'``.
    """
    parts = [question.strip(), f'The answer is "{answer.strip()}".', EVIDENCE_REQUEST, convention.instruction.strip()]
    return " ".join(p for p in parts if p)


class GroundingSurface(ABC):
    """A model that can state boxes: its convention (implemented by adapters)."""

    @property
    @abstractmethod
    def box_convention(self) -> BoxConvention:
        """How this model writes boxes, for the current working size."""
