"""Scoring: localisation against ground-truth boxes, intervention faithfulness,
one-call ``score()`` and aggregation of scores."""

from cxr_attrib.scoring.aggregate import (
    DEFAULT_METRICS,
    GROUP_KEYS,
    MACRO_MODEL,
    AggregateRow,
    MetricSummary,
    aggregate,
    read_json,
    to_csv,
    to_json,
    to_markdown,
    to_rich_table,
)
from cxr_attrib.scoring.faithfulness import (
    Curves,
    RegionDrop,
    deletion_insertion,
    faithfulness,
    probability,
    random_region_drop,
)
from cxr_attrib.scoring.score import Scores, score
from cxr_attrib.scoring.boxes import heatmap_to_boxes, whole_image_box
from cxr_attrib.scoring.localisation import (
    RegionMetrics,
    as_boxes,
    energy,
    inclusive_to_exclusive,
    intersection_area,
    pointing_game,
    region_metrics,
    union_area,
)

__all__ = [
    "DEFAULT_METRICS",
    "GROUP_KEYS",
    "MACRO_MODEL",
    "AggregateRow",
    "Curves",
    "RegionDrop",
    "Scores",
    "deletion_insertion",
    "faithfulness",
    "probability",
    "random_region_drop",
    "score",
    "MetricSummary",
    "RegionMetrics",
    "aggregate",
    "as_boxes",
    "energy",
    "heatmap_to_boxes",
    "inclusive_to_exclusive",
    "intersection_area",
    "pointing_game",
    "read_json",
    "region_metrics",
    "to_csv",
    "to_json",
    "to_markdown",
    "to_rich_table",
    "union_area",
    "whole_image_box",
]
