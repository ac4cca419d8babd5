"""Plugin loading and the registries of methods, models and benchmarks.

Plugins are modules listed under the ``cxr_attrib`` entry-point group (the built-in
methods and adapters included). They are imported lazily, once, the first time
anything asks for a registry. Two environment variables filter them, matching
either the entry-point name or the distribution name:

* ``CXR_ATTRIB_LOAD_PLUGINS``: comma list allow-list; set but empty loads none;
* ``CXR_ATTRIB_BLOCK_PLUGINS``: comma list of plugins never to load.

A plugin that fails to import, implements an unknown hook, raises in a hook,
registers a name twice or breaks the method contract is recorded in
:func:`plugin_report` (with its distribution and the reason) and skipped; every
other plugin still loads.
"""

from __future__ import annotations

import importlib.metadata
import os
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass, field
from types import MappingProxyType
from typing import Any

import pluggy

from . import hookspecs
from .adapter import ModelCard
from .benchmark import Benchmark
from .errors import (
    CxrAttribError,
    DuplicateNameError,
    PluginError,
    PluginSelectionError,
    UnknownBenchmarkError,
    UnknownFamilyError,
    UnknownMethodError,
    UnknownNameError,
    UnknownPoolError,
)
from .method import Method
from .tiny_recipe import TinyModelRecipe
from .pools import ConceptPool

__all__ = [
    "ENTRY_POINT_GROUP",
    "PluginInfo",
    "load_plugins",
    "plugin_manager",
    "register_plugin",
    "unregister_plugin",
    "plugin_report",
    "registered_by",
    "add_plugin_commands",
    "methods",
    "get_method",
    "model_cards",
    "benchmarks",
    "get_benchmark",
    "tiny_model_recipes",
    "get_tiny_model_recipe",
    "pools",
    "get_pool",
    "plugin_of_module",
]

ENTRY_POINT_GROUP = "cxr_attrib"
_OUTPUT_KINDS = ("heatmap", "boxes", "concepts")


@dataclass
class PluginInfo:
    """What one plugin is and what it did.

    Attributes:
        name (str): entry-point (or registration) name.
        distribution (str | None): the distribution shipping it; None when registered
            directly in Python.
        version (str | None): that distribution's version.
        registered (dict[str, list[str]]): kind ("methods", "models", "benchmarks", "pools")
            -> names it registered.
        errors (list[PluginError]): everything that went wrong with it.
    """

    name: str
    distribution: str | None = None
    version: str | None = None
    registered: dict[str, list[str]] = field(default_factory=dict)
    errors: list[PluginError] = field(default_factory=list)

    def fail(self, reason: str) -> None:
        """Record a problem with this plugin."""
        self.errors.append(PluginError(self.name, self.distribution, reason))


def _check_method(obj: Any) -> str | None:
    """Return why ``obj`` breaks the method contract, or None when it is fine."""
    if not (isinstance(obj, type) and issubclass(obj, Method)):
        return f"{obj!r} is not a subclass of cxr_attrib.method.Method"
    for attr in ("name", "summary", "reference"):
        value = getattr(obj, attr, None)
        if not isinstance(value, str) or not value.strip():
            return f"method class {obj.__name__} has no {attr!r} string"
    if obj.output not in _OUTPUT_KINDS:
        return f"method {obj.name!r} declares output={obj.output!r}; expected one of {_OUTPUT_KINDS}"
    if not isinstance(obj.defaults, Mapping):
        return f"method {obj.name!r} has defaults of type {type(obj.defaults).__name__}; expected a mapping"
    if obj.needs_truth and not (obj.is_reference and not obj.uses_model):
        return (f"method {obj.name!r} declares needs_truth but is not a model-free reference "
                "(is_reference=True, uses_model=False): a real method must never see the ground truth")
    undeclared = sorted(set(obj.param_types) - set(obj.defaults))
    if undeclared:
        return f"method {obj.name!r} declares param_types {undeclared} that are not in its defaults"
    try:
        obj.check_params({})
    except CxrAttribError as exc:
        return f"method {obj.name!r} has defaults that fail its own param_types: {exc}"
    if getattr(obj, "__abstractmethods__", None):
        return f"method {obj.name!r} does not implement {sorted(obj.__abstractmethods__)}"
    return None


def _check_card(obj: Any) -> str | None:
    return None if isinstance(obj, ModelCard) else f"{obj!r} is not a cxr_attrib.adapter.ModelCard"


def _check_benchmark(obj: Any) -> str | None:
    return None if isinstance(obj, Benchmark) else f"{obj!r} is not a cxr_attrib.benchmark.Benchmark"


def _check_recipe(obj: Any) -> str | None:
    return None if isinstance(obj, TinyModelRecipe) else f"{obj!r} is not a cxr_attrib.tiny_recipe.TinyModelRecipe"


def _check_pool(obj: Any) -> str | None:
    return None if isinstance(obj, ConceptPool) else f"{obj!r} is not a cxr_attrib.pools.ConceptPool"


@dataclass(frozen=True)
class _Kind:
    hook: str
    label: str
    check: Callable[[Any], str | None]
    default_name: Callable[[Any], str]


_KINDS = {
    "methods": _Kind("register_methods", "method", _check_method, lambda obj: getattr(obj, "name", "")),
    "models": _Kind("register_adapters", "model", _check_card, lambda obj: getattr(obj, "key", "")),
    "benchmarks": _Kind("register_benchmarks", "benchmark", _check_benchmark, lambda obj: getattr(obj, "name", "")),
    "tiny_models": _Kind("register_tiny_models", "tiny-model recipe", _check_recipe,
                         lambda obj: getattr(obj, "family", "")),
    "pools": _Kind("register_pools", "pool", _check_pool, lambda obj: getattr(obj, "name", "")),
}


def _env_list(name: str) -> list[str] | None:
    raw = os.environ.get(name)
    if raw is None:
        return None
    return [item.strip() for item in raw.split(",") if item.strip()]


class _State:
    """The one plugin manager of the process and what was collected from it."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(ENTRY_POINT_GROUP)
        self.pm.add_hookspecs(hookspecs)
        self.infos: dict[str, PluginInfo] = {}
        self.entry_points_loaded = False
        self.collected: dict[str, dict[str, Any]] | None = None
        self.owners: dict[tuple[str, str], str] = {}

    def load_entry_points(self, blocked: Iterable[str]) -> None:
        allow = _env_list("CXR_ATTRIB_LOAD_PLUGINS")
        block = set(_env_list("CXR_ATTRIB_BLOCK_PLUGINS") or ()) | set(blocked)
        found = []
        for ep in importlib.metadata.entry_points(group=ENTRY_POINT_GROUP):
            dist = getattr(ep, "dist", None)
            dist_name = dist.metadata["Name"] if dist is not None else None
            found.append((ep, dist, dist_name, {ep.name, dist_name} - {None}))
        if allow:
            known = set().union(*(names for *_, names in found))
            unmatched = [name for name in allow if name not in known]
            if unmatched:
                raise PluginSelectionError(
                    f"CXR_ATTRIB_LOAD_PLUGINS names {', '.join(map(repr, unmatched))}, which match no "
                    f"installed plugin or distribution; installed: {', '.join(sorted(known)) or '(none)'}. "
                    "Fix the names or unset the variable."
                )
        for ep, dist, dist_name, names in found:
            if (allow is not None and not names & set(allow)) or names & block:
                continue
            if ep.name in self.infos:
                continue
            info = PluginInfo(ep.name, dist_name, dist.version if dist is not None else None)
            self.infos[ep.name] = info
            try:
                module = ep.load()
            except Exception as exc:  # a broken plugin must not take the others down
                info.fail(f"failed to import {ep.value!r}: {type(exc).__name__}: {exc}")
                continue
            self.add(module, info)

    def add(self, plugin: object, info: PluginInfo) -> None:
        self.infos[info.name] = info
        try:
            self.pm.register(plugin, name=info.name)
        except Exception as exc:
            info.fail(f"could not be registered: {exc}")
            return
        unknown = [hc.name for hc in self.pm.get_hookcallers(plugin) or () if not hc.has_spec()]
        if unknown:
            self.pm.unregister(plugin)
            info.fail(f"implements unknown hook(s) {', '.join(unknown)}; see docs/plugin-hooks.md")
        self.collected = None

    def collect(self) -> dict[str, dict[str, Any]]:
        if self.collected is not None:
            return self.collected
        collected: dict[str, dict[str, Any]] = {kind: {} for kind in _KINDS}
        owners: dict[tuple[str, str], str] = {}
        for info in self.infos.values():
            info.registered = {}
            info.errors = [e for e in info.errors if not e.reason.startswith(_COLLECT_HOOKS)]
        for kind, spec in _KINDS.items():
            for impl in getattr(self.pm.hook, spec.hook).get_hookimpls():
                info = self.infos.setdefault(impl.plugin_name, PluginInfo(impl.plugin_name))
                staged: dict[str, Any] = {}

                def register(obj: Any, name: str | None = None, *, _spec=spec, _staged=staged, _info=info, _kind=kind) -> None:
                    problem = _spec.check(obj)
                    if problem:
                        raise PluginError(_info.name, _info.distribution, problem)
                    key = name or _spec.default_name(obj)
                    if not key:
                        raise PluginError(_info.name, _info.distribution, f"registered a {_spec.label} without a name")
                    if key in _staged or (_kind, key) in owners:
                        other = owners.get((_kind, key), _info.name)
                        raise DuplicateNameError(
                            f"{_spec.label} {key!r} is already registered by plugin {other!r}"
                        )
                    _staged[key] = obj

                try:
                    impl.function(register) if impl.argnames else impl.function()
                except Exception as exc:
                    reason = exc.reason if isinstance(exc, PluginError) else f"{type(exc).__name__}: {exc}"
                    info.fail(f"{spec.hook}: {reason}")
                    continue
                for key, obj in staged.items():
                    collected[kind][key] = obj
                    owners[(kind, key)] = info.name
                info.registered[kind] = sorted(staged)
        self.collected = collected
        self.owners = owners
        return collected


_COLLECT_HOOKS = tuple(kind.hook for kind in _KINDS.values())
_state = _State()


def load_plugins(*, entry_points: bool = True, blocked: Iterable[str] = ()) -> pluggy.PluginManager:
    """Import the entry-point plugins once (lazy; later calls do nothing).

    Args:
        entry_points: load the ``cxr_attrib`` entry-point group. Default: True.
        blocked: extra plugin or distribution names to skip, on top of
            ``CXR_ATTRIB_BLOCK_PLUGINS``.

    Returns:
        The process-wide pluggy plugin manager.
    """
    if entry_points and not _state.entry_points_loaded:
        _state.load_entry_points(blocked)
        _state.entry_points_loaded = True
    return _state.pm


def plugin_manager() -> pluggy.PluginManager:
    """The plugin manager, with entry-point plugins loaded."""
    return load_plugins()


def register_plugin(plugin: object, name: str) -> None:
    """Register a plugin object (a module or class with hook implementations) directly.

    Args:
        plugin: object whose ``@hookimpl`` functions implement hooks.
        name: plugin name shown by ``cxr-attrib plugins``.
    """
    load_plugins()
    _state.add(plugin, PluginInfo(name))


def unregister_plugin(name: str) -> None:
    """Remove a plugin registered under ``name`` (no error when absent)."""
    plugin = _state.pm.get_plugin(name)
    if plugin is not None:
        _state.pm.unregister(plugin)
    _state.infos.pop(name, None)
    _state.collected = None


def reset_plugins() -> None:
    """Forget every plugin; the next lookup loads entry points again (for tests)."""
    global _state
    _state = _State()


def add_plugin_commands(cli: Any) -> None:
    """Let every plugin add sub-commands to ``cli``; a plugin that raises is recorded."""
    load_plugins()
    for impl in _state.pm.hook.register_commands.get_hookimpls():
        try:
            impl.function(cli)
        except Exception as exc:
            info = _state.infos.setdefault(impl.plugin_name, PluginInfo(impl.plugin_name))
            info.fail(f"register_commands: {type(exc).__name__}: {exc}")


def plugin_report() -> list[PluginInfo]:
    """Every known plugin with what it registered and its errors, sorted by name."""
    load_plugins()
    _state.collect()
    return sorted(_state.infos.values(), key=lambda info: info.name)


def registered_by(kind: str, name: str) -> PluginInfo | None:
    """The plugin that registered ``name`` as a ``kind`` ("methods", "models", "benchmarks").

    Returns:
        PluginInfo | None: its name, distribution and version; None when nothing
        registered that name.
    """
    load_plugins()
    _state.collect()
    owner = _state.owners.get((kind, name))
    return None if owner is None else _state.infos.get(owner)


def plugin_of_module(module: str) -> PluginInfo | None:
    """The plugin whose module is ``module`` or a package holding it (e.g. an adapter class's module).

    Args:
        module (str): a dotted module name, e.g. ``type(adapter).__module__``.

    Returns:
        PluginInfo | None: the innermost registered plugin module containing it; None
        when no plugin does (a class defined in a script or a test).
    """
    load_plugins()
    best: tuple[int, str] | None = None
    for name, plugin in _state.pm.list_name_plugin():
        owner = getattr(plugin, "__name__", None)
        if isinstance(owner, str) and (module == owner or module.startswith(owner + ".")):
            if best is None or len(owner) > best[0]:
                best = (len(owner), name)
    return None if best is None else _state.infos.get(best[1])


def _registry(kind: str) -> Mapping[str, Any]:
    load_plugins()
    return MappingProxyType(dict(sorted(_state.collect()[kind].items())))


def _lookup(kind: str, name: str, error: type[UnknownNameError]) -> Any:
    items = _registry(kind)
    if name not in items:
        raise error(name, items)
    return items[name]


def methods() -> Mapping[str, type[Method]]:
    """Registered method classes by name (sorted)."""
    return _registry("methods")


def get_method(name: str) -> type[Method]:
    """The method class registered as ``name``.

    Raises:
        UnknownMethodError: listing the registered names and the closest matches.
    """
    return _lookup("methods", name, UnknownMethodError)


def model_cards() -> Mapping[str, ModelCard]:
    """Registered model cards by registry key (sorted)."""
    return _registry("models")


def benchmarks() -> Mapping[str, Benchmark]:
    """Registered benchmarks by name (sorted)."""
    return _registry("benchmarks")


def get_benchmark(name: str) -> Benchmark:
    """The benchmark registered as ``name``.

    Raises:
        UnknownBenchmarkError: listing the registered names and the closest matches.
    """
    return _lookup("benchmarks", name, UnknownBenchmarkError)


def tiny_model_recipes() -> Mapping[str, TinyModelRecipe]:
    """Registered tiny-model recipes by family (sorted)."""
    return _registry("tiny_models")


def get_tiny_model_recipe(family: str) -> TinyModelRecipe:
    """The tiny-model recipe of ``family``.

    Raises:
        UnknownFamilyError: listing the families that have one.
    """
    return _lookup("tiny_models", family, UnknownFamilyError)


def pools() -> Mapping[str, ConceptPool]:
    """Registered concept pools by name (sorted); their images are read lazily."""
    return _registry("pools")


def get_pool(name: str) -> ConceptPool:
    """The concept pool registered as ``name``.

    Raises:
        UnknownPoolError: listing the registered names and the closest matches.
    """
    return _lookup("pools", name, UnknownPoolError)
