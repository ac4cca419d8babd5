"""MedFocus per-sample wall time against a naive pipeline, side by side in one run.

Model: the embedded ``phantom-qwen`` (float32, CPU). Pool: the built-in 16-image
``phantom`` pool. Refinement: the tiny random SAM of :mod:`cxr_attrib.testing`.
Samples: held-out normal phantoms (seeds 9000, 9001, ...), the nodule question,
answer "Yes" teacher-forced.

* **plain** = ``attribute(..., method="medfocus")`` with the defaults (no SAM), the
  transfer cache cleared first (cold): its wall time against the time spent inside
  its one batched forward call of 16 sequences (``adapter.score``), i.e. what
  MedFocus costs beyond its own forward pass.
* **fast** = ``attribute(..., method="medfocus", sam=...)``: pool grids computed once
  per process, the separable UOT solver, all 11 boxes refined in one SAM call, the
  original and the 15 interventions in one batched forward call (transfer cache cold).
* **naive** = the same steps the way the published code runs them: POT's dense UOT
  solver (``solver="pot"``), the pool's down-sampled grids recomputed for every sample
  (a fresh pool fingerprint, no transfer cache), one SAM call per concept, the
  original scored in its own forward pass, and each intervention in its own forward
  pass.

fast and naive give the same concept boxes and the same winner (checked). Prints the
per-sample times (first sample of each pipeline is a warm-up, not counted), the
ratios, the share of the fast pipeline's time spent in the UOT solves and in the
whole concept transfer.

Usage::

    python benchmarks/bench_medfocus.py [--samples 4] [--threads 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from collections.abc import Callable
from typing import Any

import numpy as np
import torch

from cxr_attrib import attribute
from cxr_attrib.adapter import Adapter, LoadOptions, Query
from cxr_attrib.frames import ResizePad
from cxr_attrib.models import load_adapter
from cxr_attrib.perturb import baseline_image
from cxr_attrib.pools import CONCEPTS, ConceptPool
from cxr_attrib.registry import get_pool
from cxr_attrib.segmentation import BoxSegmenter, load_segmenter
from cxr_attrib.targets import build_prompt
from cxr_attrib.testing.tiny_sam import save_tiny_sam
from cxr_attrib_phantom import generate_phantom
from cxr_attrib_plugins.medfocus import method as method_module
from cxr_attrib_plugins.medfocus import transfer as transfer_module
from cxr_attrib_plugins.medfocus.cache import TransferCache, default_cache
from cxr_attrib_plugins.medfocus.decision import decide, region_scores
from cxr_attrib_plugins.medfocus.interventions import concept_regions, intervene

QUESTION = "Is there evidence of nodule in the image?"


class Stopwatch:
    """Wraps a function and adds up the seconds spent in it."""

    def __init__(self, function: Callable[..., Any]) -> None:
        self.function, self.seconds = function, 0.0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        start = time.perf_counter()
        try:
            return self.function(*args, **kwargs)
        finally:
            self.seconds += time.perf_counter() - start


def naive(adapter: Adapter, pool: ConceptPool, segmenter: BoxSegmenter, pixels: np.ndarray,
          query: Query, sample: int) -> tuple[str, dict[str, tuple]]:
    """One sample the way the published code runs it; returns the winner and the concept boxes."""
    frame = ResizePad(*pixels.shape, size=adapter.working_size)
    working = frame.image_to_working(pixels)
    fresh = ConceptPool(pool.name, pool.ids, lambda i: pool[i], f"{pool.fingerprint}:naive-{sample}",
                        source=pool.source)  # same references, grids recomputed
    transfer = transfer_module.transfer_concepts(working, fresh, cache=TransferCache(), solver="pot")
    boxes, masks = {}, {}
    for concept in CONCEPTS:  # one segmentation call per concept
        seg = segmenter.segment(working, [transfer.boxes[concept]])
        boxes[concept] = transfer.boxes[concept] if seg.empty else seg.boxes[0]
        masks[concept] = transfer.masks[concept] if seg.empty else seg.masks[0]
    regions = concept_regions(boxes, masks, "box", adapter.working_size)
    original = adapter.score([working], query)[0].double().numpy()  # its own pass
    baseline = baseline_image(working, "zero")
    delta = {}
    for name, region in regions.items():  # one forward pass per intervention
        hidden = adapter.score(intervene(working, baseline, [region]), query)[0].double().numpy()
        delta[name] = float(np.maximum(0.0, original - hidden).sum())
    decision = decide(region_scores(delta, regions, "none", int(frame.content_mask().sum())), delta, regions, 0.75)
    return decision.winner, boxes


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--samples", type=int, default=4, help="timed samples (plus one warm-up)")
    parser.add_argument("--threads", type=int, default=2)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    adapter = load_adapter("phantom-qwen", LoadOptions(dtype="float32", device="cpu"))
    pool = get_pool("phantom")
    query = Query(QUESTION, "direct", build_prompt(QUESTION, "direct"), "Yes", "answer")
    uot = Stopwatch(transfer_module.solve_uot)  # every UOT solve, both pipelines
    transfer_module.solve_uot = uot
    transfer = Stopwatch(method_module.transfer_concepts)  # the fast pipeline's concept transfer
    method_module.transfer_concepts = transfer
    with tempfile.TemporaryDirectory() as folder:
        sam = str(save_tiny_sam(folder))
        segmenter = load_segmenter(sam)
        fast_times, naive_times, fast_uot, naive_uot, fast_transfer = [], [], [], [], []
        plain_times, forward_times = [], []
        forward = Stopwatch(adapter.score)
        adapter.score = forward  # the batched forward call(s) of the plain run
        for k in range(args.samples + 1):
            pixels = generate_phantom(9000 + k).to_uint8()
            default_cache().clear()
            forward.seconds = 0.0
            start = time.perf_counter()
            attribute(adapter, pixels, QUESTION, method="medfocus", answer="Yes")
            plain, plain_forward = time.perf_counter() - start, forward.seconds
            default_cache().clear()
            uot.seconds = transfer.seconds = 0.0
            start = time.perf_counter()
            result = attribute(adapter, pixels, QUESTION, method="medfocus", answer="Yes", sam=sam)
            fast = time.perf_counter() - start
            fast_solves, fast_transfer_s = uot.seconds, transfer.seconds
            uot.seconds = 0.0
            start = time.perf_counter()
            winner, boxes = naive(adapter, pool, segmenter, pixels, query, k)
            slow = time.perf_counter() - start
            same = winner == result.meta.info["winner"] and all(
                result.concepts[c].boxes == (boxes[c],) for c in CONCEPTS)
            print(f"sample {k}{' (warm-up)' if k == 0 else ''}: plain {plain:.3f} s (forward call {plain_forward:.3f} s), "
                  f"fast {fast:.2f} s "
                  f"({result.meta.passes['forward_calls']} forward call, UOT {fast_solves:.2f} s), "
                  f"naive {slow:.2f} s (UOT {uot.seconds:.2f} s), winner {winner}, same boxes and winner: {same}")
            if not same:
                raise SystemExit("the two pipelines disagree")
            if k:
                plain_times.append(plain)
                forward_times.append(plain_forward)
                fast_times.append(fast)
                naive_times.append(slow)
                fast_uot.append(fast_solves)
                naive_uot.append(uot.seconds)
                fast_transfer.append(fast_transfer_s)
    print(f"plain MedFocus per sample {np.mean(plain_times):.3f} s, its batched forward call "
          f"{np.mean(forward_times):.3f} s: ratio {sum(plain_times) / sum(forward_times):.2f}x "
          f"(per sample: median {np.median(np.divide(plain_times, forward_times)):.2f}x)")
    fast_mean, naive_mean = float(np.mean(fast_times)), float(np.mean(naive_times))
    ratios = np.asarray(naive_times) / np.asarray(fast_times)
    print(f"per sample: fast {fast_mean:.2f} s, naive {naive_mean:.2f} s, speed-up {naive_mean / fast_mean:.2f}x "
          f"(per-sample ratios: median {np.median(ratios):.2f}x, min {ratios.min():.2f}x)")
    print(f"UOT solves: {np.mean(fast_uot):.2f} s per sample = {100 * sum(fast_uot) / sum(fast_times):.0f}% "
          f"of the fast pipeline; concept transfer (UOT + grids + masks): "
          f"{100 * sum(fast_transfer) / sum(fast_times):.0f}%")
    print(f"UOT solves of the naive pipeline (POT): {np.mean(naive_uot):.2f} s per sample = "
          f"{100 * sum(naive_uot) / sum(naive_times):.0f}% of it")


if __name__ == "__main__":
    main()
