"""score(): ground truth outside the image is refused, partly outside is clipped with a recorded warning."""

from __future__ import annotations

import pytest
from test_score import BOX, SHAPE, _attribution, _indicator

from cxr_attrib.errors import DataError
from cxr_attrib.scoring.score import ScoreWarning, score


def test_a_box_wholly_outside_the_image_is_refused() -> None:
    height, width = SHAPE
    for box in [(width, 0.0, width + 50.0, 40.0), (0.0, -60.0, 40.0, 0.0), (-30.0, -30.0, -1.0, -1.0)]:
        with pytest.raises(DataError, match=r"ground_truth box 1 .* lies wholly outside the 200 x 300"):
            score(_attribution(_indicator()), [BOX, box])


def test_a_box_partly_outside_is_clipped_and_the_clipping_recorded() -> None:
    inside = score(_attribution(_indicator()), [BOX])
    with pytest.warns(ScoreWarning, match=r"box 0 \(50.0, 80.0, 130.0, 400.0\) extends beyond .* scored as "
                                          r"\(50.0, 80.0, 130.0, 300.0\)"):
        clipped = score(_attribution(_indicator()), [(50.0, 80.0, 130.0, 400.0)])
    assert len(clipped.warnings) == 1 and "extends beyond the 200 x 300 input image" in clipped.warnings[0]
    assert not inside.warnings
    # the clipped box is (50, 80, 130, 300): the predicted box (the indicator's) covers 120 of its 220 rows
    assert clipped.iou == pytest.approx(inside.iou * 120 / 220, rel=0.05)
