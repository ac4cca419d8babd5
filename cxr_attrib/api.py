"""``attribute()``: one call from an image and a question to an :class:`Attribution`.

Pipeline: image (any supported form) -> input frame (H, W) grey -> working frame
(S x S resize-pad) -> adapter -> answer (given or greedy) -> method (working frame)
-> validation -> result in the input frame.
"""

from __future__ import annotations

import json
import os
import platform
import time
from collections.abc import Mapping
from typing import Any

import numpy as np
from PIL import Image as PILImage

from .adapter import LoadOptions, Query, Scorer
from .blame import blamed_party
from .capabilities import adapter_label, check_capabilities
from .errors import ArgumentTypeError, CxrAttribError, InputError, MethodContractError, MethodFailedError
from .frames import ResizePad, grid_to_working
from .imageio import LoadedImage, load_image
from .method import Method, MethodOutput, MethodRequest, shown
from .models import load_adapter
from .registry import get_method, methods, registered_by
from .result import Attribution, Concept, Meta, Target, TokenScore
from .scoring.boxes import DERIVED_BOXES, input_heatmap_boxes
from .scoring.localisation import as_boxes
from .targets import Mode, build_prompt, validate_span_policy, validate_text

__all__ = ["DEFAULT_METHOD", "NO_MODEL", "attribute", "check_argument_types", "finish_result"]

DEFAULT_METHOD = "medfocus"
"""The method ``attribute()`` and ``cxr-attrib attribute`` use when none is named (the paper's
concept-based causal attribution, docs/methods/medfocus.md)."""

NO_MODEL = "none"
"""Model reference meaning "no model": only a model-free method with a given answer runs."""

MAX_SEED = 2**63 - 1
"""Largest accepted seed (torch and numpy both take 0 .. 2**63 - 1)."""

ImageSource = Any  # path, bytes, PIL image, numpy array or LoadedImage


def _plugin_label(method: str) -> str:
    """``"<distribution> <version>"`` of the plugin that registered ``method`` (or its name)."""
    info = registered_by("methods", method)
    if info is None:
        return "an unknown plugin"
    if info.distribution:
        return f"{info.distribution} {info.version or '(unknown version)'}"
    return f"plugin {info.name!r} (registered in Python)"


def _versions(method: str) -> dict[str, str]:
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
        "method_plugin": _plugin_label(method),
    }


def _check_seed(seed: Any) -> int:
    if isinstance(seed, bool) or not isinstance(seed, (int, np.integer)) or not 0 <= seed <= MAX_SEED:
        raise InputError(f"seed={seed!r} is invalid; expected an integer in [0, {MAX_SEED}]")
    return int(seed)


def _check_model_need(model: Any, method: type[Method], answer: str | None) -> None:
    """Refuse ``model="none"`` unless a model-free method explains a given answer."""
    no_model = isinstance(model, str) and model == NO_MODEL
    if not no_model or (not method.uses_model and answer is not None):
        return
    free = ", ".join(name for name, cls in methods().items() if not cls.uses_model) or "(none registered)"
    why = f"method {method.name!r} uses the model" if method.uses_model else "no answer was given to explain"
    raise InputError(
        f"model {NO_MODEL!r} means no model, but {why}. Without a model only a model-free method "
        f"({free}) with an answer (answer=... / --answer) can run; otherwise name a model."
    )


def _validate(
    method: str, out: Any, size: int, n_target: int | None, grid_shape: tuple[int, int] | None
) -> MethodOutput:
    def fail(problem: str) -> MethodContractError:
        return MethodContractError(f"method {method!r} broke the output contract: {problem}")

    if not isinstance(out, MethodOutput):
        raise fail(f"returned {type(out).__name__}; expected MethodOutput")
    if out.heatmap is None and out.grid is None and out.boxes is None and out.concepts is None:
        raise fail("returned no heatmap, grid, boxes or concepts")
    for name, arr, shape in (("heatmap", out.heatmap, (size, size)), ("grid", out.grid, grid_shape)):
        if arr is None:
            continue
        arr = np.asarray(arr)
        if arr.ndim != 2 or (shape is not None and arr.shape != tuple(shape)):
            where = "working frame" if name == "heatmap" else "the adapter's image-token grid"
            raise fail(f"{name} has shape {arr.shape}; expected {tuple(shape) if shape else '(gh, gw)'} ({where})")
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
        if n_target is not None and scores.shape != (n_target,):
            raise fail(f"token_scores has shape {scores.shape}; expected ({n_target},), one per target token")
        if not np.all(np.isfinite(scores)):
            raise fail("token_scores contains NaN or infinite values")
    try:
        json.dumps(dict(out.info), allow_nan=False)
    except (TypeError, ValueError) as exc:
        raise fail(f"info is not JSON-safe ({exc}); keep it to str, numbers, bools, lists and dicts") from exc
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
    warnings: tuple[str, ...] = (),
    grid_shape: tuple[int, int] | None = None,
    answer_logprob: float | None = None,
) -> Attribution:
    """Validate a method's working-frame output and express it in the input frame.

    A heatmap method that gives no boxes gets the boxes the scorer would make of
    its heatmap (:func:`~cxr_attrib.scoring.boxes.input_heatmap_boxes`), recorded
    as ``meta.info["derived_boxes"]``.

    Args:
        method: the method class that produced ``out``.
        out: its working-frame output.
        request: the request it was given.
        frame: the input <-> working frame transform.
        pixels: (H, W) uint8 input-frame image.
        target: the explained tokens.
        model_name: the model reference for ``meta``.
        wall_time_s: seconds spent in the method.
        passes: model pass counts for ``meta``.
        grid_shape: (gh, gw) the adapter's image-token grid; a ``grid`` of another
            shape is refused. None skips that check (no model).
        answer_logprob: the model's log-probability of the answer it generated (the sum of
            ``Generation.logprobs``; a dual encoder's log p of the chosen prompt), recorded as
            ``meta.info["answer_logprob"]``; None when the answer was given.

    Raises:
        MethodContractError: the output breaks the contract (names what and why).
    """
    out = _validate(method.name, out, request.size, len(target.token_ids) or None, grid_shape)
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

    boxes, info = to_input(out.boxes), dict(out.info)
    if answer_logprob is not None:
        info["answer_logprob"] = answer_logprob
    if method.output == "heatmap" and not boxes and heat is not None:
        boxes = tuple(map(tuple, input_heatmap_boxes(heat, frame)))
        info["derived_boxes"] = DERIVED_BOXES
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
        versions=_versions(method.name),
        info=info,
        warnings=tuple(warnings) + tuple(str(w) for w in out.warnings),
    )
    return Attribution(
        answer=target.text,
        target=target,
        meta=meta,
        heatmap=heat,
        grid=grid,
        boxes=boxes,
        concepts=concepts,
        tokens=tokens,
        image=pixels,
    )


_ARGUMENT_TYPES: Mapping[str, tuple[type, ...]] = {
    "model": (str, os.PathLike, Scorer),
    "image": (str, os.PathLike, bytes, np.ndarray, LoadedImage, PILImage.Image),
    "question": (str,),
    "method": (str,),
    "answer": (str, type(None)),
    "load_options": (LoadOptions, type(None)),
}


def check_argument_types(function: str, **arguments: Any) -> None:
    """Refuse an argument of the wrong type with a TypeError naming the parameter.

    Raises:
        ArgumentTypeError: e.g. ``attribute(42, ...)``: "attribute(): model must be
            str or PathLike or Scorer, got int 42".
    """
    for name, value in arguments.items():
        allowed = _ARGUMENT_TYPES[name]
        if not isinstance(value, allowed):
            names = " or ".join("None" if t is type(None) else t.__name__ for t in allowed)
            raise ArgumentTypeError(f"{function}(): {name} must be {names}, got {type(value).__name__} {shown(value)}")


def attribute(
    model: str | os.PathLike | Scorer,
    image: ImageSource,
    question: str,
    method: str = DEFAULT_METHOD,
    *,
    mode: Mode = "direct",
    target: str = "answer",
    answer: str | None = None,
    seed: int = 0,
    load_options: LoadOptions | None = None,
    truth_boxes: Any = None,
    **params: Any,
) -> Attribution:
    """Explain which part of ``image`` the model used to answer ``question``.

    Args:
        model (str | PathLike | Scorer): registry key (``cxr-attrib models``),
            Hugging Face id, local checkpoint folder, or a loaded adapter; ``"none"``
            (:data:`NO_MODEL`) for a model-free method with a given ``answer``.
        image: path (PNG/JPEG/TIFF/DICOM), bytes, PIL image, numpy array (H, W) or
            (H, W, C), or a :class:`~cxr_attrib.imageio.LoadedImage`.
        question (str): the base question, e.g. "Is there evidence of nodule in the image?".
        method (str): registered method name (``cxr-attrib methods``). Default: :data:`DEFAULT_METHOD`.
        mode (str): "direct" or "reasoning" prompt. Default: "direct".
        target (str): span policy "answer", "response" or "turn". Default: "answer".
        answer (str | None): the response to explain; None generates it greedily.
        seed (int): seed for stochastic methods, in [0, 2**63 - 1]. Default: 0.
        load_options (LoadOptions | None): dtype / device settings. Default: None.
        truth_boxes (array-like | None): (K, 4) ground-truth boxes in the input frame
            (``x1, y1, x2, y2``, exclusive ends); required by, and only passed to,
            reference methods that declare ``needs_truth`` (``truth``). Default: None.
        **params: the method's hyper-parameters (see its ``defaults``).

    Returns:
        Attribution: heatmap (H, W) and boxes in the input image's own frame.

    Raises:
        UnknownMethodError, UnknownModelError: with the closest registered names.
        MethodParameterError: a parameter the method does not declare, or of the
            wrong type or range (checked before any model is loaded).
        InputError: a bad seed, or ``model="none"`` where a model is needed.
        TargetError: an empty or non-UTF-8 question or answer, an unknown mode or target.
        LoadOptionsError: unusable load options.
        ModelCapabilityError: the model lacks an adapter surface the method needs
            (names it and the methods that would run), checked before any pass.
        ImageLoadError: an unreadable image.
        MethodFailedError: the method raised (names it and its plugin's distribution).
        MethodContractError: the method returned something invalid.
    """
    check_argument_types("attribute", model=model, image=image, question=question, method=method, answer=answer,
                         load_options=load_options)
    method_cls = get_method(method)
    options = load_options or LoadOptions()
    size = model.working_size if isinstance(model, Scorer) else options.working_size
    checked_params = method_cls.check_params(params, size=size)
    seed = _check_seed(seed)
    policy = validate_span_policy(target)
    prompt = build_prompt(question, mode)
    if answer is not None:
        validate_text(answer, "the answer")
    _check_model_need(model, method_cls, answer)
    truth = _check_truth(method_cls, truth_boxes)
    loaded = image if isinstance(image, LoadedImage) else load_image(image)
    pixels = loaded.pixels
    adapter = None
    if method_cls.uses_model or answer is None:
        adapter = load_adapter(model, options)
    check_capabilities(method_cls, adapter)
    method_cls.validate(checked_params, adapter if method_cls.uses_model else None)
    working_size = adapter.working_size if adapter is not None else options.working_size
    frame = ResizePad(int(pixels.shape[0]), int(pixels.shape[1]), size=working_size)
    working = frame.image_to_working(pixels)
    working.setflags(write=False)
    generated, answer_logprob = 0, None
    if answer is None:
        adapter.counter.reset()
        generation = adapter.generate(working, prompt)
        answer, generated = generation.text, adapter.counter.generate_calls
        answer_logprob = float(sum(generation.logprobs)) if generation.logprobs else None
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
        truth=None if truth is None else frame.boxes_to_working(truth),
    )
    grid_shape = None
    if adapter is not None:
        encoding = adapter.encode([request.image], query)
        grid_shape = tuple(encoding.grid)
        target_info = Target(
            text=answer, policy=policy, mode=mode,
            token_ids=tuple(int(i) for i in encoding.target_ids), tokens=encoding.target_tokens,
        )
        adapter.counter.reset()
    else:
        target_info = Target(text=answer, policy=policy, mode=mode)
    start = time.perf_counter()
    out = _run_method(method_cls, request)
    wall = time.perf_counter() - start
    passes = adapter.counter.as_dict() if adapter is not None and method_cls.uses_model else {}
    if generated:
        passes["generate_calls"] = passes.get("generate_calls", 0) + generated
    model_name = model.name if isinstance(model, Scorer) else os.fspath(model)
    return finish_result(
        method_cls, out, request, frame, pixels=pixels, target=target_info,
        model_name=model_name, wall_time_s=wall, passes=passes,
        warnings=(str(loaded.meta["warning"]),) if "warning" in loaded.meta else (),
        grid_shape=grid_shape if method_cls.uses_model else None, answer_logprob=answer_logprob,
    )


def _check_truth(method: type[Method], truth_boxes: Any) -> np.ndarray | None:
    """The ground-truth boxes a ``needs_truth`` method gets (None for any other method)."""
    if not method.needs_truth:
        return None
    if truth_boxes is None:
        raise InputError(f"method {method.name!r} is the ground-truth reference and needs truth_boxes=(K, 4) "
                         "boxes in the input frame; a benchmark without boxes has no truth row")
    boxes = as_boxes(truth_boxes, name="truth_boxes", allow_inverted=False)
    if boxes.shape[0] == 0:
        raise InputError(f"method {method.name!r} got no ground-truth box (truth_boxes is empty); "
                         "the truth row needs at least one box")
    return boxes


def _run_method(method: type[Method], request: MethodRequest) -> MethodOutput:
    """Call the method; an unexpected exception names the party whose code raised it
    (:func:`cxr_attrib.blame.blamed_party`): the adapter and its plugin, or the method and its plugin."""
    try:
        return method().attribute(request)
    except CxrAttribError:
        raise
    except Exception as exc:
        if blamed_party(exc, method, request.adapter) == "adapter":
            raise MethodFailedError(
                f"{adapter_label(request.adapter)} of model {request.adapter.name!r} failed while method "
                f"{method.name!r} ran: {type(exc).__name__}: {exc}. This is a bug in the adapter; report it to "
                "its authors (run with --debug for the traceback)."
            ) from exc
        raise MethodFailedError(
            f"method {method.name!r} (from {_plugin_label(method.name)}) failed: "
            f"{type(exc).__name__}: {exc}. This is a bug in the method; report it to its authors "
            "(run with --debug for the traceback)."
        ) from exc
