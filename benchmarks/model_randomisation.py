"""Print each method's model-randomisation cascade on the embedded phantom models.

Adebayo et al. (NeurIPS 2018): the language-model decoder layers of ``phantom-qwen``
and ``phantom-gemma`` are re-initialised cascading from the top (depth k = the last
k layers random; see :mod:`cxr_attrib.testing.randomisation`), and the method's map
on the randomised model is compared with its map on the trained model by Spearman
rank correlation, averaged over the first ``--samples`` held-out positives of the
``phantom`` benchmark (findings interleaved). A faithful method's curve falls towards
0; the sanity tests hold the fully randomised end below 0.5.

Usage::

    python benchmarks/model_randomisation.py [--methods occlusion,rise] [--models phantom-qwen]
        [--samples 10] [--params rise:n_masks=100] [--compare-seed 1]

``--compare-seed 1`` draws a stochastic method's samples afresh for the compared maps:
depth 0 then shows how well the method agrees with itself across seeds.
"""

from __future__ import annotations

import argparse
import time
from itertools import islice

from phantom_methods import MODELS, parse_params

from cxr_attrib.models import load_adapter
from cxr_attrib.registry import get_benchmark, get_method, methods
from cxr_attrib.testing.randomisation import randomisation_curve


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--methods", default="",
                        help="comma list; default: every method that uses the model and returns a map "
                             "(not the boxes-only prompting methods)")
    parser.add_argument("--models", default=",".join(MODELS), help="comma list of model keys")
    parser.add_argument("--samples", type=int, default=10)
    parser.add_argument("--params", nargs="*", default=[], metavar="METHOD:NAME=VALUE")
    parser.add_argument("--compare-seed", type=int, default=None,
                        help="method seed on the compared models (default: the same seed, 0)")
    args = parser.parse_args()
    names = [n.strip() for n in args.methods.split(",") if n.strip()]
    names = names or sorted(n for n, cls in methods().items() if cls.uses_model and cls.output != "boxes")
    for name in names:
        get_method(name)
    params = parse_params(args.params)
    samples = islice(get_benchmark("phantom").samples(split="direct"), args.samples)
    items = [(sample.load_image(), sample.question) for sample in samples]
    for name in names:
        for key in args.models.split(","):
            started = time.perf_counter()
            curve = randomisation_curve(load_adapter(key), name, items, params=params.get(name, {}),
                                        compare_seed=args.compare_seed)
            cells = " | ".join(f"{value:.3f}" for value in curve.values())
            print(f"| {name} | {key} | {cells} |  ({time.perf_counter() - started:.0f} s)", flush=True)
    print("columns: random top layers = " + ", ".join(str(d) for d in curve))


if __name__ == "__main__":
    main()
