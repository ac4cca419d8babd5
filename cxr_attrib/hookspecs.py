"""The hooks a cxr-attrib plugin can implement.

Every plugin, built-in or third-party, is a module listed under the ``cxr_attrib``
entry-point group that implements some of these functions, decorated with
:data:`hookimpl`. Registration hooks receive a ``register`` callback, so the host
collects names, reports duplicates and remembers which plugin registered what.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, Callable

import pluggy

if TYPE_CHECKING:
    import click

    from .adapter import Adapter, LoadOptions

hookspec = pluggy.HookspecMarker("cxr_attrib")
hookimpl = pluggy.HookimplMarker("cxr_attrib")

Register = Callable[..., None]


# -- registration: called once when plugins are loaded -----------------------------


@hookspec
def register_methods(register: Register) -> None:
    """Register attribution methods.

    :param register: call ``register(method_class, name=None)`` once per method; the
        name defaults to the class's ``name`` attribute.
    """


@hookspec
def register_adapters(register: Register) -> None:
    """Register model cards: short registry keys for known checkpoints.

    :param register: call ``register(card, name=None)`` with a
        :class:`cxr_attrib.adapter.ModelCard`; the name defaults to ``card.key``.
    """


@hookspec
def register_benchmarks(register: Register) -> None:
    """Register benchmarks (sources of samples with verified evidence boxes).

    :param register: call ``register(benchmark, name=None)`` with a
        :class:`cxr_attrib.benchmark.Benchmark`; the name defaults to its ``name``.
    """


@hookspec
def register_tiny_models(register: Register) -> None:
    """Register tiny-model recipes: how a family builds tiny random models for tests.

    :param register: call ``register(recipe, name=None)`` with a
        :class:`cxr_attrib.tiny_recipe.TinyModelRecipe`; the name defaults to its
        ``family``.
    """


@hookspec
def register_pools(register: Register) -> None:
    """Register concept pools (normal images with one mask per anatomical concept).

    :param register: call ``register(pool, name=None)`` with a
        :class:`cxr_attrib.pools.ConceptPool`; the name defaults to ``pool.name``.
        Build the pool lazily (``cxr_attrib.pools.load_pool`` reads nothing but the
        manifest) so that loading plugins stays cheap.
    """


@hookspec
def register_commands(cli: "click.Group") -> None:
    """Add sub-commands to the ``cxr-attrib`` command line.

    :param cli: the root click group; decorate new commands with ``@cli.command()``.
    """


# -- resolution: called on demand --------------------------------------------------


@hookspec(firstresult=True)
def resolve_adapter(reference: str, options: "LoadOptions") -> "Adapter | None":
    """Load an adapter for a model reference that is not a registry key.

    Stops at first non-None result.

    :param reference: a Hugging Face id or a local checkpoint folder.
    :param options: dtype, device and attention settings to load with.
    :returns: a loaded :class:`cxr_attrib.adapter.Adapter`, or None when this plugin
        does not handle the reference.
    """


__all__: list[Any] = ["hookimpl", "hookspec"]
