"""Attention weights of a loaded HF decoder, captured and reduced during one forward.

Eager attention is switched on for the forward that needs it and switched back
afterwards, on the model already in memory: the text config's
``_attn_implementation`` is set to :data:`CAPTURE` for the duration of a
:func:`capturing` block. ``CAPTURE`` is registered once in transformers'
attention and mask interfaces; it runs the family's own eager attention function
(looked up in the Python module of the attention class, so soft-capping or other
family details stay the model's) and hands the weights to an
:class:`AttentionRecorder`, which keeps only what a method asked for:

* the mean over heads (or one head), in float32, so no layer ever keeps
  ``heads x N x N`` values beyond the layer being computed;
* only the requested rows (e.g. the predictor rows of the target tokens);
* with ``gradient=True``, ``mean_h ReLU(dF/dA_h) * A_h`` instead of ``mean_h A_h``,
  reduced by a tensor hook when the backward pass reaches the weights;
* with ``constant=True``, the attention output uses detached weights, so a backward
  pass treats them as constants (the conservative-propagation rule of LRP).

Memory is therefore O(layers x rows x N) for the stored maps.
"""

from __future__ import annotations

import sys
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from typing import Any

import torch

__all__ = ["CAPTURE", "AttentionRecorder", "capturing"]

CAPTURE = "cxr_attrib_capture"
"""Name of the capturing attention implementation registered in transformers."""


@dataclass
class AttentionRecorder:
    """What to keep of each decoder layer's attention weights, and what was kept.

    Attributes:
        layers (frozenset[int]): decoder layer indices (0-based) to record.
        rows (torch.Tensor | None): (R,) long query positions to keep; None keeps all.
        head (int | None): one head to keep; None averages over heads.
        gradient (bool): record ``mean_h ReLU(dF/dA_h) * A_h`` (needs a backward pass).
        constant (bool): detach the weights inside the attention output (every layer).
        maps (dict[int, torch.Tensor]): layer -> (B, R, N) float32 reduced maps.
    """

    layers: frozenset[int]
    rows: torch.Tensor | None = None
    head: int | None = None
    gradient: bool = False
    constant: bool = False
    maps: dict[int, torch.Tensor] = field(default_factory=dict)

    def _reduce(self, weights: torch.Tensor) -> torch.Tensor:
        """(B, H, Q, N) -> (B, R, N) float32: selected rows, one head or the head mean."""
        if self.rows is not None:
            weights = weights.index_select(2, self.rows.to(weights.device))
        weights = weights.float()
        if self.head is not None:
            return weights[:, self.head]
        return weights.mean(dim=1)

    def record(self, layer: int, weights: torch.Tensor) -> torch.Tensor:
        """Keep the reduced weights of ``layer``; return the weights the output should use."""
        if layer in self.layers:
            if self.gradient:
                if not weights.requires_grad:
                    weights = weights.detach().requires_grad_(True)
                held = weights.detach()

                def on_grad(grad: torch.Tensor, layer: int = layer, held: torch.Tensor = held) -> None:
                    self.maps[layer] = self._reduce(torch.relu(grad) * held)

                weights.register_hook(on_grad)
            else:
                self.maps[layer] = self._reduce(weights.detach())
        return weights.detach() if self.constant else weights


_active: list[AttentionRecorder] = []


def _repeat_heads(states: torch.Tensor, heads: int) -> torch.Tensor:
    """(B, KV, L, D) key/value heads repeated to (B, heads, L, D) (grouped-query attention)."""
    groups = heads // states.shape[1]
    return states if groups == 1 else states.repeat_interleave(groups, dim=1)


def _capture_attention(
    module: torch.nn.Module,
    query: torch.Tensor,
    key: torch.Tensor,
    value: torch.Tensor,
    attention_mask: torch.Tensor | None,
    *args: Any,
    **kwargs: Any,
) -> tuple[torch.Tensor, torch.Tensor]:
    eager = _family_eager(module)
    kwargs["dropout"] = 0.0
    output, weights = eager(module, query, key, value, attention_mask, *args, **kwargs)
    recorder = _active[-1] if _active else None
    if recorder is None:
        return output, weights
    used = recorder.record(int(module.layer_idx), weights)
    if used is weights:
        return output, weights
    values = _repeat_heads(value, weights.shape[1]).to(used.dtype)
    return torch.matmul(used, values).transpose(1, 2).contiguous(), weights


def _family_eager(module: torch.nn.Module) -> Callable[..., tuple[torch.Tensor, torch.Tensor]]:
    """The eager attention function of the module's own modelling file."""
    eager = getattr(sys.modules[type(module).__module__], "eager_attention_forward", None)
    if eager is None:
        raise RuntimeError(
            f"{type(module).__name__} has no eager attention function in {type(module).__module__}; "
            "attention capture needs a model with eager attention support."
        )
    return eager


def _register() -> None:
    from transformers import AttentionInterface
    from transformers.masking_utils import AttentionMaskInterface, eager_mask

    AttentionInterface.register(CAPTURE, _capture_attention)
    AttentionMaskInterface.register(CAPTURE, eager_mask)


@contextmanager
def capturing(model: torch.nn.Module, recorder: AttentionRecorder) -> Iterator[AttentionRecorder]:
    """Run the decoder with capturing eager attention inside the block.

    Args:
        model (torch.nn.Module): a ``*ForConditionalGeneration`` model with a
            ``config.text_config`` (its decoder's attention reads that config).
        recorder (AttentionRecorder): what to keep; filled by forwards (and, with
            ``gradient=True``, backward passes) run inside the block.

    Yields:
        AttentionRecorder: ``recorder``.
    """
    _register()
    config = model.config.get_text_config()
    previous = config._attn_implementation
    config._attn_implementation = CAPTURE
    _active.append(recorder)
    try:
        yield recorder
    finally:
        _active.remove(recorder)
        config._attn_implementation = previous


def layer_index(layer: int, count: int, what: str = "layer") -> int:
    """A 0-based layer index from ``layer`` (negative counts from the end)."""
    if isinstance(layer, bool) or not isinstance(layer, int) or not -count <= layer < count:
        raise ValueError(f"{what} must be an integer in [{-count}, {count - 1}]; got {layer!r}")
    return layer % count


def reduce_rows(maps: Sequence[torch.Tensor]) -> torch.Tensor:
    """Stack per-layer maps (B, R, N) -> (L, B, R, N)."""
    return torch.stack(list(maps))
