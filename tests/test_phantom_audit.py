"""The phantom localisation audit: peak-region overlap and the filter-then-attribute run."""

from __future__ import annotations

import math

import numpy as np
from hypothesis import given
from hypothesis import strategies as st

from cxr_attrib_phantom import FINDINGS
from cxr_attrib_phantom.audit import filter_and_localise, peak_overlaps


def tile_map(row: int, col: int, tile: int = 28, size: int = 224) -> np.ndarray:
    heatmap = np.zeros((size, size), dtype=np.float32)
    heatmap[row * tile:(row + 1) * tile, col * tile:(col + 1) * tile] = 1.0
    return heatmap


def test_a_box_smaller_than_the_peak_tile_counts_when_they_overlap():
    heatmap = tile_map(1, 0)  # rows 28..55, cols 0..27
    assert peak_overlaps(heatmap, np.array([[20.0, 30.0, 40.0, 40.0]]))  # a 20 px nodule across the edge
    assert peak_overlaps(heatmap, np.array([[5.0, 35.0, 15.0, 45.0]]))  # wholly inside the tile
    assert not peak_overlaps(heatmap, np.array([[28.0, 28.0, 50.0, 50.0]]))  # x1 = 28 is the next tile
    assert not peak_overlaps(heatmap, np.array([[0.0, 0.0, 28.0, 28.0]]))  # y2 = 28 is exclusive
    assert peak_overlaps(heatmap, np.array([[100.0, 100.0, 120.0, 120.0], [0.0, 55.5, 3.0, 60.0]]))
    assert not peak_overlaps(heatmap, np.zeros((0, 4)))


@given(
    peak=st.tuples(st.integers(0, 31), st.integers(0, 31)),
    corner=st.tuples(st.floats(0, 31), st.floats(0, 31)),
    extent=st.tuples(st.floats(0.01, 32), st.floats(0.01, 32)),
)
def test_overlap_is_the_peak_pixel_meeting_the_box(peak, corner, extent):
    heatmap = np.random.default_rng(0).random((32, 32)) * 0.5
    px, py = peak
    heatmap[py, px] = 1.0
    x1, y1 = corner
    x2, y2 = x1 + extent[0], y1 + extent[1]
    # pixel (px, py) is the square [px, px + 1) x [py, py + 1); the box is [x1, x2) x [y1, y2)
    meets = x1 < px + 1 and px < x2 and y1 < py + 1 and py < y2
    assert peak_overlaps(heatmap, np.array([[x1, y1, x2, y2]])) == meets


def test_the_audit_reports_every_finding_and_no_rate_without_retained_samples(tiny_qwen_adapter):
    audit = filter_and_localise(tiny_qwen_adapter, "tiny", n_per_finding=1, max_new_tokens=2)
    assert len(audit.records) == len(FINDINGS) and set(audit.kept) == set(FINDINGS)
    assert audit.retention == np.mean([r.kept for r in audit.records])
    retained = sum(r.kept for r in audit.records)
    assert sum(n for _, n in audit.peak_hits.values()) == audit.peak_counts[1] == retained
    if not retained:  # a random model answers noise: nothing kept, no peak rate
        assert math.isnan(audit.peak_rate)
