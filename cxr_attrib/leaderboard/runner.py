"""Run the work units of one shard into its store: one model load per model, per process.

For each model (in configuration order) the runner loads the model once, then walks
the shard's samples. Per sample it loads the image, runs the causal filter (when the
run filters; the verdict is stored), takes the model's own greedy answer (the
filter's answer on the original image, or one generation), and then runs every
method unit not yet in the store: attribution, scoring, one committed row. A unit
that raises is stored with its error and the run goes on; an image that does not load
fails every unit of its sample. ``KeyboardInterrupt`` (Ctrl-C, or SIGTERM turned into
it by the CLI) leaves the store consistent: the unit in flight is simply not recorded.
"""

from __future__ import annotations

import os
import socket
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
import numpy as np

from cxr_attrib.adapter import Adapter, LoadOptions
from cxr_attrib.api import attribute
from cxr_attrib.benchmark import Sample
from cxr_attrib.filtering import causal_filter
from cxr_attrib.frames import ResizePad
from cxr_attrib.imageio import load_image
from cxr_attrib.models import clear_adapter_cache, load_adapter
from cxr_attrib.registry import get_benchmark, get_method
from cxr_attrib.scoring import Scores, score
from cxr_attrib.scoring.pixel_grounding import grounding_metrics, sample_truth, truth_mask
from cxr_attrib.targets import build_prompt
from cxr_attrib.variants import parse_variant

from .config import RunConfig, unit_id
from .plan import counterfactual_provider, select_samples, shard_samples
from .recognition import owns, recognition_samples, run_recognition
from .shard import Shard
from .store import FilterOutcome, ModelLoad, SampleRecord, Store, UnitRecord, heatmap_thumbnail, image_thumbnail

__all__ = ["ModelPlan", "RunStats", "plan_models", "run_shard"]


@dataclass(frozen=True)
class ModelPlan:
    """The shard's samples of one model and how many units they hold.

    Attributes:
        model (str): model reference.
        samples (list[Sample]): the samples this shard owns, in benchmark order.
        units (int): ``len(samples) * len(methods)``: units before filtering.
    """

    model: str
    samples: list[Sample]
    units: int


@dataclass
class RunStats:
    """What one :func:`run_shard` call did.

    Attributes:
        done (int): units computed and stored (ok or error).
        failed (int): of those, units stored with an error.
        skipped (int): units already in the store (resume).
        filtered_out (int): units not run because the filter dropped their sample.
        loads (dict[str, float]): model -> load seconds, one entry per model loaded.
        unit_s (float): seconds spent computing units (attribution + scoring).
        write_s (float): seconds spent writing unit rows (the store's overhead).
    """

    done: int = 0
    failed: int = 0
    skipped: int = 0
    filtered_out: int = 0
    loads: dict[str, float] = field(default_factory=dict)
    unit_s: float = 0.0
    write_s: float = 0.0


Advance = Callable[[str, int], None]
"""Progress callback: (model, units finished or skipped)."""


def plan_models(config: RunConfig, shard: Shard) -> list[ModelPlan]:
    """Every model's owned samples (cheap: no image is loaded)."""
    plans = []
    for model, candidates in select_samples(config).items():
        samples = shard_samples(config, model, candidates, shard)
        plans.append(ModelPlan(model, samples, len(samples) * len(config.methods)))
    return plans


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"


class _ModelRun:
    """The units of one model on one shard."""

    def __init__(self, config: RunConfig, store: Store, shard: Shard, stats: RunStats, advance: Advance) -> None:
        worker = worker_id(shard)
        self.shard = shard
        self.config, self.store, self.worker, self.stats, self.advance = config, store, worker, stats, advance
        self.finished = store.finished_unit_ids()
        self.verdicts = {(o.sample_id, o.model, o.mode): o for o in store.filter_outcomes()}
        self.provider = counterfactual_provider(config, get_benchmark(config.benchmark))
        self.recorded_samples = set(store.samples())
        bench = get_benchmark(config.benchmark)
        self.recognition = recognition_samples(bench, config.split, config.recognition) if config.recognition else []
        self.recognised = {(r.model, r.sample_id) for r in store.recognition()}

    def recognition_todo(self, model: str) -> set[str]:
        """Sample ids of the model's recognition pass that this shard owns and has not stored yet."""
        return {sample.id for sample, _ in self.recognition
                if (model, sample.id) not in self.recognised and owns(self.shard, sample.id, model)}

    def run_recognition(self, adapter: Adapter, model: str) -> None:
        done = {sid for m, sid in self.recognised if m == model}
        run_recognition(adapter, model, self.recognition, shard=self.shard, done=done,
                        write=self.store.add_recognition, worker=self.worker)
        self.recognised |= {(model, sample.id) for sample, _ in self.recognition}

    def unit_ids(self, sample: Sample, model: str) -> dict[str, str]:
        mode = self.config.mode or sample.mode
        return {m: unit_id(sample.id, model, m, self.config.params[m], mode, self.config.seed)
                for m in self.config.methods}

    def pending(self, plan: ModelPlan) -> bool:
        """Whether any unit of the plan still has to run (so the model must be loaded)."""
        for sample in plan.samples:
            verdict = self.verdicts.get((sample.id, plan.model, self.config.mode or sample.mode))
            if verdict is not None and not verdict.kept:
                continue
            if not set(self.unit_ids(sample, plan.model).values()) <= self.finished:
                return True
        return False

    def run(self, plan: ModelPlan, options: LoadOptions) -> None:
        if not self.pending(plan) and not self.recognition_todo(plan.model):  # all stored: count, load nothing
            for sample in plan.samples:
                self.run_sample(None, plan.model, sample)
            return
        started = time.time()
        tick = time.perf_counter()
        adapter = load_adapter(plan.model, options)
        load_s = time.perf_counter() - tick
        self.stats.loads[plan.model] = load_s
        self.store.add_model_load(ModelLoad(self.worker, plan.model, load_s, started))
        try:
            for sample in plan.samples:
                self.run_sample(adapter, plan.model, sample)
            if self.recognition:
                self.run_recognition(adapter, plan.model)
        finally:
            clear_adapter_cache()

    def run_sample(self, adapter: Adapter | None, model: str, sample: Sample) -> None:
        mode = self.config.mode or sample.mode
        ids = self.unit_ids(sample, model)
        todo = {m: uid for m, uid in ids.items() if uid not in self.finished}
        self.stats.skipped += len(ids) - len(todo)
        self.advance(model, len(ids) - len(todo))
        verdict = self.verdicts.get((sample.id, model, mode))
        if verdict is not None and not verdict.kept:
            self.stats.filtered_out += len(todo)
            self.advance(model, len(todo))
            return
        if not todo:
            return
        assert adapter is not None, "pending() said nothing was left to run"
        try:
            pixels = load_image(sample.load_image()).pixels
        except Exception as exc:  # an unreadable image fails its units, not the run
            self.record_sample(sample, None)
            for method, uid in todo.items():
                self.record_failure(sample, model, method, uid, mode, exc)
            return
        self.record_sample(sample, pixels)
        if self.provider is not None and verdict is None:
            verdict = self.run_filter(adapter, model, sample, mode)
        if verdict is not None and not verdict.kept:
            self.stats.filtered_out += len(todo)
            self.advance(model, len(todo))
            return
        try:
            answer = verdict.predictions[0] if verdict is not None else self.generate(adapter, pixels, sample, mode)
        except Exception as exc:
            for method, uid in todo.items():
                self.record_failure(sample, model, method, uid, mode, exc)
            return
        for method, uid in todo.items():
            self.run_unit(adapter, model, sample, pixels, method, uid, mode, answer)

    def generate(self, adapter: Adapter, pixels: np.ndarray, sample: Sample, mode: str) -> str:
        working = ResizePad.for_image(pixels, adapter.working_size).image_to_working(pixels)
        prompt = build_prompt(sample.question, mode)  # type: ignore[arg-type]
        return adapter.generate(working, prompt, max_new_tokens=self.config.max_new_tokens).text

    def run_filter(self, adapter: Adapter, model: str, sample: Sample, mode: str) -> FilterOutcome:
        tick = time.perf_counter()
        try:
            record = next(iter(causal_filter(adapter, [sample], self.provider, mode=mode, model=model,  # type: ignore[arg-type]
                                             max_new_tokens=self.config.max_new_tokens)))
            predictions = (record.prediction, record.prediction_edited, record.prediction_edited_kept,
                           record.prediction_edited_kept_normal)
            kept, approximate, error = record.kept, record.approximate, None
        except Exception as exc:  # recorded; the sample's units are not run
            predictions, kept, approximate, error = (), None, None, _error_text(exc)
        outcome = FilterOutcome(sample.id, model, mode, kept, approximate, predictions,
                                time.perf_counter() - tick, error, self.worker, time.time())
        self.store.add_filter_outcome(outcome)
        self.verdicts[(sample.id, model, mode)] = outcome
        return outcome

    def run_unit(self, adapter: Adapter, model: str, sample: Sample, pixels: np.ndarray, method: str, uid: str,
                 mode: str, answer: str) -> None:
        config = self.config
        tick = time.perf_counter()
        try:
            name = parse_variant(method).name
            truth = sample.boxes if get_method(name).needs_truth else None
            result = attribute(adapter, pixels, sample.question, method=name, mode=mode,  # type: ignore[arg-type]
                               answer=answer, seed=config.seed, truth_boxes=truth, **config.params[method])
            scored_at = time.perf_counter()
            scores = score(result, sample.boxes, model=adapter, image=pixels, steps=config.steps,
                           fraction=config.fraction, n_random=config.n_random, seed=config.seed, fill=config.fill,
                           split=config.split, dataset=sample.dataset, sample=sample.id)
            pixel = _pixel_metrics(result, sample, pixels)
        except Exception as exc:  # a failing method is recorded and the run goes on
            self.stats.unit_s += time.perf_counter() - tick
            self.record_failure(sample, model, method, uid, mode, exc)
            return
        done = time.perf_counter()
        self.stats.unit_s += done - tick
        self.write(UnitRecord(
            uid, sample.id, model, method, dict(config.params[method]), mode, config.seed, "ok", answer=answer,
            boxes=np.asarray(scores.pred_boxes, dtype=np.float64).reshape(-1, 4),
            method_boxes=np.asarray(result.boxes, dtype=np.float64).reshape(-1, 4),
            metrics={**{name: getattr(scores, name) for name in Scores.METRICS}, **pixel},
            heatmap=heatmap_thumbnail(result.heatmap), wall_time_s=result.meta.wall_time_s,
            score_time_s=done - scored_at, passes=dict(result.meta.passes), versions=dict(result.meta.versions),
            worker=self.worker, finished_at=time.time(), curves=scores.raw_curves(),
        ), model)

    def record_failure(self, sample: Sample, model: str, method: str, uid: str, mode: str,
                       exc: BaseException) -> None:
        self.stats.failed += 1
        self.write(UnitRecord(
            uid, sample.id, model, method, dict(self.config.params[method]), mode, self.config.seed, "error",
            error=_error_text(exc), traceback="".join(traceback.format_exception(exc)), worker=self.worker,
            finished_at=time.time(),
        ), model)

    def record_sample(self, sample: Sample, pixels: np.ndarray | None) -> None:
        if sample.id in self.recorded_samples:
            return
        size = (0, 0) if pixels is None else (int(pixels.shape[0]), int(pixels.shape[1]))
        self.store.add_sample(SampleRecord(
            sample.id, sample.dataset, sample.index, sample.finding, sample.question, sample.split,
            np.asarray(sample.boxes, dtype=np.float64).reshape(-1, 4), size,
            None if pixels is None else image_thumbnail(pixels),
        ))
        self.recorded_samples.add(sample.id)

    def write(self, unit: UnitRecord, model: str) -> None:
        tick = time.perf_counter()
        self.store.add_unit(unit)
        self.stats.write_s += time.perf_counter() - tick
        self.stats.done += 1
        self.finished.add(unit.unit_id)
        self.advance(model, 1)


def _pixel_metrics(result, sample: Sample, pixels: np.ndarray) -> dict[str, float]:
    """XBench-style pixel grounding of one result (its heatmap, or its boxes' mask) against the sample's truth."""
    shape = (int(pixels.shape[0]), int(pixels.shape[1]))
    truth = sample_truth(sample.boxes, None if sample.load_mask is None else sample.load_mask(), shape,
                         sample=sample.id)
    heat = result.heatmap if result.heatmap is not None else truth_mask(result.boxes, shape).astype(np.float32)
    return grounding_metrics(heat, truth)


def worker_id(shard: Shard) -> str:
    """``host:pid:K/N``: who ran a unit."""
    return f"{socket.gethostname()}:{os.getpid()}:{shard.label}"


def run_shard(
    config: RunConfig,
    store: Store,
    shard: Shard,
    plans: list[ModelPlan],
    *,
    options: LoadOptions | None = None,
    advance: Advance = lambda model, n: None,
) -> RunStats:
    """Run every unit of ``plans`` that ``store`` does not hold yet.

    Args:
        config (RunConfig): the run configuration (the store's).
        store (Store): the shard's store, opened for writing.
        shard (Shard): this process's shard (written into ``worker``).
        plans (list[ModelPlan]): from :func:`plan_models`.
        options (LoadOptions | None): model loading options (attention methods switch
            eager attention on for their own forwards, so each model loads once).
        advance (Advance): progress callback.

    Returns:
        RunStats: counts and timings.
    """
    options = options or LoadOptions()
    stats = RunStats()
    runner = _ModelRun(config, store, shard, stats, advance)
    for plan in plans:
        runner.run(plan, options)
    return stats

