"""The recognition pass: p(positive) of each model on a benchmark's positives and negatives.

Attribution units explain positives only (the causal filter keeps images that show the
finding), but recognition scores (AUC, accuracy, F1) need images *without* it too. When
a run asks for it (``--recognition N``), each model scores, per finding, the first N
positives (:meth:`Benchmark.samples`) and the first N negatives
(:meth:`Benchmark.negatives`) of the split, in batches of images sharing one question,
and the store keeps one row per (model, sample) in its ``recognition`` table.

p(positive) is read through the family-free ``Scorer`` surface: the teacher-forced
answer "Yes" to the sample's question, ``exp`` of the summed target log-probs. For an
LVLM that is p("Yes"); for a dual encoder it is p(positive prompt) (its explained scalar).
"""

from __future__ import annotations

import time
from collections import Counter
from collections.abc import Callable, Iterable, Sequence

import numpy as np

from cxr_attrib.adapter import Adapter, Query
from cxr_attrib.benchmark import Benchmark, Sample
from cxr_attrib.frames import ResizePad
from cxr_attrib.imageio import load_image
from cxr_attrib.targets import build_prompt

from .config import sample_key
from .records import RecognitionRecord
from .shard import Shard

__all__ = ["BATCH", "owns", "p_positive", "recognition_samples", "run_recognition"]

BATCH = 16
"""Images per scoring call of the recognition pass."""

_MODE = "recognition"  # the shard key's mode: recognition items spread over shards like units


def owns(shard: Shard, sample_id: str, model: str) -> bool:
    """Whether ``shard`` scores this (sample, model) in the recognition pass (a stable hash, like units)."""
    return shard.owns(sample_key(sample_id, model, _MODE))


def recognition_samples(benchmark: Benchmark, split: str, per_finding: int) -> list[tuple[Sample, int]]:
    """The first ``per_finding`` positives and negatives of each finding, with labels 1 / 0.

    Args:
        benchmark (Benchmark): the run's benchmark.
        split (str): its split.
        per_finding (int): items per (finding, label), >= 1.

    Returns:
        list[tuple[Sample, int]]: positives then negatives, in benchmark order.
    """
    chosen: list[tuple[Sample, int]] = []
    for label, source in ((1, benchmark.samples(split=split)), (0, benchmark.negatives(split=split))):
        taken: Counter[str] = Counter()
        seen: set[str] = set()
        for sample in source:
            if taken[sample.finding] < per_finding and sample.id not in seen:
                taken[sample.finding] += 1
                seen.add(sample.id)
                chosen.append((sample, label))
    return chosen


def p_positive(adapter: Adapter, images: Sequence[np.ndarray], question: str, *, batch_size: int = BATCH) -> np.ndarray:
    """p(positive) of one question on input-frame images: exp of the teacher-forced "Yes".

    Args:
        adapter (Adapter): the loaded model (any family).
        images (Sequence[np.ndarray]): B (H_i, W_i) uint8 grey images, input frame.
        question (str): the base question, e.g. "Is there evidence of pneumonia in the image?".
        batch_size (int): images per forward call. Default: :data:`BATCH`.

    Returns:
        np.ndarray: (B,) float64 probabilities in [0, 1].
    """
    size = adapter.working_size
    working = [ResizePad.for_image(image, size).image_to_working(image) for image in images]
    query = Query(question=question, mode="direct", prompt=build_prompt(question, "direct"), answer="Yes",
                  policy="answer")
    logprobs = adapter.score(working, query, batch_size=batch_size)  # (B, T) float32 natural log
    return np.exp(logprobs.double().sum(dim=1).cpu().numpy()).clip(0.0, 1.0)


def run_recognition(
    adapter: Adapter,
    model: str,
    items: Iterable[tuple[Sample, int]],
    *,
    shard: Shard,
    done: set[str],
    write: Callable[[list[RecognitionRecord]], None],
    worker: str,
    batch_size: int = BATCH,
) -> int:
    """Score the items this shard owns and has not stored yet; write one batch at a time.

    Args:
        adapter (Adapter): the loaded model.
        model (str): its reference (the store's key).
        items (Iterable[tuple[Sample, int]]): from :func:`recognition_samples`.
        shard (Shard): this process's shard; it owns an item by ``sample_key(id, model, "recognition")``.
        done (set[str]): sample ids already stored for this model (skipped).
        write (Callable[[list[RecognitionRecord]], None]): stores one batch of rows.
        worker (str): ``host:pid:shard``.
        batch_size (int): images per forward call. Default: :data:`BATCH`.

    Returns:
        int: rows written. An image that does not load, or a batch whose scoring fails,
        is stored with its error (p_positive None) and the pass goes on.
    """
    groups: dict[str, list[tuple[Sample, int]]] = {}
    for sample, label in items:
        if sample.id not in done and owns(shard, sample.id, model):
            groups.setdefault(sample.question, []).append((sample, label))
    written = 0
    for question, members in groups.items():
        for start in range(0, len(members), batch_size):
            batch = members[start:start + batch_size]
            rows, images, ready = [], [], []
            for sample, label in batch:
                try:
                    images.append(load_image(sample.load_image()).pixels)
                    ready.append((sample, label))
                except Exception as exc:  # an unreadable image is recorded, the pass goes on
                    rows.append(RecognitionRecord(model, sample.id, sample.finding, label, None,
                                                  f"{type(exc).__name__}: {exc}", worker, time.time()))
            if ready:
                try:
                    probs = p_positive(adapter, images, question, batch_size=batch_size)
                    rows += [RecognitionRecord(model, s.id, s.finding, label, float(p), None, worker, time.time())
                             for (s, label), p in zip(ready, probs)]
                except Exception as exc:
                    rows += [RecognitionRecord(model, s.id, s.finding, label, None, f"{type(exc).__name__}: {exc}",
                                               worker, time.time()) for s, label in ready]
            write(rows)
            written += len(rows)
    return written
