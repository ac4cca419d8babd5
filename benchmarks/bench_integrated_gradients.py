"""What does integrated gradients cost next to one forward+backward of the same model?

Each measurement runs in its own process on an embedded phantom model
(``cxr_attrib.models.load_adapter("phantom-qwen")`` / ``"phantom-gemma"``), one CPU thread:

* ``fwdbwd``: one ``adapter.forward`` of the working image with gradients and one
  backward (the unit IG repeats per path point at ``internal_batch_size=1``);
* ``ig``: ``integrated_gradients`` through ``attribute()`` with ``internal_batch_size=1``.

Peak memory is the largest resident set (``/proc/self/statm``, sampled every 0.5 ms by a
thread) above the resident set right after the model loaded, during the first run of
the operation, each in its own process. Wall times are measured side by side in the IG
process, alternating ``steps`` forward+backward passes and one IG run ``--repeat`` times
(the fastest of each is kept), so both see the same machine load. Prints, per model,

    memory ratio = IG peak / forward+backward peak          (target <= 1.5)
    wall ratio   = IG wall / (steps x forward+backward wall) (target <= 1.15)

and IG's relative completeness error ``|sum - (F(x) - F(black))| / |F(x) - F(black)|``.

Usage::

    python benchmarks/bench_integrated_gradients.py [--steps 24] [--repeat 3] [--models phantom-qwen phantom-gemma]
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import threading
import time
from collections.abc import Callable

import numpy as np
import torch

QUESTION = "Is there evidence of nodule in the image?"
_PAGE = os.sysconf("SC_PAGE_SIZE")


def _rss() -> int:
    with open("/proc/self/statm") as handle:
        return int(handle.read().split()[1]) * _PAGE


def _peak_during(run: Callable[[], object]) -> tuple[int, object]:
    """Largest resident set (bytes) seen while ``run`` executes, and its result."""
    peak = [_rss()]
    done = threading.Event()

    def sample() -> None:
        while not done.is_set():
            peak[0] = max(peak[0], _rss())
            time.sleep(0.0005)

    thread = threading.Thread(target=sample, daemon=True)
    thread.start()
    try:
        out = run()
    finally:
        done.set()
        thread.join()
    return max(peak[0], _rss()), out


def measure(kind: str, model: str, steps: int, repeat: int) -> dict[str, float]:
    """Run one measurement in this process (see the module docstring)."""
    from cxr_attrib import attribute
    from cxr_attrib.adapter import Query
    from cxr_attrib.models import load_adapter
    from cxr_attrib.targets import build_prompt

    torch.set_num_threads(1)
    adapter = load_adapter(model)
    image = np.random.default_rng(0).integers(40, 255, (224, 224), dtype=np.uint8)
    query = Query(QUESTION, "direct", build_prompt(QUESTION, "direct"), "Yes", "answer")
    working = torch.from_numpy(image.astype(np.float32) / 255.0)[None]

    def fwdbwd() -> None:
        adapter.forward(working.clone().requires_grad_(True), query).backward()

    def ig() -> object:
        return attribute(adapter, image, QUESTION, method="integrated_gradients", answer="Yes",
                         steps=steps, internal_batch_size=1)

    base = _rss()
    peak, out = _peak_during(fwdbwd if kind == "fwdbwd" else ig)
    facts = {"peak_bytes": float(peak - base)}
    if kind == "ig":
        loops, runs = [], []
        for _ in range(repeat):
            start = time.perf_counter()
            for _ in range(steps):
                fwdbwd()
            loops.append(time.perf_counter() - start)
            start = time.perf_counter()
            out = ig()
            runs.append(time.perf_counter() - start)
        facts.update(unit_wall_s=min(loops) / steps, wall_s=min(runs),
                     relative_delta=float(out.meta.info["relative_delta"]),
                     backward_calls=float(out.meta.passes["backward_calls"]))
    return facts


def _child(kind: str, model: str, steps: int, repeat: int) -> dict[str, float]:
    command = [sys.executable, __file__, "--child", kind, "--models", model, "--steps", str(steps),
               "--repeat", str(repeat)]
    env = {**os.environ, "OMP_NUM_THREADS": "1"}
    out = subprocess.run(command, check=True, capture_output=True, text=True, env=env).stdout
    return json.loads(out.strip().splitlines()[-1])


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--steps", type=int, default=24)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--models", nargs="+", default=["phantom-qwen", "phantom-gemma"])
    parser.add_argument("--child", choices=["fwdbwd", "ig"], help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.child:
        print(json.dumps(measure(args.child, args.models[0], args.steps, args.repeat)))
        return
    for model in args.models:
        unit = _child("fwdbwd", model, args.steps, args.repeat)
        ig = _child("ig", model, args.steps, args.repeat)
        mib = 1 << 20
        print(f"{model}: forward+backward {ig['unit_wall_s'] * 1e3:.1f} ms, peak +{unit['peak_bytes'] / mib:.1f} MiB")
        print(f"{model}: IG ({args.steps} steps, internal_batch_size=1, {ig['backward_calls']:.0f} backward calls) "
              f"{ig['wall_s']:.2f} s, peak +{ig['peak_bytes'] / mib:.1f} MiB, "
              f"relative completeness error {ig['relative_delta']:.2%}")
        print(f"{model}: memory ratio = {ig['peak_bytes'] / unit['peak_bytes']:.2f} (target <= 1.5); "
              f"wall ratio = {ig['wall_s'] / (args.steps * ig['unit_wall_s']):.3f} (target <= 1.15)")


if __name__ == "__main__":
    main()
