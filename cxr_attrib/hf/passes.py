"""The gradient path of an adapter's ``forward``: where it starts, what it captures, how it is counted.

Three rules every adapter's :meth:`~cxr_attrib.adapter.GradientSurface.forward`
must keep (``cxr_attrib.testing.check_adapter`` checks them), each one helper here:

* :func:`start_graph`: with ``grad=True`` the graph starts **at the images**. A loaded
  model's weights are frozen (``requires_grad=False``), so without an input that
  requires grad no graph is built at all and a method's captures get no ``.grad``;
* :func:`capture_layers`: a captured layer output must lie **on the gradient path**:
  the hook hands the model (and, running first, every hook the model registered
  itself, such as the one that records hidden states) the very tensor it keeps, not a
  copy or a detached one, so a backward pass fills its ``.grad``;
* :func:`count_backward`: every backward pass that reaches the log-probs is counted
  (a tensor hook on them), whoever runs it: Captum's ``autograd.grad`` or
  :meth:`~cxr_attrib.adapter.ForwardResult.backward`.

Example::

    >>> import torch
    >>> from cxr_attrib.adapter import PassCounter
    >>> layer = torch.nn.Linear(3, 3).requires_grad_(False)  # frozen, as loaded
    >>> counter = PassCounter()
    >>> images = start_graph(torch.ones(2, 1, 3), grad=True)   # (B, n, D)
    >>> with capture_layers([layer], [0], batch=2, grad=True) as kept:
    ...     logprobs = layer(images).sum(-1)                     # (B, 1)
    >>> count_backward(logprobs, counter)
    >>> logprobs.sum().backward()
    >>> kept[0].grad.shape, counter.backward_calls, counter.backward_sequences
    (torch.Size([2, 1, 3]), 1, 2)
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any

import torch

from ..adapter import PassCounter

__all__ = ["capture_layers", "check_indices", "count_backward", "start_graph"]


def check_indices(what: str, indices: Sequence[int], count: int, kind: str) -> None:
    """Raise IndexError naming ``what`` when an index lies outside [-count, count - 1].

    Args:
        what (str): the argument, e.g. ``"hidden"`` (message: ``hidden layer 5 is out of range``).
        indices (Sequence[int]): the requested layers (negative = from the end).
        count (int): how many layers the model has.
        kind (str): what they are, e.g. ``"decoder layers"``.
    """
    for index in indices:
        if isinstance(index, bool) or not isinstance(index, int) or not -count <= index < count:
            raise IndexError(
                f"{what} layer {index!r} is out of range: the model has {count} {kind}; "
                f"expected an integer in [{-count}, {count - 1}]."
            )


def start_graph(images: torch.Tensor, grad: bool) -> torch.Tensor:
    """The tensor a forward should start from.

    Args:
        images (torch.Tensor): (B, S, S) working-frame images in [0, 1].
        grad (bool): the forward builds a graph.

    Returns:
        torch.Tensor: ``images`` itself when they already require grad or ``grad`` is
        False; otherwise a detached copy that requires grad (the caller's tensor is
        untouched), so the graph exists even though the weights are frozen.
    """
    if grad and not images.requires_grad:
        return images.detach().requires_grad_(True)
    return images


def _keeper(store: dict[int, torch.Tensor], key: int, batch: int, grad: bool, skip: int) -> Callable[..., Any]:
    def hook(module: torch.nn.Module, args: Any, output: Any) -> Any:
        tensor = output[0] if isinstance(output, tuple) else output
        shaped = tensor.reshape(batch, -1, tensor.shape[-1])
        lead, kept = shaped[:, :skip], shaped[:, skip:]
        if grad and kept.requires_grad:
            kept.retain_grad()
        store[key] = kept
        # the model continues from the kept tensor, so a backward pass fills its .grad
        passed = (torch.cat([lead, kept], dim=1) if skip else kept).reshape(tensor.shape)
        return (passed, *output[1:]) if isinstance(output, tuple) else passed

    return hook


@contextmanager
def capture_layers(
    modules: Sequence[torch.nn.Module],
    indices: Sequence[int],
    *,
    batch: int,
    grad: bool,
    what: str = "hidden",
    kind: str = "layers",
    skip: int = 0,
) -> Iterator[dict[int, torch.Tensor]]:
    """Keep the outputs of ``modules[i]`` for each requested ``i`` during the block.

    Args:
        modules (Sequence[torch.nn.Module]): the layers, first to last.
        indices (Sequence[int]): which to keep (negative = from the end; the keys of
            the returned dict are as requested).
        batch (int): B, the batch of the forward (outputs are kept as (B, n, D)).
        grad (bool): keep ``.grad`` on each capture (start the graph with
            :func:`start_graph` so there is one).
        what (str): the argument name for messages. Default: ``"hidden"``.
        kind (str): what the layers are, for messages. Default: ``"layers"``.
        skip (int): leading positions that are not kept (e.g. a vision tower's class
            token), so a capture holds only the patches. Default: 0.

    Yields:
        dict[int, torch.Tensor]: (B, n - skip, D) per index, filled by forwards run inside the block.

    Raises:
        IndexError: an index outside the model (before any hook is installed).
    """
    check_indices(what, indices, len(modules), kind)
    store: dict[int, torch.Tensor] = {}
    # prepended: hooks the model registered (e.g. transformers recording hidden states) then
    # see the kept tensor too, so every consumer of the output continues from it
    handles = [modules[i].register_forward_hook(_keeper(store, i, batch, grad, skip), prepend=True) for i in indices]
    try:
        yield store
    finally:
        for handle in handles:
            handle.remove()


def count_backward(logprobs: torch.Tensor, counter: PassCounter) -> None:
    """Count every backward pass that reaches ``logprobs`` (B, T) in ``counter``.

    One ``backward_calls`` and B ``backward_sequences`` per pass; nothing happens
    when ``logprobs`` carry no graph.
    """
    if not logprobs.requires_grad:
        return

    def count(grad: torch.Tensor) -> None:
        counter.backward_calls += 1
        counter.backward_sequences += int(grad.shape[0])

    logprobs.register_hook(count)
