"""check_adapter fails, with a precise message, for each of five deliberately broken adapters.

Each broken adapter is a tiny Qwen2.5-VL adapter with one rule of the contract broken
by a subclass (the factory swaps the class of a freshly loaded adapter, wired ones too).
"""

from __future__ import annotations

import numpy as np
import pytest
import torch

from cxr_attrib.adapter import ForwardResult, PassCounter
from cxr_attrib.testing import AdapterConformanceError, check_adapter, load_tiny_adapter, wired_adapter

FAMILY = "qwen2_5_vl"


def header_in_turn(base: type) -> type:
    class SpanWithRoleHeader(base):
        """The 'turn' span starts one token early, on the assistant role header."""

        def _build_layout(self, query):
            layout = super()._build_layout(query)
            if query.policy != "turn":
                return layout
            start = int(layout.target_positions[0]) - 1
            positions = torch.cat([torch.tensor([start]), layout.target_positions])
            return type(layout)(layout.input_ids, layout.image_positions, positions,
                                layout.input_ids[positions], ("<header>", *layout.target_tokens))

    return SpanWithRoleHeader


def uncounted_backward(base: type) -> type:
    class BackwardNotCounted(base):
        """Forward passes are counted, backward passes are not (no hook on the log-probs)."""

        def forward(self, images, query, **kwargs) -> ForwardResult:
            real, self.counter = self.counter, PassCounter()
            try:
                result = super().forward(images, query, **kwargs)
            finally:
                real.forward_calls += self.counter.forward_calls
                real.forward_sequences += self.counter.forward_sequences
                self.counter = real
            return result

    return BackwardNotCounted


def no_graph(base: type) -> type:
    class NoGraphUnderGrad(base):
        """grad=True on images that do not require grad builds nothing (frozen weights)."""

        def forward(self, images, query, *, hidden=(), vision=(), grad=False) -> ForwardResult:
            with torch.no_grad() if not images.requires_grad else torch.enable_grad():
                return super().forward(images, query, hidden=hidden, vision=vision, grad=False)

    return NoGraphUnderGrad


def capture_off_path(base: type) -> type:
    class CaptureOffThePath(base):
        """Captured hidden states are copies the model never continues from."""

        def forward(self, images, query, **kwargs) -> ForwardResult:
            result = super().forward(images, query, **kwargs)
            copies = {k: v.detach().clone().requires_grad_(True) for k, v in result.hidden.items()}
            return ForwardResult(result.logprobs, copies, result.vision, result.image_positions,
                                 result.predictor_positions)

    return CaptureOffThePath


def accepts_any_frame(base: type) -> type:
    def fit(image: np.ndarray, size: int) -> np.ndarray:
        out = np.zeros((size, size), np.float32)
        h, w = min(size, image.shape[0]), min(size, image.shape[1])
        out[:h, :w] = np.asarray(image, np.float32)[:h, :w]
        return out

    class AcceptsAnyFrame(base):
        """Images of any shape are cut or padded into the working frame instead of refused."""

        def pixel_inputs(self, images):
            return super().pixel_inputs([fit(image, self.working_size) for image in images])

    return AcceptsAnyFrame


BROKEN = {
    "span includes the role header": (header_in_turn, r"rule 'span policies': policy 'turn' targets .*nothing "
                                      r"before it: the role header belongs to the prompt"),
    "backward not counted": (uncounted_backward, r"rule 'backward passes are counted': two backward passes "
                             r"\(3 \+ 1 sequences\) .* were counted as 0 calls of 0 sequences; register "
                             r"cxr_attrib.hf.count_backward"),
    "no graph under grad=True": (no_graph, r"rule 'forward\(grad=True\) starts the graph at the images': "
                                 r".*without a graph; .*cxr_attrib.hf.start_graph"),
    "a capture off the gradient path": (capture_off_path, r"rule 'captures lie on the gradient path': "
                                        r"forward\(hidden=\(0,\), grad=True\): the capture received no gradient"),
    "image outside the working frame accepted": (accepts_any_frame, r"rule 'frames': encode\(\) accepted a "
                                                 r"\(112, 224\) image; .* must raise ValueError"),
}


@pytest.fixture(scope="module")
def qwen_class(tiny_model_dir):
    return type(load_tiny_adapter(tiny_model_dir(FAMILY)))


@pytest.mark.parametrize("bug", list(BROKEN))
def test_check_adapter_names_each_broken_rule(bug, tiny_model_dir, qwen_class):
    breaker, message = BROKEN[bug]
    broken = breaker(qwen_class)

    def factory(region=None):
        adapter = wired_adapter(FAMILY, region) if region else load_tiny_adapter(tiny_model_dir(FAMILY))
        adapter.__class__ = broken
        return adapter

    with pytest.raises(AdapterConformanceError, match=message) as caught:
        check_adapter(factory, label="broken")
    assert str(caught.value).startswith("adapter 'broken' breaks the rule ") and "\n" not in str(caught.value)
