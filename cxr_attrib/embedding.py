"""The embedding-map surface of contrastive models (family-free).

A dual encoder (CLIP, SigLIP, BiomedCLIP, ...) embeds every image patch and the text
of a prompt into one joint space; a similarity map is the cosine of each patch with
the prompt. :class:`EmbeddingSurface` is what an adapter implements so that map
methods (``similarity_map``) never need to know the family: one vision forward
gives the patch embeddings, the text embedding is computed once per prompt.
A cross-attention (query-decoder) family can serve the same :class:`EmbeddingMaps`
(its query embedding and the image tokens it attends to) without a redesign.
"""

from __future__ import annotations

from abc import ABC, abstractmethod
from collections.abc import Sequence
from dataclasses import dataclass

import torch

from .adapter import Query
from .typing import WorkingImage

__all__ = ["EmbeddingMaps", "EmbeddingSurface"]


@dataclass(frozen=True)
class EmbeddingMaps:
    """Patch embeddings of B images and the embedding of one prompt, in the joint space.

    Attributes:
        patches (torch.Tensor): (B, ph * pw, D) float32 patch embeddings, row-major
            over the patch grid (not normalised).
        text (torch.Tensor): (D,) float32 embedding of the explained prompt (the
            positive prompt of the query's finding; not normalised).
        grid (tuple[int, int]): (ph, pw) patch grid; it tiles the whole working frame.
        prompt (str): the text that was embedded.
        recipe (str): how the patch embeddings were made, e.g. "post-layernorm +
            visual projection of the patch tokens" (recorded in results).
    """

    patches: torch.Tensor
    text: torch.Tensor
    grid: tuple[int, int]
    prompt: str
    recipe: str

    def cosine(self) -> torch.Tensor:
        """(B, ph, pw) float32 cosine similarity of each patch with the prompt, in [-1, 1]."""
        patches = torch.nn.functional.normalize(self.patches.float(), dim=-1)
        text = torch.nn.functional.normalize(self.text.float(), dim=-1)
        return (patches @ text).reshape(-1, *self.grid)


class EmbeddingSurface(ABC):
    """A model whose patches and prompts share one embedding space."""

    @abstractmethod
    def embedding_maps(self, images: Sequence[WorkingImage], query: Query) -> EmbeddingMaps:
        """Joint-space patch embeddings of ``images`` and the query's positive prompt.

        Args:
            images: B working-frame images (S, S) float32 in [0, 1].
            query (Query): names the finding (its question).

        Returns:
            EmbeddingMaps: one vision forward counted (the text embedding is cached per
            prompt and its encoding counted in the adapter's ``text_encodings``).
        """
