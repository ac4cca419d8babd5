"""A Hugging Face chat-template VLM behind every adapter surface, split by surface.

:class:`HFAdapter` turns a ``*ForConditionalGeneration`` model with a chat template
into an :class:`~cxr_attrib.adapter.Adapter`:

* :class:`~cxr_attrib.hf.scorer.HFScorer`: encode, score, generate (text layout,
  float32 log-probs, pass counting);
* :class:`~cxr_attrib.hf.gradient.HFGradientSurface`: the differentiable pixel path,
  ``forward`` with captures, ``to_working``;
* :class:`~cxr_attrib.hf.attention.HFAttentionSurface`: attention and relevance.

This module loads checkpoints (:meth:`HFAdapter.load`, :meth:`HFAdapter.cards`,
:meth:`HFAdapter.resolve`). A family subclass says how its image placeholder
expands, which inputs carry its pixels, how pixels are packed and unpacked, its
geometry, its vision blocks and its box convention (docs/adapter-guide.md).

Processing (:mod:`cxr_attrib.hf.loading`): the full HF processor is loaded when it
can be built; otherwise tokenizer, PIL image processor and chat-template file are
composed. Pixels always come from the PIL image processor; text is always tokenised
here, once, with offsets.
"""

from __future__ import annotations

import dataclasses
from collections.abc import Mapping, Sequence
from functools import partial
from typing import Any, ClassVar

import torch

from ..adapter import Adapter, LoadOptions, ModelCard
from ..errors import ModelLoadError
from .attention import HFAttentionSurface
from .gradient import HFGradientSurface
from .loading import ProcessingParts, check_hub_access, load_processing, load_step, read_model_type, resolve_device_dtype
from .scorer import HFScorer

__all__ = ["HFAdapter"]


class HFAdapter(HFScorer, HFGradientSurface, HFAttentionSurface, Adapter):
    """Shared Hugging Face adapter; subclasses add one family's image handling.

    Attributes:
        tokenizer: fast HF tokenizer (``adapter.tokenizer``).
        image_processor: PIL image processor (pixels).
        chat_template (str): the checkpoint's chat template.
        processor: the full HF processor, or None where it cannot be built.
        processing_note (str): how the processing parts were obtained.
        image_token_id (int): id of the image token (``config.image_token_id``).
        image_token (str): that token's text.
        stop_ids (tuple[int, ...]): ids that end a generated turn.
    """

    model_type: ClassVar[str]
    """``config.model_type`` the family handles."""
    model_class_name: ClassVar[str]
    """transformers class loaded by :meth:`load`."""
    end_of_turn: ClassVar[str]
    """The template token that closes a turn."""

    def __init__(self, name: str, model: torch.nn.Module, options: LoadOptions, parts: ProcessingParts) -> None:
        super().__init__(name, model, options)
        self.tokenizer = parts.tokenizer
        self.image_processor = parts.image_processor
        self.chat_template = parts.chat_template
        self.processor = parts.processor
        self.processing_note = parts.note
        self.image_token_id = int(model.config.image_token_id)
        self.image_token = self.tokenizer.convert_ids_to_tokens(self.image_token_id)
        configured = model.generation_config.eos_token_id
        configured = configured if isinstance(configured, list) else [configured]
        stops = {self.tokenizer.convert_tokens_to_ids(self.end_of_turn), self.tokenizer.eos_token_id, *configured}
        self.stop_ids = tuple(sorted(i for i in stops if i is not None))
        self.added_ids = frozenset(int(i) for i in self.tokenizer.added_tokens_decoder)

    # -- loading -------------------------------------------------------------------

    @classmethod
    def load(cls, source: str, options: LoadOptions, *, name: str | None = None) -> HFAdapter:
        """Load a checkpoint of this family.

        Args:
            source (str): Hugging Face id or local checkpoint folder.
            options (LoadOptions): dtype, device / device_map, attention, pixel bounds.
            name (str | None): the reference shown in messages and results (the
                registry key, which the core passes to ``ModelCard.load``). Default:
                ``source``.

        Returns:
            HFAdapter: the loaded adapter (model in eval mode, parameters frozen).

        Raises:
            ModelLoadError: files missing (offline), wrong ``model_type``, no template.
        """
        import transformers

        name = name or source
        kwargs = {"local_files_only": options.local_files_only}
        check_hub_access(source, name, options.local_files_only)
        config = load_step(lambda: transformers.AutoConfig.from_pretrained(source, **kwargs), name, source)
        if config.model_type != cls.model_type:
            raise ModelLoadError(
                f"model {name!r} has model_type {config.model_type!r}; the {cls.family} adapter "
                f"expects {cls.model_type!r}. Pass a checkpoint of that family."
            )
        parts = load_processing(source, name, options.local_files_only)
        device, dtype = resolve_device_dtype(options)
        load_kwargs: dict[str, Any] = {"dtype": dtype, **kwargs}
        if options.device_map is not None:
            load_kwargs["device_map"] = options.device_map
        if options.attn_implementation is not None:
            load_kwargs["attn_implementation"] = options.attn_implementation
        model_class = getattr(transformers, cls.model_class_name)
        model = load_step(lambda: model_class.from_pretrained(source, **load_kwargs), name, source)
        if device is not None:
            model.to(device)
        model.eval().requires_grad_(False)
        return cls(name, model, options, parts)

    @classmethod
    def cards(cls, entries: Mapping[str, tuple[str, str]], *, local_files_only: bool = False) -> list[ModelCard]:
        """Model cards of this family for ``{key: (source, summary)}``.

        Args:
            entries: registry key -> (Hugging Face id or folder, one-line summary).
            local_files_only: never touch the network when loading them. Default: False.
        """
        load = partial(_load_local, cls) if local_files_only else cls.load
        return [ModelCard(key=key, source=source, family=cls.family, summary=summary, load=load)
                for key, (source, summary) in entries.items()]

    @classmethod
    def resolve(cls, reference: str, options: LoadOptions, known_sources: Sequence[str] = ()) -> HFAdapter | None:
        """Load ``reference`` when it is a checkpoint of this family, else None.

        Args:
            reference (str): Hub id or local folder.
            options (LoadOptions): how to load.
            known_sources (Sequence[str]): Hub ids of this family's registry cards; they
                are loaded (or fail with a clear error) without reading a config first.

        Returns:
            HFAdapter | None: the adapter, or None for references of other families.
        """
        if reference in known_sources or read_model_type(reference, options.local_files_only) == cls.model_type:
            return cls.load(reference, options)
        return None

    @property
    def grid(self) -> tuple[int, int]:
        """(gh, gw) image-token grid of a working-frame image (``geometry.token_grid``)."""
        return self.geometry.token_grid

    def describe(self) -> dict[str, Any]:
        """Family, name, class, dtype, device, grid and how processing was built."""
        return {
            **super().describe(),
            "model_class": type(self.model).__name__,
            "dtype": str(next(self.model.parameters()).dtype).removeprefix("torch."),
            "device": str(self.device),
            "grid": list(self.grid),
            "patch_grid": list(self.geometry.patch_grid),
            "working_size": self.working_size,
            "processing": self.processing_note,
        }


def _load_local(adapter_cls: type[HFAdapter], source: str, options: LoadOptions, *, name: str | None = None) -> HFAdapter:
    return adapter_cls.load(source, dataclasses.replace(options, local_files_only=True), name=name)
