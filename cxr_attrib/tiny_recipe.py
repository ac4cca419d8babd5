"""How an adapter family builds tiny random models of its real classes (for tests).

The core's test helpers (:mod:`cxr_attrib.testing`) never branch on a model family:
each adapter plugin registers a :class:`TinyModelRecipe` through the
``register_tiny_models`` hook, and :func:`cxr_attrib.testing.save_tiny_model`,
:func:`~cxr_attrib.testing.wired_adapter` and the pytest fixtures look the family
up in the registry. The core trains the shared byte-level BPE tokenizer, seeds the
weights and writes the folder; the recipe supplies everything family-specific.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Mapping
from pathlib import Path
from typing import Any, ClassVar

import torch

__all__ = ["TinyModelRecipe", "TowerProjectorRecipe", "gate_token_outputs", "zero_output_projections"]


class TinyModelRecipe(ABC):
    """The family-specific half of a tiny offline model.

    Class attributes:
        family (str): adapter family, e.g. ``"qwen2_5_vl"`` (the registry name).
        special_tokens (tuple[str, ...]): the family's special tokens, in the order of
            its real vocabulary (they get ids 0..k-1).
        stop_tokens (tuple[str, ...]): tokens that end a generated turn.
        chat_template (str): a Jinja chat template that renders like the family's own.
    """

    family: ClassVar[str]
    special_tokens: ClassVar[tuple[str, ...]]
    stop_tokens: ClassVar[tuple[str, ...]]
    chat_template: ClassVar[str]

    @abstractmethod
    def tokenizer_roles(self) -> dict[str, Any]:
        """Keyword arguments of ``PreTrainedTokenizerFast`` naming the special-token roles
        (``eos_token``, ``pad_token``, ``extra_special_tokens``...)."""

    @abstractmethod
    def config_values(self, tokenizer: Any) -> dict[str, Any]:
        """The default tiny configuration as nested dicts (token ids from ``tokenizer``)."""

    @abstractmethod
    def build_config(self, values: Mapping[str, Any]) -> Any:
        """The family's ``PretrainedConfig`` from :meth:`config_values` merged with overrides."""

    @abstractmethod
    def build_model(self, config: Any) -> torch.nn.Module:
        """A randomly initialised ``*ForConditionalGeneration`` (the caller seeds torch)."""

    @abstractmethod
    def save_processing(self, folder: Path, tokenizer: Any, config: Any) -> None:
        """Write the tokenizer, chat template and image processor files into ``folder``."""

    @abstractmethod
    def isolate_vision_tokens(self, model: torch.nn.Module) -> None:
        """Zero the vision attention outputs so each image token sees only its own cell."""

    @abstractmethod
    def gate_image_features(self, model: torch.nn.Module, gains: torch.Tensor) -> None:
        """Multiply the features of image token ``i`` (row-major over the token grid) by
        ``gains[i]`` (a forward hook on the image-feature output)."""


def zero_output_projections(tower: torch.nn.Module, suffix: str) -> None:
    """Zero the weight and bias of every sub-module of ``tower`` whose name ends with ``suffix``.

    Applied to a vision tower's attention output projections (a recipe's
    :meth:`TinyModelRecipe.isolate_vision_tokens`), it leaves each patch with only its
    own pixels (the residual path), so image tokens do not mix.
    """
    with torch.no_grad():
        for name, module in tower.named_modules():
            if name.endswith(suffix):
                module.weight.zero_()
                if module.bias is not None:
                    module.bias.zero_()


def gate_token_outputs(module: torch.nn.Module, gains: torch.Tensor) -> None:
    """Multiply ``module``'s (B, N, D) output by ``gains[i]`` at token i (a forward hook).

    For a recipe's :meth:`TinyModelRecipe.gate_image_features` when one module (e.g. the
    multi-modal projector) outputs the image tokens row-major over the token grid.
    """

    def gate(module: torch.nn.Module, args: Any, output: torch.Tensor) -> torch.Tensor:
        return output * gains[None, :, None].to(output.device, output.dtype)

    module.register_forward_hook(gate)


class TowerProjectorRecipe(TinyModelRecipe):
    """A recipe for the common layout ``model.model.vision_tower`` (attention outputs named
    ``*.self_attn.out_proj``) feeding ``model.model.multi_modal_projector``, whose output is
    the image tokens row-major: the wiring edits are written once here."""

    def isolate_vision_tokens(self, model: torch.nn.Module) -> None:
        zero_output_projections(model.model.vision_tower, ".self_attn.out_proj")

    def gate_image_features(self, model: torch.nn.Module, gains: torch.Tensor) -> None:
        gate_token_outputs(model.model.multi_modal_projector, gains)
