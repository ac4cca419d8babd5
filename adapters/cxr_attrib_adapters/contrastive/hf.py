"""CLIP and SigLIP dual encoders through transformers' ``CLIPModel`` and ``SiglipModel``.

* :class:`ClipAdapter`: p(positive) is a 2-way softmax over ``logit_scale.exp() x``
  the cosines of the image embedding (CLS, post-layernorm, visual projection) with
  the positive and negative prompt embeddings (end-of-text token, text projection).
  Patch tokens reach the joint space like the CLS token: post-layernorm, then the
  visual projection.
* :class:`SiglipAdapter`: p(positive) = sigmoid(``logit_scale.exp()`` x cos(image,
  positive) + ``logit_bias``), SigLIP's own pair-wise probability; the negative prompt
  does not enter it, and the "No" answer explains log(1 - p). The image embedding is
  the attention-pooling head's output; patch tokens are the post-layernorm last hidden
  states, which live in the joint space (the vision width equals the text projection).
  Prompts are padded to the text tower's full length (SigLIP pools the last position).

Loading (:func:`load_dual_encoder`): a registry key, a Hugging Face id or a local
folder; the tokenizer and the image processor come from the same place; a missing
file offline is a one-line error naming the key and the id.
"""

from __future__ import annotations

from abc import abstractmethod

import dataclasses
from collections.abc import Sequence
from typing import Any, ClassVar

import torch

from cxr_attrib.adapter import LoadOptions
from cxr_attrib.contrastive import DEFAULT_THRESHOLD, PromptPair
from cxr_attrib.errors import ModelLoadError

from cxr_attrib.hf import check_hub_access, load_step, read_model_type, resolve_device_dtype
from ._base import _RESAMPLE_MODES, DualEncoderAdapter

__all__ = ["ClipAdapter", "SiglipAdapter", "FAMILIES", "clip_log_probs", "load_dual_encoder"]


def _pooled(output: Any) -> torch.Tensor:
    """A ``get_*_features`` result as a tensor (transformers 5 returns an output object)."""
    return output if isinstance(output, torch.Tensor) else output.pooler_output


def _normalise(x: torch.Tensor) -> torch.Tensor:
    return torch.nn.functional.normalize(x.float(), dim=-1)


def clip_log_probs(logit_scale: torch.Tensor, image: torch.Tensor, positive: torch.Tensor,
                   negative: torch.Tensor) -> torch.Tensor:
    """(B, 2) ``[log p(positive), log p(negative)]``: 2-way softmax of ``logit_scale.exp()`` x the cosines.

    Args:
        logit_scale (torch.Tensor): the model's log temperature inverse (scalar).
        image (torch.Tensor): (B, D) image embeddings.
        positive, negative (torch.Tensor): (D,) prompt embeddings.
    """
    texts = _normalise(torch.stack([positive, negative]))
    logits = logit_scale.float().exp() * _normalise(image) @ texts.T
    return torch.log_softmax(logits, dim=-1)


class _HFDualEncoder(DualEncoderAdapter):
    """Shared by the transformers families: configs, vision blocks, eager attention for one forward."""

    model_type: ClassVar[str]
    model_class_name: ClassVar[str]

    @property
    def image_size(self) -> int:
        return int(self.model.config.vision_config.image_size)

    @property
    def patch_size(self) -> int:
        return int(self.model.config.vision_config.patch_size)

    @property
    def num_attention_heads(self) -> int:
        return int(self.model.config.vision_config.num_attention_heads)

    def vision_layers(self) -> Sequence[torch.nn.Module]:
        return list(self.model.vision_model.encoder.layers)

    text_inputs: ClassVar[tuple[str, ...]] = ("input_ids", "attention_mask")
    """Tokenizer outputs the text tower receives."""

    def _tokens(self, prompts: list[str], **padding: Any) -> dict[str, torch.Tensor]:
        limit = int(self.model.config.text_config.max_position_embeddings)
        encoded = self.tokenizer(prompts, truncation=True, max_length=limit, return_tensors="pt", **padding)
        return {k: v.to(self.device) for k, v in encoded.items() if k in self.text_inputs}

    def _vision_attentions(self, pixels: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        before = self.model.config._attn_implementation
        self.model.set_attn_implementation("eager")
        try:
            out = self.model.vision_model(pixel_values=pixels, output_attentions=True)
        finally:
            self.model.set_attn_implementation(before)
        return self._image_embedding(out), list(out.attentions)

    def _vision(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        out = self.model.vision_model(pixel_values=pixels)
        return self._image_embedding(out), self._patches(out)

    @abstractmethod
    def _image_embedding(self, out: Any) -> torch.Tensor:
        """(B, D) joint-space image embedding from the vision tower's output ``out``."""

    @abstractmethod
    def _patches(self, out: Any) -> torch.Tensor:
        """(B, P, D) joint-space patch embeddings from the vision tower's output ``out``."""


class ClipAdapter(_HFDualEncoder):
    """``transformers.CLIPModel`` (OpenAI CLIP, XrayCLIP, CheXzero after conversion, phantom-clip)."""

    family = "clip"
    model_type = "clip"
    model_class_name = "CLIPModel"
    cls_token = True
    patch_recipe = "CLIP: post-layernorm + visual projection of the patch tokens (as of the CLS token)"

    def _text_features(self, prompts: list[str]) -> torch.Tensor:
        return _pooled(self.model.get_text_features(**self._tokens(prompts, padding=True)))

    def _image_embedding(self, out: Any) -> torch.Tensor:
        return self.model.visual_projection(out.pooler_output)

    def _patches(self, out: Any) -> torch.Tensor:
        vision = self.model.vision_model
        return self.model.visual_projection(vision.post_layernorm(out.last_hidden_state[:, 1:]))

    def _log_probs(self, image: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
        return clip_log_probs(self.model.logit_scale, image, positive, negative)


class SiglipAdapter(_HFDualEncoder):
    """``transformers.SiglipModel`` (MedSigLIP, XraySigLIP)."""

    family = "siglip"
    model_type = "siglip"
    model_class_name = "SiglipModel"
    cls_token = False
    text_inputs = ("input_ids",)  # SigLIP was trained on max-length padding without a mask
    patch_recipe = "SigLIP: post-layernorm patch tokens (the vision width is the joint space)"

    def _text_features(self, prompts: list[str]) -> torch.Tensor:
        return _pooled(self.model.get_text_features(**self._tokens(prompts, padding="max_length")))

    def _image_embedding(self, out: Any) -> torch.Tensor:
        return out.pooler_output

    def _patches(self, out: Any) -> torch.Tensor:
        return out.last_hidden_state

    def _log_probs(self, image: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
        logit = self.model.logit_scale.float().exp() * (_normalise(image) @ _normalise(positive))
        logit = logit + self.model.logit_bias.float()
        return torch.stack([torch.nn.functional.logsigmoid(logit), torch.nn.functional.logsigmoid(-logit)], -1)


FAMILIES: dict[str, type[_HFDualEncoder]] = {"clip": ClipAdapter, "siglip": SiglipAdapter}
"""``config.model_type`` -> adapter class."""


def _processor_facts(source: str, name: str, local_files_only: bool) -> tuple[Any, Any, str]:
    from transformers import AutoImageProcessor, AutoTokenizer

    kwargs = {"local_files_only": local_files_only}
    tokenizer = load_step(lambda: AutoTokenizer.from_pretrained(source, **kwargs), name, source)
    processor = load_step(lambda: AutoImageProcessor.from_pretrained(source, backend="pil", **kwargs), name, source)
    return tokenizer, processor, f"{type(tokenizer).__name__} + {type(processor).__name__}"


def load_dual_encoder(
    source: str,
    options: LoadOptions,
    *,
    name: str | None = None,
    prompts: PromptPair | None = None,
    threshold: float = DEFAULT_THRESHOLD,
    model_type: str | None = None,
) -> DualEncoderAdapter:
    """Load a ``CLIPModel`` or ``SiglipModel`` checkpoint (Hub id or folder).

    Args:
        source (str): Hugging Face id or local folder.
        options (LoadOptions): dtype, device, working size, ``local_files_only``.
        name (str | None): the reference shown in messages (a registry key). Default: ``source``.
        prompts (PromptPair | None): templates. Default: the family's.
        threshold (float): p(positive) for "Yes", in (0, 1). Default: 0.5.
        model_type (str | None): expected ``model_type``; None accepts either family.

    Returns:
        DualEncoderAdapter: model in eval mode, parameters frozen.

    Raises:
        ModelLoadError: files missing (offline: one line naming key and id), another
            ``model_type``, or a SigLIP whose vision width is not its joint space.
    """
    import transformers

    name = name or source
    check_hub_access(source, name, options.local_files_only)
    kwargs = {"local_files_only": options.local_files_only}
    config = load_step(lambda: transformers.AutoConfig.from_pretrained(source, **kwargs), name, source)
    expected = (model_type,) if model_type else tuple(FAMILIES)
    if config.model_type not in expected:
        raise ModelLoadError(
            f"model {name!r} has model_type {config.model_type!r}; the dual-encoder adapters expect "
            f"{' or '.join(map(repr, expected))}. Pass a CLIPModel or SiglipModel checkpoint."
        )
    cls = FAMILIES[config.model_type]
    if cls is SiglipAdapter and config.vision_config.hidden_size != config.text_config.projection_size:
        raise ModelLoadError(
            f"model {name!r}: SigLIP vision width {config.vision_config.hidden_size} differs from its text "
            f"projection {config.text_config.projection_size}; patch tokens would not be in the joint space."
        )
    tokenizer, processor, note = _processor_facts(source, name, options.local_files_only)
    device, dtype = resolve_device_dtype(options)
    load_kwargs: dict[str, Any] = {"dtype": dtype, **kwargs}
    if options.device_map is not None:
        load_kwargs["device_map"] = options.device_map
    model_class = getattr(transformers, cls.model_class_name)
    model = load_step(lambda: model_class.from_pretrained(source, **load_kwargs), name, source)
    if device is not None:
        model.to(device)
    model.eval().requires_grad_(False)
    return cls(
        name, model, options, tokenizer=tokenizer, image_mean=processor.image_mean, image_std=processor.image_std,
        resample=_RESAMPLE_MODES.get(int(getattr(processor, "resample", 3)), "bicubic"),
        prompts=prompts, threshold=threshold, note=note,
    )


def resolve_dual_encoder(reference: str, options: LoadOptions, known: Sequence[str] = ()) -> DualEncoderAdapter | None:
    """Load ``reference`` when it is a CLIP or SigLIP checkpoint (or a known Hub id), else None."""
    if reference in known or read_model_type(reference, options.local_files_only) in FAMILIES:
        return load_dual_encoder(reference, options)
    return None


def card_loader(local_files_only: bool = False, **kwargs: Any) -> Any:
    """A ``ModelCard.load`` callable, ``load(source, options, *, name)``; ``local_files_only`` forces offline."""

    def load(source: str, options: LoadOptions, *, name: str | None = None) -> DualEncoderAdapter:
        if local_files_only:
            options = dataclasses.replace(options, local_files_only=True)
        return load_dual_encoder(source, options, name=name, **kwargs)

    return load
