"""The conformance suite every attribution method must pass.

One call, :func:`check_method`, runs the method through :func:`cxr_attrib.attribute`
on images of several shapes and checks the properties the core promises users:

* shape and frame: the heatmap is (H, W) of the input image; boxes lie inside it;
* finiteness: no NaN or infinity anywhere (heatmap, grid, concepts, token scores);
* determinism under a seed: the same seed gives bit-identical results;
* no mutation of inputs: the caller's array is unchanged;
* bookkeeping: ``meta`` records the parameters, the seed and (for methods that use
  the model) at least one forward pass or generation.

Plugin authors call it from their own tests with a tiny model::

    from cxr_attrib.testing import check_method

    def test_my_method_conforms(tiny_qwen_adapter):
        check_method("my_method", tiny_qwen_adapter)
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

import numpy as np

from ..adapter import Adapter
from ..api import attribute
from ..result import Attribution

__all__ = ["check_method", "check_refusal", "conformance_images"]

QUESTION = "Is there evidence of nodule in the image?"


def conformance_images(seed: int = 0) -> list[np.ndarray]:
    """Three seeded grey uint8 images: tall (48, 30), wide (20, 64) and square (32, 32)."""
    rng = np.random.default_rng(seed)
    return [rng.integers(0, 256, size=shape, dtype=np.uint8) for shape in ((48, 30), (20, 64), (32, 32))]


def _check_frame(result: Attribution, shape: tuple[int, int], where: str) -> None:
    h, w = shape
    if result.heatmap is not None:
        assert result.heatmap.shape == shape, f"{where}: heatmap {result.heatmap.shape} != input {shape}"
        assert np.all(np.isfinite(result.heatmap)), f"{where}: heatmap has non-finite values"
    if result.grid is not None:
        assert np.all(np.isfinite(result.grid)), f"{where}: grid has non-finite values"
    boxes = list(result.boxes) + [b for c in result.concepts.values() for b in c.boxes]
    for x1, y1, x2, y2 in boxes:
        assert 0 <= x1 <= x2 <= w and 0 <= y1 <= y2 <= h, f"{where}: box {(x1, y1, x2, y2)} outside {w}x{h}"
    for concept in result.concepts.values():
        assert np.isfinite(concept.score), f"{where}: concept {concept.name} score {concept.score}"
    for token in result.tokens:
        assert np.isfinite(token.score), f"{where}: token {token.token!r} score {token.score}"


def check_method(
    method: str,
    model: Adapter | str,
    *,
    params: Mapping[str, Any] | None = None,
    images: Sequence[np.ndarray] | None = None,
    answer: str = "Yes",
    seed: int = 0,
) -> list[Attribution]:
    """Run the conformance checks for ``method`` on ``model``.

    Args:
        method: a registered method name.
        model: an adapter (e.g. the ``tiny_qwen_adapter`` fixture) or a model reference.
        params: hyper-parameters to pass (keep them small for speed). Default: None.
        images: (H, W) uint8 images to test on. Default: :func:`conformance_images`.
        answer: the teacher-forced answer. Default: "Yes".
        seed: the seed used for the determinism check. Default: 0.

    Returns:
        The results on each image (for further, method-specific assertions).

    Raises:
        AssertionError: naming the image and the property that failed.
    """
    params = dict(params or {})
    results = []
    for image in images if images is not None else conformance_images(seed):
        before = image.copy()
        where = f"{method} on a {image.shape[0]}x{image.shape[1]} image"
        first = attribute(model, image, QUESTION, method=method, answer=answer, seed=seed, **params)
        second = attribute(model, image, QUESTION, method=method, answer=answer, seed=seed, **params)
        assert np.array_equal(image, before), f"{where}: the caller's image was modified"
        _check_frame(first, image.shape, where)
        same = dict(first.to_dict(), meta=None) == dict(second.to_dict(), meta=None)
        assert same, f"{where}: two runs with seed {seed} differ"
        assert dict(first.meta.params) == {**dict(first.meta.params), **params}, f"{where}: params not recorded"
        assert first.meta.seed == seed, f"{where}: seed not recorded"
        if first.meta.passes:
            model_calls = first.meta.passes.get("forward_calls", 0) + first.meta.passes.get("generate_calls", 0)
            assert model_calls >= 1, f"{where}: no forward pass or generation recorded"
        results.append(first)
    return results


def check_refusal(method: str, model: Adapter, match: str) -> None:
    """Check that ``method`` refuses ``model`` with a capability error before any model pass.

    Args:
        method (str): a registered method name.
        model (Adapter): a loaded adapter that lacks a surface the method needs.
        match (str): a regular expression the error message must match.

    Raises:
        AssertionError: no :class:`~cxr_attrib.errors.ModelCapabilityError`, a message not
            matching ``match``, or a model pass counted before the refusal.
    """
    import re

    from ..errors import ModelCapabilityError

    model.counter.reset()
    try:
        attribute(model, np.zeros((32, 32), np.uint8), QUESTION, method=method, answer="Yes")
    except ModelCapabilityError as exc:
        assert re.search(match, str(exc)), f"{method}: the refusal {str(exc)!r} does not match {match!r}"
    else:
        raise AssertionError(f"{method} ran on {model.name!r}; expected a ModelCapabilityError before any pass")
    counts = model.counter.as_dict()
    assert not any(counts.values()), f"{method}: passes before the refusal: {counts}"
