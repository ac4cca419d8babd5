"""Shared fixtures: inline stub plugins that always unregister."""

from __future__ import annotations

import itertools
import os
import sys
from collections.abc import Callable, Iterator
from pathlib import Path
from types import SimpleNamespace

import pytest
from hypothesis import settings

from cxr_attrib import registry

# The training recipe is a tool script (tools/train_phantom.py), not part of the package.
sys.path.insert(0, str(Path(__file__).resolve().parents[1] / "tools"))

# Tests never touch the network: model references that are not local fail at once.
os.environ["HF_HUB_OFFLINE"] = "1"
os.environ["TRANSFORMERS_OFFLINE"] = "1"

# Property tests: no per-example deadline (shared 2-core machines), and in CI the same
# examples on every run, so a red CI always reproduces.
settings.register_profile("dev", deadline=None)
settings.register_profile("ci", deadline=None, derandomize=True, print_blob=True)
settings.load_profile("ci" if os.environ.get("CI") else "dev")

_names = itertools.count()


@pytest.fixture
def registered_plugin() -> Iterator[Callable[..., str]]:
    """Register stub plugin objects for one test; they are removed afterwards.

    Usage: ``name = registered_plugin(StubPlugin)`` (optionally ``name=...``).
    """
    added: list[str] = []

    def register(plugin: object, name: str | None = None) -> str:
        name = name or f"{getattr(plugin, '__name__', 'stub')}-{next(_names)}"
        registry.register_plugin(plugin, name)
        added.append(name)
        return name

    try:
        yield register
    finally:
        for name in added:
            registry.unregister_plugin(name)


@pytest.fixture()
def segment_spy(monkeypatch, tiny_sam_dir):
    """Records every BoxSegmenter.segment call (prompt boxes, result) and every SAM model forward."""
    from cxr_attrib.segmentation import BoxSegmenter, load_segmenter

    record = SimpleNamespace(calls=[], forwards=0)
    real = BoxSegmenter.segment

    def spy(self, image, boxes):
        out = real(self, image, boxes)
        record.calls.append((list(boxes), out))
        return out

    monkeypatch.setattr(BoxSegmenter, "segment", spy)
    model = load_segmenter(tiny_sam_dir).model
    handle = model.register_forward_hook(lambda *_: setattr(record, "forwards", record.forwards + 1))
    yield record
    handle.remove()
