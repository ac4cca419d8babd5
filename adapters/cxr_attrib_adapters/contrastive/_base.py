"""The dual-encoder implementation of the adapter surfaces, shared by CLIP, SigLIP and OpenCLIP.

A dual encoder answers "is there evidence of F?" by comparing the image with two
prompts from its template (:class:`~cxr_attrib.contrastive.PromptPair`, CheXzero style
``"{finding}"`` / ``"no {finding}"`` by default):

* **The explained scalar** is the log-probability of the answer's prompt: for
  ``"Yes"`` log p(positive), for ``"No"`` log p(negative). A family says how the two
  cosines become probabilities (:meth:`DualEncoderAdapter._log_probs`): CLIP, a 2-way
  softmax over the logit-scaled cosines; SigLIP, the pair-wise sigmoid with the
  model's bias. It is one "target token" (T = 1), so every :class:`Scorer` and
  :class:`GradientSurface` method (occlusion, RISE, integrated gradients, Grad-CAM,
  MedFocus, the priors) runs unchanged.
* **The answer** (:meth:`DualEncoderAdapter.generate`) is "Yes" when p(positive) >=
  ``threshold`` (default 0.5), else "No"; no text is generated, so methods that
  need free text (``prompting``) refuse before any pass (no box convention).
* **The text** of each prompt is encoded once and cached per adapter
  (``text_encodings`` counts the text-tower calls): scoring 64 images against one
  prompt pair runs the text tower once.
* **The vision transformer plays the decoder's part** for layer and attention
  methods: :meth:`decoder_layers` are the vision blocks; their outputs are the
  sequence (a leading CLS token for CLIP, then the patches); the image positions are
  the patches and the predictor rows the CLS token (CLIP) or every patch (SigLIP,
  whose attention-pooling head reads them all). Attention rollout over the ViT thus
  reads the CLS row. Relevance propagation (LRP) is not implemented for dual
  encoders and is refused before any pass.
* **Embedding maps** (:class:`~cxr_attrib.embedding.EmbeddingSurface`): the patch
  tokens in the joint space (family recipe in :attr:`patch_recipe`) and the positive
  prompt's embedding, from one vision forward.
"""

from __future__ import annotations

import contextlib
from abc import abstractmethod
from collections.abc import Sequence
from typing import Any, ClassVar

import numpy as np
import torch

from cxr_attrib.adapter import (
    AttentionMaps,
    AttentionSurface,
    Encoding,
    ForwardResult,
    Generation,
    Geometry,
    GradientSurface,
    LoadOptions,
    Query,
    Reduction,
    Relevance,
    Scorer,
    Space,
)
from cxr_attrib.contrastive import DEFAULT_THRESHOLD, PromptPair, check_threshold, finding_from_query
from cxr_attrib.embedding import EmbeddingMaps, EmbeddingSurface
from cxr_attrib.errors import ModelCapabilityError
from cxr_attrib.frames import cells_to_working
from cxr_attrib.targets import TargetError, parse_yes_no
from cxr_attrib.typing import WorkingImage

from cxr_attrib.hf import check_indices, check_working_batch, count_backward

__all__ = ["DualEncoderAdapter"]

_TEXT_CACHE = 64
_RESAMPLE_MODES = {2: "bilinear", 3: "bicubic"}


class DualEncoderAdapter(Scorer, GradientSurface, AttentionSurface, EmbeddingSurface):
    """Shared dual-encoder adapter; a family subclass says how its towers are read.

    Attributes:
        model (torch.nn.Module): the loaded model (eval mode, parameters frozen).
        prompts (PromptPair): positive and negative templates.
        threshold (float): p(positive) at or above which the answer is "Yes".
        text_encodings (int): text-tower calls since loading (each encodes a list of prompts).
    """

    default_prompts: ClassVar[PromptPair] = PromptPair()
    """The family's default templates (documented per model in docs/user-guide.md)."""
    patch_recipe: ClassVar[str]
    """How patch tokens reach the joint space (recorded by ``similarity_map``)."""
    cls_token: ClassVar[bool]
    """The vision sequence starts with a CLS token (CLIP) or not (SigLIP)."""
    default_layer: ClassVar[int] = -2

    def __init__(
        self,
        name: str,
        model: torch.nn.Module,
        options: LoadOptions,
        *,
        tokenizer: Any,
        image_mean: Sequence[float],
        image_std: Sequence[float],
        resample: str = "bicubic",
        prompts: PromptPair | None = None,
        threshold: float = DEFAULT_THRESHOLD,
        note: str = "",
    ) -> None:
        super().__init__(name, options)
        self.model = model
        self.tokenizer = tokenizer
        self.image_mean = tuple(float(v) for v in image_mean)
        self.image_std = tuple(float(v) for v in image_std)
        self.resample = resample
        self.prompts = prompts if prompts is not None else self.default_prompts
        self.threshold = check_threshold(threshold)
        self.text_encodings = 0
        self.processing_note = note
        self._texts: dict[str, torch.Tensor] = {}
        side = self.image_size
        grid = side // self.patch_size
        self._geometry = Geometry(
            working_size=options.working_size, model_size=(side, side), patch_size=self.patch_size,
            patch_grid=(grid, grid), token_grid=(grid, grid), patches_per_token=(1, 1),
            patch_order=torch.arange(grid * grid),
        )

    # -- family hooks ----------------------------------------------------------------

    @property
    @abstractmethod
    def image_size(self) -> int:
        """Side of the vision tower's square input, pixels."""

    @property
    @abstractmethod
    def patch_size(self) -> int:
        """Side of a vision patch, pixels."""

    @abstractmethod
    def _text_features(self, prompts: list[str]) -> torch.Tensor:
        """(n, D) joint-space embeddings of ``prompts`` (one text-tower call, not normalised)."""

    @abstractmethod
    def _vision(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """``(image, patches)``: (B, D) image embeddings and (B, N, D) joint-space patch embeddings."""

    @abstractmethod
    def _log_probs(self, image: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
        """(B, 2) float32 ``[log p(positive), log p(negative)]`` from (B, D) images and (D,) prompts."""

    @abstractmethod
    def vision_layers(self) -> Sequence[torch.nn.Module]:
        """The vision transformer's blocks, first to last."""

    @property
    @abstractmethod
    def num_attention_heads(self) -> int:
        """Attention heads per vision block."""

    @abstractmethod
    def _vision_attentions(self, pixels: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        """One vision+head forward returning ``(image embeddings, per-block (B, h, L, L) attentions)``."""

    # -- text --------------------------------------------------------------------------

    def finding(self, query: Query) -> str:
        """The finding the query's question names (see :func:`~cxr_attrib.contrastive.finding_from_query`)."""
        return finding_from_query(query.question)

    def _prompt_embeddings(self, finding: str) -> tuple[torch.Tensor, torch.Tensor, tuple[str, str]]:
        pair = self.prompts.prompts(finding)
        missing = [p for p in pair if p not in self._texts]
        if missing:
            with torch.no_grad():
                features = self._text_features(missing).float()
            self.text_encodings += 1
            if len(self._texts) + len(missing) > _TEXT_CACHE:
                self._texts.clear()
            self._texts.update(zip(missing, features))
        return self._texts[pair[0]], self._texts[pair[1]], pair

    def _target(self, query: Query) -> int:
        """0 when the answer is "Yes" (explain the positive prompt), 1 when "No"."""
        verdict = parse_yes_no(query.answer, mode=query.mode)
        if verdict == "unparseable":
            raise TargetError(
                f"the answer {query.answer!r} holds no yes/no verdict; a dual encoder explains "
                "log p(positive) for 'Yes' and log p(negative) for 'No'."
            )
        return 0 if verdict == "yes" else 1

    # -- pixels ------------------------------------------------------------------------

    @property
    def geometry(self) -> Geometry:
        """Square model frame; one image token per patch (no merging)."""
        return self._geometry

    @property
    def device(self) -> torch.device:
        """Device of the model's parameters."""
        return next(self.model.parameters()).device

    def pixel_values(self, images: torch.Tensor) -> torch.Tensor:
        """(B, S, S) grey working images -> (B, 3, H, W) normalised model pixels (differentiable).

        The grey image is resized (only when the model frame differs from the working
        frame, with the processor's filter, antialiased), repeated to RGB and normalised
        with the processor's mean and std. A square image needs no centre crop.
        """
        check_working_batch(images, self.working_size)
        grey = images.to(self.device, torch.float32)[:, None]
        side = self.image_size
        if side != self.working_size:
            grey = torch.nn.functional.interpolate(grey, size=(side, side), mode=self.resample,
                                                   antialias=True, align_corners=False)
        mean = torch.tensor(self.image_mean, device=grey.device)[None, :, None, None]
        std = torch.tensor(self.image_std, device=grey.device)[None, :, None, None]
        return (grey.expand(-1, 3, -1, -1) - mean) / std

    def pixel_inputs(self, images: Sequence[WorkingImage]) -> torch.Tensor:
        """(B, 3, H, W) float32 model pixels of working-frame images (no gradient)."""
        if not len(images):
            raise ValueError("expected at least one image; got an empty sequence.")
        stacked = torch.from_numpy(np.stack([np.asarray(i, dtype=np.float32) for i in images]))
        with torch.no_grad():
            return self.pixel_values(stacked)

    def _model_dtype(self) -> torch.dtype:
        return next(self.model.parameters()).dtype

    # -- Scorer ------------------------------------------------------------------------

    def encode(self, images: Sequence[WorkingImage], query: Query) -> Encoding:
        """Inputs for B images and the query's prompt pair.

        ``inputs`` holds ``pixel_values`` (B, 3, H, W); the single "target token" is the
        explained prompt (id 0 = positive, 1 = negative), at position 1 so that its
        predictor row is position 0 (the CLS token of CLIP's vision sequence).
        """
        target = self._target(query)
        pair = self.prompts.prompts(self.finding(query))
        grid = self.geometry.patch_grid
        offset = 1 if self.cls_token else 0
        return Encoding(
            inputs={"pixel_values": self.pixel_inputs(images)},
            image_positions=torch.arange(offset, offset + grid[0] * grid[1]),
            grid=grid,
            target_positions=torch.tensor([1]),
            target_ids=torch.tensor([target]),
            target_tokens=(pair[target],),
            batch_size=len(images),
        )

    def _scores(self, pixels: torch.Tensor, query: Query, *, count: bool = True) -> torch.Tensor:
        positive, negative, _ = self._prompt_embeddings(self.finding(query))
        image, _ = self._vision(pixels.to(self._model_dtype()))
        if count:
            self.counter.forward_calls += 1
            self.counter.forward_sequences += int(pixels.shape[0])
        return self._log_probs(image.float(), positive.to(image.device), negative.to(image.device))

    def score(self, images: Sequence[WorkingImage], query: Query, *, batch_size: int | None = None) -> torch.Tensor:
        """(B, 1) float32 log-prob of the answer's prompt (log p(positive) for "Yes")."""
        if not len(images):
            raise ValueError("score() needs at least one image; got an empty sequence.")
        target = self._target(query)
        step = batch_size or len(images)
        parts = []
        with torch.no_grad():
            for start in range(0, len(images), step):
                scores = self._scores(self.pixel_inputs(images[start : start + step]), query)
                parts.append(scores[:, target : target + 1].cpu())
        return torch.cat(parts)

    def p_positive(self, images: Sequence[WorkingImage], query: Query, *, count: bool = True) -> torch.Tensor:
        """(B,) float32 p(positive prompt) of each image (one forward, counted unless ``count`` is False)."""
        with torch.no_grad():
            return self._scores(self.pixel_inputs(images), query, count=count)[:, 0].exp().cpu()

    def generate(self, image: WorkingImage, prompt: str, *, max_new_tokens: int = 256) -> Generation:
        """The answer from the threshold: "Yes" when p(positive) >= ``threshold``, else "No".

        No text is generated: the one forward is counted as a generation
        (``generate_calls``); ``prompt`` names the finding like a query (the question,
        with or without a mode suffix). ``logprobs`` holds the log-prob of the chosen prompt.
        """
        query = Query(question=prompt, mode="direct", prompt=prompt, answer="Yes")
        p = float(self.p_positive([image], query, count=False)[0])
        self.counter.generate_calls += 1
        yes = p >= self.threshold
        chosen = p if yes else 1.0 - p
        return Generation(text="Yes" if yes else "No", token_ids=(), logprobs=(float(np.log(max(chosen, 1e-45))),))

    def describe(self) -> dict[str, Any]:
        """Family, name, class, dtype, device, grid, templates and threshold."""
        return {
            **super().describe(),
            "model_class": type(self.model).__name__,
            "dtype": str(self._model_dtype()).removeprefix("torch."),
            "device": str(self.device),
            "grid": list(self.geometry.patch_grid),
            "working_size": self.working_size,
            "prompts": [self.prompts.positive, self.prompts.negative],
            "threshold": self.threshold,
            "processing": self.processing_note,
        }

    # -- GradientSurface ---------------------------------------------------------------

    def decoder_layers(self) -> Sequence[torch.nn.Module]:
        """The vision blocks: a dual encoder's ViT plays the decoder's part (see the module docstring)."""
        return self.vision_layers()

    def _predictor_positions(self) -> torch.Tensor:
        ph, pw = self.geometry.patch_grid
        return torch.tensor([0]) if self.cls_token else torch.arange(ph * pw)

    def forward(
        self,
        images: torch.Tensor,
        query: Query,
        *,
        hidden: Sequence[int] = (),
        vision: Sequence[int] = (),
        grad: bool = False,
    ) -> ForwardResult:
        """See :meth:`cxr_attrib.adapter.GradientSurface.forward`.

        ``hidden`` captures whole vision-block outputs (B, L, D) (CLS first for CLIP),
        ``vision`` the same blocks' patch tokens only (B, N, D).
        """
        target = self._target(query)
        blocks = self.vision_layers()
        check_indices("hidden", hidden, len(blocks), "vision blocks")
        check_indices("vision", vision, len(blocks), "vision blocks")
        kept: dict[str, dict[int, torch.Tensor]] = {"hidden": {}, "vision": {}}
        layers = sorted({*hidden, *vision})
        offset = 1 if self.cls_token else 0
        handles = [blocks[i].register_forward_hook(_capture_block(kept, i, offset, grad)) for i in layers]
        try:
            with torch.enable_grad() if grad else contextlib.nullcontext():
                logprobs = self._scores(self.pixel_values(images), query)[:, target : target + 1]
        finally:
            for handle in handles:
                handle.remove()
        count_backward(logprobs, self.counter)
        return ForwardResult(
            logprobs=logprobs,
            hidden={i: kept["hidden"][i] for i in hidden},
            vision={i: kept["vision"][i] for i in vision},
            image_positions=torch.arange(offset, offset + self.geometry.patch_grid[0] * self.geometry.patch_grid[1]),
            predictor_positions=self._predictor_positions(),
        )

    def to_working(self, values: torch.Tensor, space: Space, reduce: Reduction) -> torch.Tensor:
        """See :meth:`cxr_attrib.adapter.GradientSurface.to_working` (patch and token spaces coincide)."""
        if reduce not in ("sum", "mean"):
            raise ValueError(f"reduce must be 'sum' or 'mean', got {reduce!r}")
        batch = values.shape[0]
        if space == "pixel":
            side = self.image_size
            if values.ndim != 4 or tuple(values.shape[1:]) != (3, side, side):
                raise ValueError(f"pixel-space values must be (B, 3, {side}, {side}), got {tuple(values.shape)}")
            cells = values.sum(1) if reduce == "sum" else values.mean(1)
        elif space in ("patch", "token"):
            ph, pw = self.geometry.patch_grid
            if tuple(values.shape[1:]) != (ph * pw,):
                raise ValueError(f"{space}-space values must be (B, {ph * pw}), got {tuple(values.shape)}")
            cells = values.reshape(batch, ph, pw)
        else:
            raise ValueError(f"space must be 'pixel', 'patch' or 'token', got {space!r}")
        return cells_to_working(cells, self.working_size, reduce)

    # -- AttentionSurface (the ViT) ----------------------------------------------------

    @property
    def num_decoder_layers(self) -> int:
        """Number of vision blocks."""
        return len(self.vision_layers())

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
        """Vision-block attention of one image (eager for this forward), rows as asked.

        The predictor rows are the CLS token (CLIP) or every patch (SigLIP).
        """
        if rows not in ("predictor", "all"):
            raise ValueError(f"rows must be 'predictor' or 'all'; got {rows!r}")
        target = self._target(query)
        positive, negative, _ = self._prompt_embeddings(self.finding(query))
        pixels = self.pixel_inputs([image]).to(self._model_dtype())
        if gradient:  # the weights are frozen: the attention maps join the graph through the pixels
            pixels.requires_grad_(True)
        with torch.set_grad_enabled(gradient):
            image_emb, maps = self._vision_attentions(pixels)
            logprobs = self._log_probs(image_emb.float(), positive, negative)[:, target]
            self.counter.forward_calls += 1
            self.counter.forward_sequences += 1
            kept_maps = [maps[i] for i in layers]
            if gradient:
                for weights in kept_maps:
                    weights.retain_grad()
                logprobs.sum().backward()
                self.counter.backward_calls += 1
                self.counter.backward_sequences += 1
        predictors = self._predictor_positions()
        length = maps[0].shape[-1]
        kept_rows = predictors if rows == "predictor" else torch.arange(length)
        out = {}
        for layer, weights in zip(layers, kept_maps):
            values = torch.relu(weights.grad) * weights if gradient else weights
            values = values[0].detach().float()
            values = values.mean(0) if head is None else values[head]
            out[int(layer) % len(maps)] = values[kept_rows].cpu()
        offset = 1 if self.cls_token else 0
        return AttentionMaps(
            maps=out, rows=kept_rows,
            image_positions=torch.arange(offset, offset + self.geometry.patch_grid[0] * self.geometry.patch_grid[1]),
            grid=self.geometry.patch_grid, predictor_positions=predictors, logprobs=logprobs.detach().reshape(1).cpu(),
        )

    def relevance(self, image: WorkingImage, query: Query) -> Relevance:
        """Not available: refused before any pass."""
        raise ModelCapabilityError(
            f"model {self.name!r} ({self.family}, a dual encoder) has no relevance propagation (LRP) rules; "
            "use integrated_gradients, gradcam or attention_rollout on it instead."
        )

    # -- EmbeddingSurface --------------------------------------------------------------

    def embedding_maps(self, images: Sequence[WorkingImage], query: Query) -> EmbeddingMaps:
        """See :meth:`cxr_attrib.embedding.EmbeddingSurface.embedding_maps` (one vision forward)."""
        positive, _, pair = self._prompt_embeddings(self.finding(query))
        pixels = self.pixel_inputs(images).to(self._model_dtype())
        with torch.no_grad():
            _, patches = self._vision(pixels)
        self.counter.forward_calls += 1
        self.counter.forward_sequences += len(images)
        return EmbeddingMaps(patches=patches.float().cpu(), text=positive.cpu(), grid=self.geometry.patch_grid,
                             prompt=pair[0], recipe=self.patch_recipe)


def _capture_block(store: dict[str, dict[int, torch.Tensor]], key: int, offset: int, grad: bool) -> Any:
    """Forward hook keeping a vision block's output (B, L, D) and its patch tokens (B, N, D).

    The block's output is rebuilt from its leading tokens and the patch slice, so a
    backward pass fills ``.grad`` of both captures.
    """

    def hook(module: torch.nn.Module, args: Any, output: Any) -> Any:
        tensor = output[0] if isinstance(output, tuple) else output
        if grad and not tensor.requires_grad:
            tensor = tensor.detach().requires_grad_(True)
        patches = tensor[:, offset:]
        if grad:
            patches.retain_grad()
        whole = torch.cat([tensor[:, :offset], patches], 1) if offset else patches
        if grad and whole is not patches:
            whole.retain_grad()
        store["hidden"][key], store["vision"][key] = whole, patches
        return (whole, *output[1:]) if isinstance(output, tuple) else whole

    return hook
