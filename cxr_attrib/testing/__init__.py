"""Test helpers for cxr-attrib and its plugins: tiny offline models of the real classes,
the method conformance suite and the model-randomisation sanity check.

The pytest fixtures (``tiny_qwen_adapter``, ``tiny_gemma_adapter``, ``tiny_model_dir``)
live in :mod:`cxr_attrib.testing.pytest_plugin`, installed as a ``pytest11`` plugin.
"""

from .conformance import check_method, conformance_images
from .randomisation import randomisation_curve, randomised_copy, rank_correlation
from .tiny_models import (
    FAMILIES,
    build_tiny_adapter,
    load_tiny_adapter,
    save_tiny_model,
    tiny_config,
    tiny_tokenizer,
    wired_adapter,
)

__all__ = [
    "FAMILIES",
    "build_tiny_adapter",
    "check_method",
    "conformance_images",
    "load_tiny_adapter",
    "randomisation_curve",
    "randomised_copy",
    "rank_correlation",
    "save_tiny_model",
    "tiny_config",
    "tiny_tokenizer",
    "wired_adapter",
]
