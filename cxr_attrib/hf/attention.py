"""The :class:`~cxr_attrib.adapter.AttentionSurface` of a Hugging Face chat-template VLM.

Attention (:meth:`HFAttentionSurface.attention`): a capturing eager attention is
switched on for that one forward only (:mod:`cxr_attrib.hf.attention_capture`) and
reduced while computed. Relevance (:meth:`HFAttentionSurface.relevance`): the LRP
rules are hooks on the loaded modules (:mod:`cxr_attrib.hf.lrp`). Each call counts
its forward and backward pass.
"""

from __future__ import annotations

from collections.abc import Sequence

import torch

from ..adapter import AttentionMaps, AttentionSurface, PassCounter, Query, Relevance
from ..typing import WorkingImage
from .attention_capture import AttentionRecorder, capturing
from .lrp import conservative_rules

__all__ = ["HFAttentionSurface"]


class HFAttentionSurface(AttentionSurface):
    """Decoder attention and relevance of one image, for a ``*ForConditionalGeneration`` model.

    Used beside :class:`cxr_attrib.hf.scorer.HFScorer` (it reads ``layout``,
    ``model_inputs``, ``target_logprobs`` and ``pixel_inputs``). The language model
    is ``model.model.language_model`` with ``layers``; its attention modules carry
    ``layer_idx`` and its modelling file an ``eager_attention_forward``.
    """

    model: torch.nn.Module
    counter: PassCounter

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
        layout = self.layout(query)
        predictors = layout.target_positions - 1
        kept = predictors if rows == "predictor" else torch.arange(layout.input_ids.numel())
        recorder = AttentionRecorder(layers=frozenset(layers), rows=kept if rows == "predictor" else None,
                                     head=head, gradient=gradient)
        pixels = self.pixel_inputs([image])
        with capturing(self.model, recorder), torch.set_grad_enabled(gradient):
            logprobs = self.target_logprobs(layout, pixels)
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
        """See :meth:`cxr_attrib.adapter.AttentionSurface.relevance` (rules: :mod:`cxr_attrib.hf.lrp`)."""
        layout = self.layout(query)
        inputs = self.model_inputs(layout.input_ids, self.pixel_inputs([image]))
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
