"""Benchmark: ``similarity_map`` against one vision + text forward of the same image and prompt.

For each model (the embedded ``phantom-clip`` and a random-weight ``CLIPModel`` at
ViT-B/16 size: 12 blocks of width 768, 14 x 14 patches at 224 px, text width 512), in
alternation, ``--repeat`` times:

* **method**: ``SimilarityMap().attribute(request)`` on one working-frame image: the
  vision forward, the cosine grid, the Gaussian smoothing and the upsampling (the
  prompt's text embedding comes from the adapter's cache after the first call, which
  is what every later call of a run sees);
* **reference**: one ``get_image_features`` and one ``get_text_features`` of the same
  image and the positive prompt (uncached), no post-processing.

The medians are compared (wall clock, one torch thread); the target is method <=
1.2 x reference. Then a batch of ``--batch`` images is scored against one prompt pair,
counting the text-tower calls (``adapter.text_encodings``) and model forward calls.

Usage::

    python benchmarks/bench_similarity_map.py [--repeat 20] [--batch 64]
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time

import numpy as np
import torch

from cxr_attrib.adapter import LoadOptions, Query
from cxr_attrib.method import MethodRequest
from cxr_attrib.models import load_adapter
from cxr_attrib.targets import build_prompt
from cxr_attrib_adapters.contrastive.hf import ClipAdapter
from cxr_attrib_adapters.contrastive.tiny import tiny_dual_config, tiny_dual_tokenizer
from cxr_attrib_plugins.similarity_map import SimilarityMap

QUESTION = "Is there evidence of pleural effusion in the image?"


def vit_b16() -> ClipAdapter:
    """A random-weight CLIPModel of ViT-B/16 size behind the adapter (tokenizer: the tiny one)."""
    from transformers import CLIPModel

    tokenizer = tiny_dual_tokenizer("clip")
    config = tiny_dual_config(
        "clip", tokenizer, projection_dim=512,
        text_config={"hidden_size": 512, "intermediate_size": 2048, "num_hidden_layers": 12,
                     "num_attention_heads": 8, "max_position_embeddings": 77},
        vision_config={"hidden_size": 768, "intermediate_size": 3072, "num_hidden_layers": 12,
                       "num_attention_heads": 12, "image_size": 224, "patch_size": 16},
    )
    torch.manual_seed(0)
    model = CLIPModel(config).eval().requires_grad_(False)
    return ClipAdapter("clip-vit-b16-random", model, LoadOptions(dtype="float32", device="cpu"),
                       tokenizer=tokenizer, image_mean=(0.48145466, 0.4578275, 0.40821073),
                       image_std=(0.26862954, 0.26130258, 0.27577711))


def reference_forward(adapter: ClipAdapter, image: np.ndarray) -> None:
    """One vision and one text forward of the model's own feature functions."""
    pixels = adapter.pixel_inputs([image])
    tokens = adapter.tokenizer(["pleural effusion"], return_tensors="pt")
    with torch.no_grad():
        adapter.model.get_image_features(pixel_values=pixels)
        adapter.model.get_text_features(**tokens)


def measure(adapter: ClipAdapter, repeat: int) -> tuple[float, float]:
    image = np.random.default_rng(0).random((224, 224)).astype(np.float32)
    mask = np.ones((224, 224), bool)
    query = Query(QUESTION, "direct", build_prompt(QUESTION, "direct"), "Yes")
    request = MethodRequest(adapter=adapter, image=image, content_mask=mask, query=query,
                            params=SimilarityMap.check_params({}, size=224))
    method = SimilarityMap()
    method.attribute(request)  # warm-up (and the prompt's embedding into the cache)
    reference_forward(adapter, image)
    ours, ref = [], []
    for _ in range(repeat):
        start = time.perf_counter()
        method.attribute(request)
        ours.append(time.perf_counter() - start)
        start = time.perf_counter()
        reference_forward(adapter, image)
        ref.append(time.perf_counter() - start)
    return statistics.median(ours), statistics.median(ref)


def text_once(adapter: ClipAdapter, batch: int) -> tuple[int, int]:
    images = [np.random.default_rng(i).random((224, 224)).astype(np.float32) for i in range(batch)]
    query = Query("Is there evidence of cardiomegaly in the image?", "direct",
                  build_prompt("Is there evidence of cardiomegaly in the image?", "direct"), "Yes")
    before, adapter.counter.forward_calls = adapter.text_encodings, 0
    adapter.score(images, query)
    return adapter.text_encodings - before, adapter.counter.forward_calls


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--repeat", type=int, default=20)
    parser.add_argument("--batch", type=int, default=64)
    args = parser.parse_args(argv)
    torch.set_num_threads(1)
    ok = True
    for name, adapter in (("phantom-clip", load_adapter("phantom-clip")), ("CLIP ViT-B/16 (random)", vit_b16())):
        ours, ref = measure(adapter, args.repeat)
        texts, forwards = text_once(adapter, args.batch)
        ratio = ours / ref
        ok &= ratio <= 1.2 and texts == 1 and forwards == 1
        print(f"{name}: similarity_map {ours * 1e3:.1f} ms, vision+text forward {ref * 1e3:.1f} ms, "
              f"ratio {ratio:.2f} (target <= 1.2); batch of {args.batch}: {texts} text encoding(s), "
              f"{forwards} forward call(s)")
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
