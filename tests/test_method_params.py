"""Every parameter of every registered method is declared, so a bad value is refused before any model loads."""

from __future__ import annotations

import math

import pytest
from click.testing import CliRunner

from cxr_attrib.errors import MethodParameterError
from cxr_attrib.method import MEMORY_BUDGET_ENV, Param
from cxr_attrib.registry import methods

REGISTERED = sorted(methods().items())
DECLARED = [(name, key, spec) for name, cls in REGISTERED for key, spec in cls.param_types.items()]


class _Junk:
    """A value no parameter accepts."""


@pytest.mark.parametrize("name, cls", REGISTERED, ids=[n for n, _ in REGISTERED])
def test_every_parameter_of_every_registered_method_is_declared(name, cls):
    assert set(cls.param_types) == set(cls.defaults), (
        f"method {name!r}: declare every parameter in param_types (undeclared: "
        f"{sorted(set(cls.defaults) - set(cls.param_types))})")
    assert cls.check_params({}).keys() == cls.defaults.keys()  # the defaults pass their own declaration


@pytest.mark.parametrize("name, key, spec", DECLARED, ids=[f"{n}.{k}" for n, k, _ in DECLARED])
def test_a_wrong_type_is_a_type_error_naming_the_parameter(name, key, spec):
    cls = methods()[name]
    with pytest.raises(TypeError, match=rf"method {name!r} parameter {key!r} = <.*_Junk object"):
        cls.check_params({key: _Junk()})


NUMERIC = [(n, k, s) for n, k, s in DECLARED if not s.path and s.choices is None and set(s._kinds()) & {int, float}]


@pytest.mark.parametrize("name, key, spec", NUMERIC, ids=[f"{n}.{k}" for n, k, _ in NUMERIC])
@pytest.mark.parametrize("bad", [math.nan, math.inf, -math.inf])
def test_nan_and_infinity_are_refused_by_name(name, key, spec, bad):
    with pytest.raises(MethodParameterError, match=rf"parameter {key!r} = {bad!r} is not a finite number"):
        methods()[name].check_params({key: bad})


MEMORY = [(n, k, s) for n, k, s in DECLARED if s.memory is not None]


def test_memory_scaled_parameters_have_a_derived_bound():
    assert {f"{n}.{k}" for n, k, _ in MEMORY} >= {"rise.n_masks", "rise.batch_size", "integrated_gradients.steps",
                                                   "integrated_gradients.internal_batch_size", "occlusion.batch_size",
                                                   "medfocus.batch_size"}


@pytest.mark.parametrize("name, key, spec", MEMORY, ids=[f"{n}.{k}" for n, k, _ in MEMORY])
def test_memory_bound_follows_the_budget(name, key, spec, monkeypatch):
    cls = methods()[name]
    monkeypatch.setenv(MEMORY_BUDGET_ENV, "1")  # 1 GiB
    bound = spec.upper(224)
    assert bound == int(2**30 // (spec.memory * 224 * 224))
    assert cls.check_params({key: bound})[key] == bound
    with pytest.raises(MethodParameterError, match=rf"{key!r} = {bound + 1} is invalid.*within 1 GiB"):
        cls.check_params({key: bound + 1})
    monkeypatch.setenv(MEMORY_BUDGET_ENV, "2")
    assert cls.check_params({key: bound + 1})[key] == bound + 1


def test_rise_n_masks_bound_is_the_masks_memory(monkeypatch):
    monkeypatch.delenv(MEMORY_BUDGET_ENV, raising=False)
    # 8 GiB / (8 bytes per pixel per mask * 224 * 224) = 21,399 masks; at S = 448 a quarter of it
    assert methods()["rise"].param_types["n_masks"].upper(224) == 21_399
    assert methods()["rise"].param_types["n_masks"].upper(448) == 5_349
    with pytest.raises(MethodParameterError, match="n_masks' = 100000 is invalid"):
        methods()["rise"].check_params({"n_masks": 100_000}, size=224)


def test_long_values_and_names_are_abbreviated():
    with pytest.raises(MethodParameterError) as info:
        methods()["occlusion"].check_params({"fill": "z" * 10_000})
    assert "(10002 characters)" in str(info.value) and len(str(info.value)) < 400
    with pytest.raises(MethodParameterError) as info:
        methods()["occlusion"].check_params({"q" * 10_000: 1})
    assert "(10002 characters)" in str(info.value) and len(str(info.value)) < 400


def test_paths_must_exist_and_hold_no_null_byte(tmp_path):
    spec = Param(str, path=True, optional=True)
    assert spec.check("m", "sam", None) is None and spec.check("m", "sam", tmp_path) == str(tmp_path)
    with pytest.raises(MethodParameterError, match="does not exist"):
        spec.check("m", "sam", tmp_path / "absent")
    with pytest.raises(MethodParameterError, match="is not a usable path"):
        spec.check("m", "sam", "a\x00b")


def test_attribute_refuses_a_bad_parameter_before_loading_the_model(monkeypatch):
    import numpy as np

    import cxr_attrib.api as api

    monkeypatch.setattr(api, "load_adapter", lambda *a, **k: pytest.fail("the model was loaded"))
    with pytest.raises(MethodParameterError, match="'steps' = nan is not a finite number"):
        api.attribute("phantom-qwen", np.zeros((8, 8), np.uint8), "Is there evidence of nodule in the image?",
                      method="integrated_gradients", steps=math.nan)


def test_leaderboard_refuses_a_bad_parameter_before_any_unit_runs(tmp_path):
    from cxr_attrib.cli import cli

    result = CliRunner().invoke(cli, ["leaderboard", "-b", "phantom", "-m", "phantom-gemma", "--methods", "rise",
                                      "-p", "rise.n_masks=1000000000", "--out", str(tmp_path / "out")])
    assert result.exit_code == 1 and "'n_masks' = 1000000000 is invalid" in result.output
    assert not (tmp_path / "out").exists()  # no store of failed units from a typo
