"""A Scorer is a complete adapter for black-box methods; other methods are refused by surface,
before any pass; a failure is blamed on the party whose code raised it."""

from __future__ import annotations

import numpy as np
import pytest

from cxr_attrib import attribute
from cxr_attrib.adapter import Scorer
from cxr_attrib.capabilities import runnable_methods
from cxr_attrib.embedding import EmbeddingSurface
from cxr_attrib.errors import MethodFailedError, ModelCapabilityError
from cxr_attrib.registry import methods

Q = "Is there evidence of nodule in the image?"
BLACK_BOX = ["medfocus", "occlusion", "rise", "whole_image", "center", "anatomy_prior"]


def scorer_methods() -> list[str]:
    """Registered methods that need no surface beyond Scorer (the black-box ones and reference rows)."""
    return sorted(name for name, cls in methods().items() if not cls.required_surfaces())
FAMILY_WORDS = ("qwen", "gemma", "llava", "clip", "siglip")


class BlackBox(Scorer):
    """A legitimate black-box adapter: encode, score and generate, nothing else (wraps a tiny model)."""

    family = "black_box"

    def __init__(self, inner) -> None:
        super().__init__("black-box", inner.options)
        self.inner, self.counter = inner, inner.counter

    def encode(self, images, query):
        return self.inner.encode(images, query)

    def score(self, images, query, *, batch_size=None):
        return self.inner.score(images, query, batch_size=batch_size)

    def generate(self, image, prompt, *, max_new_tokens=256):
        return self.inner.generate(image, prompt, max_new_tokens=max_new_tokens)


@pytest.fixture(scope="module")
def black_box(tiny_qwen_adapter) -> BlackBox:
    return BlackBox(tiny_qwen_adapter)


def image() -> np.ndarray:
    return np.random.default_rng(0).integers(0, 256, (64, 64), dtype=np.uint8)


@pytest.mark.parametrize("method", BLACK_BOX)
def test_a_scorer_runs_every_black_box_method(black_box, method):
    params = {"n_masks": 8} if method == "rise" else {}
    result = attribute(black_box, image(), Q, method=method, answer="Yes", **params)
    assert result.heatmap is not None or result.boxes or result.concepts
    assert result.meta.model == "black-box"


@pytest.mark.parametrize("method", sorted(set(methods()) - set(scorer_methods())))
def test_every_other_method_is_refused_by_surface_before_any_pass(black_box, method):
    black_box.counter.reset()
    with pytest.raises(ModelCapabilityError) as caught:
        attribute(black_box, image(), Q, method=method)  # no answer: a pass would generate first
    message = str(caught.value)
    surfaces = [s.__name__ for s in methods()[method].required_surfaces()]
    assert f"method {method!r} needs the adapter surface {surfaces[0]} (" in message
    assert "Methods that run on this model: " + ", ".join(scorer_methods()) + "." in message
    assert "'black-box'" in message and "\n" not in message
    assert not any(word in message.lower() for word in FAMILY_WORDS), message
    assert set(black_box.counter.as_dict().values()) == {0}


def test_runnable_methods_of_a_full_adapter_are_all_of_them(tiny_qwen_adapter, black_box):
    needs_embeddings = {name for name, cls in methods().items() if EmbeddingSurface in cls.required_surfaces()}
    assert needs_embeddings == {"similarity_map"}  # a dual encoder's joint space, which a generative VLM lacks
    assert runnable_methods(tiny_qwen_adapter) == sorted(set(methods()) - needs_embeddings)
    assert set(BLACK_BOX) <= set(scorer_methods()) and runnable_methods(black_box) == scorer_methods()


class Broken(BlackBox):
    """An adapter with a bug in its own code."""

    def score(self, images, query, *, batch_size=None):
        return {}["no such key"]  # KeyError raised in the adapter's code


def test_a_bug_in_the_adapter_blames_the_adapter(black_box):
    with pytest.raises(MethodFailedError) as caught:
        attribute(Broken(black_box.inner), image(), Q, method="occlusion", answer="Yes")
    message = str(caught.value)
    assert message.startswith("adapter Broken (module test_capabilities) of model 'black-box' failed while method "
                              "'occlusion' ran: KeyError")
    assert "bug in the adapter" in message and "bug in the method" not in message


def test_a_bug_in_the_method_blames_the_method(black_box, registered_plugin):
    from cxr_attrib import hookimpl
    from cxr_attrib.method import Method

    class Faulty(Method):
        name = "faulty_stub"
        summary = "Divides by zero after one good pass."
        reference = "none"

        def attribute(self, request):
            request.adapter.score([request.image], request.query)
            return 1 / 0

    class Plugin:
        __name__ = "FaultyPlugin"

        @hookimpl
        def register_methods(self, register):
            register(Faulty)

    registered_plugin(Plugin())
    with pytest.raises(MethodFailedError, match=r"^method 'faulty_stub' \(from plugin .*\) failed: ZeroDivisionError"
                                                r".*bug in the method"):
        attribute(black_box, image(), Q, method="faulty_stub", answer="Yes")
