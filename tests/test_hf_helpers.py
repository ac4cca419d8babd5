"""The public adapter helpers of cxr_attrib.hf, on plain torch modules (no model needed)."""

from __future__ import annotations

import pytest
import torch

from cxr_attrib.adapter import PassCounter
from cxr_attrib.hf import capture_layers, count_backward, start_graph


def frozen_stack() -> torch.nn.Sequential:
    torch.manual_seed(0)
    return torch.nn.Sequential(torch.nn.Linear(4, 4), torch.nn.Tanh(), torch.nn.Linear(4, 4)).requires_grad_(False)


def test_start_graph_gives_frozen_weights_a_graph_without_touching_the_callers_tensor():
    images = torch.rand(2, 3, 4)
    started = start_graph(images, grad=True)
    assert started.requires_grad and not images.requires_grad
    assert frozen_stack()(started).requires_grad and not frozen_stack()(images).requires_grad
    leaf = torch.rand(2, 3, 4, requires_grad=True)
    assert start_graph(leaf, grad=True) is leaf and start_graph(images, grad=False) is images


def test_captures_lie_on_the_gradient_path():
    model = frozen_stack()
    x = start_graph(torch.rand(2, 3, 4), grad=True)
    with capture_layers(list(model), [0, -1], batch=2, grad=True) as kept:
        out = model(x)
    out.sum().backward()
    first = kept[0].detach().requires_grad_(True)
    (expected,) = torch.autograd.grad(model[2](model[1](first)).sum(), first)
    assert kept[0].grad is not None and kept[-1].grad is not None
    torch.testing.assert_close(kept[-1].grad, torch.ones(2, 3, 4))
    # the first capture's gradient is what flows back through the rest of the stack (same ops, same order)
    torch.testing.assert_close(kept[0].grad, expected)
    assert not model[0]._forward_hooks and not model[2]._forward_hooks, "hooks removed after the block"


def test_capture_rejects_layers_outside_the_model():
    with pytest.raises(IndexError, match=r"hidden layer 3 is out of range: the model has 3 layers"):
        with capture_layers(list(frozen_stack()), [3], batch=1, grad=False):
            pass


def test_every_backward_pass_that_reaches_the_logprobs_is_counted():
    counter = PassCounter()
    x = start_graph(torch.rand(3, 1, 4), grad=True)
    logprobs = frozen_stack()(x).sum(-1)  # (3, 1)
    count_backward(logprobs, counter)
    torch.autograd.grad(logprobs.sum(), x, retain_graph=True)  # as Captum runs it
    logprobs.sum().backward()
    assert (counter.backward_calls, counter.backward_sequences) == (2, 6)
    count_backward(logprobs.detach(), counter)  # no graph: nothing to count, no error
