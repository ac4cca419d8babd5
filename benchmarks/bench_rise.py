"""How close is RISE to the cost of its forward passes?

Builds the mid-size random-weight Qwen2.5-VL-class model of ``bench_occlusion.py``
(text hidden 512, 8 layers; vision hidden 256, 4 layers; 448 px working frame, 16x16
image tokens), runs ``rise`` through ``attribute()`` and, side by side in the same
run, times ``adapter.score`` on ``n_masks + 1`` copies of the image with the same
``batch_size``: the very forward calls RISE makes, and nothing else. Prints

    overhead ratio = RISE wall time / (forward calls x one batched forward)

The target is <= 1.10: mask drawing, up-sampling, blending and the weighted sum cost
at most a tenth of the forward passes.

Usage::

    python benchmarks/bench_rise.py [--n-masks 500] [--batch-size 64] [--repeat 3] [--threads 2]
"""

from __future__ import annotations

import math

import torch
from bench_occlusion import QUESTION, base_parser, prepare, side_by_side

from cxr_attrib import attribute


def main() -> None:
    parser = base_parser(__doc__)
    parser.add_argument("--n-masks", type=int, default=500)
    parser.add_argument("--batch-size", type=int, default=64)
    args = parser.parse_args()
    torch.set_num_threads(args.threads)

    adapter, image, working, query = prepare(args.size)
    options = {"n_masks": args.n_masks, "batch_size": args.batch_size}

    attribute(adapter, image, QUESTION, method="rise", answer="Yes", n_masks=2, batch_size=args.batch_size)
    best_rise, best_forwards, result = side_by_side(
        args.repeat,
        lambda: attribute(adapter, image, QUESTION, method="rise", answer="Yes", **options),
        lambda _: adapter.score([working] * (args.n_masks + 1), query, batch_size=args.batch_size),
    )
    calls, seqs = result.meta.passes["forward_calls"], result.meta.passes["forward_sequences"]
    assert calls == math.ceil((args.n_masks + 1) / args.batch_size) and seqs == args.n_masks + 1
    print(f"rise: {best_rise:.2f} s for {calls} forward call(s) of {seqs} sequences (best of {args.repeat})")
    print(f"the same {calls} batched forward call(s) alone: {best_forwards:.2f} s")
    print(f"overhead ratio = rise / (calls x one batched forward) = {best_rise / best_forwards:.3f}")


if __name__ == "__main__":
    main()
