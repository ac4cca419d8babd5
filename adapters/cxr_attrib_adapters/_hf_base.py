"""The Hugging Face implementation of the adapter contract, shared by both families.

:class:`HFAdapter` turns a chat-template VLM (``*ForConditionalGeneration``) into an
:class:`~cxr_attrib.adapter.Adapter`. A family subclass only says how its image
placeholder expands, how pixels are packed and how they map back to space; this
module does the rest:

* **Text layout.** One conversation, ``user: [image, prompt]`` then
  ``assistant: answer``, is rendered with the checkpoint's own chat template. The
  generation prompt (the conversation up to the assistant header) must be a prefix
  of the full text; the response starts right after it. The image placeholder is
  expanded to one token per image-grid cell, the text is tokenized with character
  offsets, the prompt and answer as plain text (see :mod:`._text`: control tokens
  typed into them are never special tokens), and the target tokens are those whose
  characters overlap the span chosen by the policy (see docs/user-guide.md):

  - ``answer``: the verdict word found by :func:`cxr_attrib.targets.answer_char_span`;
  - ``response``: the response characters (template end-of-turn tokens excluded);
  - ``turn``: everything after the generation prompt: the response plus the
    template's closing tokens (``<|im_end|>`` and ``\\n`` for Qwen,
    ``<end_of_turn>`` and ``\\n`` for Gemma). The assistant header belongs to the
    prompt the model is given, so it is never a target.

* **Scoring in float32 without a full-vocabulary log-softmax.** The inner model
  returns the final (normed) hidden states; only the predictor rows
  (``target_positions - 1``) are kept, upcast to float32 and multiplied by the LM
  head in vocabulary chunks, with a running log-sum-exp:
  ``log p = logit[target] - logsumexp(logits)``. No final-logit soft-capping is
  applied: neither ``*ForConditionalGeneration`` class applies it (transformers'
  Gemma 3 applies ``final_logit_softcapping`` only in the text-only
  ``Gemma3ForCausalLM``, and the released configs set it to null), so scores equal
  the log-softmax of the model's own logits.

* **Processing** (see :mod:`._loading`). The full HF processor is loaded when it
  can be built and lends its tokenizer, image processor, chat template and image
  expansion; otherwise (Qwen2.5-VL without torchvision) they are composed from the
  tokenizer, the PIL image processor and the chat-template file. Pixels always come
  from the PIL image processor; text is always tokenized here, once, with offsets.

* **The differentiable path** (:meth:`HFAdapter.pixel_values`): the grey working
  image is resized in torch with the processor's filter when the model frame differs
  from the working frame, repeated to RGB and normalised with the processor's mean
  and std; a family then packs it (Qwen2.5-VL's patches). :meth:`HFAdapter.forward`
  runs it with forward hooks on the requested decoder layers and vision blocks.

* **Attention and relevance** (:meth:`HFAdapter.attention`, :meth:`HFAdapter.relevance`):
  a capturing eager attention is switched on for that one forward only
  (:mod:`._attention`), and the LRP rules are hooks on the loaded modules (:mod:`._lrp`).

* **Pass counting.** :meth:`HFAdapter.score` and :meth:`HFAdapter.forward` add
  one ``forward_calls`` per model call and its batch to ``forward_sequences``;
  :meth:`HFAdapter.generate` adds one ``generate_calls``. A gradient hook on the
  log-probs of :meth:`HFAdapter.forward` adds one ``backward_calls`` (and the batch
  to ``backward_sequences``) for every backward pass that reaches them, whoever runs
  it (Captum's ``autograd.grad`` or :meth:`~cxr_attrib.adapter.ForwardResult.backward`).
"""

from __future__ import annotations

import contextlib
import dataclasses
import math
from abc import abstractmethod
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from functools import partial
from typing import Any, ClassVar

import numpy as np
import torch

from cxr_attrib.adapter import (
    Adapter,
    AttentionMaps,
    Encoding,
    ForwardResult,
    Generation,
    LoadOptions,
    ModelCard,
    Query,
    Reduction,
    Relevance,
    Space,
)
from cxr_attrib.errors import ModelLoadError
from cxr_attrib.frames import cells_to_working
from cxr_attrib.targets import TargetError, answer_char_span, validate_span_policy
from cxr_attrib.typing import WorkingImage

from ._attention import AttentionRecorder, capturing
from ._hooks import capture_output, check_indices
from ._loading import (
    ProcessingParts,
    check_hub_access,
    load_processing,
    load_step,
    read_model_type,
    resolve_device_dtype,
)
from ._text import PlainText, encode_conversation, render_chat
from ._lrp import conservative_rules

__all__ = ["HFAdapter", "grey_to_rgb", "square_side", "token_logprobs"]

_VOCAB_CHUNK_ELEMENTS = 1 << 25
"""Largest LM-head slice upcast to float32 at once (elements; 128 MiB)."""
_LAYOUT_CACHE = 32


def token_logprobs(
    hidden: torch.Tensor,
    head: torch.nn.Module,
    targets: torch.Tensor,
) -> torch.Tensor:
    """Float32 log-probs of target tokens from final hidden states, vocabulary-chunked.

    Never builds more than one ``(R, chunk)`` slice of logits: the LM head's weight
    is upcast slice by slice and a running log-sum-exp is kept.

    Args:
        hidden (torch.Tensor): (R, H) final hidden states of the predictor rows (any
            float dtype; upcast to float32 here).
        head (torch.nn.Module): the LM head, a ``Linear(H, V)`` (bias optional).
        targets (torch.Tensor): (R,) long token ids predicted by each row.

    Returns:
        torch.Tensor: (R,) float32 natural-log probabilities, differentiable with
        respect to ``hidden``.

    Examples::

        >>> head = torch.nn.Linear(4, 10, bias=False)
        >>> h = torch.randn(3, 4)
        >>> t = torch.tensor([1, 2, 3])
        >>> ref = torch.log_softmax(head(h), -1).gather(1, t[:, None])[:, 0]
        >>> bool(torch.allclose(token_logprobs(h, head, t), ref, atol=1e-6))
        True
    """
    weight = head.weight
    bias = getattr(head, "bias", None)
    rows = hidden.to(device=weight.device, dtype=torch.float32)
    targets = targets.to(weight.device)
    chunk = max(1, _VOCAB_CHUNK_ELEMENTS // weight.shape[1])
    total: torch.Tensor | None = None
    for start in range(0, weight.shape[0], chunk):
        logits = rows @ weight[start : start + chunk].float().T
        if bias is not None:
            logits = logits + bias[start : start + chunk].float()
        part = torch.logsumexp(logits, dim=-1)
        total = part if total is None else torch.logaddexp(total, part)
    picked = (rows * weight[targets].float()).sum(-1)
    if bias is not None:
        picked = picked + bias[targets].float()
    assert total is not None
    return picked - total


@dataclass(frozen=True)
class _TextLayout:
    input_ids: torch.Tensor
    image_positions: torch.Tensor
    target_positions: torch.Tensor
    target_ids: torch.Tensor
    target_tokens: tuple[str, ...]


def grey_to_rgb(images: Sequence[WorkingImage], size: int) -> list[np.ndarray]:
    """Check working-frame images and repeat them to three channels.

    Args:
        images: B arrays (S, S) float32 in [0, 1].
        size (int): the expected side S.

    Returns:
        list[np.ndarray]: B new arrays (S, S, 3) float32 (inputs are not modified).

    Raises:
        ValueError: an image is not (S, S).
    """
    out = []
    for index, image in enumerate(images):
        array = np.asarray(image, dtype=np.float32)
        if array.shape != (size, size):
            raise ValueError(
                f"image {index} has shape {array.shape}; expected the working frame ({size}, {size}) "
                "float32 in [0, 1] (use cxr_attrib.frames.ResizePad to make it)."
            )
        out.append(np.repeat(array[:, :, None], 3, axis=2))
    return out


class HFAdapter(Adapter):
    """Shared Hugging Face adapter; subclasses add one family's image handling.

    Attributes:
        tokenizer: fast HF tokenizer.
        image_processor: PIL image processor (pixels).
        chat_template (str): the checkpoint's chat template.
        processor: the full HF processor, or None where it cannot be built.
        processing_note (str): how the processing parts were obtained.
    """

    model_type: ClassVar[str]
    """``config.model_type`` the family handles."""
    model_class_name: ClassVar[str]
    """transformers class loaded by :meth:`load`."""
    end_of_turn: ClassVar[str]
    """The template token that closes a turn."""
    max_text_tokens: ClassVar[int] = 2048
    """Most tokens the question and answer together may take."""

    def __init__(self, name: str, model: torch.nn.Module, options: LoadOptions, parts: ProcessingParts) -> None:
        super().__init__(name, model, options)
        self.tokenizer = parts.tokenizer
        self.image_processor = parts.image_processor
        self.chat_template = parts.chat_template
        self.processor = parts.processor
        self.processing_note = parts.note
        config = model.config
        self.image_token_id = int(config.image_token_id)
        self.image_token = self.tokenizer.convert_ids_to_tokens(self.image_token_id)
        configured = model.generation_config.eos_token_id
        configured = configured if isinstance(configured, list) else [configured]
        stops = {self.tokenizer.convert_tokens_to_ids(self.end_of_turn), self.tokenizer.eos_token_id, *configured}
        self.stop_ids = tuple(sorted(i for i in stops if i is not None))
        self._added_ids = frozenset(int(i) for i in self.tokenizer.added_tokens_decoder)
        self._layouts: dict[tuple[str, str, str, str], _TextLayout] = {}

    # -- loading -------------------------------------------------------------------

    @classmethod
    def load(cls, source: str, options: LoadOptions, *, name: str | None = None) -> HFAdapter:
        """Load a checkpoint of this family.

        Args:
            source (str): Hugging Face id or local checkpoint folder.
            options (LoadOptions): dtype, device / device_map, attention, pixel bounds.
            name (str | None): the reference shown in messages and results (a registry
                key). Default: ``source``.

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
        return [
            ModelCard(key=key, source=source, family=cls.family, summary=summary,
                      load=partial(_load_card, cls, key, local_files_only))
            for key, (source, summary) in entries.items()
        ]

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

    # -- family hooks --------------------------------------------------------------

    @abstractmethod
    def expand_image(self, text: str) -> str:
        """``text`` with its single image placeholder replaced by the image tokens."""

    @abstractmethod
    def vision_inputs(self, pixels: torch.Tensor, input_ids: torch.Tensor) -> dict[str, torch.Tensor]:
        """Model keyword arguments besides the ids for (b, ...) pixels and (b, L) ids.

        Args:
            pixels (torch.Tensor): (b, ...) in the :meth:`pixel_values` layout.
            input_ids (torch.Tensor): (b, L) long token ids holding the image tokens.
        """

    @abstractmethod
    def _pack(self, rgb: torch.Tensor) -> torch.Tensor:
        """(B, 3, H, W) normalised model-frame images -> the family's pixel layout."""

    @abstractmethod
    def _unpack(self, values: torch.Tensor, reduce: Reduction) -> torch.Tensor:
        """Pixel-layout values (B, ...) -> (B, H, W) model-frame map, channels reduced."""

    @property
    def grid(self) -> tuple[int, int]:
        """(gh, gw) image-token grid of a working-frame image (``geometry.token_grid``)."""
        return self.geometry.token_grid

    # -- text ----------------------------------------------------------------------

    def _render(self, prompt: str, answer: str | None) -> str:
        return render_chat(self.tokenizer, self.chat_template, prompt, answer)

    def _conversation(self, prompt: str, answer: str | None, reserve: int = 0) -> PlainText:
        """The tokenised conversation (user text plain), within the token limits.

        Raises:
            TargetError: the prompt and answer exceed :attr:`max_text_tokens`, or the
                whole sequence plus ``reserve`` new tokens the model's context length.
        """
        text = encode_conversation(
            self.tokenizer, self.chat_template, self.expand_image, prompt, answer, self._added_ids, name=self.name
        )
        user, total = text.user_token_count(), len(text.ids) + reserve
        context = self.context_length
        if user > self.max_text_tokens or (context is not None and total > context):
            raise TargetError(
                f"the question and answer take {user} tokens (limit {self.max_text_tokens}) and the whole "
                f"sequence {total} tokens{f' including {reserve} new ones' if reserve else ''}; model "
                f"{self.name!r} has a context length of {context} tokens. Shorten the question or answer."
            )
        return text

    @property
    def context_length(self) -> int | None:
        """The language model's context length (``max_position_embeddings``), if known."""
        value = getattr(self.model.config.get_text_config(), "max_position_embeddings", None)
        return None if value is None else int(value)

    def _image_positions(self, ids: list[int]) -> torch.Tensor:
        positions = torch.tensor([i for i, t in enumerate(ids) if t == self.image_token_id], dtype=torch.long)
        gh, gw = self.grid
        if positions.numel() != gh * gw:
            raise ModelLoadError(
                f"model {self.name!r}: the prompt holds {positions.numel()} image tokens; expected "
                f"{gh * gw} ({gh}x{gw} grid). The chat template must place exactly one image."
            )
        return positions

    def _prompt_ids(self, prompt: str, max_new_tokens: int = 0) -> torch.Tensor:
        text = self._conversation(prompt, None, max_new_tokens)
        self._image_positions(text.ids)
        return torch.tensor(text.ids, dtype=torch.long)

    def _layout(self, query: Query) -> _TextLayout:
        key = (query.prompt, query.answer, query.mode, query.policy)
        if key not in self._layouts:
            if len(self._layouts) >= _LAYOUT_CACHE:
                self._layouts.pop(next(iter(self._layouts)))
            self._layouts[key] = self._build_layout(query)
        return self._layouts[key]

    def _build_layout(self, query: Query) -> _TextLayout:
        policy = validate_span_policy(query.policy)
        if not query.answer or not query.answer.strip():
            raise TargetError(f"the answer {query.answer!r} is empty; pass a non-empty answer to explain.")
        text = self._conversation(query.prompt, query.answer)
        assert text.answer_span is not None
        start, response = text.answer_span[0], text.response
        if policy == "answer":
            span = answer_char_span(response, query.mode)
            if span is None:
                raise TargetError(
                    f"no yes/no verdict word to target in the answer {response!r}; use span "
                    "policy 'response' or 'turn' for answers without a verdict word."
                )
            lo, hi = start + span[0], start + span[1]
        elif policy == "response":
            lo, hi = text.answer_span
        else:  # "turn": the response and the template's closing tokens
            lo, hi = start, len(text.text)
        ids = text.ids
        picked = [i for i, (s, e) in enumerate(text.offsets) if s < hi and e > lo and e > s]
        if not picked or picked[0] == 0:
            raise TargetError(f"the {policy!r} span of {response!r} holds no tokens; pass a longer answer.")
        target_ids = [ids[i] for i in picked]
        return _TextLayout(
            input_ids=torch.tensor(ids, dtype=torch.long),
            image_positions=self._image_positions(ids),
            target_positions=torch.tensor(picked, dtype=torch.long),
            target_ids=torch.tensor(target_ids, dtype=torch.long),
            target_tokens=tuple(self.tokenizer.decode([t], skip_special_tokens=False) for t in target_ids),
        )

    # -- the contract --------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        """Device of the input embeddings (where inputs go)."""
        return self.model.get_input_embeddings().weight.device

    def _model_inputs(self, input_ids: torch.Tensor, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
        ids = input_ids.to(self.device).unsqueeze(0).expand(pixels.shape[0], -1).contiguous()
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), **self.vision_inputs(pixels, ids)}

    def encode(self, images: Sequence[WorkingImage], query: Query) -> Encoding:
        """See :meth:`cxr_attrib.adapter.Adapter.encode`; ``inputs`` feed ``self.model(**inputs)``."""
        layout = self._layout(query)
        pixels = self.pixel_inputs(images)
        return Encoding(
            inputs=self._model_inputs(layout.input_ids, pixels),
            image_positions=layout.image_positions,
            grid=self.grid,
            target_positions=layout.target_positions,
            target_ids=layout.target_ids,
            target_tokens=layout.target_tokens,
            batch_size=len(images),
        )

    def _target_logprobs(
        self, input_ids: torch.Tensor, pixels: torch.Tensor, positions: torch.Tensor, targets: torch.Tensor
    ) -> torch.Tensor:
        inputs = self._model_inputs(input_ids, pixels)
        hidden = self.model.model(**inputs, use_cache=False).last_hidden_state
        rows = hidden[:, positions.to(hidden.device) - 1]
        batch, count = rows.shape[:2]
        head = self.model.get_output_embeddings()
        logprobs = token_logprobs(rows.reshape(batch * count, -1), head, targets.repeat(batch))
        self.counter.forward_calls += 1
        self.counter.forward_sequences += batch
        return logprobs.view(batch, count)

    def score(
        self, images: Sequence[WorkingImage], query: Query, *, batch_size: int | None = None
    ) -> torch.Tensor:
        """See :meth:`cxr_attrib.adapter.Adapter.score`. Returns (B, T) float32 on the CPU."""
        if not len(images):
            raise ValueError("score() needs at least one image; got an empty sequence.")
        layout = self._layout(query)
        step = batch_size or len(images)
        parts = []
        with torch.no_grad():
            for start in range(0, len(images), step):
                pixels = self.pixel_inputs(images[start : start + step])
                scores = self._target_logprobs(layout.input_ids, pixels, layout.target_positions, layout.target_ids)
                parts.append(scores.cpu())
        return torch.cat(parts)

    def _greedy_config(self, max_new_tokens: int) -> Any:
        config = self.model.generation_config.to_dict()
        for key in ("temperature", "top_k", "top_p", "min_p", "typical_p"):
            config.pop(key, None)
        pad = self.tokenizer.pad_token_id
        config.update(
            do_sample=False, num_beams=1, repetition_penalty=1.0, max_new_tokens=max_new_tokens,
            eos_token_id=list(self.stop_ids), pad_token_id=self.stop_ids[0] if pad is None else pad,
            output_logits=True, return_dict_in_generate=True,
        )
        from transformers import GenerationConfig

        return GenerationConfig(**config)

    def generate(self, image: WorkingImage, prompt: str, *, max_new_tokens: int = 256) -> Generation:
        """Greedy answer (argmax of the raw logits: no sampling, no repetition penalty).

        Other settings of the checkpoint's generation config (e.g. ``suppress_tokens``)
        are kept. Log-probs are float32 log-softmax of the raw logits at each step.
        ``truncated`` is True when ``max_new_tokens`` tokens came without a stop token.
        """
        input_ids = self._prompt_ids(prompt, max_new_tokens)
        pixels = self.pixel_inputs([image])
        inputs = self._model_inputs(input_ids, pixels)
        with torch.no_grad():
            out = self.model.generate(**inputs, generation_config=self._greedy_config(max_new_tokens))
        self.counter.generate_calls += 1
        new = out.sequences[0, input_ids.numel() :].tolist()
        stop = next((i for i, t in enumerate(new) if t in self.stop_ids), len(new))
        ids = new[:stop]
        logprobs = tuple(
            float(torch.log_softmax(out.logits[i][0].float(), dim=-1)[t]) for i, t in enumerate(ids)
        )
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        truncated = stop == len(new) and len(new) >= max_new_tokens
        return Generation(text=text, token_ids=tuple(ids), logprobs=logprobs, truncated=truncated)

    def decoder_layers(self) -> Sequence[torch.nn.Module]:
        """The language model's decoder layers, first to last."""
        return list(self.model.model.language_model.layers)

    # -- the gradient surface ------------------------------------------------------

    @property
    def supports_gradients(self) -> bool:
        """True when every weight is a float tensor (quantised weights carry no gradient)."""
        return all(p.dtype.is_floating_point for p in self.model.parameters())

    def pixel_values(self, images: torch.Tensor) -> torch.Tensor:
        """See :meth:`cxr_attrib.adapter.GradientSurface.pixel_values`.

        Resizing (only when the model frame differs from the working frame) uses
        torch's antialiased filter of the processor's kind. The processor rounds to 8
        bits before PIL resizes and clips the result to [0, 255], so the two then agree
        to about one grey level on smooth images (measured: bilinear, Gemma 112 -> 224,
        at most one level; bicubic, Qwen 100 -> 112, 1.4 levels on a ramp, more on
        pixel noise where PIL clips the filter's overshoot).
        """
        if images.ndim != 3 or images.shape[1:] != (self.working_size, self.working_size):
            raise ValueError(
                f"expected (B, {self.working_size}, {self.working_size}) working-frame images, got "
                f"{tuple(images.shape)}; use cxr_attrib.frames.ResizePad to make them."
            )
        processor = self.image_processor
        grey = images.to(self.device, torch.float32)[:, None]
        height, width = self.geometry.model_size
        if (height, width) != (self.working_size, self.working_size):
            mode = _RESAMPLE_MODES.get(int(getattr(processor, "resample", 3)), "bicubic")
            grey = torch.nn.functional.interpolate(
                grey, size=(height, width), mode=mode, antialias=True, align_corners=False
            )
        mean = torch.tensor(processor.image_mean, dtype=torch.float32, device=grey.device)[None, :, None, None]
        std = torch.tensor(processor.image_std, dtype=torch.float32, device=grey.device)[None, :, None, None]
        return self._pack((grey.expand(-1, 3, -1, -1) - mean) / std)

    def forward(
        self,
        images: torch.Tensor,
        query: Query,
        *,
        hidden: Sequence[int] = (),
        vision: Sequence[int] = (),
        grad: bool = False,
    ) -> ForwardResult:
        """See :meth:`cxr_attrib.adapter.GradientSurface.forward`."""
        layout = self._layout(query)
        decoder, blocks = self.decoder_layers(), self.vision_layers()
        check_indices("hidden", hidden, len(decoder), "decoder layers")
        check_indices("vision", vision, len(blocks), "vision blocks")
        batch = int(images.shape[0])
        kept: dict[str, dict[int, torch.Tensor]] = {"hidden": {}, "vision": {}}
        handles = [decoder[i].register_forward_hook(capture_output(kept["hidden"], i, batch, grad)) for i in hidden]
        handles += [blocks[i].register_forward_hook(capture_output(kept["vision"], i, batch, grad)) for i in vision]
        try:
            with torch.enable_grad() if grad else contextlib.nullcontext():
                pixels = self.pixel_values(images)
                logprobs = self._target_logprobs(
                    layout.input_ids, pixels, layout.target_positions, layout.target_ids
                )
        finally:
            for handle in handles:
                handle.remove()
        if logprobs.requires_grad:
            logprobs.register_hook(self._count_backward)
        return ForwardResult(
            logprobs=logprobs,
            hidden=kept["hidden"],
            vision=kept["vision"],
            image_positions=layout.image_positions,
            predictor_positions=layout.target_positions - 1,
        )

    def _count_backward(self, grad: torch.Tensor) -> None:
        self.counter.backward_calls += 1
        self.counter.backward_sequences += int(grad.shape[0])

    def to_working(self, values: torch.Tensor, space: Space, reduce: Reduction) -> torch.Tensor:
        """See :meth:`cxr_attrib.adapter.GradientSurface.to_working`."""
        if reduce not in ("sum", "mean"):
            raise ValueError(f"reduce must be 'sum' or 'mean', got {reduce!r}")
        geometry = self.geometry
        batch = values.shape[0]
        if space == "pixel":
            cells = self._unpack(values, reduce)
        elif space == "patch":
            (ph, pw) = geometry.patch_grid
            if values.shape[1:] != (ph * pw,):
                raise ValueError(f"patch-space values must be (B, {ph * pw}), got {tuple(values.shape)}")
            inverse = torch.argsort(geometry.patch_order.to(values.device))
            cells = values[:, inverse].reshape(batch, ph, pw)
        elif space == "token":
            gh, gw = geometry.token_grid
            if values.shape[1:] != (gh * gw,):
                raise ValueError(f"token-space values must be (B, {gh * gw}), got {tuple(values.shape)}")
            cells = values.reshape(batch, gh, gw)
        else:
            raise ValueError(f"space must be 'pixel', 'patch' or 'token', got {space!r}")
        return cells_to_working(cells, self.working_size, reduce)

    # -- attention and relevance ---------------------------------------------------------

    @property
    def num_decoder_layers(self) -> int:
        """Number of decoder layers of the language model."""
        return len(self.model.model.language_model.layers)

    @property
    def num_attention_heads(self) -> int:
        """Attention heads per decoder layer."""
        return int(self.model.config.get_text_config().num_attention_heads)

    def attention(
        self,
        image: WorkingImage,
        query: Query,
        *,
        layers: Sequence[int],
        rows: str = "predictor",
        head: int | None = None,
        gradient: bool = False,
    ) -> AttentionMaps:
        """See :meth:`cxr_attrib.adapter.AttentionSurface.attention`."""
        if rows not in ("predictor", "all"):
            raise ValueError(f"rows must be 'predictor' or 'all'; got {rows!r}")
        layout = self._layout(query)
        predictors = layout.target_positions - 1
        kept = predictors if rows == "predictor" else torch.arange(layout.input_ids.numel())
        recorder = AttentionRecorder(layers=frozenset(layers), rows=kept if rows == "predictor" else None,
                                     head=head, gradient=gradient)
        pixels = self.pixel_inputs([image])
        with capturing(self.model, recorder), torch.set_grad_enabled(gradient):
            logprobs = self._target_logprobs(layout.input_ids, pixels, layout.target_positions, layout.target_ids)
            if gradient:
                logprobs.sum().backward()
                self.counter.backward_calls += 1
                self.counter.backward_sequences += 1
        return AttentionMaps(
            maps={layer: recorder.maps[layer][0].cpu() for layer in sorted(recorder.maps)},
            rows=kept, image_positions=layout.image_positions, grid=self.grid, predictor_positions=predictors,
            logprobs=logprobs.detach()[0].cpu(),
        )

    def relevance(self, image: WorkingImage, query: Query) -> Relevance:
        """See :meth:`cxr_attrib.adapter.AttentionSurface.relevance` (rules: :mod:`._lrp`)."""
        layout = self._layout(query)
        inputs = self._model_inputs(layout.input_ids, self.pixel_inputs([image]))
        decoder = self.model.model.language_model
        constant = AttentionRecorder(layers=frozenset(), constant=True)
        with torch.enable_grad(), capturing(self.model, constant), conservative_rules(decoder, decoder.layers) as tap:
            hidden = self.model.model(**inputs, use_cache=False).last_hidden_state
            rows = hidden[0, layout.target_positions.to(hidden.device) - 1].float()
            head = self.model.get_output_embeddings().weight
            logits = (rows * head[layout.target_ids.to(head.device)].float()).sum()
            logits.backward()
        self.counter.forward_calls += 1
        self.counter.forward_sequences += 1
        self.counter.backward_calls += 1
        self.counter.backward_sequences += 1
        embeddings = tap.embeddings
        positions = (embeddings.detach().float() * embeddings.grad.float()).sum(-1)[0]
        return Relevance(positions=positions.cpu(), explained=float(logits.detach()),
                         image_positions=layout.image_positions, grid=self.grid)

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


_RESAMPLE_MODES = {2: "bilinear", 3: "bicubic"}
"""PIL resample codes of the image processors -> torch interpolation modes."""


def _load_card(
    adapter_cls: type[HFAdapter], key: str, local_files_only: bool, source: str, options: LoadOptions
) -> HFAdapter:
    if local_files_only:
        options = dataclasses.replace(options, local_files_only=True)
    return adapter_cls.load(source, options, name=key)


_RESAMPLE_MODES = {2: "bilinear", 3: "bicubic"}
"""PIL resample codes of the image processors -> torch interpolation modes."""


def square_side(count: int, what: str) -> int:
    """Side of a square grid of ``count`` cells (raises when not a square)."""
    side = math.isqrt(count)
    if side * side != count:
        raise ModelLoadError(f"{what} is {count}, not a square number; expected a square image-token grid.")
    return side
