"""Costs of the attention-family methods on the mid-size benchmark model.

The mid-size random-weight Qwen2.5-VL-class model of ``bench_occlusion.py`` (text
hidden 512, 8 layers; 448 px working frame, 16x16 image tokens). Prints, side by side
in one run:

* passes of ``attention``, ``attention_rollout``, ``grad_weighted_attention`` and
  ``lrp`` (from ``meta.passes``);
* rollout products / one forward: the time of the rollout matrix products on the
  captured maps divided by the time of one (capturing) forward;
* peak memory (max RSS) of a process that runs ``attention_rollout`` divided by that of
  a process that runs one plain eager forward (``output_attentions`` off), each in its
  own process on the same saved model.

Usage::

    python benchmarks/bench_attention.py [--repeat 5] [--threads 2]
"""

from __future__ import annotations

import argparse
import resource
import subprocess
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from bench_occlusion import QUESTION, build_folder

from cxr_attrib import attribute
from cxr_attrib.adapter import LoadOptions, Query
from cxr_attrib.targets import build_prompt
from cxr_attrib.testing.tiny_models import load_tiny_adapter
from cxr_attrib_plugins.attention_rollout import rollout_rows

SIZE = 448


def _load(folder: str, attn: str | None = None):
    options = LoadOptions(dtype="float32", device="cpu", working_size=SIZE, local_files_only=True,
                          attn_implementation=attn)
    return load_tiny_adapter(folder, options)


def _image() -> np.ndarray:
    return (np.random.default_rng(0).integers(0, 256, (SIZE, SIZE)) / 255).astype(np.float32)


def _query() -> Query:
    return Query(QUESTION, "direct", build_prompt(QUESTION, "direct"), "Yes")


def measure_peak(folder: str, what: str) -> None:
    """Child process: run ``what`` once and print the peak RSS in MiB."""
    torch.set_num_threads(1)
    if what == "eager":
        adapter = _load(folder, attn="eager")
        adapter.score([_image()], _query())
    else:
        adapter = _load(folder)
        attribute(adapter, _image(), QUESTION, method="attention_rollout", answer="Yes")
    print(resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--repeat", type=int, default=5)
    parser.add_argument("--threads", type=int, default=2)
    parser.add_argument("--peak", nargs=2, metavar=("FOLDER", "WHAT"), help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.peak:
        measure_peak(*args.peak)
        return
    torch.set_num_threads(args.threads)
    with tempfile.TemporaryDirectory() as folder:
        build_folder(SIZE, folder)
        adapter = _load(folder)
        image, query = _image(), _query()
        for method in ("attention", "attention_rollout", "grad_weighted_attention", "lrp"):
            result = attribute(adapter, image, QUESTION, method=method, answer="Yes")
            passes = result.meta.passes
            print(f"{method}: {passes['forward_calls']} forward, {passes['backward_calls']} backward, "
                  f"{result.meta.wall_time_s:.2f} s")
        layers = list(range(adapter.num_decoder_layers))
        forwards, products = [], []
        for _ in range(args.repeat):
            start = time.perf_counter()
            captured = adapter.attention(image, query, layers=layers, rows="all")
            forwards.append(time.perf_counter() - start)
            maps = [captured.maps[layer] for layer in layers]
            start = time.perf_counter()
            rollout_rows(maps, captured.predictor_positions)
            products.append(time.perf_counter() - start)
        length = maps[0].shape[0]
        print(f"rollout products: {min(products) * 1e3:.2f} ms over {len(layers)} layers of {length}x{length}; "
              f"capturing forward: {min(forwards) * 1e3:.1f} ms; ratio {min(products) / min(forwards):.4f}")
        peaks = {}
        for what in ("eager", "rollout"):
            out = subprocess.run([sys.executable, str(Path(__file__).resolve()), "--peak", folder, what],
                                 check=True, capture_output=True, text=True)
            peaks[what] = float(out.stdout.split()[-1])
        print(f"peak RSS: plain eager forward {peaks['eager']:.0f} MiB, attention_rollout {peaks['rollout']:.0f} MiB, "
              f"ratio {peaks['rollout'] / peaks['eager']:.3f}")


if __name__ == "__main__":
    main()
