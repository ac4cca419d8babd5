"""``attribute()``: one call from an image and a question to an :class:`Attribution`.

Pipeline: image (any supported form) -> input frame (H, W) grey -> working frame
(S x S resize-pad) -> adapter -> answer (given or greedy) -> method (working frame)
-> validation -> result in the input frame.
"""

from __future__ import annotations

import os
import platform
import time
from collections.abc import Mapping
from typing import Any

import numpy as np

from .adapter import Adapter, LoadOptions, Query
from .errors import MethodContractError, MethodParameterError
from .frames import ResizePad, grid_to_working
from .imageio import LoadedImage, load_image
from .method import Method, MethodOutput, MethodRequest
from .models import load_adapter, with_attentions
from .registry import get_method
from .result import Attribution, Concept, Meta, Target, TokenScore
from .targets import Mode, build_prompt, validate_span_policy

__all__ = ["DEFAULT_METHOD", "attribute", "finish_result"]

DEFAULT_METHOD = "medfocus"
"""The method ``attribute()`` and ``cxr-attrib attribute`` use when none is named (the paper's
concept-based causal attribution, docs/methods/medfocus.md)."""

ImageSource = Any  # path, bytes, PIL image, numpy array or LoadedImage


def _versions() -> dict[str, str]:
    import captum
    import torch
    import transformers

    from . import __version__

    return {
        "cxr_attrib": __version__,
        "torch": torch.__version__,
        "transformers": transformers.__version__,
        "captum": captum.__version__,
        "python": platform.python_version(),
    }


def _check_params(method: type[Method], params: Mapping[str, Any]) -> dict[str, Any]:
    unknown = sorted(set(params) - set(method.defaults))
    if unknown:
        valid = ", ".join(sorted(method.defaults)) or "(none)"
        raise MethodParameterError(
            f"method {method.name!r} has no parameter(s) {', '.join(map(repr, unknown))}; valid: {valid}"
        )
    return {**method.defaults, **params}


def _validate(method: str, out: Any, size: int, n_target: int | None) -> MethodOutput:
    def fail(problem: str) -> MethodContractError:
        return MethodContractError(f"method {method!r} broke the output contract: {problem}")

    if not isinstance(out, MethodOutput):
        raise fail(f"returned {type(out).__name__}; expected MethodOutput")
    if out.heatmap is None and out.grid is None and out.boxes is None and out.concepts is None:
        raise fail("returned no heatmap, grid, boxes or concepts")
    for name, arr, shape in (("heatmap", out.heatmap, (size, size)), ("grid", out.grid, None)):
        if arr is None:
            continue
        arr = np.asarray(arr)
        if arr.ndim != 2 or (shape is not None and arr.shape != shape):
            raise fail(f"{name} has shape {arr.shape}; expected {shape or '(gh, gw)'} (working frame)")
        if not np.all(np.isfinite(arr)):
            raise fail(f"{name} contains NaN or infinite values")
    boxes = [np.asarray(b, dtype=float) for b in (out.boxes or ())]
    for concept in (out.concepts or {}).values():
        if not np.isfinite(concept.score):
            raise fail(f"a concept score is {concept.score}")
        boxes += [np.asarray(b, dtype=float) for b in concept.boxes]
    for box in boxes:
        if box.shape != (4,) or not np.all(np.isfinite(box)) or box[2] < box[0] or box[3] < box[1]:
            raise fail(f"box {box.tolist()} is not (x1, y1, x2, y2) with x2 >= x1, y2 >= y1")
    if out.token_scores is not None:
        scores = np.asarray(out.token_scores)
        if not np.all(np.isfinite(scores)) or (n_target is not None and scores.shape != (n_target,)):
            raise fail(f"token_scores has shape {scores.shape} or non-finite values; expected ({n_target},)")
    return out


def finish_result(
    method: type[Method],
    out: MethodOutput,
    request: MethodRequest,
    frame: ResizePad,
    *,
    pixels: np.ndarray,
    target: Target,
    model_name: str,
    wall_time_s: float,
    passes: Mapping[str, int],
) -> Attribution:
    """Validate a method's working-frame output and express it in the input frame."""
    out = _validate(method.name, out, request.size, len(target.token_ids) or None)
    heat = None
    grid = None if out.grid is None else np.asarray(out.grid, dtype=np.float32)
    if out.heatmap is not None:
        heat = np.asarray(out.heatmap, dtype=np.float32)
    elif grid is not None:
        heat = grid_to_working(grid, request.size)
    if heat is not None:
        heat = frame.heatmap_to_input(np.where(request.content_mask, heat, 0.0).astype(np.float32))

    def to_input(boxes: Any) -> tuple:
        if not boxes:
            return ()
        return tuple(map(tuple, frame.boxes_to_input(np.asarray(boxes, dtype=float).reshape(-1, 4))))

    concepts = {
        name: Concept(name, float(c.score), to_input(c.boxes)) for name, c in (out.concepts or {}).items()
    }
    tokens = ()
    if out.token_scores is not None:
        tokens = tuple(
            TokenScore(tok, int(tid), float(s))
            for tok, tid, s in zip(target.tokens, target.token_ids, np.asarray(out.token_scores))
        )
    meta = Meta(
        method=method.name,
        model=model_name,
        params=request.params,
        seed=request.seed,
        question=request.query.question,
        prompt=request.query.prompt,
        unit=out.unit,
        image_size=(int(pixels.shape[0]), int(pixels.shape[1])),
        working_size=request.size,
        wall_time_s=wall_time_s,
        passes=passes,
        versions=_versions(),
        info=out.info,
    )
    return Attribution(
        answer=target.text,
        target=target,
        meta=meta,
        heatmap=heat,
        grid=grid,
        boxes=to_input(out.boxes),
        concepts=concepts,
        tokens=tokens,
        image=pixels,
    )


def attribute(
    model: str | os.PathLike | Adapter,
    image: ImageSource,
    question: str,
    method: str = DEFAULT_METHOD,
    *,
    mode: Mode = "direct",
    target: str = "answer",
    answer: str | None = None,
    seed: int = 0,
    load_options: LoadOptions | None = None,
    **params: Any,
) -> Attribution:
    """Explain which part of ``image`` the model used to answer ``question``.

    Args:
        model (str | PathLike | Adapter): registry key (``cxr-attrib models``),
            Hugging Face id, local checkpoint folder, or a loaded adapter.
        image: path (PNG/JPEG/TIFF/DICOM), bytes, PIL image, numpy array (H, W) or
            (H, W, C), or a :class:`~cxr_attrib.imageio.LoadedImage`.
        question (str): the base question, e.g. "Is there evidence of nodule in the image?".
        method (str): registered method name (``cxr-attrib methods``). Default: :data:`DEFAULT_METHOD`.
        mode (str): "direct" or "reasoning" prompt. Default: "direct".
        target (str): span policy "answer", "response" or "turn". Default: "answer".
        answer (str | None): the response to explain; None generates it greedily.
        seed (int): seed for stochastic methods. Default: 0.
        load_options (LoadOptions | None): dtype / device settings. Default: None.
        **params: the method's hyper-parameters (see its ``defaults``).

    Returns:
        Attribution: heatmap (H, W) and boxes in the input image's own frame.

    Raises:
        UnknownMethodError, UnknownModelError: with the closest registered names.
        MethodParameterError: a parameter the method does not declare.
        ImageLoadError: an unreadable image.
        MethodContractError: the method returned something invalid.
    """
    method_cls = get_method(method)
    checked_params = _check_params(method_cls, params)
    policy = validate_span_policy(target)
    prompt = build_prompt(question, mode)
    loaded = image if isinstance(image, LoadedImage) else load_image(image)
    pixels = loaded.pixels
    options = load_options or LoadOptions()
    if method_cls.needs_attentions:
        options = with_attentions(options)
    adapter = None
    if method_cls.uses_model or answer is None:
        adapter = load_adapter(model, options)
    working_size = adapter.working_size if adapter is not None else options.working_size
    frame = ResizePad(int(pixels.shape[0]), int(pixels.shape[1]), size=working_size)
    working = frame.image_to_working(pixels)
    working.setflags(write=False)
    if answer is None:
        answer = adapter.generate(working, prompt).text
    query = Query(question=question, mode=mode, prompt=prompt, answer=answer, policy=policy)
    mask = frame.content_mask()
    mask.setflags(write=False)
    request = MethodRequest(
        adapter=adapter if method_cls.uses_model else None,
        image=working,
        content_mask=mask,
        query=query,
        params=checked_params,
        seed=seed,
    )
    if adapter is not None:
        encoding = adapter.encode([request.image], query)
        target_info = Target(
            text=answer, policy=policy, mode=mode,
            token_ids=tuple(int(i) for i in encoding.target_ids), tokens=encoding.target_tokens,
        )
        adapter.counter.reset()
    else:
        target_info = Target(text=answer, policy=policy, mode=mode)
    start = time.perf_counter()
    out = method_cls().attribute(request)
    wall = time.perf_counter() - start
    passes = adapter.counter.as_dict() if adapter is not None and method_cls.uses_model else {}
    model_name = model.name if isinstance(model, Adapter) else os.fspath(model)
    return finish_result(
        method_cls, out, request, frame, pixels=pixels, target=target_info,
        model_name=model_name, wall_time_s=wall, passes=passes,
    )
