"""Attribution: immutability, lossless JSON round trip, overlay, Captum arrays."""

from __future__ import annotations

import json

import numpy as np
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st
from hypothesis.extra import numpy as hnp
from PIL import Image

from cxr_attrib.errors import CxrAttribError
from cxr_attrib.result import Attribution, Concept, Meta, Target, TokenScore

text = st.text(max_size=20)
finite = st.floats(allow_nan=False, allow_infinity=False, width=64)
box = st.tuples(finite, finite, finite, finite)
shapes = st.tuples(st.integers(1, 12), st.integers(1, 12))


@st.composite
def attributions(draw) -> Attribution:
    h, w = draw(shapes)
    heat = draw(st.none() | hnp.arrays(np.float32, (h, w), elements=st.floats(width=32, allow_nan=True)))
    image = draw(st.none() | hnp.arrays(np.uint8, (h, w)))
    grid = draw(st.none() | hnp.arrays(np.float32, draw(shapes), elements=st.floats(-1e6, 1e6, width=32)))
    ids = draw(st.lists(st.integers(0, 300_000), max_size=4))
    tokens = tuple(draw(text) for _ in ids)
    return Attribution(
        answer=draw(text),
        target=Target(draw(text), "answer", "direct", tuple(ids), tokens),
        meta=Meta(
            method=draw(text), model=draw(text),
            params=draw(st.dictionaries(text, st.integers() | text | st.booleans() | finite, max_size=3)),
            seed=draw(st.integers(0, 2**32)), image_size=(h, w), wall_time_s=draw(finite),
            passes={"forward_calls": draw(st.integers(0, 100))}, info={"layer": draw(st.integers(-5, 5))},
        ),
        heatmap=heat,
        grid=grid,
        boxes=draw(st.lists(box, max_size=3)),
        concepts={n: Concept(n, draw(finite), tuple(draw(st.lists(box, max_size=2)))) for n in draw(st.lists(text, max_size=3, unique=True))},
        tokens=tuple(TokenScore(t, i, draw(finite)) for t, i in zip(tokens, ids)),
        image=image,
    )


@settings(max_examples=150, deadline=None)
@given(attributions())
def test_json_round_trip_is_lossless(result):
    again = Attribution.from_json(result.to_json())
    assert again == result
    if result.heatmap is not None:
        assert again.heatmap.dtype == np.float32
        assert again.heatmap.tobytes() == result.heatmap.tobytes(), "bit-exact, NaN payloads included"


def _result(**kw) -> Attribution:
    base = dict(answer="Yes", target=Target("Yes", "answer", "direct", (9,), ("Yes",)),
                meta=Meta(method="m", model="x", image_size=(4, 6)),
                heatmap=np.arange(24, dtype=np.float32).reshape(4, 6), image=np.full((4, 6), 100, np.uint8),
                boxes=[(1, 1, 3, 2)])
    base.update(kw)
    return Attribution(**base)


def test_result_is_immutable():
    result = _result()
    with pytest.raises(ValueError):
        result.heatmap[0, 0] = 5
    with pytest.raises(AttributeError):
        result.answer = "No"  # type: ignore[misc]
    with pytest.raises(TypeError):
        result.meta.params["x"] = 1  # type: ignore[index]


def test_save_and_load_files(tmp_path):
    result = _result()
    result.save(tmp_path / "r.json")
    assert Attribution.load(tmp_path / "r.json") == result
    assert json.loads((tmp_path / "r.json").read_text())["schema_version"] == 1
    result.save(tmp_path / "r.png")
    assert Image.open(tmp_path / "r.png").mode == "RGB"
    with pytest.raises(CxrAttribError, match="exists"):
        result.save(tmp_path / "r.json", overwrite=False)
    with pytest.raises(CxrAttribError, match=r"expected a \.json or \.png"):
        result.save(tmp_path / "r.txt")
    assert not list(tmp_path.glob("*.partial"))


def test_png_needs_the_image():
    with pytest.raises(CxrAttribError, match="holds no image"):
        _result(image=None).render()


def test_heatmap_and_image_must_share_the_input_frame():
    with pytest.raises(CxrAttribError, match="input frame"):
        _result(image=np.zeros((6, 4), np.uint8))


def test_unknown_schema_version_is_refused():
    data = _result().to_dict()
    data["schema_version"] = 99
    with pytest.raises(CxrAttribError, match="schema_version 99"):
        Attribution.from_dict(data)


def test_captum_arrays():
    attr, original = _result().to_captum()
    assert attr.shape == (4, 6, 1) and original.shape == (4, 6, 3)
    assert original.max() == pytest.approx(100 / 255)
    from captum.attr import visualization

    fig, _ = visualization.visualize_image_attr(attr, original, method="blended_heat_map", sign="all",
                                                use_pyplot=False)
    assert fig is not None


def test_peak_is_input_frame_xy():
    assert _result().peak == (5, 3)
