"""Bad input gets a clear error: one line that names the thing, the value and the fix.

Each case pins the exact behaviour: the Python API raises a
:class:`~cxr_attrib.errors.CxrAttribError` subclass before any model work, and the
CLI prints one ``Error:`` line and exits 1 (``--debug`` shows the traceback).
"""

from __future__ import annotations

import importlib.metadata
import json
import shutil
import socket
import time
from pathlib import Path

import numpy as np
import pytest
from click.testing import CliRunner
from hypothesis import given
from hypothesis import strategies as st
from PIL import Image

from cxr_attrib import hookimpl, registry
from cxr_attrib.adapter import LoadOptions
from cxr_attrib.api import attribute
from cxr_attrib.benchmarks.medground import load_split
from cxr_attrib.cli import cli
from cxr_attrib.errors import (
    CxrAttribError,
    DataError,
    ImageLoadError,
    InputError,
    LoadOptionsError,
    MethodContractError,
    MethodFailedError,
    MethodParameterError,
    ModelLoadError,
    PluginSelectionError,
)
from cxr_attrib.imageio import load_image
from cxr_attrib.method import Method, MethodOutput, Param
from cxr_attrib.models import load_adapter
from cxr_attrib.result import Attribution
from cxr_attrib.targets import TargetError
from cxr_attrib.testing import check_method

QUESTION = "Is there evidence of nodule in the image?"
IMAGE = np.full((40, 30), 128, dtype=np.uint8)
UNLOADABLE = "nobody-anywhere/never-loaded"  # loading it would fail: proves checks run first
VERSION = importlib.metadata.version("cxr-attrib")


def _plugin_of(method: type[Method]) -> type:
    return type(f"Plugin_{method.name}", (), {
        "register_methods": staticmethod(hookimpl(specname="register_methods")(lambda register: register(method))),
    })


def _method(name: str, output: MethodOutput | None = None, *, error: Exception | None = None,
            uses_model: bool = True) -> type[Method]:
    def run(self, request):
        if error is not None:
            raise error
        return output

    return type(name, (Method,), {"name": name, "summary": "stub", "reference": "test", "uses_model": uses_model,
                                  "attribute": run})


def _cli(*args: str, **env: str):
    result = CliRunner().invoke(cli, list(args), env=env or None)
    return result


def _one_error_line(result) -> str:
    assert result.exit_code == 1, result.output
    lines = [line for line in result.stderr.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: "), result.stderr
    assert "Traceback" not in result.output
    return lines[0]


@pytest.fixture
def image_file(tmp_path: Path) -> Path:
    path = tmp_path / "cxr.png"
    Image.fromarray(IMAGE).save(path)
    return path


# -- a method that raises -------------------------------------------------------------


def test_method_raising_names_the_method_and_its_distribution_and_version(monkeypatch):
    from cxr_attrib_plugins.priors import Center

    def boom(self, request):
        raise ZeroDivisionError("division by zero")

    monkeypatch.setattr(Center, "attribute", boom)
    with pytest.raises(MethodFailedError) as caught:
        attribute("none", IMAGE, QUESTION, method="center", answer="Yes")
    message = str(caught.value)
    assert f"method 'center' (from cxr-attrib {VERSION}) failed: ZeroDivisionError: division by zero" in message
    assert isinstance(caught.value.__cause__, ZeroDivisionError)


def test_method_raising_in_a_python_registered_plugin_names_the_plugin(registered_plugin):
    name = registered_plugin(_plugin_of(_method("raiser_stub", error=KeyError("layer"), uses_model=False)))
    with pytest.raises(MethodFailedError, match=rf"method 'raiser_stub' \(from plugin '{name}' \(registered in "
                                                 r"Python\)\) failed: KeyError: 'layer'"):
        attribute("none", IMAGE, QUESTION, method="raiser_stub", answer="Yes")


def test_cli_prints_one_error_line_and_debug_shows_the_traceback(registered_plugin, image_file, tmp_path):
    registered_plugin(_plugin_of(_method("raiser_cli_stub", error=RuntimeError("bad\nnews"), uses_model=False)))
    args = ["attribute", str(image_file), "-q", QUESTION, "-m", "none", "--method", "raiser_cli_stub",
            "--answer", "Yes", "--out", str(tmp_path / "o.png")]
    line = _one_error_line(_cli(*args))
    assert "method 'raiser_cli_stub'" in line and "RuntimeError: bad news" in line
    debug = _cli("--debug", *args)
    assert debug.exit_code == 1 and isinstance(debug.exception, MethodFailedError)
    assert not (tmp_path / "o.png").exists()


def test_cli_unexpected_error_is_one_internal_error_line(monkeypatch):
    import cxr_attrib.registry as reg

    monkeypatch.setattr(reg, "model_cards", lambda: (_ for _ in ()).throw(AttributeError("oops")))
    line = _one_error_line(_cli("models"))
    assert line == "Error: internal error: AttributeError: oops (run `cxr-attrib --debug ...` for the traceback)"


# -- method parameters: declared types and ranges, checked before the model loads -----


@pytest.mark.parametrize(("params", "expected"), [
    ({"tiles": 2.9}, r"'occlusion' parameter 'tiles' = 2\.9 is invalid; expected an integer in \[1, 224\]"),
    ({"tiles": True}, r"'tiles' = True is invalid; expected an integer in \[1, 224\]"),
    ({"tiles": 225}, r"'tiles' = 225 is invalid; expected an integer in \[1, 224\]"),
    ({"tiles": 0}, r"'tiles' = 0 is invalid"),
    ({"batch_size": "64"}, r"'batch_size' = '64' is invalid; expected an integer in \[1, \d+\] \(the upper bound keeps memory"),
    ({"fill": "purple"}, r"'fill' = 'purple' is invalid; expected one of 'zero', 'mean', 'blur' or a number in \[0, 1\]"),
    ({"fill": 1.5}, r"'fill' = 1\.5 is invalid"),
    ({"tile": 4}, r"method 'occlusion' has no parameter\(s\) 'tile'; valid: batch_size, fill, tiles"),
])
def test_occlusion_parameters_are_checked_before_the_model_loads(params, expected):
    with pytest.raises(MethodParameterError, match=expected):
        attribute(UNLOADABLE, IMAGE, QUESTION, method="occlusion", **params)


def test_tiles_bound_follows_the_working_size():
    options = LoadOptions(working_size=56)
    with pytest.raises(MethodParameterError, match=r"an integer in \[1, 56\]"):
        attribute(UNLOADABLE, IMAGE, QUESTION, method="occlusion", tiles=57, load_options=options)


@pytest.mark.parametrize("fraction", [0, 0.0, -0.5, 1.01, "half", False, float("nan")])
def test_center_fraction_must_be_a_number_in_zero_one(fraction):
    with pytest.raises(MethodParameterError, match=r"'fraction' = .* (is invalid|is not a finite number).*; expected a number in \(0, 1\]"):
        attribute("none", IMAGE, QUESTION, method="center", answer="Yes", fraction=fraction)


def test_an_integer_is_a_valid_float_parameter_and_is_recorded_as_float():
    result = attribute("none", IMAGE, QUESTION, method="center", answer="Yes", fraction=1)
    assert result.meta.params["fraction"] == 1.0 and isinstance(result.meta.params["fraction"], float)
    assert result.boxes == ((0.0, 0.0, 30.0, 40.0),)


def test_registry_refuses_a_method_whose_defaults_fail_their_declaration(registered_plugin):
    bad = type("BadDefaults", (Method,), {
        "name": "bad_defaults_stub", "summary": "s", "reference": "r", "attribute": lambda self, r: None,
        "defaults": {"steps": 0}, "param_types": {"steps": Param(int, low=1)},
    })
    name = registered_plugin(_plugin_of(bad))
    info = next(i for i in registry.plugin_report() if i.name == name)
    assert "bad_defaults_stub" not in registry.methods()
    assert "defaults that fail its own param_types" in info.errors[0].reason
    assert "'steps' = 0 is invalid; expected an integer in [1, inf]" in info.errors[0].reason


def test_cli_bad_parameter_is_one_error_line(image_file, tmp_path):
    line = _one_error_line(_cli("attribute", str(image_file), "-q", QUESTION, "-m", UNLOADABLE,
                                "--method", "occlusion", "-p", "tiles=2.9", "--out", str(tmp_path / "o.png")))
    assert line == ("Error: method 'occlusion' parameter 'tiles' = 2.9 is invalid; "
                    "expected an integer in [1, 224]")


# -- seed, device, working size, LoadOptions ---------------------------------------------


@pytest.mark.parametrize("seed", [-1, 1.5, True, "7", 2**63])
def test_seed_must_be_a_non_negative_integer(seed):
    with pytest.raises(InputError, match=r"seed=.* is invalid; expected an integer in \[0, 9223372036854775807\]"):
        attribute(UNLOADABLE, IMAGE, QUESTION, method="occlusion", seed=seed)


@pytest.mark.parametrize(("field", "value", "expected"), [
    ("dtype", "fp8", "one of 'auto', 'float32', 'bfloat16', 'float16'"),
    ("device", "gpu0", "None or a torch device such as 'cpu', 'cuda' or 'cuda:0'"),
    ("working_size", 0, r"an integer in \[8, 4096\] \(pixels\)"),
    ("working_size", 224.0, r"an integer in \[8, 4096\]"),
    ("working_size", True, r"an integer in \[8, 4096\]"),
    ("min_pixels", -1, "None or a positive integer"),
    ("local_files_only", "yes", "True or False"),
])
def test_load_options_are_validated_on_construction(field, value, expected):
    with pytest.raises(LoadOptionsError, match=rf"LoadOptions {field}={value!r} is invalid; expected {expected}"):
        LoadOptions(**{field: value})


def test_min_pixels_above_max_pixels_is_refused():
    with pytest.raises(LoadOptionsError, match="min_pixels=100 is invalid; expected at most max_pixels=50"):
        LoadOptions(min_pixels=100, max_pixels=50)


def test_cuda_device_without_cuda_fails_before_loading(monkeypatch):
    import torch

    monkeypatch.setattr(torch.cuda, "is_available", lambda: False)
    with pytest.raises(LoadOptionsError, match=r"device='cuda:1' needs CUDA, which is not available here"):
        load_adapter(UNLOADABLE, LoadOptions(device="cuda:1"))


def test_cli_bad_device_and_dtype_are_one_error_line(image_file, tmp_path):
    out = str(tmp_path / "o.png")
    line = _one_error_line(_cli("attribute", str(image_file), "-q", QUESTION, "-m", UNLOADABLE,
                                "--device", "gpu0", "--out", out))
    assert line.startswith("Error: LoadOptions device='gpu0' is invalid")
    assert "dtype='fp8' is invalid" in _one_error_line(
        _cli("attribute", str(image_file), "-q", QUESTION, "-m", UNLOADABLE, "--dtype", "fp8", "--out", out))


def test_equal_meaning_load_options_hit_one_cache_entry(tiny_model_dir):
    folder = tiny_model_dir("qwen2_5_vl")
    auto = load_adapter(folder, LoadOptions(dtype="auto", device="cpu", local_files_only=True))
    explicit = load_adapter(folder, LoadOptions(dtype="float32", device="cpu", local_files_only=True))
    assert auto is explicit and auto.options.dtype == "float32" and auto.options.device == "cpu"


# -- text -------------------------------------------------------------------------------


def test_question_that_is_not_utf8_is_refused_naming_the_byte():
    with pytest.raises(TargetError, match=r"a question is not valid UTF-8 text \(byte 0xff at character 9\)"):
        attribute(UNLOADABLE, IMAGE, "Is there \udcff nodule?", method="occlusion")


def test_answer_that_is_not_utf8_is_refused():
    with pytest.raises(TargetError, match=r"the answer is not valid UTF-8 text \(byte 0xe9 at character 1\)"):
        attribute("none", IMAGE, QUESTION, method="center", answer="N\udce9")


def test_cli_question_with_invalid_utf8_bytes_is_one_error_line(image_file, tmp_path):
    line = _one_error_line(_cli("attribute", str(image_file), "-q", "nodule \udcc3?", "-m", "none",
                                "--method", "center", "--answer", "Yes", "--out", str(tmp_path / "o.png")))
    assert "is not valid UTF-8 text (byte 0xc3 at character 7)" in line


# -- model files --------------------------------------------------------------------------


def _copy_model(tiny_model_dir, tmp_path: Path) -> Path:
    folder = tmp_path / "model"
    shutil.copytree(tiny_model_dir("qwen2_5_vl"), folder)
    return folder


def test_truncated_safetensors_is_a_clear_error(tiny_model_dir, tmp_path):
    folder = _copy_model(tiny_model_dir, tmp_path)
    weights = folder / "model.safetensors"
    weights.write_bytes(weights.read_bytes()[: weights.stat().st_size // 2])
    with pytest.raises(ModelLoadError, match=r"a \.safetensors weights file is truncated or corrupt "
                                             r"\(SafetensorError: .*\)\. Re-download or re-copy the weights\."):
        load_adapter(folder, LoadOptions(device="cpu", local_files_only=True))


def test_config_json_that_is_not_json_names_the_file(tiny_model_dir, tmp_path):
    folder = _copy_model(tiny_model_dir, tmp_path)
    (folder / "config.json").write_text('{"model_type": "qwen2_5_vl",', encoding="utf-8")
    with pytest.raises(ModelLoadError) as caught:
        load_adapter(folder, LoadOptions(device="cpu", local_files_only=True))
    assert str(caught.value).startswith(f"{folder / 'config.json'} is not valid JSON (JSONDecodeError: ")
    assert "damaged" in str(caught.value)


def test_unknown_hub_id_without_network_says_offline_at_once(monkeypatch, tmp_path):
    import huggingface_hub.constants as hub

    def unreachable(*args, **kwargs):
        raise socket.gaierror(-2, "Name or service not known")

    for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"):
        monkeypatch.delenv(name, raising=False)
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(socket, "create_connection", unreachable)
    start = time.perf_counter()
    with pytest.raises(ModelLoadError) as caught:
        load_adapter("someone/not-a-model", LoadOptions(device="cpu"))
    assert time.perf_counter() - start < 2.0
    message = str(caught.value)
    assert "'someone/not-a-model' (a Hugging Face id): its files are not available locally" in message
    assert "tried the network and the Hub (https://huggingface.co) is unreachable, this machine is offline" in message


def test_unknown_hub_id_in_offline_mode_never_touches_the_network(monkeypatch, tmp_path):
    import huggingface_hub.constants as hub

    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setattr(socket, "create_connection", lambda *a, **k: pytest.fail("network touched"))
    with pytest.raises(ModelLoadError, match="offline mode is on .HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE., so the "
                                             "Hub was not asked"):
        load_adapter("someone/not-a-model", LoadOptions(device="cpu"))


# -- result JSON and split files ---------------------------------------------------------------


@pytest.fixture(scope="module")
def saved_result() -> dict:
    return attribute("none", IMAGE, QUESTION, method="center", answer="Yes").to_dict()


@pytest.mark.parametrize(("edit", "expected"), [
    (lambda d: d["meta"].pop("image_size"), "field 'meta' is missing key 'image_size'"),
    (lambda d: d.pop("target"), "field 'target' is missing key 'target'"),
    (lambda d: d["heatmap"].update(data="!!!not base64"), "field 'heatmap' is malformed (CxrAttribError: heatmap: the array data is not valid zlib+base64"),
    (lambda d: d["boxes"].append([1, 2, 3]), "field 'boxes' is malformed (ValueError: box [1.0, 2.0, 3.0] has 3 values"),
    (lambda d: d.update(answer=7), "field 'answer' is malformed (TypeError: expected str, got int 7)"),
    (lambda d: d["meta"].update(colour="red"), "field 'meta' is malformed (TypeError: "),
])
def test_malformed_result_json_names_the_file_and_the_field(saved_result, tmp_path, edit, expected):
    data = json.loads(json.dumps(saved_result))
    edit(data)
    path = tmp_path / "result.json"
    path.write_text(json.dumps(data), encoding="utf-8")
    with pytest.raises(DataError) as caught:
        Attribution.load(path)
    assert str(caught.value).startswith(f"{str(path)!r}: {expected}")


def test_result_file_that_is_not_json_or_not_utf8(tmp_path):
    path = tmp_path / "result.json"
    path.write_text("{", encoding="utf-8")
    with pytest.raises(DataError, match=r"result\.json' is not valid JSON \(Expecting property name"):
        Attribution.load(path)
    path.write_bytes(b'{"answer": "\xff"}')
    with pytest.raises(DataError, match=r"result file .*result\.json' is not UTF-8 text \(invalid start byte at byte 12\)"):
        Attribution.load(path)


@pytest.mark.parametrize(("payload", "expected"), [
    (b"\xff\xfe[]", r"is not UTF-8 text .*; save the split as UTF-8 JSON\."),
    (b"[{", r"is not valid JSON: "),
    (b'{"a": 1}', r"expected a JSON list of records, got dict\."),
    (b'[{"prediction_direct": "yes", "model": "m"}]', r"record \[0\]: missing key 'dataset'"),
    (b'[{"prediction_direct": "yes", "prediction_edited_direct": "no", "prediction_edited_kept_direct": "y", '
     b'"prediction_edited_kept_normal_direct": "y", "model": "m", "dataset": "vindr", "index": -1, '
     b'"answer": "yes"}]', r"record \[0\]: index must be strings \(index a non-negative integer\)"),
])
def test_malformed_split_file_names_the_file_and_record(tmp_path, payload, expected):
    path = tmp_path / "direct.json"
    path.write_bytes(payload)
    with pytest.raises(DataError, match=expected) as caught:
        load_split(path)
    assert str(path) in str(caught.value)


# -- plugins, images, model "none" ----------------------------------------------------------


def test_load_plugins_naming_nothing_installed_says_which_names(monkeypatch):
    monkeypatch.setattr(registry, "_state", registry._State())
    monkeypatch.setenv("CXR_ATTRIB_LOAD_PLUGINS", "occlusion, ocllusion,nosuch")
    with pytest.raises(PluginSelectionError) as caught:
        registry.methods()
    message = str(caught.value)
    assert message.startswith("CXR_ATTRIB_LOAD_PLUGINS names 'ocllusion', 'nosuch', which match no installed "
                              "plugin or distribution; installed: ")
    assert "occlusion" in message.split("installed: ")[1]


def test_cli_load_plugins_naming_nothing_is_one_error_line(monkeypatch):
    monkeypatch.setattr(registry, "_state", registry._State())
    line = _one_error_line(_cli("methods", CXR_ATTRIB_LOAD_PLUGINS="nosuch"))
    assert line.startswith("Error: CXR_ATTRIB_LOAD_PLUGINS names 'nosuch', which match no installed plugin")


def test_zero_by_zero_pil_image_is_refused():
    with pytest.raises(ImageLoadError, match=r"the image is 0 x 0 pixels \(width x height\); expected at least 1 x 1"):
        load_image(Image.new("L", (0, 0)))


def test_model_none_is_explained_in_help():
    text = " ".join(_cli("attribute", "--help").output.split())
    assert "`none` runs without a model: only a model-free method" in text and "with --answer" in text


@pytest.mark.parametrize(("method", "answer", "why"), [
    ("occlusion", "Yes", "method 'occlusion' uses the model"),
    ("center", None, "no answer was given to explain"),
])
def test_model_none_where_a_model_is_needed_is_explained(method, answer, why):
    with pytest.raises(InputError) as caught:
        attribute("none", IMAGE, QUESTION, method=method, answer=answer)
    message = str(caught.value)
    assert message.startswith(f"model 'none' means no model, but {why}. Without a model only a model-free method (")
    assert "center" in message and "whole_image" in message and "occlusion" not in message.split("(")[1]


# -- the method output contract ----------------------------------------------------------------------


@pytest.mark.parametrize(("output", "expected"), [
    (MethodOutput(grid=np.zeros((3, 3))), r"grid has shape \(3, 3\); expected \(8, 8\) \(the adapter's image-token grid\)"),
    (MethodOutput(heatmap=np.zeros((224, 224)), token_scores=np.zeros(5)),
     r"token_scores has shape \(5,\); expected \(1,\), one per target token"),
    (MethodOutput(heatmap=np.zeros((224, 224)), info={"layer": object()}), r"info is not JSON-safe \(Object of type"),
    (MethodOutput(heatmap=np.zeros((224, 224)), info={"ratio": float("inf")}), r"info is not JSON-safe"),
])
def test_method_output_contract_violations_are_named(registered_plugin, tiny_qwen_adapter, output, expected):
    registered_plugin(_plugin_of(_method("contract_stub", output)))
    with pytest.raises(MethodContractError, match=r"method 'contract_stub' broke the output contract: " + expected):
        attribute(tiny_qwen_adapter, IMAGE, QUESTION, method="contract_stub", answer="Yes")


def test_check_method_catches_a_grid_that_is_not_the_token_grid(registered_plugin, tiny_qwen_adapter):
    registered_plugin(_plugin_of(_method("grid_stub", MethodOutput(grid=np.ones((4, 4))))))
    with pytest.raises(CxrAttribError, match=r"grid has shape \(4, 4\); expected \(8, 8\)"):
        check_method("grid_stub", tiny_qwen_adapter)


def test_console_script_with_load_plugins_naming_nothing_is_one_error_line(monkeypatch, capsys):
    from cxr_attrib.cli import main

    monkeypatch.setattr(registry, "_state", registry._State())
    monkeypatch.setenv("CXR_ATTRIB_LOAD_PLUGINS", "nosuch")
    with pytest.raises(SystemExit) as caught:
        main(["methods"])
    assert caught.value.code == 1
    lines = [line for line in capsys.readouterr().err.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("Error: CXR_ATTRIB_LOAD_PLUGINS names 'nosuch'")


def test_error_names_the_value_the_caller_gave_not_a_converted_one():
    with pytest.raises(MethodParameterError, match=r"'fraction' = 2 is invalid; expected a number in \(0, 1\]"):
        attribute("none", IMAGE, QUESTION, method="center", answer="Yes", fraction=2)


@given(st.integers(-50, 50), st.floats(-50, 50, allow_nan=False))
def test_param_int_takes_exactly_the_integers_in_range(whole, real):
    spec = Param(int, low=-10, high="size")
    inside = -10 <= whole <= 20
    if inside:
        assert spec.check("m", "k", whole, size=20) == whole
        assert spec.check("m", "k", np.int64(whole), size=20) == whole
    else:
        with pytest.raises(MethodParameterError, match=r"expected an integer in \[-10, 20\]"):
            spec.check("m", "k", whole, size=20)
    with pytest.raises(MethodParameterError):
        spec.check("m", "k", real, size=20)  # a float is never an int, even 3.0


def test_param_choices_and_strings():
    spec = Param(str, choices=("zero", "mean"))
    assert spec.check("m", "fill", "mean") == "mean"
    with pytest.raises(MethodParameterError, match=r"'fill' = 'Mean' is invalid; expected one of 'zero', 'mean'"):
        spec.check("m", "fill", "Mean")
    with pytest.raises(MethodParameterError, match=r"expected a number in \[0, 1\]"):
        Param(float, low=0, high=1).check("m", "p", float("inf"))
