"""How close is occlusion to the cost of its forward passes?

Builds a mid-size random-weight Qwen2.5-VL-class model (text hidden 512, 8 layers;
vision hidden 256, 4 layers) at a 448 px working frame (32x32 patches -> 16x16 image
tokens), runs ``occlusion`` through ``attribute()`` and, side by side in the same
run, times one batched ``adapter.score`` call of the same batch size. Prints

    overhead ratio = occlusion wall time / (forward calls x one batched pass)

A ratio near 1 means occlusion costs its forward passes and nothing else.

Usage::

    python benchmarks/bench_occlusion.py [--repeat 3] [--batch-size 65] [--threads 2]
"""

from __future__ import annotations

import argparse
import tempfile
import time

import numpy as np
import torch

from cxr_attrib import attribute
from cxr_attrib.adapter import LoadOptions, Query
from cxr_attrib.targets import build_prompt
from cxr_attrib.testing.tiny_models import load_tiny_adapter, save_tiny_model

QUESTION = "Is there evidence of pleural effusion in the image?"


def build_folder(size: int, folder: str):
    """Save the mid-size model (working frame ``size`` px) into ``folder``; returns its path."""
    overrides = {
        "text_config": {"hidden_size": 512, "intermediate_size": 1024, "num_hidden_layers": 8,
                        "num_attention_heads": 8, "num_key_value_heads": 4,
                        "rope_parameters": {"rope_type": "default", "rope_theta": 10000.0,
                                            "mrope_section": [8, 12, 12]}},
        "vision_config": {"hidden_size": 256, "intermediate_size": 512, "depth": 4, "num_heads": 4,
                          "out_hidden_size": 512, "fullatt_block_indexes": [3]},
    }
    return save_tiny_model("qwen2_5_vl", folder, seed=0, **overrides)


def build(size: int):
    """The mid-size model loaded at a ``size`` px working frame (float32, CPU)."""
    options = LoadOptions(dtype="float32", device="cpu", working_size=size, local_files_only=True)
    with tempfile.TemporaryDirectory() as folder:
        return load_tiny_adapter(build_folder(size, folder), options)


def prepare(size: int):
    """The model, a seeded (size, size) uint8 image, its working-frame copy and the query; prints the model."""
    adapter = build(size)
    params = sum(p.numel() for p in adapter.model.parameters())
    image = np.random.default_rng(0).integers(0, 256, (size, size), dtype=np.uint8)
    working = image.astype(np.float32) / 255.0
    query = Query(QUESTION, "direct", build_prompt(QUESTION, "direct"), "Yes", "answer")
    grid = adapter.encode([working], query).grid
    print(f"model: {params / 1e6:.1f}M parameters, working frame {size} px, image tokens {grid}")
    return adapter, image, working, query


def base_parser(doc: str) -> argparse.ArgumentParser:
    """The options every speed benchmark shares: --size, --repeat, --threads."""
    parser = argparse.ArgumentParser(description=doc.split("\n\n")[0])
    parser.add_argument("--size", type=int, default=448)
    parser.add_argument("--repeat", type=int, default=3)
    parser.add_argument("--threads", type=int, default=2)
    return parser


def side_by_side(repeat: int, run_method, run_forwards) -> tuple[float, float, object]:
    """Best-of-``repeat`` wall times of ``run_method()`` and ``run_forwards(result)``, alternated.

    Returns (method seconds, forward seconds, the method's last result).
    """
    method_s, forward_s = [], []
    for _ in range(repeat):
        start = time.perf_counter()
        result = run_method()
        method_s.append(time.perf_counter() - start)
        start = time.perf_counter()
        run_forwards(result)
        forward_s.append(time.perf_counter() - start)
    return min(method_s), min(forward_s), result


def main() -> None:
    args = base_parser(__doc__).parse_args()
    torch.set_num_threads(args.threads)

    adapter, image, working, query = prepare(args.size)
    attribute(adapter, image, QUESTION, method="occlusion", answer="Yes")  # warm-up
    occ, one, result = side_by_side(
        args.repeat,
        lambda: attribute(adapter, image, QUESTION, method="occlusion", answer="Yes"),
        lambda result: adapter.score([working] * result.meta.passes["forward_sequences"], query),
    )
    calls = result.meta.passes["forward_calls"]
    seqs = result.meta.passes["forward_sequences"]
    print(f"occlusion: {occ:.2f} s for {calls} forward call(s) of {seqs} sequences")
    print(f"one batched pass of {seqs} sequences: {one:.2f} s")
    print(f"overhead ratio = occlusion / (calls x one pass) = {occ / (calls * one):.3f}")


if __name__ == "__main__":
    main()
