"""From command-line choices to a checked :class:`RunConfig` and the samples of a shard.

Everything here runs before any model is loaded: unknown benchmarks, models, methods
and parameters fail here, with the closest registered names.
"""

from __future__ import annotations

import json
import os
from collections import Counter
from collections.abc import Iterable, Iterator, Sequence
from typing import Any

from cxr_attrib.benchmark import Benchmark, Sample
from cxr_attrib.errors import DataError, MethodParameterError, UnknownModelError
from cxr_attrib.filtering import CounterfactualProvider, InpaintProvider
from cxr_attrib.registry import get_benchmark, get_method, methods, model_cards
from cxr_attrib.perturb import check_removal_fill
from cxr_attrib.targets import validate_mode
from cxr_attrib.variants import canonical_label, parse_variant

from .config import FILTERS, RunConfig, sample_key
from .shard import Shard

__all__ = ["build_config", "counterfactual_provider", "parse_method_params", "select_samples", "shard_samples"]


def parse_method_params(items: Iterable[str], chosen: Sequence[str]) -> dict[str, dict[str, Any]]:
    """Parse ``-p method.param=value`` options (value: a JSON literal or a plain string).

    Args:
        items (Iterable[str]): the option values.
        chosen (Sequence[str]): the run's method labels; a parameter of a method that is
            not a plain label of the run is an error (a variant sets its parameters in
            its brackets).

    Returns:
        dict: method -> {param: value} (only the given ones).

    Raises:
        MethodParameterError: malformed item, or a method not in the run.
    """
    out: dict[str, dict[str, Any]] = {}
    for item in items:
        key, sep, raw = item.partition("=")
        method, dot, param = key.strip().partition(".")
        if not sep or not dot or not method or not param:
            raise MethodParameterError(f"-p {item!r}: expected METHOD.PARAM=VALUE, e.g. occlusion.tiles=4")
        if method not in chosen:
            raise MethodParameterError(f"-p {item!r}: method {method!r} is not in this run ({', '.join(chosen)})")
        try:
            value = json.loads(raw)
        except json.JSONDecodeError:
            value = raw
        out.setdefault(method, {})[param] = value
    return out


def _check_model(reference: str) -> str:
    """A registry key, an existing local folder or a Hugging Face id (``org/name``)."""
    cards = model_cards()
    if reference in cards or os.path.exists(reference) or "/" in reference.strip("/"):
        return reference
    raise UnknownModelError(reference, cards)


def build_config(
    *,
    benchmark: str,
    split: str,
    models: Sequence[str],
    methods_: Sequence[str] | None,
    params: Iterable[str] = (),
    fill: str | float = "noisy_linear",
    mode: str | None = None,
    seed: int = 0,
    limit: int | None = None,
    per_finding: int | None = None,
    filter_: str = "auto",
    max_new_tokens: int = 64,
    steps: int = 10,
    n_random: int = 8,
    fraction: float = 0.1,
    recognition: int = 0,
) -> RunConfig:
    """Check every name and option, then freeze them into a :class:`RunConfig`.

    Args:
        benchmark (str): registered benchmark.
        split (str): its split.
        models (Sequence[str]): model references (at least one).
        methods_ (Sequence[str] | None): method labels, each a registered name or a
            variant ``name[key=value,...]`` (:mod:`cxr_attrib.variants`); None means
            every registered method. Model-free priors and references
            (``uses_model = False``) are always added, except ``needs_truth``
            references on a benchmark without boxes.
        params (Iterable[str]): ``method.param=value`` items.
        fill (str | float): the scorer's fill (:data:`~cxr_attrib.perturb.REMOVAL_FILLS`
            or a grey level in [0, 1]).
        mode (str | None): prompt mode; None uses each sample's own.
        seed, limit, per_finding, max_new_tokens, steps, n_random, fraction, recognition: see
            :class:`RunConfig`.
        filter_ (str): ``"auto"`` (the benchmark's exact counterfactuals when it has
            them, else none), ``"exact"``, ``"inpaint"`` or ``"none"``.

    Returns:
        RunConfig: with full per-method parameters and the resolved filter.

    Raises:
        UnknownBenchmarkError, UnknownModelError, UnknownMethodError: with suggestions.
        MethodParameterError, DataError: bad parameters, labels or options (``truth``
            on a benchmark without boxes, an unknown fill).
    """
    bench = get_benchmark(benchmark)
    if not models:
        raise UnknownModelError("", model_cards())
    models = tuple(dict.fromkeys(_check_model(m) for m in models))
    fill = check_removal_fill(fill)
    registered = methods()
    variants = [parse_variant(m) for m in (registered if methods_ is None else methods_)]
    set_by_label = {canonical_label(get_method(v.name).name, v.params): v.params for v in variants}
    for label in set_by_label:
        cls = get_method(parse_variant(label).name)
        if cls.needs_truth and not bench.has_boxes:
            raise DataError(f"method {label!r} is the ground-truth reference, but benchmark {benchmark!r} has no "
                            "boxes; drop it from --methods")
    named = {parse_variant(label).name for label in set_by_label}
    for name, cls in registered.items():
        if not cls.uses_model and name not in named and (bench.has_boxes or not cls.needs_truth):
            set_by_label[name] = {}
    chosen = list(set_by_label)
    given = parse_method_params(params, chosen)
    full = {label: get_method(parse_variant(label).name).check_params({**fixed, **given.get(label, {})})
            for label, fixed in set_by_label.items()}
    if mode is not None:
        mode = validate_mode(mode)
    if filter_ not in FILTERS:
        raise DataError(f"--filter {filter_!r} is not one of {', '.join(FILTERS)}")
    if filter_ == "auto":
        filter_ = "exact" if bench.counterfactual_provider() is not None else "none"
    if filter_ == "exact" and bench.counterfactual_provider() is None:
        raise DataError(f"--filter exact: benchmark {benchmark!r} has no exact counterfactuals; "
                        "use --filter inpaint (approximate) or --filter none")
    for name, value, low in (("--limit", limit, 1), ("--per-finding", per_finding, 1), ("--steps", steps, 1),
                             ("--n-random", n_random, 1), ("--max-new-tokens", max_new_tokens, 1),
                             ("--recognition", recognition, 0)):
        if value is not None and value < low:
            raise DataError(f"{name} must be >= {low}, got {value}")
    if not 0.0 < fraction <= 1.0:
        raise DataError(f"--fraction must be in (0, 1], got {fraction}")
    return RunConfig(
        benchmark=benchmark, split=split, models=models, methods=tuple(chosen), mode=mode, params=full,
        seed=int(seed), limit=limit, per_finding=per_finding, filter=filter_, max_new_tokens=int(max_new_tokens),
        steps=int(steps), n_random=int(n_random), fraction=float(fraction), fill=fill,
        recognition=int(recognition),
    )


def counterfactual_provider(config: RunConfig, benchmark: Benchmark) -> CounterfactualProvider | None:
    """The provider of the run's causal filter, or None when it does not filter."""
    if config.filter == "exact":
        return benchmark.counterfactual_provider()
    if config.filter == "inpaint":
        return InpaintProvider(seed=config.seed)
    return None


def _replay(source: Iterator[Sample], seen: list[Sample]) -> Iterator[Sample]:
    """Yield ``seen``, then pull more from ``source`` into it (a lazily shared listing)."""
    index = 0
    while True:
        if index == len(seen):
            item = next(source, None)
            if item is None:
                return
            seen.append(item)
        yield seen[index]
        index += 1


def select_samples(config: RunConfig) -> dict[str, list[Sample]]:
    """The candidate samples of every model, listing the benchmark at most once.

    A model's candidates are the split's samples verified for it (``sample.model``
    equal to the model, or None: not model-specific), in benchmark order; the first
    ``per_finding`` of each finding, at most ``limit`` in all. The listing stops as
    soon as every model has its ``limit``.

    Returns:
        dict[str, list[Sample]]: model -> candidates, in ``config.models`` order.
    """
    source = iter(get_benchmark(config.benchmark).samples(split=config.split))
    seen: list[Sample] = []
    out = {}
    for model in config.models:
        taken: Counter[str] = Counter()
        kept: list[Sample] = []
        for sample in _replay(source, seen):
            if sample.model not in (None, model):
                continue
            if config.per_finding is not None:
                if taken[sample.finding] >= config.per_finding:
                    continue
                taken[sample.finding] += 1
            kept.append(sample)
            if len(kept) == config.limit:
                break
        out[model] = kept
    return out


def shard_samples(config: RunConfig, model: str, samples: Iterable[Sample], shard: Shard) -> list[Sample]:
    """The samples whose (sample, model, mode) group this shard owns."""
    return [s for s in samples if shard.owns(sample_key(s.id, model, config.mode or s.mode))]
