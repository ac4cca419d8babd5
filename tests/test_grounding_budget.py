"""The grounding parser charges every character its JSON scan reads to one budget."""

from __future__ import annotations

import cxr_attrib.grounding as grounding
from cxr_attrib.grounding import BoxConvention, parse_boxes

QWEN = BoxConvention(key="bbox_2d", order="xyxy", frame=(224, 224))


def test_successful_decodes_and_the_fence_search_are_charged(monkeypatch):
    text = "[0] " * 1000  # 4,000 characters of valid JSON values that hold no box
    monkeypatch.setattr(grounding, "MAX_RETRY_CHARS", 20_000)
    assert parse_boxes(text, QWEN).counts["scan_stopped"] == 0
    # fence search 4,000 + per value: the search up to its bracket (2) and its decode (3) = 8,999 > 8,000;
    # before every read was charged, successful decodes and the fence search cost nothing
    monkeypatch.setattr(grounding, "MAX_RETRY_CHARS", 8_000)
    assert parse_boxes(text, QWEN).counts["scan_stopped"] == 1


def test_a_box_after_the_spent_budget_is_still_read_once_by_the_bare_list_expression(monkeypatch):
    monkeypatch.setattr(grounding, "MAX_RETRY_CHARS", 1_000)
    parsed = parse_boxes("[0] " * 1000 + "[10, 20, 110, 120]", QWEN)
    assert parsed.counts["scan_stopped"] == 1 and parsed.source == "regex"
    assert parsed.boxes == ((10.0, 20.0, 110.0, 120.0),)


def test_many_fences_of_valid_json_cost_one_budget():
    """Fenced blocks are scanned, then the whole text: both are charged, so the work stays bounded."""
    import time

    text = "```json\n[0]\n```\n" * 60_000  # ~1 M characters
    start = time.process_time()
    parsed = parse_boxes(text, QWEN)
    assert time.process_time() - start < 2.0
    assert parsed.counts["scan_stopped"] == 1 and parsed.boxes == ()
