"""A result shows itself in a notebook: PNG and HTML reprs (escaped) and a matplotlib axis."""

from __future__ import annotations

import io
import re

import numpy as np
import pytest
from PIL import Image

from cxr_attrib.errors import CxrAttribError
from cxr_attrib.render import BOX_COLOR, TRUTH_COLOR, render_overlay
from cxr_attrib.result import Attribution, Meta, Target

HOSTILE = '<script>alert("x")</script> & <b>'


def _result(**kw) -> Attribution:
    heat = np.zeros((40, 48), np.float32)
    heat[10:20, 12:24] = 1.0
    base = dict(answer=f"Yes {HOSTILE}", target=Target("Yes", "answer", "direct", (9,), ("Yes",)),
                meta=Meta(method="occlusion", model=f"m{HOSTILE}", image_size=(40, 48), wall_time_s=1.25,
                          passes={"forward_calls": 3}, question="Is there evidence of nodule in the image?"),
                heatmap=heat, image=np.full((40, 48), 100, np.uint8), boxes=[(12, 10, 24, 20)])
    base.update(kw)
    return Attribution(**base)


def test_repr_png_is_the_saved_overlay(tmp_path):
    result = _result()
    png = result._repr_png_()
    assert png[:8] == b"\x89PNG\r\n\x1a\n"
    picture = np.asarray(Image.open(io.BytesIO(png)))
    result.save(tmp_path / "o.png")
    np.testing.assert_array_equal(picture, np.asarray(Image.open(tmp_path / "o.png")))  # PNG is lossless
    assert (picture == BOX_COLOR).all(axis=2).any()
    assert _result(image=None, heatmap=None)._repr_png_() is None


def test_repr_html_shows_the_facts_and_escapes_every_text():
    text = _result()._repr_html_()
    assert "<script>" not in text and "<b>" not in text
    assert "&lt;script&gt;alert(&#34;x&#34;)&lt;/script&gt; &amp; &lt;b&gt;" in text  # the answer, as text
    for fact in ("occlusion", "(12, 10, 24, 20)", "forward_calls 3", "1.25 s", "evidence of nodule"):
        assert fact in text, fact
    uri = re.search(r'<img src="data:image/png;base64,([A-Za-z0-9+/=]+)"', text)
    assert uri is not None
    assert "<img" not in _result(image=None, heatmap=None)._repr_html_()


def test_plot_draws_the_overlay_in_input_pixels_with_a_legend():
    from matplotlib.figure import Figure

    result = _result()
    ax = Figure().add_subplot()
    assert result.plot(ax, truth=[[0, 0, 10, 10]]) is ax
    drawn = ax.images[0].get_array()
    expected = np.asarray(render_overlay(result.image, result.heatmap, result.boxes, truth=[[0, 0, 10, 10]]))
    np.testing.assert_array_equal(np.asarray(drawn), expected)
    assert tuple(expected[0, 0]) == TRUTH_COLOR
    assert ax.images[0].get_extent() == [0, 48, 40, 0]
    assert [t.get_text() for t in ax.get_legend().get_texts()] == ["evidence boxes", "ground truth"]
    assert "occlusion" in ax.get_title() and "answer: Yes" in ax.get_title()
    with pytest.raises(CxrAttribError, match="holds no image"):
        _result(image=None, heatmap=None).plot(ax)


def test_ipython_formatters_pick_the_reprs():
    formatter = pytest.importorskip("IPython.core.formatters")
    result = _result()
    png = formatter.PNGFormatter()(result)
    html = formatter.HTMLFormatter()(result)
    assert png == result._repr_png_() and html == result._repr_html_()
    assert "&lt;script&gt;" in html
