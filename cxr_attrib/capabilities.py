"""Which adapter surfaces a method needs, checked before any model pass.

Every adapter is a :class:`~cxr_attrib.adapter.Scorer`, which is complete for every
black-box method (MedFocus, occlusion, RISE, the priors). A method that needs more
declares the surfaces it calls (``Method.surfaces``; by default
:class:`~cxr_attrib.adapter.GradientSurface` when it sets ``needs_gradients`` and
:class:`~cxr_attrib.adapter.AttentionSurface` when it sets ``needs_attentions``).
:func:`check_capabilities` refuses a model that lacks one with a
:class:`~cxr_attrib.errors.ModelCapabilityError` naming the missing surface, its
members and the methods that would run on that model, before the first pass.

Example::

    >>> from cxr_attrib.adapter import GradientSurface
    >>> surface_members(GradientSurface)[:3]
    ('decoder_layers', 'forward', 'geometry')
"""

from __future__ import annotations

from .adapter import GradientSurface, Scorer
from .errors import ModelCapabilityError
from .method import Method
from .registry import methods, plugin_of_module

__all__ = [
    "adapter_label",
    "check_capabilities",
    "members_table",
    "missing_surfaces",
    "runnable_methods",
    "surface_members",
]


def surface_members(surface: type) -> tuple[str, ...]:
    """The members an adapter must implement for ``surface``: its abstract methods and properties, sorted."""
    return tuple(sorted(surface.__abstractmethods__))


def missing_surfaces(method: type[Method], adapter: Scorer | None) -> tuple[type, ...]:
    """The surfaces ``method`` needs that ``adapter`` does not implement (none for model-free methods)."""
    if not method.uses_model:
        return ()
    return tuple(surface for surface in method.required_surfaces() if not isinstance(adapter, surface))


def _runs(method: type[Method], adapter: Scorer) -> bool:
    if missing_surfaces(method, adapter):
        return False
    return GradientSurface not in method.required_surfaces() or adapter.supports_gradients  # type: ignore[attr-defined]


def runnable_methods(adapter: Scorer) -> list[str]:
    """Registered methods whose surfaces ``adapter`` implements (and whose gradients it supports)."""
    return [name for name, method in methods().items() if _runs(method, adapter)]


def adapter_label(adapter: object) -> str:
    """``"adapter Cls (plugin p, distribution d v)"``: the adapter class and who ships it."""
    cls = type(adapter)
    info = plugin_of_module(cls.__module__)
    if info is None:
        return f"adapter {cls.__name__} (module {cls.__module__})"
    shipped = f", distribution {info.distribution} {info.version or ''}".rstrip() if info.distribution else ""
    return f"adapter {cls.__name__} (plugin {info.name!r}{shipped})"


def check_capabilities(method: type[Method], adapter: Scorer | None) -> None:
    """Refuse, before any pass, a model that lacks what ``method`` calls.

    Args:
        method (type[Method]): the method about to run.
        adapter (Scorer | None): the loaded model (None for model-free methods).

    Raises:
        ModelCapabilityError: a surface is missing (names it, its members, the adapter
            and the methods that run on this model), or ``method`` needs gradients and
            the weights carry none (non-float, e.g. quantised).
    """
    if adapter is None or not method.uses_model:
        return
    missing = missing_surfaces(method, adapter)
    name = getattr(adapter, "name", repr(adapter))
    others = ", ".join(runnable_methods(adapter)) or "(none registered)"
    if missing:
        needs = "; ".join(f"{s.__name__} ({', '.join(surface_members(s))})" for s in missing)
        raise ModelCapabilityError(
            f"method {method.name!r} needs the adapter surface {needs}, which model {name!r} "
            f"({adapter_label(adapter)}) does not implement. Methods that run on this model: {others}."
        )
    if GradientSurface in method.required_surfaces() and not adapter.supports_gradients:  # type: ignore[attr-defined]
        raise ModelCapabilityError(
            f"method {method.name!r} needs gradients, but the weights of model {name!r} carry none "
            "(non-float weights, e.g. quantised); load it with a float dtype "
            f"(LoadOptions(dtype='float32' or 'bfloat16')). Methods that run on this model as loaded: {others}."
        )


def members_table() -> str:
    """The markdown table of docs/adapter-guide.md: each surface, its members, the methods that need it.

    Built from the code (the surfaces' abstract members, the registered methods'
    :meth:`~cxr_attrib.method.Method.required_surfaces`); ``tests/test_docs.py`` checks the
    guide holds exactly this text.
    """
    registered = methods()
    surfaces: list[type] = [Scorer]
    for method in registered.values():
        surfaces += [s for s in method.required_surfaces() if s not in surfaces]
    rows = ["| surface | members the adapter implements | methods that need it |", "|---|---|---|"]
    for surface in surfaces:
        if surface is Scorer:
            users = [name for name, m in registered.items() if m.uses_model and not m.required_surfaces()]
            label = "`Scorer` (required)"
        else:
            users = [name for name, m in registered.items() if surface in m.required_surfaces()]
            label = f"`{surface.__name__}` (optional)"
        members = ", ".join(f"`{member}`" for member in surface_members(surface))
        rows.append(f"| {label} | {members} | {', '.join(users)} |")
    free = [name for name, m in registered.items() if not m.uses_model]
    rows.append(f"| none (model-free) | - | {', '.join(free)} |")
    return "\n".join(rows) + "\n"
