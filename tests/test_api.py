"""attribute(): frames, parameters, method contract checks, CLI error lines."""

from __future__ import annotations

import numpy as np
import pytest
from click.testing import CliRunner

from cxr_attrib import attribute, hookimpl
from cxr_attrib.cli import cli
from cxr_attrib.errors import MethodContractError, MethodParameterError, UnknownMethodError
from cxr_attrib.method import Method, MethodOutput
from test_imageio import _dicom_bytes, _png_header_only

Q = "Is there evidence of nodule in the image?"


def test_boxes_and_heatmap_come_back_in_the_input_frame():
    image = np.full((300, 600), 120, np.uint8)  # wide: working frame pads top and bottom
    result = attribute("unused", image, Q, method="whole_image", answer="Yes")
    assert result.heatmap.shape == (300, 600)
    assert result.boxes == ((0.0, 0.0, 600.0, 300.0),)
    # the prior is 1 on the content and 0 on the padding; resampling a constant to the
    # input frame may round its weighted mean by an ulp, padding would pull it towards 0
    assert result.heatmap.min() == pytest.approx(1.0, abs=1e-6), "padding rows never leak into the input frame"
    assert result.meta.image_size == (300, 600) and result.meta.working_size == 224


def test_center_box_is_the_central_half_of_each_side():
    result = attribute("unused", np.zeros((400, 200), np.uint8), Q, method="center", answer="No")
    (x1, y1, x2, y2), = result.boxes
    assert (x1, y1, x2, y2) == pytest.approx((50, 100, 150, 300), abs=1.0)
    assert result.peak[0] in (99, 100) and result.peak[1] in (199, 200)


def test_unknown_method_and_parameter_are_refused_before_any_work():
    with pytest.raises(UnknownMethodError, match="Did you mean 'center'"):
        attribute("unused", "no-such-file.png", Q, method="centre", answer="Yes")
    with pytest.raises(MethodParameterError, match=r"no parameter\(s\) 'fractoin'; valid: fraction"):
        attribute("unused", "no-such-file.png", Q, method="center", answer="Yes", fractoin=0.3)


class _Bad(Method):
    summary = "returns something broken"
    reference = "test"
    uses_model = False

    def __init__(self) -> None:
        self.out = None

    def attribute(self, request):
        return self.make(request)


def _bad_method(name: str, make) -> type[Method]:
    return type(f"Bad_{name}", (_Bad,), {"name": name, "make": staticmethod(make)})


@pytest.mark.parametrize(
    "make, message",
    [
        (lambda r: MethodOutput(heatmap=np.full_like(r.image, np.nan)), "NaN"),
        (lambda r: MethodOutput(heatmap=np.zeros((10, 10))), r"shape \(10, 10\); expected \(224, 224\)"),
        (lambda r: MethodOutput(), "no heatmap, grid, boxes or concepts"),
        (lambda r: MethodOutput(boxes=[(5, 5, 1, 1)]), r"x2 >= x1"),
        (lambda r: {"heatmap": r.image}, "returned dict; expected MethodOutput"),
    ],
)
def test_method_output_contract_is_enforced(registered_plugin, make, message):
    bad = _bad_method("bad_stub", make)
    registered_plugin(type("P", (), {"register_methods": staticmethod(hookimpl(lambda register: register(bad)))}))
    with pytest.raises(MethodContractError, match=message) as info:
        attribute("unused", np.zeros((32, 32), np.uint8), Q, method="bad_stub", answer="Yes")
    assert "bad_stub" in str(info.value)


def test_token_grid_is_expanded_to_the_working_frame(registered_plugin):
    grid = np.arange(4, dtype=np.float32).reshape(2, 2)
    gridded = _bad_method("grid_stub", lambda r: MethodOutput(grid=grid))
    registered_plugin(type("P", (), {"register_methods": staticmethod(hookimpl(lambda register: register(gridded)))}))
    result = attribute("unused", np.zeros((50, 50), np.uint8), Q, method="grid_stub", answer="Yes")
    assert result.grid.tolist() == grid.tolist()
    assert result.heatmap[0, 0] == 0 and result.heatmap[0, -1] == 1
    assert result.heatmap[-1, 0] == 2 and result.heatmap[-1, -1] == 3


@pytest.mark.parametrize(
    "name, content, expected",
    [
        ("bad.png", lambda: b"", "empty"),
        ("bad.png", lambda: b"hello, I am a text file\n", "not"),
        ("bad.png", lambda: b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "truncated"),
        ("bad.png", lambda: _png_header_only(50000, 50000), "2500000000"),
        ("bad.dcm", lambda: _dicom_bytes(None, rows=64, columns=64), "pixel data"),
    ],
)
def test_cli_bad_image_is_one_clean_line(tmp_path, name, content, expected):
    path = tmp_path / name
    path.write_bytes(content())
    result = CliRunner().invoke(
        cli, ["attribute", str(path), "-q", Q, "-m", "x", "--method", "center", "--answer", "Yes",
              "--out", str(tmp_path / "o.png")]
    )
    assert result.exit_code == 1
    assert "Traceback" not in result.output
    assert "Error:" in result.output and name in result.output
    assert expected.lower() in result.output.lower()
    assert not (tmp_path / "o.png").exists() and not (tmp_path / "o.json").exists(), "nothing half-written"


def test_cli_unknown_method_suggests(tmp_path):
    result = CliRunner().invoke(cli, ["attribute", "x.png", "-q", Q, "-m", "x", "--method", "ocllusion"])
    assert result.exit_code == 1 and "Did you mean 'occlusion'?" in result.output
