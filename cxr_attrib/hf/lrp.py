"""Conservative relevance propagation through a loaded HF decoder, by hooks.

Layer-wise relevance propagation for transformers (Ali et al., ICML 2022;
Achtibat et al., "AttnLRP", ICML 2024) can be computed as *input x gradient* of a
modified backward pass. The forward values stay the model's own; only the local
derivatives change, so that every operation passes relevance on without creating or
destroying it:

* **attention weights are constants**: the attention output is ``A.detach() @ V``
  (the capturing attention implementation with ``constant=True``), so relevance
  flows through the values only;
* **normalisation scales are constants**: a norm ``y = s(x) * w * x`` becomes
  ``x * (y / x).detach()`` (a forward hook on every ``*Norm`` module), linear in x;
* **element-wise activations pass relevance unchanged** (identity rule): the MLP's
  ``act_fn`` output becomes ``x * (act(x) / x).detach()``;
* **gated products split relevance uniformly**: the gradient reaching the product
  ``act(gate) * up`` (the input of ``down_proj``) is halved, so each factor receives
  ``0.5 * grad * other``, and input x gradient gives each factor half the product.

With these rules the modified network is linear in its input embeddings except for
additive biases, so the relevance summed over all input embeddings equals the
explained logit minus what biases absorb (measured as the conservation error).
Nothing of the model's code is copied: the hooks read the inputs and outputs of the
loaded modules.
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import ExitStack, contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["EmbeddingTap", "conservative_rules"]


def _linearised(inputs: torch.Tensor, outputs: torch.Tensor) -> torch.Tensor:
    """``inputs * (outputs / inputs).detach()``: the same values, a constant local slope."""
    slope = torch.where(inputs != 0, outputs / torch.where(inputs != 0, inputs, 1), torch.zeros_like(outputs))
    return inputs * slope.detach()


def _norm_hook(module: torch.nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor:
    return _linearised(args[0].to(output.dtype), output)


def _activation_hook(module: torch.nn.Module, args: tuple[Any, ...], output: torch.Tensor) -> torch.Tensor:
    return _linearised(args[0].to(output.dtype), output)


def _uniform_split_hook(module: torch.nn.Module, args: tuple[Any, ...]) -> tuple[Any, ...]:
    product = args[0]
    return (0.5 * product + 0.5 * product.detach(), *args[1:])


@dataclass
class EmbeddingTap:
    """Makes the decoder's input embeddings a leaf that receives gradients.

    Attributes:
        embeddings (torch.Tensor | None): (B, L, H) the ``inputs_embeds`` the decoder
            received (image features already in place), ``requires_grad=True``.
    """

    embeddings: torch.Tensor | None = field(default=None)

    def __call__(self, module: torch.nn.Module, args: tuple[Any, ...], kwargs: dict[str, Any]) -> Any:
        embeds = kwargs.get("inputs_embeds")
        if embeds is None:
            raise RuntimeError("the decoder was called without inputs_embeds; cannot read input relevance.")
        leaf = embeds.detach().requires_grad_(True)
        self.embeddings = leaf
        return args, {**kwargs, "inputs_embeds": leaf}


@contextmanager
def conservative_rules(decoder: torch.nn.Module, layers: Any) -> Iterator[EmbeddingTap]:
    """Install the LRP rules on ``decoder`` for the duration of the block.

    Args:
        decoder (torch.nn.Module): the language model (its forward takes ``inputs_embeds``).
        layers: its decoder layers; each has ``mlp.act_fn`` and ``mlp.down_proj``.

    Yields:
        EmbeddingTap: holds the input-embedding leaf after a forward.
    """
    tap = EmbeddingTap()
    with ExitStack() as stack:
        handles = [decoder.register_forward_pre_hook(tap, with_kwargs=True)]
        for module in decoder.modules():
            if type(module).__name__.endswith(("RMSNorm", "LayerNorm")):
                handles.append(module.register_forward_hook(_norm_hook))
        for layer in layers:
            handles.append(layer.mlp.act_fn.register_forward_hook(_activation_hook))
            handles.append(layer.mlp.down_proj.register_forward_pre_hook(_uniform_split_hook))
        for handle in handles:
            stack.callback(handle.remove)
        yield tap
