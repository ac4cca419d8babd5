"""The adapter conformance suite: one call checks every rule of the adapter contract.

:func:`check_adapter` runs the checks of :mod:`cxr_attrib.testing.adapter_checks` on
tiny adapters of one family, built through the family's tiny-model recipe
(``register_tiny_models``) and :func:`~cxr_attrib.testing.wired_adapter`, so it is
family-agnostic: encode / score / generate round trip, span policies, batching and
pass counting, frames, the gradient path (graph start, captures, backward counting),
gradients back to the right cells, attention and relevance where the surface
exists (skipped, with the reason, where it does not) and bad-input errors.

An adapter plugin tests itself in one line, with the ``adapter_conformance``
fixture of the pytest plugin::

    def test_my_family_conforms(adapter_conformance):
        adapter_conformance("my_family")

or directly::

    from cxr_attrib.testing import check_adapter

    def test_my_family_conforms():
        check_adapter("my_family")
"""

from __future__ import annotations

import os
from dataclasses import dataclass, field

from ..adapter import Scorer
from .adapter_checks import CHECKS, AdapterConformanceError, AdapterFactory, Kit, Region
from .tiny_models import build_tiny_adapter, load_tiny_adapter, wired_adapter

__all__ = ["AdapterConformanceError", "AdapterFactory", "AdapterReport", "check_adapter", "tiny_factory"]


@dataclass(frozen=True)
class AdapterReport:
    """What :func:`check_adapter` checked.

    Attributes:
        label (str): the family or adapter checked.
        passed (tuple[str, ...]): the checks that ran and passed, in order.
        skipped (dict[str, str]): check -> why it did not apply (a surface the adapter lacks).
    """

    label: str
    passed: tuple[str, ...]
    skipped: dict[str, str] = field(default_factory=dict)


def tiny_factory(family: str, folder: str | os.PathLike | None = None) -> AdapterFactory:
    """``factory(region=None)`` of tiny adapters of ``family`` (its tiny-model recipe).

    Args:
        family (str): a family with a registered tiny-model recipe.
        folder (str | PathLike | None): a saved tiny model of the family to load the
            plain adapters from (faster than building one each time). Default: build.

    Returns:
        AdapterFactory: plain adapters without ``region``, wired ones with it.
    """

    def factory(region: Region | None = None) -> Scorer:
        if region is not None:
            return wired_adapter(family, region)
        return load_tiny_adapter(folder) if folder is not None else build_tiny_adapter(family)

    return factory


def check_adapter(factory: AdapterFactory | str, *, label: str | None = None) -> AdapterReport:
    """Run the adapter conformance suite.

    Args:
        factory (AdapterFactory | str): ``factory(region=None) -> adapter`` building fresh
            tiny adapters of the family under test (wired to ``region`` when given), or
            a family name with a tiny-model recipe (then :func:`tiny_factory`).
        label (str | None): name for messages. Default: the family, or the adapter's family.

    Returns:
        AdapterReport: the checks passed and those skipped with the reason.

    Raises:
        AdapterConformanceError: the first broken rule, in one line naming the rule,
            what came back and the public helper that keeps it.
    """
    if isinstance(factory, str):
        label = label or factory
        factory = tiny_factory(factory)
    adapter = factory()
    kit = Kit(adapter=adapter, factory=factory, label=label or getattr(adapter, "family", type(adapter).__name__))
    passed, skipped = [], {}
    for name, surface, check in CHECKS:
        if surface is not None and not isinstance(adapter, surface):
            skipped[name] = f"the adapter does not implement {surface.__name__}"
            continue
        check(kit)
        passed.append(name)
    return AdapterReport(label=kit.label, passed=tuple(passed), skipped=skipped)
