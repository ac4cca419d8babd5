"""The :class:`~cxr_attrib.adapter.Scorer` surface of a Hugging Face chat-template VLM.

:class:`HFScorer` encodes, scores and generates; a family says only how its image
placeholder expands (:meth:`HFScorer.expand_image`), which keyword arguments carry
its pixels (:meth:`HFScorer.vision_inputs`) and what the processor makes of a
working image (:meth:`HFScorer.pixel_inputs`).

* **Text layout.** One conversation, ``user: [image, prompt]`` then
  ``assistant: answer``, is rendered with the checkpoint's own chat template and
  tokenised with the prompt and answer as plain text
  (:func:`cxr_attrib.hf.chat.encode_conversation`); the target tokens are those of
  the span the policy names (:func:`cxr_attrib.hf.spans.target_token_indices`).
* **Scoring in float32 without a full-vocabulary log-softmax.** The inner model
  returns the final hidden states; only the predictor rows (``target_positions - 1``)
  go through the LM head, chunked (:func:`cxr_attrib.hf.logprobs.token_logprobs`).
  No final-logit soft-capping is applied, as the ``*ForConditionalGeneration``
  classes apply none, so scores equal the log-softmax of the model's own logits.
* **Pass counting.** Every model call adds one ``forward_calls`` and its batch to
  ``forward_sequences``; :meth:`HFScorer.generate` adds one ``generate_calls``.
"""

from __future__ import annotations

from abc import abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import torch

from ..adapter import Encoding, Generation, Query, Scorer
from ..targets import TargetError, validate_span_policy
from ..typing import WorkingImage
from .chat import PlainText, encode_conversation
from .logprobs import token_logprobs
from .spans import image_token_positions, target_token_indices

__all__ = ["HFScorer", "TextLayout"]

_LAYOUT_CACHE = 32


@dataclass(frozen=True)
class TextLayout:
    """The token ids of one conversation and where its image and target tokens are.

    Attributes:
        input_ids (torch.Tensor): (L,) long token ids.
        image_positions (torch.Tensor): (N,) long positions of the image tokens.
        target_positions (torch.Tensor): (T,) long positions of the target tokens.
        target_ids (torch.Tensor): (T,) long target token ids.
        target_tokens (tuple[str, ...]): the T target tokens decoded one by one.
    """

    input_ids: torch.Tensor
    image_positions: torch.Tensor
    target_positions: torch.Tensor
    target_ids: torch.Tensor
    target_tokens: tuple[str, ...]


class HFScorer(Scorer):
    """Encode, score and generate for a chat-template ``*ForConditionalGeneration`` model.

    Expects, set by the subclass's ``__init__``: ``model``, ``tokenizer``,
    ``chat_template``, ``image_token_id``, ``stop_ids`` and ``added_ids`` (see
    :class:`cxr_attrib.hf.HFAdapter`).
    """

    max_text_tokens: ClassVar[int] = 2048
    """Most tokens the question and answer together may take."""

    model: torch.nn.Module
    tokenizer: Any
    chat_template: str
    image_token_id: int
    stop_ids: tuple[int, ...]
    added_ids: frozenset[int]

    # -- what a family says ----------------------------------------------------------

    @abstractmethod
    def expand_image(self, text: str) -> str:
        """``text`` (template text only) with its single image placeholder replaced by the image tokens."""

    @abstractmethod
    def vision_inputs(self, pixels: torch.Tensor, input_ids: torch.Tensor) -> dict[str, torch.Tensor]:
        """Model keyword arguments besides the ids for (b, ...) pixels and (b, L) ids."""

    @abstractmethod
    def pixel_inputs(self, images: Sequence[WorkingImage]) -> torch.Tensor:
        """The processor's pixel values of B working-frame images: (B, ...) float32."""

    @property
    @abstractmethod
    def grid(self) -> tuple[int, int]:
        """(gh, gw) image-token grid of a working-frame image."""

    # -- text --------------------------------------------------------------------------

    @property
    def device(self) -> torch.device:
        """Device of the input embeddings (where inputs go)."""
        return self.model.get_input_embeddings().weight.device

    @property
    def context_length(self) -> int | None:
        """The language model's context length (``max_position_embeddings``), if known."""
        value = getattr(self.model.config.get_text_config(), "max_position_embeddings", None)
        return None if value is None else int(value)

    def conversation(self, prompt: str, answer: str | None, reserve: int = 0) -> PlainText:
        """The tokenised conversation (user text plain), within the token limits.

        Raises:
            TargetError: the prompt and answer exceed :attr:`max_text_tokens`, or the
                whole sequence plus ``reserve`` new tokens the model's context length.
        """
        text = encode_conversation(
            self.tokenizer, self.chat_template, self.expand_image, prompt, answer, self.added_ids, name=self.name
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

    def prompt_ids(self, prompt: str, max_new_tokens: int = 0) -> torch.Tensor:
        """(L,) long ids of the generation prompt (room left for ``max_new_tokens``)."""
        text = self.conversation(prompt, None, max_new_tokens)
        image_token_positions(text.ids, self.image_token_id, self.grid, self.name)
        return torch.tensor(text.ids, dtype=torch.long)

    def layout(self, query: Query) -> TextLayout:
        """The ids, image positions and target of ``query`` (cached for recent queries)."""
        layouts: dict[tuple[str, str, str, str], TextLayout] = self.__dict__.setdefault("_layouts", {})
        key = (query.prompt, query.answer, query.mode, query.policy)
        if key not in layouts:
            if len(layouts) >= _LAYOUT_CACHE:
                layouts.pop(next(iter(layouts)))
            layouts[key] = self._build_layout(query)
        return layouts[key]

    def _build_layout(self, query: Query) -> TextLayout:
        validate_span_policy(query.policy)
        if not query.answer or not query.answer.strip():
            raise TargetError(f"the answer {query.answer!r} is empty; pass a non-empty answer to explain.")
        text = self.conversation(query.prompt, query.answer)
        picked = target_token_indices(text, query)
        target_ids = [text.ids[i] for i in picked]
        return TextLayout(
            input_ids=torch.tensor(text.ids, dtype=torch.long),
            image_positions=image_token_positions(text.ids, self.image_token_id, self.grid, self.name),
            target_positions=torch.tensor(picked, dtype=torch.long),
            target_ids=torch.tensor(target_ids, dtype=torch.long),
            target_tokens=tuple(self.tokenizer.decode([t], skip_special_tokens=False) for t in target_ids),
        )

    # -- the contract --------------------------------------------------------------------

    def model_inputs(self, input_ids: torch.Tensor, pixels: torch.Tensor) -> dict[str, torch.Tensor]:
        """Forward keyword arguments: the (L,) ids repeated for the (b, ...) pixels, mask, vision inputs."""
        ids = input_ids.to(self.device).unsqueeze(0).expand(pixels.shape[0], -1).contiguous()
        return {"input_ids": ids, "attention_mask": torch.ones_like(ids), **self.vision_inputs(pixels, ids)}

    def encode(self, images: Sequence[WorkingImage], query: Query) -> Encoding:
        """See :meth:`cxr_attrib.adapter.Scorer.encode`; ``inputs`` feed ``self.model(**inputs)``."""
        layout = self.layout(query)
        pixels = self.pixel_inputs(images)
        return Encoding(
            inputs=self.model_inputs(layout.input_ids, pixels),
            image_positions=layout.image_positions,
            grid=self.grid,
            target_positions=layout.target_positions,
            target_ids=layout.target_ids,
            target_tokens=layout.target_tokens,
            batch_size=len(images),
        )

    def target_logprobs(self, layout: TextLayout, pixels: torch.Tensor) -> torch.Tensor:
        """(b, T) float32 target log-probs of one model call on (b, ...) pixels (counted)."""
        inputs = self.model_inputs(layout.input_ids, pixels)
        hidden = self.model.model(**inputs, use_cache=False).last_hidden_state
        rows = hidden[:, layout.target_positions.to(hidden.device) - 1]
        batch, count = rows.shape[:2]
        head = self.model.get_output_embeddings()
        logprobs = token_logprobs(rows.reshape(batch * count, -1), head, layout.target_ids.repeat(batch))
        self.counter.forward_calls += 1
        self.counter.forward_sequences += batch
        return logprobs.view(batch, count)

    def score(
        self, images: Sequence[WorkingImage], query: Query, *, batch_size: int | None = None
    ) -> torch.Tensor:
        """See :meth:`cxr_attrib.adapter.Scorer.score`. Returns (B, T) float32 on the CPU."""
        if not len(images):
            raise ValueError("score() needs at least one image; got an empty sequence.")
        layout = self.layout(query)
        step = batch_size or len(images)
        parts = []
        with torch.no_grad():
            for start in range(0, len(images), step):
                parts.append(self.target_logprobs(layout, self.pixel_inputs(images[start : start + step])).cpu())
        return torch.cat(parts)

    def _greedy_config(self, max_new_tokens: int) -> Any:
        from transformers import GenerationConfig

        config = self.model.generation_config.to_dict()
        for key in ("temperature", "top_k", "top_p", "min_p", "typical_p"):
            config.pop(key, None)
        pad = self.tokenizer.pad_token_id
        config.update(
            do_sample=False, num_beams=1, repetition_penalty=1.0, max_new_tokens=max_new_tokens,
            eos_token_id=list(self.stop_ids), pad_token_id=self.stop_ids[0] if pad is None else pad,
            output_logits=True, return_dict_in_generate=True,
        )
        return GenerationConfig(**config)

    def generate(self, image: WorkingImage, prompt: str, *, max_new_tokens: int = 256) -> Generation:
        """Greedy answer (argmax of the raw logits: no sampling, no repetition penalty).

        Other settings of the checkpoint's generation config (e.g. ``suppress_tokens``)
        are kept. Log-probs are float32 log-softmax of the raw logits at each step.
        ``truncated`` is True when ``max_new_tokens`` tokens came without a stop token.
        """
        input_ids = self.prompt_ids(prompt, max_new_tokens)
        inputs = self.model_inputs(input_ids, self.pixel_inputs([image]))
        with torch.no_grad():
            out = self.model.generate(**inputs, generation_config=self._greedy_config(max_new_tokens))
        self.counter.generate_calls += 1
        new = out.sequences[0, input_ids.numel() :].tolist()
        stop = next((i for i, t in enumerate(new) if t in self.stop_ids), len(new))
        ids = new[:stop]
        logprobs = tuple(float(torch.log_softmax(out.logits[i][0].float(), dim=-1)[t]) for i, t in enumerate(ids))
        text = self.tokenizer.decode(ids, skip_special_tokens=True)
        truncated = stop == len(new) and len(new) >= max_new_tokens
        return Generation(text=text, token_ids=tuple(ids), logprobs=logprobs, truncated=truncated)
