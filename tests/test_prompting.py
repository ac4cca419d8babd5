"""prompting / prompting_refined: the strict box parser, frame mapping, fallbacks, one pass.

Random tiny models write junk, so every correctness test here scripts the generation
(the adapter's ``generate`` is replaced for one test) and checks exact boxes computed
by hand from the frame definitions (docs/methods/prompting.md).
"""

from __future__ import annotations

import ast
import importlib
import json
import time
from pathlib import Path
from types import SimpleNamespace

import numpy as np
import pytest
import torch
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from cxr_attrib import attribute
from cxr_attrib.adapter import Generation, LoadOptions, Scorer
from cxr_attrib.errors import MethodParameterError, ModelCapabilityError, ModelLoadError
from cxr_attrib.grounding import BoxConvention, evidence_prompt, parse_boxes
from cxr_attrib.pools import mask_box
from cxr_attrib.segmentation import load_segmenter
from cxr_attrib.testing import load_tiny_adapter
from cxr_attrib_adapters.gemma3 import GEMMA_BOXES

Q = "Is there evidence of nodule in the image?"
# A Qwen-style convention on a non-square frame (448 wide, 336 high) so the x and y bounds differ.
QWEN = BoxConvention(key="bbox_2d", order="xyxy", frame=(448.0, 336.0))
DROPS = ("degenerate", "inverted", "out_of_range", "capped")
PWNED = Path("/tmp/pwned-by-prompting-test")


def counts(stated: int = 0, kept: int = 0, **dropped: int) -> dict[str, int]:
    """The full counts dict of :func:`parse_boxes` with the given non-zero entries."""
    return {"stated": stated, "kept": kept, **{k: dropped.get(k, 0) for k in DROPS},
            "scan_stopped": dropped.get("scan_stopped", 0)}


BOX = (10.0, 20.0, 110.0, 120.0)
ONE = counts(1, 1)
NONE = counts()
# (id, text, convention, expected boxes in the model frame x first, source, counts); no boxes = fallback.
PARSER_TABLE = [
    ("json", '[{"bbox_2d": [10, 20, 110, 120], "label": "mass"}]', QWEN, (BOX,), "json", ONE),
    ("json-object", '{"bbox_2d": [10, 20, 110, 120]}', QWEN, (BOX,), "json", ONE),
    ("code-fence", 'Sure.\n```json\n[{"bbox_2d": [10, 20, 110, 120]}]\n```\nDone.', QWEN, (BOX,), "json", ONE),
    ("fence-wins-over-prose", '```json\n[{"bbox_2d": [10, 20, 110, 120]}]\n```\n[{"bbox_2d": [1, 2, 3, 4]}]',
     QWEN, (BOX,), "json", ONE),
    ("several", '[{"bbox_2d": [10, 20, 110, 120]}, {"bbox_2d": [200, 30, 440, 330]}]', QWEN,
     (BOX, (200.0, 30.0, 440.0, 330.0)), "json", counts(2, 2)),
    ("inverted", '[{"bbox_2d": [110, 20, 10, 120]}]', QWEN, (), "json", counts(1, 0, inverted=1)),
    ("inverted-y", '[{"bbox_2d": [10, 120, 110, 20]}]', QWEN, (), "json", counts(1, 0, inverted=1)),
    ("out-of-range-x", '{"bbox_2d": [10, 20, 449, 120]}', QWEN, (), "json", counts(1, 0, out_of_range=1)),
    ("y-bound-is-the-height", '{"bbox_2d": [10, 20, 440, 337]}', QWEN, (), "json", counts(1, 0, out_of_range=1)),
    ("frame-edges-inclusive", '{"bbox_2d": [0, 0, 448, 336]}', QWEN, ((0.0, 0.0, 448.0, 336.0),), "json", ONE),
    ("negative", '{"bbox_2d": [-5, 20, 110, 120]}', QWEN, (), "json", counts(1, 0, out_of_range=1)),
    ("zero-area", '{"bbox_2d": [10, 20, 10, 120]}', QWEN, (), "json", counts(1, 0, degenerate=1)),
    ("good-and-bad", '[{"bbox_2d": [10, 20, 10, 120]}, {"bbox_2d": [10, 20, 110, 120]}, {"bbox_2d": [9, 9, 999, 9]}]',
     QWEN, (BOX,), "json", counts(3, 1, degenerate=1, out_of_range=1)),
    ("text-around", 'The evidence is at {"bbox_2d": [10, 20, 110, 120]} in the left lung.', QWEN, (BOX,), "json", ONE),
    ("half-written-list", '[{"bbox_2d": [10, 20, 110, 120]}, {"bbox_2d": [30, 40, 5', QWEN, (BOX,), "json", ONE),
    ("cut-in-first-box", '[{"bbox_2d": [10, 20, 1', QWEN, (), "none", NONE),
    ("eval-bait-import", f"__import__('os').system('touch {PWNED}')", QWEN, (), "none", NONE),
    ("eval-bait-arithmetic", "[1+1, 2, 3, 4]", QWEN, (), "none", NONE),
    ("python-dict-single-quotes", "[{'bbox_2d': [10, 20, 110, 120]}]", QWEN, (BOX,), "json", ONE),  # inner list
    ("arabic-indic-digits", '{"bbox_2d": [\u0661\u0660, \u0662\u0660, \u0661\u0661\u0660, \u0661\u0662\u0660]}',
     QWEN, (), "none", NONE),
    ("fullwidth-digits", "[\uff11\uff10, \uff12\uff10, \uff11\uff11\uff10, \uff11\uff12\uff10]", QWEN, (), "none", NONE),
    ("one-fullwidth-coordinate", "[10, 20, \uff11\uff11\uff10, 120]", QWEN, (), "none", NONE),
    ("empty", "", QWEN, (), "none", NONE),
    ("empty-list", "[]", QWEN, (), "none", NONE),
    ("leading-zeros", "[010, 020, 110, 120]", QWEN, (BOX,), "regex", ONE),
    ("decimals", '{"bbox_2d": [10.5, 20.25, 110.75, 120.0]}', QWEN, ((10.5, 20.25, 110.75, 120.0),), "json", ONE),
    ("label-with-brackets", '[{"label": "[1, 2, 3, 4] is not it", "bbox_2d": [10, 20, 110, 120]}]', QWEN,
     (BOX,), "json", ONE),
    ("nested-lists", "[[[10, 20, 110, 120]], [[1, 2, 3, 4]]]", QWEN, (BOX, (1.0, 2.0, 3.0, 4.0)), "json",
     counts(2, 2)),
    ("other-known-key", '{"bbox": [10, 20, 110, 120]}', QWEN, (BOX,), "json", ONE),
    ("five-numbers", "[10, 20, 110, 120, 130]", QWEN, (), "none", NONE),
    ("numbers-as-strings", '{"bbox_2d": ["10", "20", "110", "120"]}', QWEN, (), "none", NONE),
    ("NaN", "[NaN, 20, 110, 120]", QWEN, (), "none", NONE),
    ("booleans", "[true, 20, 110, 120]", QWEN, (), "none", NONE),
    ("huge-integer", "[1" + "0" * 400 + ", 20, 110, 120]", QWEN, (), "json", counts(1, 0, out_of_range=1)),
    ("integer-beyond-the-int-limit", "[1" + "0" * 5000 + ", 20, 110, 120]", QWEN, (), "regex",
     counts(1, 0, out_of_range=1)),
    ("infinite-float", "[1e400, 20, 110, 120]", QWEN, (), "json", counts(1, 0, out_of_range=1)),
    ("gemma-y-first", '[{"box_2d": [100, 200, 300, 400], "label": "mass"}]', GEMMA_BOXES,
     ((200.0, 100.0, 400.0, 300.0),), "json", ONE),
    ("gemma-fence", '```json\n[{"box_2d": [0, 0, 1000, 1000]}]\n```', GEMMA_BOXES,
     ((0.0, 0.0, 1000.0, 1000.0),), "json", ONE),
    ("gemma-inverted-y", '[{"box_2d": [300, 200, 100, 400]}]', GEMMA_BOXES, (), "json", counts(1, 0, inverted=1)),
    ("gemma-x-out-of-range", '[{"box_2d": [100, 200, 300, 1001]}]', GEMMA_BOXES, (), "json",
     counts(1, 0, out_of_range=1)),
    ("gemma-zero-area", '[{"box_2d": [100, 200, 100, 400]}]', GEMMA_BOXES, (), "json", counts(1, 0, degenerate=1)),
    ("gemma-python-dict-keeps-the-order", "[{'box_2d': [100, 200, 300, 400]}]", GEMMA_BOXES,
     ((200.0, 100.0, 400.0, 300.0),), "json", ONE),
    ("gemma-regex-keeps-the-order", "[0100, 200, 300, 400]", GEMMA_BOXES, ((200.0, 100.0, 400.0, 300.0),), "regex",
     ONE),
    ("gemma-reads-a-foreign-key-in-its-own-order", '{"bbox_2d": [100, 200, 300, 400]}', GEMMA_BOXES,
     ((200.0, 100.0, 400.0, 300.0),), "json", ONE),
    ("gemma-unicode-digits", '[{"box_2d": [\u0661\u0660\u0660, 200, 300, 400]}]', GEMMA_BOXES, (), "none", NONE),
]


@pytest.mark.parametrize(("text", "convention", "boxes", "source", "expected"),
                         [pytest.param(*row[1:], id=row[0]) for row in PARSER_TABLE])
def test_parser_table(text, convention, boxes, source, expected):
    PWNED.unlink(missing_ok=True)
    parsed = parse_boxes(text, convention)
    assert parsed.boxes == boxes
    assert parsed.source == source
    assert parsed.counts == expected
    assert not PWNED.exists(), "model text was executed"


def many_boxes(count: int, json_form: bool = True) -> str:
    """``count`` boxes ``(i % 100, 1, i % 100 + 5, 9)``: one JSON list, or bare lists with leading
    zeros (``[007, 1, 012, 9]``: not JSON, so every decoding attempt fails and the regex reads them)."""
    if json_form:
        return json.dumps([{"bbox_2d": [i % 100, 1, i % 100 + 5, 9]} for i in range(count)])
    return " ".join(f"[{i % 100:03d}, 1, {i % 100 + 5:03d}, 9]" for i in range(count))


def cpu_seconds(call):
    """(result, CPU seconds of this process): a cost bound that a busy shared machine cannot break."""
    start = time.process_time()
    out = call()
    return out, time.process_time() - start


@pytest.mark.parametrize("json_form", [True, False], ids=["json", "bare-lists-with-leading-zeros"])
def test_ten_thousand_boxes_are_capped_counted_and_fast(json_form):
    text = many_boxes(10_000, json_form)
    parsed, seconds = cpu_seconds(lambda: parse_boxes(text, QWEN, max_boxes=64))
    assert seconds < 2.0
    assert parsed.boxes == tuple((float(i), 1.0, i + 5.0, 9.0) for i in range(64))
    assert parsed.counts == counts(10_000, 64, capped=10_000 - 64, scan_stopped=0 if json_form else 1)
    assert parsed.source == ("json" if json_form else "regex")


@pytest.mark.parametrize("text", [
    "[" * 200_000, "{" * 200_000, "[{" * 100_000, "[1," * 100_000, '["' * 100_000, '{"a":' * 100_000,
    "```" * 100_000, "```json\n" + "[" * 200_000, "[0," * 100_000,
], ids=["brackets", "braces", "mixed", "open-lists", "strings", "objects", "fences", "fenced-brackets", "zeros"])
def test_adversarial_nesting_is_read_in_bounded_time(text):
    parsed, seconds = cpu_seconds(lambda: parse_boxes(text, QWEN))
    assert seconds < 1.0
    assert parsed.boxes == () and parsed.counts["stated"] == 0


def test_the_scan_bound_is_counted_and_boxes_after_it_are_still_read_as_bare_lists():
    parsed = parse_boxes("[" * 200_000 + " [10, 20, 110, 120]", QWEN)
    assert parsed.counts["scan_stopped"] == 1
    assert parsed.boxes == (BOX,) and parsed.source == "regex"
    assert parse_boxes('[{"bbox_2d": [10, 20, 110, 120]}]', QWEN).counts["scan_stopped"] == 0


JSONISH = st.text(alphabet='[]{},:0123456789" -.', max_size=300)
TOKENS = st.lists(st.sampled_from(['[', ']', '{', '}', ',', ':', '"bbox_2d"', '"box_2d"', '"label"', '-', '.', ' ',
                                   '0', '1', '5', '12', '224', '448', '999', '1000', "```json\n", "```"]), max_size=80)


def _check_parse(text: str, convention: BoxConvention, max_boxes: int) -> None:
    parsed = parse_boxes(text, convention, max_boxes=max_boxes)
    width, height = convention.frame
    assert len(parsed.boxes) == parsed.counts["kept"] <= max_boxes
    assert parsed.counts["stated"] == parsed.counts["kept"] + sum(parsed.counts[k] for k in DROPS)
    for x1, y1, x2, y2 in parsed.boxes:
        assert 0 <= x1 < x2 <= width and 0 <= y1 < y2 <= height


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(text=st.one_of(st.text(max_size=300), JSONISH, TOKENS.map("".join)),
       gemma=st.booleans(), max_boxes=st.integers(1, 5))
def test_random_text_never_raises_and_every_box_is_inside_the_frame(text, gemma, max_boxes):
    _check_parse(text, GEMMA_BOXES if gemma else QWEN, max_boxes)


# ----------------------------------------------------------------------------- the methods


def script(monkeypatch, adapter, *texts: str, truncated: bool = False) -> list[tuple[str, int]]:
    """Make ``adapter.generate`` answer ``texts`` in turn, the last one from then on (counted like a
    real generation); returns the (prompt, max_new_tokens) of its calls."""
    calls: list[tuple[str, int]] = []

    def generate(image, prompt, *, max_new_tokens=256):
        text = texts[min(len(calls), len(texts) - 1)]
        calls.append((prompt, max_new_tokens))
        adapter.counter.generate_calls += 1
        return Generation(text=text, token_ids=(1,) * min(len(text), max_new_tokens), logprobs=(), truncated=truncated)

    monkeypatch.setattr(adapter, "generate", generate)
    return calls


def assert_boxes(actual, expected) -> None:
    """Boxes equal to 1e-9 pixels, in order."""
    assert len(actual) == len(expected), (actual, expected)
    np.testing.assert_allclose(np.asarray(actual, dtype=float).reshape(-1, 4),
                               np.asarray(expected, dtype=float).reshape(-1, 4), rtol=0, atol=1e-9)


WIDE = np.random.default_rng(0).integers(0, 256, (180, 300), dtype=np.uint8)  # 300 wide x 180 high
SQUARE = np.random.default_rng(1).integers(0, 256, (224, 224), dtype=np.uint8)


@pytest.fixture(scope="module")
def qwen_448(tiny_model_dir):
    """Tiny Qwen with working side 448 and its input bounded to 224 x 224: model frame != working frame."""
    options = LoadOptions(dtype="float32", device="cpu", working_size=448, max_pixels=224 * 224)
    return load_tiny_adapter(tiny_model_dir("qwen2_5_vl"), options)


def test_qwen_box_in_its_resized_input_lands_on_the_input_pixels(monkeypatch, qwen_448):
    assert qwen_448.box_convention.frame == (224.0, 224.0)  # the model's own input, not the 448 working frame
    calls = script(monkeypatch, qwen_448, 'Here: [{"bbox_2d": [56, 112, 168, 168], "label": "nodule"}]')
    result = attribute(qwen_448, WIDE, Q, method="prompting", answer="Yes")
    # model -> working: x 2 (224 -> 448). Working 448: content 448 x round(180 * 448 / 300) = 269 rows,
    # offset_y = (448 - 269) // 2 = 89. Working -> input: x * 300 / 448, (y - 89) * 180 / 269.
    expected = (112 * 300 / 448, (224 - 89) * 180 / 269, 336 * 300 / 448, (336 - 89) * 180 / 269)
    assert_boxes(result.boxes, [expected])
    assert expected[0] == 75 and expected[2] == 225
    assert calls == [(evidence_prompt(Q, "Yes", qwen_448.box_convention), 128)]


def test_gemma_box_in_0_1000_y_first_lands_on_the_input_pixels(monkeypatch, tiny_gemma_adapter):
    script(monkeypatch, tiny_gemma_adapter, '```json\n[{"box_2d": [500, 250, 750, 750]}]\n```')
    result = attribute(tiny_gemma_adapter, WIDE, Q, method="prompting", answer="Yes")
    # y-first -> x-first (250, 500, 750, 750); x 224 / 1000 -> working (56, 112, 168, 168). Working 224:
    # content 224 x 134 rows, offset_y 45. Working -> input: x * 300 / 224, (y - 45) * 180 / 134.
    expected = (56 * 300 / 224, (112 - 45) * 180 / 134, 168 * 300 / 224, (168 - 45) * 180 / 134)
    assert_boxes(result.boxes, [expected])
    assert expected[:3] == pytest.approx((75.0, 90.0, 225.0))
    assert result.meta.info["convention"] == {"key": "box_2d", "order": "yxyx", "frame": [1000.0, 1000.0]}


def test_boxes_in_the_padding_are_dropped_and_the_fallback_never_covers_it(monkeypatch, tiny_gemma_adapter):
    # Working 224 for a 300 x 180 image: padding rows 0-44 and 179-223. 0-1000 y: 45 px = 200.89.
    script(monkeypatch, tiny_gemma_adapter, '[{"box_2d": [0, 0, 200, 1000]}, {"box_2d": [800, 0, 1000, 1000]}]')
    result = attribute(tiny_gemma_adapter, WIDE, Q, method="prompting", answer="Yes")
    info = result.meta.info
    assert info["counts"]["in_padding"] == 2 and info["counts"]["kept"] == 0
    assert info["fallback"] == "whole_image" and info["fallback_reason"] == "all stated boxes dropped"
    assert result.boxes == ((0.0, 0.0, 300.0, 180.0),)


def test_a_box_partly_in_the_padding_is_kept_and_clipped_to_the_image(monkeypatch, tiny_gemma_adapter):
    script(monkeypatch, tiny_gemma_adapter, '[{"box_2d": [0, 0, 500, 1000]}]')  # working rows 0-112
    result = attribute(tiny_gemma_adapter, WIDE, Q, method="prompting", answer="Yes")
    assert result.meta.info["counts"]["partly_in_padding"] == 1
    assert_boxes(result.boxes, [(0.0, 0.0, 300.0, (112 - 45) * 180 / 134)])


def test_exact_boxes_and_one_generation_on_both_families(monkeypatch, tiny_qwen_adapter, tiny_gemma_adapter):
    for adapter, text in ((tiny_qwen_adapter, '[{"bbox_2d": [10, 20, 110, 120]}, {"bbox_2d": [30, 40, 50, 60]}]'),
                          (tiny_gemma_adapter, '[{"box_2d": [100, 50, 500, 450]}]')):
        calls = script(monkeypatch, adapter, text)
        result = attribute(adapter, SQUARE, Q, method="prompting", answer="No", max_new_tokens=40)
        expected = (((10.0, 20.0, 110.0, 120.0), (30.0, 40.0, 50.0, 60.0)) if adapter is tiny_qwen_adapter
                    else ((50 * 0.224, 100 * 0.224, 450 * 0.224, 500 * 0.224),))
        assert_boxes(result.boxes, expected)
        assert result.heatmap is None and result.answer == "No"
        assert result.meta.passes == {"forward_calls": 0, "forward_sequences": 0, "backward_calls": 0,
                                      "backward_sequences": 0, "generate_calls": 1}
        assert calls == [(evidence_prompt(Q, "No", adapter.box_convention), 40)]
        assert result.meta.info["fallback"] is None and result.meta.info["generated_text"] == text


def test_without_a_given_answer_the_answer_and_the_boxes_are_two_generations(monkeypatch, tiny_qwen_adapter):
    calls = script(monkeypatch, tiny_qwen_adapter, "Yes.", '{"bbox_2d": [10, 20, 110, 120]}')
    result = attribute(tiny_qwen_adapter, SQUARE, Q, method="prompting")
    assert result.answer == "Yes." and result.boxes == ((10.0, 20.0, 110.0, 120.0),)
    assert result.meta.passes["generate_calls"] == 2 and len(calls) == 2
    assert calls[1] == (evidence_prompt(Q, "Yes.", tiny_qwen_adapter.box_convention), 128)


FALLBACKS = [
    ("empty", "", False, "empty generation", NONE),
    ("cut-mid-json", '[{"bbox_2d": [10, 20, 1', True, "generation hit the token limit", NONE),
    ("zero-area-only", '[{"bbox_2d": [10, 20, 10, 120]}, {"bbox_2d": [5, 5, 9, 5]}]', False,
     "all stated boxes dropped", counts(2, 0, degenerate=2)),
    ("unicode-digits", "[\uff11\uff10, 20, 110, 120]", False, "no box found", NONE),
    ("empty-list", "[]", False, "no box found", NONE),
    ("prose", "The nodule is in the right upper lobe.", False, "no box found", NONE),
    ("eval-bait", f"__import__('os').system('touch {PWNED}')", False, "no box found", NONE),
]


@pytest.mark.parametrize(("text", "truncated", "reason", "expected"),
                         [pytest.param(*row[1:], id=row[0]) for row in FALLBACKS])
def test_nothing_valid_gives_the_whole_image_flagged(monkeypatch, tiny_qwen_adapter, text, truncated, reason,
                                                     expected):
    PWNED.unlink(missing_ok=True)
    script(monkeypatch, tiny_qwen_adapter, text, truncated=truncated)
    result = attribute(tiny_qwen_adapter, WIDE, Q, method="prompting", answer="Yes")
    info = result.meta.info
    assert result.boxes == ((0.0, 0.0, 300.0, 180.0),)  # the content: the padding rows are never in it
    assert info["fallback"] == "whole_image" and info["fallback_reason"] == reason
    assert info["truncated"] is truncated
    assert {k: info["counts"][k] for k in expected} == expected
    assert not PWNED.exists()


def test_ten_thousand_boxes_through_the_method_are_capped_and_the_text_is_cut(monkeypatch, tiny_qwen_adapter):
    text = many_boxes(10_000)
    script(monkeypatch, tiny_qwen_adapter, text)
    result = attribute(tiny_qwen_adapter, SQUARE, Q, method="prompting", answer="Yes", max_boxes=5)
    info = result.meta.info
    assert result.boxes == tuple((float(i), 1.0, i + 5.0, 9.0) for i in range(5))
    assert info["counts"]["stated"] == 10_000 and info["counts"]["capped"] == 9_995
    assert info["generated_text"] == text[:2000] and info["generated_text_cut"] is True
    assert info["generated_text_chars"] == len(text)


def test_generation_flags_a_hit_token_limit(monkeypatch, tiny_qwen_adapter):
    adapter = tiny_qwen_adapter
    stop, word = adapter.stop_ids[0], adapter.tokenizer.encode("lung", add_special_tokens=False)[0]
    vocab = adapter.model.get_output_embeddings().weight.shape[0]

    def scripted(new):
        def generate(**kwargs):
            prompt = kwargs["input_ids"]
            return SimpleNamespace(sequences=torch.cat([prompt, torch.tensor([new])], dim=1),
                                   logits=[torch.zeros(1, vocab)] * len(new))
        return generate

    image = SQUARE.astype(np.float32) / 255
    for new, truncated in (([word] * 3, True), ([word, stop, word], False), ([word, word, stop], False),
                           ([word, stop], False)):
        monkeypatch.setattr(adapter.model, "generate", scripted(new))
        generation = adapter.generate(image, Q, max_new_tokens=3)
        assert generation.truncated is truncated, new
        assert len(generation.token_ids) == (new.index(stop) if stop in new else 3)


def test_prompting_refined_without_weights_returns_the_raw_boxes_and_says_so(monkeypatch, tiny_qwen_adapter):
    script(monkeypatch, tiny_qwen_adapter, '[{"bbox_2d": [10, 20, 110, 120]}]')
    raw = attribute(tiny_qwen_adapter, SQUARE, Q, method="prompting", answer="Yes")
    refined = attribute(tiny_qwen_adapter, SQUARE, Q, method="prompting_refined", answer="Yes")
    assert refined.boxes == raw.boxes == ((10.0, 20.0, 110.0, 120.0),)
    assert refined.meta.info["refinement"] == "none: no segmentation weights (raw boxes)"
    assert refined.meta.passes["generate_calls"] == 1


def test_prompting_refined_segments_every_box_in_one_call(monkeypatch, tiny_gemma_adapter, tiny_sam_dir,
                                                          segment_spy):
    text = '[{"box_2d": [100, 50, 500, 450]}, {"box_2d": [600, 600, 900, 950]}, {"box_2d": [0, 0, 250, 250]}]'
    script(monkeypatch, tiny_gemma_adapter, text)
    result = attribute(tiny_gemma_adapter, SQUARE, Q, method="prompting_refined", answer="Yes",
                       sam=str(tiny_sam_dir))
    assert len(segment_spy.calls) == 1 and segment_spy.forwards == 1
    prompts, seg = segment_spy.calls[0]
    stated = ((50, 100, 450, 500), (600, 600, 950, 900), (0, 0, 250, 250))  # x first, 0-1000
    assert_boxes(prompts, [tuple(v * 0.224 for v in box) for box in stated])
    expected = [mask_box(m) if m.any() else tuple(p) for m, p in zip(seg.masks, prompts)]
    assert_boxes(result.boxes, expected)  # a 224 x 224 image: the input frame is the working frame
    info = result.meta.info
    assert info["refinement"] == f"sam: {load_segmenter(tiny_sam_dir).source}"
    assert info["refinement_iou"] == pytest.approx(seg.iou.tolist())
    assert info["refinement_kept_raw"] == [i for i, m in enumerate(seg.masks) if not m.any()]
    assert info["refined_fallback"] is False and result.meta.passes["generate_calls"] == 1


def test_prompting_refined_refines_the_fallback_box_and_records_it(monkeypatch, tiny_qwen_adapter, tiny_sam_dir,
                                                                   segment_spy):
    script(monkeypatch, tiny_qwen_adapter, "")
    result = attribute(tiny_qwen_adapter, WIDE, Q, method="prompting_refined", answer="Yes", sam=str(tiny_sam_dir))
    prompts, _ = segment_spy.calls[0]
    assert len(segment_spy.calls) == 1 and prompts == [(0.0, 45.0, 224.0, 179.0)]  # the content, working frame
    assert result.meta.info["fallback"] == "whole_image" and result.meta.info["refined_fallback"] is True


@pytest.mark.parametrize(("sam", "error"), [(123, MethodParameterError), ("/no/such/sam", MethodParameterError)])
def test_a_bad_sam_is_refused_before_any_generation(monkeypatch, tiny_qwen_adapter, sam, error):
    calls = script(monkeypatch, tiny_qwen_adapter, "[]")
    with pytest.raises(error, match="sam"):
        attribute(tiny_qwen_adapter, SQUARE, Q, method="prompting_refined", answer="Yes", sam=sam)
    assert calls == []


class _NoBoxes(Scorer):
    """A scorer that cannot say how it writes boxes (no GroundingSurface)."""

    family = "stub"

    def encode(self, images, query):
        raise AssertionError("never reached")

    score = generate = encode


def test_a_model_without_a_box_convention_is_refused():
    with pytest.raises(ModelCapabilityError, match="box_convention"):
        attribute(_NoBoxes("stub"), SQUARE, Q, method="prompting", answer="Yes")


@pytest.mark.parametrize("params", [{"max_new_tokens": 0}, {"max_boxes": 0}, {"max_new_tokens": 2.5}])
def test_bad_parameters_are_refused_by_name(tiny_qwen_adapter, params):
    with pytest.raises(MethodParameterError, match=next(iter(params))):
        attribute(tiny_qwen_adapter, SQUARE, Q, method="prompting", answer="Yes", **params)


# ----------------------------------------------------------------------------- model text is never code

PACKAGES = ("cxr_attrib", "cxr_attrib_plugins", "cxr_attrib_adapters", "cxr_attrib_phantom")
FORBIDDEN = {"eval", "exec", "compile"}


def code_runners(source: str) -> list[str]:
    """Calls in ``source`` that run text as code: ``eval``/``exec``/``compile``, via builtins too, and
    ``literal_eval`` (safe, but model text is read by the JSON parser only)."""
    found = []
    for node in ast.walk(ast.parse(source)):
        if not isinstance(node, ast.Call):
            continue
        func = node.func
        if isinstance(func, ast.Name) and (func.id in FORBIDDEN or func.id == "literal_eval"):
            found.append(f"{func.id}() at line {node.lineno}")
        elif isinstance(func, ast.Attribute):
            on_builtins = isinstance(func.value, ast.Name) and func.value.id in ("builtins", "__builtins__")
            if func.attr == "literal_eval" or (on_builtins and func.attr in FORBIDDEN):
                found.append(f"{ast.unparse(func)}() at line {node.lineno}")
        if isinstance(func, ast.Name) and func.id == "getattr" and len(node.args) >= 2:
            name = node.args[1]
            if isinstance(name, ast.Constant) and name.value in FORBIDDEN | {"literal_eval"}:
                found.append(f"getattr(..., {name.value!r}) at line {node.lineno}")
    return found


def test_the_code_runner_check_finds_what_it_must_and_nothing_else():
    bad = "eval(text)\nexec(text)\nbuiltins.eval(t)\nast.literal_eval(t)\ngetattr(builtins, 'exec')(t)\ncompile(t, 'f', 'exec')"
    assert len(code_runners(bad)) == 6
    assert code_runners("model.eval()\nre.compile('x')\ntorch.compile(m)\nx.exec_module(m)") == []


@pytest.mark.parametrize("package", PACKAGES)
def test_no_package_runs_text_as_code(package):
    roots = [Path(p) for p in importlib.import_module(package).__path__]
    files = sorted(f for root in roots for f in root.rglob("*.py"))
    assert files, f"no sources found for {package}"
    offenders = {str(f): hits for f in files if (hits := code_runners(f.read_text(encoding="utf-8")))}
    assert not offenders, offenders
