"""anatomy_prior: the finding table, the parser and the transferred boxes in the input frame."""

from __future__ import annotations

import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from cxr_attrib import hookimpl
from cxr_attrib.api import attribute
from cxr_attrib.errors import MethodParameterError
from cxr_attrib.pools import COMPOSITES, CONCEPTS, ConceptPool, PoolReference, mask_box
from cxr_attrib.scoring.localisation import region_metrics
from cxr_attrib.targets import finding_question
from cxr_attrib_phantom import make_case
from cxr_attrib_plugins.priors import FINDING_CONCEPTS, AnatomyPrior, parse_finding

CROP = np.s_[:, 30:200]  # a (224, 170) input image


@pytest.fixture
def case_pool(registered_plugin):
    """A registered pool whose one reference is the cropped case image itself."""

    def register(case) -> None:
        pool = ConceptPool.from_references(
            "case_pool", [PoolReference("case", case.image[CROP], {c: case.masks[c][CROP] for c in CONCEPTS})])

        class CasePool:
            __name__ = "CasePool"

            @staticmethod
            @hookimpl
            def register_pools(register):
                register(pool)

        registered_plugin(CasePool)

    return register


def _iou(a, b) -> float:
    return region_metrics(np.array([a], float), np.array([b], float)).iou


def test_table_names_only_known_concepts():
    assert set(FINDING_CONCEPTS.values()) <= set(CONCEPTS) | set(COMPOSITES)
    assert FINDING_CONCEPTS["pleural effusion"] == "bilateral_costophrenic"
    assert FINDING_CONCEPTS["cardiomegaly"] == "cardiac_silhouette"
    assert {FINDING_CONCEPTS[f] for f in ("nodule", "mass", "consolidation", "pneumothorax")} == {"bilateral_lungs"}


@given(st.sampled_from(sorted(FINDING_CONCEPTS)), st.booleans())
def test_every_finding_of_the_table_parses_back_from_its_question(finding, upper):
    question = finding_question(finding.upper() if upper else finding)
    assert parse_finding(question) == finding


@pytest.mark.parametrize(
    "question, expected",
    [("Is there evidence of pleural effusion in the image?", "pleural effusion"),
     ("Are there bilateral effusions?", "effusion"),
     ("Any masses or nodules?", "mass"),
     ("Is the massive heart a sign of cardiomegaly?", "cardiomegaly"),
     ("Is the patient rotated?", None)],
)
def test_parse_finding_takes_the_first_whole_word_mention(question, expected):
    assert parse_finding(question) == expected


def test_cardiomegaly_box_lands_on_the_heart_of_a_non_square_input(case_pool):
    case = make_case(12, "cardiomegaly")
    case_pool(case)
    result = attribute("no-model", case.image[CROP], finding_question("cardiomegaly"), method="anatomy_prior",
                       answer="Yes", pool="case_pool", transfer="warp")
    heart = mask_box(case.masks["cardiac_silhouette"][CROP])
    assert len(result.boxes) == 1 and _iou(result.boxes[0], heart) >= 0.9
    assert result.meta.info["concept"] == "cardiac_silhouette" and result.meta.info["fallback"] is None
    assert result.meta.passes == {}  # the model is never called
    assert result.heatmap.shape == (224, 170)


def test_effusion_gives_both_costophrenic_boxes(case_pool):
    case = make_case(12, "pleural_effusion")
    case_pool(case)
    result = attribute("no-model", case.image[CROP], finding_question("pleural effusion"),
                       method="anatomy_prior", answer="Yes", pool="case_pool", transfer="warp")
    expected = [mask_box(case.masks[c][CROP]) for c in COMPOSITES["bilateral_costophrenic"]]
    assert len(result.boxes) == 2
    assert all(_iou(got, want) >= 0.9 for got, want in zip(result.boxes, expected))


def test_unknown_finding_and_blank_image_fall_back_to_the_whole_image_with_a_record():
    result = attribute("no-model", np.full((40, 60), 90, np.uint8), "Is the patient rotated?",
                       method="anatomy_prior", answer="No")
    assert result.boxes == ((0.0, 0.0, 60.0, 40.0),)
    assert result.meta.info["finding"] is None and result.meta.info["fallback"].startswith("whole_image")
    blank = attribute("no-model", np.zeros((40, 60), np.uint8), finding_question("nodule"),
                      method="anatomy_prior", answer="No")
    assert blank.boxes == ((0.0, 0.0, 60.0, 40.0),) and "no support" in blank.meta.info["fallback"]
    assert np.isfinite(np.asarray(blank.boxes)).all()


def test_bad_quantile_is_refused_before_any_transfer():
    with pytest.raises(MethodParameterError, match=r"'mass_quantile' = 1.2 is invalid; expected a number in \(0, 1\]"):
        attribute("no-model", np.full((40, 60), 90, np.uint8), finding_question("nodule"),
                  method="anatomy_prior", answer="Yes", mass_quantile=1.2)
    assert AnatomyPrior.uses_model is False


def test_anatomy_prior_conforms(tiny_qwen_adapter):
    from cxr_attrib.testing.conformance import check_method

    results = check_method("anatomy_prior", tiny_qwen_adapter, params={"transfer_grid": 28})
    assert all(r.boxes for r in results)
