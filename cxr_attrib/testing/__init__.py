"""Test helpers for cxr-attrib and its plugins: tiny offline models of the real classes,
the method and adapter conformance suites, the model-randomisation sanity check and a tiny SAM for
box refinement.

The pytest fixtures (``tiny_qwen_adapter``, ``tiny_gemma_adapter``, ``tiny_model_dir``,
``tiny_sam_dir``)
live in :mod:`cxr_attrib.testing.pytest_plugin`, installed as a ``pytest11`` plugin.
"""

from typing import Any

from .adapter_conformance import AdapterConformanceError, AdapterReport, check_adapter, tiny_factory
from .conformance import check_method, check_refusal, conformance_images
from .randomisation import randomisation_curve, randomised_copy, rank_correlation
from .tiny_models import (
    build_tiny_adapter,
    load_tiny_adapter,
    save_tiny_model,
    tiny_config,
    tiny_families,
    tiny_tokenizer,
    wired_adapter,
)
from .tiny_sam import save_tiny_sam, tiny_sam

__all__ = [
    "FAMILIES",
    "AdapterConformanceError",
    "AdapterReport",
    "build_tiny_adapter",
    "check_adapter",
    "check_method",
    "check_refusal",
    "conformance_images",
    "load_tiny_adapter",
    "randomisation_curve",
    "randomised_copy",
    "rank_correlation",
    "save_tiny_model",
    "save_tiny_sam",
    "tiny_config",
    "tiny_factory",
    "tiny_families",
    "tiny_sam",
    "tiny_tokenizer",
    "wired_adapter",
]


def __getattr__(name: str) -> Any:
    if name == "FAMILIES":  # families with a registered tiny-model recipe, looked up lazily
        return tiny_families()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
