"""The plugin registry: every hook, duplicate names, broken plugins, env switches."""

from __future__ import annotations

from collections.abc import Iterator

import click
import numpy as np
import pytest
from click.testing import CliRunner

from cxr_attrib import hookimpl, registry
from cxr_attrib.adapter import ModelCard
from cxr_attrib.benchmark import Benchmark, Sample
from cxr_attrib.cli import cli
from cxr_attrib.errors import ModelLoadError, UnknownMethodError, UnknownModelError
from cxr_attrib.method import Method, MethodOutput
from cxr_attrib.models import clear_adapter_cache, load_adapter


class Constant(Method):
    name = "constant_stub"
    summary = "Every pixel scores 1."
    reference = "test"
    uses_model = False

    def attribute(self, request):
        return MethodOutput(heatmap=np.ones_like(request.image))


def _plugin(hook_name: str, body) -> type:
    """A stub plugin class whose single hook implementation is ``body``."""
    return type(f"Stub_{hook_name}", (), {hook_name: staticmethod(hookimpl(specname=hook_name)(body))})


def _info(name: str) -> registry.PluginInfo:
    return next(i for i in registry.plugin_report() if i.name == name)


def test_builtin_methods_come_from_entry_points():
    names = set(registry.methods())
    assert {"occlusion", "whole_image", "center", "medfocus"} <= names
    by_plugin = {i.name: i for i in registry.plugin_report()}
    assert by_plugin["priors"].distribution == "cxr-attrib"
    assert by_plugin["priors"].registered["methods"] == ["anatomy_prior", "center", "whole_image"]


def test_unknown_method_lists_closest_names():
    with pytest.raises(UnknownMethodError) as info:
        registry.get_method("oclusion")
    assert info.value.suggestions[0] == "occlusion"
    assert "Did you mean 'occlusion'" in str(info.value)
    assert "whole_image" in str(info.value)


def test_hook_register_methods(registered_plugin):
    name = registered_plugin(_plugin("register_methods", lambda register: register(Constant)))
    assert registry.get_method("constant_stub") is Constant
    assert _info(name).registered == {"methods": ["constant_stub"]}
    registry.unregister_plugin(name)
    assert "constant_stub" not in registry.methods()


def test_hook_register_adapters(registered_plugin):
    loaded = []
    card = ModelCard("stub-model", "org/stub", "stub", "a stub", lambda source, options, name: loaded.append((source, name)) or "ADAPTER")
    registered_plugin(_plugin("register_adapters", lambda register: register(card)))
    assert registry.model_cards()["stub-model"] is card
    clear_adapter_cache()
    assert load_adapter("stub-model") == "ADAPTER"
    assert load_adapter("stub-model") == "ADAPTER"
    assert loaded == [("org/stub", "stub-model")], "one model load per process, told its registry key"
    clear_adapter_cache()


class _Bench(Benchmark):
    name = "stub_bench"
    summary = "one sample"

    def samples(self, *, split=None, model=None) -> Iterator[Sample]:
        yield Sample("s/0", "stub", 0, "nodule", "q", "Yes", np.zeros((0, 4)), lambda: np.zeros((4, 4), np.uint8))


def test_hook_register_benchmarks(registered_plugin):
    registered_plugin(_plugin("register_benchmarks", lambda register: register(_Bench())))
    bench = registry.get_benchmark("stub_bench")
    assert [s.id for s in bench.samples()] == ["s/0"]


def test_hook_register_commands(registered_plugin):
    def add(cli):
        @cli.command("hello-stub")
        def hello():
            click.echo("hello from a plugin")

    registered_plugin(_plugin("register_commands", add))
    registry.add_plugin_commands(cli)
    try:
        result = CliRunner().invoke(cli, ["hello-stub"])
        assert result.exit_code == 0 and "hello from a plugin" in result.output
    finally:
        cli.commands.pop("hello-stub", None)


def test_hook_resolve_adapter(registered_plugin):
    registered_plugin(_plugin("resolve_adapter", lambda reference, options: "RESOLVED" if reference == "my/model" else None))
    clear_adapter_cache()
    assert load_adapter("my/model") == "RESOLVED"
    with pytest.raises(UnknownModelError, match="unknown model 'no-such-model'"):
        load_adapter("no-such-model")
    with pytest.raises(ModelLoadError, match="'no/such-model' .a Hugging Face id.: its files are not available locally"):
        load_adapter("no/such-model")
    clear_adapter_cache()


def test_duplicate_name_is_reported_and_first_wins(registered_plugin):
    class Other(Constant):
        summary = "a second claim on the same name"

    first = registered_plugin(_plugin("register_methods", lambda register: register(Constant)))
    second = registered_plugin(_plugin("register_methods", lambda register: register(Other)))
    assert registry.get_method("constant_stub") is Constant
    errors = _info(second).errors
    assert len(errors) == 1
    assert f"'constant_stub' is already registered by plugin {first!r}" in str(errors[0])
    assert "occlusion" in registry.methods(), "other plugins still load"


def test_plugin_that_raises_or_breaks_the_contract_is_reported(registered_plugin):
    def boom(register):
        register(Constant)
        raise RuntimeError("kaboom")

    broken = registered_plugin(_plugin("register_methods", boom))
    not_a_method = registered_plugin(_plugin("register_methods", lambda register: register(object)))
    assert "constant_stub" not in registry.methods(), "nothing half-registered"
    assert "RuntimeError: kaboom" in str(_info(broken).errors[0])
    assert "is not a subclass of cxr_attrib.method.Method" in str(_info(not_a_method).errors[0])
    assert "occlusion" in registry.methods()


def test_unknown_hook_is_rejected(registered_plugin):
    name = registered_plugin(_plugin("register_metods", lambda register: None))
    assert "unknown hook(s) register_metods" in str(_info(name).errors[0])


def test_hookspecs_have_no_pending_impls():
    registry.plugin_manager().check_pending()
