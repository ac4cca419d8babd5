"""Pytest fixtures with the tiny offline models (registered as a ``pytest11`` plugin).

Fixtures (all session-scoped: build once, never mutate them in a test):

* ``tiny_model_dir``: factory ``tiny_model_dir(family, seed=0) -> Path`` of a tiny
  model saved in Hugging Face layout (cached per family and seed);
* ``tiny_qwen_adapter`` / ``tiny_gemma_adapter``: adapters loaded from those folders
  through the ``resolve_adapter`` hook (float32, CPU, working size 224);
* ``tiny_sam_dir``: a folder with the tiny random SAM model and processor;
* ``adapter_conformance``: ``adapter_conformance(family_or_factory)`` runs
  :func:`cxr_attrib.testing.check_adapter`, loading a family's plain tiny adapters
  from the session's saved folder (one line for an adapter plugin).

Example::

    def test_scores_are_log_probs(tiny_qwen_adapter):
        ...
"""

from __future__ import annotations

from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from ..adapter import Adapter
    from .adapter_checks import AdapterFactory
    from .adapter_conformance import AdapterReport

__all__ = ["adapter_conformance", "tiny_gemma_adapter", "tiny_model_dir", "tiny_qwen_adapter", "tiny_sam_dir"]


@pytest.fixture(scope="session")
def tiny_model_dir(tmp_path_factory: pytest.TempPathFactory) -> Callable[..., Path]:
    """Factory ``(family, seed=0) -> Path`` of saved tiny models, built once per key."""
    from .tiny_models import save_tiny_model

    built: dict[tuple[str, int], Path] = {}

    def make(family: str, seed: int = 0) -> Path:
        if (family, seed) not in built:
            folder = tmp_path_factory.mktemp(f"tiny-{family}-{seed}")
            built[(family, seed)] = save_tiny_model(family, folder, seed=seed)
        return built[(family, seed)]

    return make


@pytest.fixture(scope="session")
def tiny_qwen_adapter(tiny_model_dir: Callable[..., Path]) -> Adapter:
    """Tiny Qwen2.5-VL adapter (seed 0), loaded by folder path."""
    from .tiny_models import load_tiny_adapter

    return load_tiny_adapter(tiny_model_dir("qwen2_5_vl"))


@pytest.fixture(scope="session")
def tiny_gemma_adapter(tiny_model_dir: Callable[..., Path]) -> Adapter:
    """Tiny Gemma 3 adapter (seed 0), loaded by folder path."""
    from .tiny_models import load_tiny_adapter

    return load_tiny_adapter(tiny_model_dir("gemma3"))


@pytest.fixture(scope="session")
def tiny_sam_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """Folder of the tiny random SAM model and processor (seed 0), built once."""
    from .tiny_sam import save_tiny_sam

    return save_tiny_sam(tmp_path_factory.mktemp("tiny-sam"))


@pytest.fixture(scope="session")
def adapter_conformance(tiny_model_dir: Callable[..., Path]) -> Callable[..., AdapterReport]:
    """``adapter_conformance(family_or_factory) -> AdapterReport``: the adapter conformance suite.

    Example::

        def test_my_family_conforms(adapter_conformance):
            adapter_conformance("my_family")
    """
    from .adapter_conformance import check_adapter, tiny_factory

    def run(family_or_factory: str | AdapterFactory) -> AdapterReport:
        if isinstance(family_or_factory, str):
            folder = tiny_model_dir(family_or_factory)
            return check_adapter(tiny_factory(family_or_factory, folder), label=family_or_factory)
        return check_adapter(family_or_factory)

    return run
