"""The model-adapter contract every attribution method relies on.

An adapter wraps one loaded vision-language model and hides its family's details
(chat template, image-token layout, pixel packing) behind two surfaces, so a fake
model in a test implements only the one it needs:

:class:`Scorer` (black-box methods, the scorer, the phantom evaluation):

* :meth:`Scorer.encode` builds model inputs for a batch of working-frame images
  and ONE text (prompt + teacher-forced answer) and says where the image tokens
  and the target tokens are;
* :meth:`Scorer.score` returns per-token target log-probs in float32 for a batch
  of images (the scalar every gradient / perturbation method explains is their sum);
* :meth:`Scorer.generate` answers greedily.

:class:`GradientSurface` (gradient, activation and attention methods):

* :attr:`GradientSurface.geometry`: the model frame, the vision patch grid, the
  image-token grid and how patches become tokens (:class:`Geometry`);
* :meth:`GradientSurface.pixel_values`: a differentiable torch path from
  working-frame images to the model's pixel values (equal to the processor's);
* :meth:`GradientSurface.forward`: one forward from working-frame images to the
  float32 target log-probs, capturing hidden states of named decoder layers and
  vision-encoder blocks, with gradients when asked; the adapter counts every
  backward pass that reaches its log-probs;
* :meth:`GradientSurface.to_working`: maps from pixel, patch or token space back to
  the working frame that either **sum** (gradients, relevance: totals preserved)
  or **average** (activations: levels preserved).

:class:`AttentionSurface` (attention and relevance methods):

* :meth:`AttentionSurface.attention`: decoder attention of one image, eager only
  for that forward, reduced while computed (head mean or one head, chosen rows),
  optionally gradient-weighted;
* :meth:`AttentionSurface.relevance`: conservative relevance propagation (LRP) of
  the target logits to the input embeddings.

:class:`Adapter` is all three; the Hugging Face families implement it.

Adapters are registered by families in plugins (``register_adapters``) and resolved
from any model reference with the ``resolve_adapter`` hook; the core never imports
one by name.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar, Literal

import torch

from .errors import LoadOptionsError
from .grounding import GroundingSurface
from .targets import Mode, SpanPolicy
from .typing import WorkingImage

__all__ = [
    "Adapter",
    "AttentionMaps",
    "AttentionSurface",
    "Encoding",
    "ForwardResult",
    "Generation",
    "Geometry",
    "GradientSurface",
    "LoadOptions",
    "ModelCard",
    "PassCounter",
    "Query",
    "Reduction",
    "Relevance",
    "Scorer",
    "Space",
]

Reduction = Literal["sum", "mean"]
"""How model-space values combine into working-frame pixels: ``"sum"`` preserves the
total (gradients, attributions, relevance), ``"mean"`` preserves the level (activations)."""

Space = Literal["pixel", "patch", "token"]
"""Where a tensor lives: ``"pixel"`` = the model's ``pixel_values`` layout, ``"patch"`` =
one value per vision patch in the vision encoder's sequence order, ``"token"`` = one
value per image token, row-major over the token grid."""


@dataclass(frozen=True)
class Query:
    """What is being explained: one text shared by every image of a batch.

    Attributes:
        question (str): the base question, e.g. "Is there evidence of nodule in the image?".
        mode (str): ``"direct"`` or ``"reasoning"``; decides the prompt suffix and
            where the answer word is located in the response.
        prompt (str): the user turn actually sent: question + mode suffix.
        answer (str): the assistant response that is teacher-forced.
        policy (str): span policy, ``"answer"``, ``"response"`` or ``"turn"``.
    """

    question: str
    mode: Mode
    prompt: str
    answer: str
    policy: SpanPolicy = "answer"


@dataclass(frozen=True)
class Encoding:
    """Model inputs for B images and one text, plus where things are.

    Attributes:
        inputs (dict[str, torch.Tensor]): keyword arguments for the HF model's forward.
        image_positions (torch.Tensor): (N,) long, sequence positions of the image
            tokens in row-major order of ``grid`` (identical for every batch row).
        grid (tuple[int, int]): (gh, gw) image-token grid; gh * gw == N.
        target_positions (torch.Tensor): (T,) long, positions of the target tokens;
            the logits predicting them sit at ``target_positions - 1``.
        target_ids (torch.Tensor): (T,) long token ids of the target.
        target_tokens (tuple[str, ...]): the T target tokens as decoded strings.
        batch_size (int): B.
    """

    inputs: dict[str, torch.Tensor]
    image_positions: torch.Tensor
    grid: tuple[int, int]
    target_positions: torch.Tensor
    target_ids: torch.Tensor
    target_tokens: tuple[str, ...]
    batch_size: int

    @property
    def predictor_positions(self) -> torch.Tensor:
        """(T,) positions whose outputs predict the target tokens (target - 1)."""
        return self.target_positions - 1


@dataclass(frozen=True)
class Generation:
    """A greedy answer.

    Attributes:
        text (str): decoded response without template end-of-turn tokens.
        token_ids (tuple[int, ...]): generated ids (end-of-turn excluded).
        logprobs (tuple[float, ...]): float32 log-prob of each generated token under
            the model at generation time.
        truncated (bool): generation stopped at ``max_new_tokens`` without an
            end-of-turn token (the text may be cut mid-sentence). Default: False.
    """

    text: str
    token_ids: tuple[int, ...]
    logprobs: tuple[float, ...]
    truncated: bool = False


@dataclass
class PassCounter:
    """Counts the model passes a method makes (recorded in ``Attribution.meta``).

    ``forward_calls`` counts batched forward calls, ``forward_sequences`` the
    sequences they carried; likewise for backward passes.
    """

    forward_calls: int = 0
    forward_sequences: int = 0
    backward_calls: int = 0
    backward_sequences: int = 0
    generate_calls: int = 0

    def reset(self) -> None:
        """Set every count back to zero."""
        self.forward_calls = self.forward_sequences = 0
        self.backward_calls = self.backward_sequences = 0
        self.generate_calls = 0

    def as_dict(self) -> dict[str, int]:
        """The counts as a plain dict."""
        return {
            "forward_calls": self.forward_calls,
            "forward_sequences": self.forward_sequences,
            "backward_calls": self.backward_calls,
            "backward_sequences": self.backward_sequences,
            "generate_calls": self.generate_calls,
        }


@dataclass(frozen=True)
class LoadOptions:
    """How to load a model.

    Attributes:
        dtype (str): ``"auto"`` (bfloat16 on GPU, float32 on CPU), ``"float32"``,
            ``"bfloat16"`` or ``"float16"``. Default: ``"auto"``.
        device (str | None): e.g. ``"cpu"``, ``"cuda:0"``; None picks CUDA when
            available. Default: None.
        device_map (str | dict | None): passed to ``from_pretrained``; overrides
            ``device``. Default: None.
        attn_implementation (str | None): None keeps the model's default; methods that
            need attention weights ask for ``"eager"``. Default: None.
        min_pixels (int | None): Qwen only: lower bound on image pixels. Default: None
            (family default).
        max_pixels (int | None): Qwen only: upper bound on image pixels (bounded by
            default to avoid the processor's huge default). Default: None.
        working_size (int): side S of the square working frame. Default: 224.
        local_files_only (bool): never touch the network. Default: False.
    """

    dtype: str = "auto"
    device: str | None = None
    device_map: str | dict | None = None
    attn_implementation: str | None = None
    min_pixels: int | None = None
    max_pixels: int | None = None
    working_size: int = 224
    local_files_only: bool = False

    DTYPES: ClassVar[tuple[str, ...]] = ("auto", "float32", "bfloat16", "float16")
    MAX_WORKING_SIZE: ClassVar[int] = 4096

    def __post_init__(self) -> None:
        def fail(name: str, expected: str) -> LoadOptionsError:
            return LoadOptionsError(f"LoadOptions {name}={getattr(self, name)!r} is invalid; expected {expected}")

        if self.dtype not in self.DTYPES:
            raise fail("dtype", "one of " + ", ".join(map(repr, self.DTYPES)))
        if self.device is not None:
            try:
                torch.device(self.device)
            except (RuntimeError, TypeError) as exc:
                raise fail("device", "None or a torch device such as 'cpu', 'cuda' or 'cuda:0'") from exc
        if not (self.device_map is None or isinstance(self.device_map, (str, dict))):
            raise fail("device_map", "None, a string such as 'auto' or a dict")
        if not (self.attn_implementation is None or isinstance(self.attn_implementation, str)):
            raise fail("attn_implementation", "None or a string such as 'eager' or 'sdpa'")
        for name in ("min_pixels", "max_pixels"):
            value = getattr(self, name)
            if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
                raise fail(name, "None or a positive integer")
        if self.min_pixels is not None and self.max_pixels is not None and self.min_pixels > self.max_pixels:
            raise fail("min_pixels", f"at most max_pixels={self.max_pixels}")
        size = self.working_size
        if isinstance(size, bool) or not isinstance(size, int) or not 8 <= size <= self.MAX_WORKING_SIZE:
            raise fail("working_size", f"an integer in [8, {self.MAX_WORKING_SIZE}] (pixels)")
        if not isinstance(self.local_files_only, bool):
            raise fail("local_files_only", "True or False")

    def resolved(self) -> LoadOptions:
        """These options with every automatic choice made, so equal meanings compare equal.

        ``device=None`` becomes ``"cuda"`` when CUDA is available (else ``"cpu"``),
        device names are written the way torch prints them, and ``dtype="auto"`` becomes
        ``"bfloat16"`` on CUDA and ``"float32"`` elsewhere. With a ``device_map`` the
        device stays None and ``"auto"`` follows CUDA availability.

        Raises:
            LoadOptionsError: a CUDA device asked for where CUDA is not available.
        """
        cuda = torch.cuda.is_available()
        device = self.device
        if self.device_map is None:
            parsed = torch.device(device or ("cuda" if cuda else "cpu"))
            if parsed.type == "cuda" and not cuda:
                raise LoadOptionsError(
                    f"LoadOptions device={device!r} needs CUDA, which is not available here "
                    "(torch.cuda.is_available() is False); use device='cpu'."
                )
            device, cuda = str(parsed), parsed.type == "cuda"
        dtype = ("bfloat16" if cuda else "float32") if self.dtype == "auto" else self.dtype
        return dataclasses.replace(self, device=device, dtype=dtype)


@dataclass(frozen=True)
class ModelCard:
    """A registry entry: a short key for a known checkpoint.

    Attributes:
        key (str): registry key, e.g. ``"qwen2_5_vl_3b"``.
        source (str): Hugging Face id or local folder the weights come from.
        family (str): adapter family, e.g. ``"qwen2_5_vl"``.
        summary (str): one line for ``cxr-attrib models``.
        load (Callable[..., Scorer]): ``load(source, options, *, name)`` loads ``source``
            with the options; the core passes the registry key as ``name``, so messages
            and results name the key (``HFAdapter.load`` has this signature).
        licence (str): the weights' licence as published (e.g. ``"CC-BY-NC-4.0"``);
            empty when not recorded. Default: "".
    """

    key: str
    source: str
    family: str
    summary: str
    load: Callable[..., "Scorer"] = field(repr=False, compare=False)
    licence: str = ""


@dataclass(frozen=True)
class Geometry:
    """Where a working-frame image lands inside the model.

    The working image (S, S) is resized by the processor to the **model frame**
    (H, W), cut into P x P vision patches (a ``(ph, pw)`` patch grid), and groups of
    ``(kh, kw)`` patches become one image token of the ``(gh, gw)`` token grid
    (Qwen2.5-VL: a 2 x 2 merge window; Gemma 3: the projector's k x k average pool).

    Attributes:
        working_size (int): side S of the working frame, pixels.
        model_size (tuple[int, int]): (H, W) of the model frame, pixels.
        patch_size (int): side P of a vision patch in model-frame pixels.
        patch_grid (tuple[int, int]): (ph, pw) = (H / P, W / P).
        token_grid (tuple[int, int]): (gh, gw) image tokens, row-major in the prompt.
        patches_per_token (tuple[int, int]): (kh, kw) = (ph / gh, pw / gw).
        patch_order (torch.Tensor): (ph * pw,) long; entry i is the row-major patch
            index (``row * pw + col``) of position i of the vision encoder's sequence
            (Qwen2.5-VL: window-attention order of its 2 x 2 merge windows; Gemma 3:
            row-major, the identity).
    """

    working_size: int
    model_size: tuple[int, int]
    patch_size: int
    patch_grid: tuple[int, int]
    token_grid: tuple[int, int]
    patches_per_token: tuple[int, int]
    patch_order: torch.Tensor = field(repr=False, compare=False)


@dataclass(frozen=True)
class ForwardResult:
    """What one :meth:`GradientSurface.forward` returns.

    Attributes:
        logprobs (torch.Tensor): (B, T) float32 natural-log probabilities of the T
            target tokens (teacher forced), differentiable when the forward was.
        hidden (Mapping[int, torch.Tensor]): requested decoder layer (as requested,
            negative indices kept) -> (B, L, D) output hidden states of that layer.
        vision (Mapping[int, torch.Tensor]): requested vision-encoder block -> (B, Np, Dv)
            block outputs, patches in :attr:`Geometry.patch_order`.
        image_positions (torch.Tensor): (N,) long sequence positions of the image tokens,
            row-major over the token grid.
        predictor_positions (torch.Tensor): (T,) long positions whose outputs predict the
            target tokens (target positions - 1).

    With ``grad=True`` every captured tensor keeps its ``.grad`` after :meth:`backward`.
    """

    logprobs: torch.Tensor
    hidden: Mapping[int, torch.Tensor]
    vision: Mapping[int, torch.Tensor]
    image_positions: torch.Tensor
    predictor_positions: torch.Tensor

    @property
    def total(self) -> torch.Tensor:
        """(B,) float32 summed target log-prob of each image: the scalar methods explain."""
        return self.logprobs.sum(-1)

    def backward(self) -> None:
        """Back-propagate the sum of :attr:`total` over the batch (counted by the adapter)."""
        self.total.sum().backward()


@dataclass(frozen=True)
class AttentionMaps:
    """Decoder attention captured in one forward, reduced while it was computed.

    Attributes:
        maps (Mapping[int, torch.Tensor]): decoder layer (0-based) -> (R, L) float32
            attention weights of the R query rows over the L sequence positions, averaged
            over heads (or one head); with ``gradient=True`` instead
            ``mean_h ReLU(dF/dA_h) * A_h`` where F is the summed target log-prob.
        rows (torch.Tensor): (R,) long query positions of the rows of every map.
        image_positions (torch.Tensor): (N,) long positions of the image tokens,
            row-major over ``grid``.
        grid (tuple[int, int]): (gh, gw) image-token grid; gh * gw == N.
        predictor_positions (torch.Tensor): (T,) long positions whose outputs predict
            the target tokens (target positions - 1).
        logprobs (torch.Tensor): (T,) float32 target log-probs of this forward.
    """

    maps: Mapping[int, torch.Tensor]
    rows: torch.Tensor
    image_positions: torch.Tensor
    grid: tuple[int, int]
    predictor_positions: torch.Tensor
    logprobs: torch.Tensor

    def image_columns(self, matrix: torch.Tensor) -> torch.Tensor:
        """(R, L) rows over the sequence -> (R, gh, gw) over the image-token grid."""
        return matrix[:, self.image_positions].reshape(-1, *self.grid)


@dataclass(frozen=True)
class Relevance:
    """Relevance of every input embedding for the summed target logits (LRP).

    Attributes:
        positions (torch.Tensor): (L,) float32 relevance of each sequence position
            (input x modified gradient, summed over the embedding dimension).
        explained (float): the explained quantity, the sum of the target tokens'
            logits at their predictor rows.
        image_positions (torch.Tensor): (N,) long positions of the image tokens,
            row-major over ``grid``.
        grid (tuple[int, int]): (gh, gw) image-token grid.
    """

    positions: torch.Tensor
    explained: float
    image_positions: torch.Tensor
    grid: tuple[int, int]

    @property
    def image_grid(self) -> torch.Tensor:
        """(gh, gw) relevance of the image tokens."""
        return self.positions[self.image_positions].reshape(self.grid)

    @property
    def conservation_error(self) -> float:
        """|sum of relevance - explained| / |explained| (0 = perfectly conservative)."""
        total = float(self.positions.sum())
        return abs(total - self.explained) / max(abs(self.explained), 1e-12)


class AttentionSurface(ABC):
    """Decoder attention and relevance of one image, switched on for one forward.

    The model stays as loaded: eager attention is used only inside these calls.
    Each call counts its forward (and backward) pass in the adapter's counter.
    """

    @property
    @abstractmethod
    def num_decoder_layers(self) -> int:
        """Number of decoder layers L of the language model."""

    @property
    @abstractmethod
    def num_attention_heads(self) -> int:
        """Number of attention heads per decoder layer."""

    @abstractmethod
    def attention(
        self,
        image: WorkingImage,
        query: Query,
        *,
        layers: Sequence[int],
        rows: Literal["predictor", "all"] = "predictor",
        head: int | None = None,
        gradient: bool = False,
    ) -> AttentionMaps:
        """Attention weights of ``layers`` for one image, reduced on the fly.

        Args:
            image: (S, S) float32 working-frame image in [0, 1].
            query: the text and target.
            layers (Sequence[int]): 0-based decoder layers to keep.
            rows (str): ``"predictor"`` keeps the T predictor rows, ``"all"`` every row.
                Default: "predictor".
            head (int | None): keep one head; None averages over heads. Default: None.
            gradient (bool): run one backward pass of the summed target log-prob and
                keep ``mean_h ReLU(dF/dA_h) * A_h``. Default: False.

        Returns:
            AttentionMaps: one forward (and with ``gradient`` one backward) counted.
        """

    @abstractmethod
    def relevance(self, image: WorkingImage, query: Query) -> Relevance:
        """Conservative relevance propagation of the summed target logits (one forward + backward)."""


class Scorer(ABC):
    """A model that scores and answers: everything black-box methods need.

    Attributes:
        family (str): adapter family name (class attribute).
        name (str): the reference it was loaded from (registry key, id or folder).
        options (LoadOptions): the options it was loaded with.
        counter (PassCounter): pass counts since the last reset.
    """

    family: ClassVar[str]

    def __init__(self, name: str, options: LoadOptions | None = None) -> None:
        self.name = name
        self.options = options if options is not None else LoadOptions()
        self.counter = PassCounter()

    @property
    def working_size(self) -> int:
        """Side S of the square working frame the adapter expects."""
        return self.options.working_size

    @property
    def device(self) -> torch.device:
        """Where the model's inputs go; a black box that holds no tensors says the CPU."""
        return torch.device("cpu")

    @abstractmethod
    def encode(self, images: Sequence[WorkingImage], query: Query) -> Encoding:
        """Build inputs for ``len(images)`` working-frame images and ``query``'s text.

        Args:
            images: B arrays (S, S) float32 in [0, 1] (grey, working frame).
            query: prompt, answer and span policy.

        Returns:
            Encoding with the batch on dimension 0 of every tensor input.
        """

    @abstractmethod
    def score(
        self, images: Sequence[WorkingImage], query: Query, *, batch_size: int | None = None
    ) -> torch.Tensor:
        """Teacher-forced log-probs of the target tokens, in float32.

        Args:
            images: B working-frame images (S, S) float32 in [0, 1].
            query: the text and target.
            batch_size: images per forward call. Default: all at once.

        Returns:
            (B, T) float32 log-probs (natural log) of each target token. No gradient.
        """

    @abstractmethod
    def generate(self, image: WorkingImage, prompt: str, *, max_new_tokens: int = 256) -> Generation:
        """Answer ``prompt`` about ``image`` greedily.

        Args:
            image: (S, S) float32 working-frame image in [0, 1].
            prompt: the user turn (question + mode suffix).
            max_new_tokens: generation budget. Default: 256.
        """

    def describe(self) -> dict[str, Any]:
        """JSON-safe facts recorded in result meta."""
        return {"family": self.family, "name": self.name}


class GradientSurface(ABC):
    """The differentiable side of a model: pixels, captures, gradients, maps back.

    Subclasses also derive from :class:`Scorer` (they count passes in ``counter``).

    Attributes:
        default_layer (int): the decoder layer whose image-token hidden states layer
            methods (Grad-CAM) read by default, negative = from the end (class
            attribute, chosen per family). Never the last layer: its image-token outputs
            feed no later layer, so their gradient to the target is exactly zero.
    """

    counter: PassCounter
    default_layer: ClassVar[int] = -2

    @property
    @abstractmethod
    def geometry(self) -> Geometry:
        """The model frame, patch grid, token grid and patch order of a working image."""

    @property
    def supports_gradients(self) -> bool:
        """Whether gradients can flow through the model (False e.g. for quantised weights)."""
        return True

    @abstractmethod
    def pixel_inputs(self, images: Sequence[WorkingImage]) -> torch.Tensor:
        """The processor's pixel values (reference path, no gradient): (B, ...) float32."""

    @abstractmethod
    def pixel_values(self, images: torch.Tensor) -> torch.Tensor:
        """Differentiable model pixel values of working-frame images.

        Args:
            images (torch.Tensor): (B, S, S) float grey working-frame images in [0, 1].

        Returns:
            torch.Tensor: (B, ...) float32, the layout of :meth:`pixel_inputs` and equal
            to it within 1e-5 when the model frame is the working frame.
        """

    @abstractmethod
    def forward(
        self,
        images: torch.Tensor,
        query: Query,
        *,
        hidden: Sequence[int] = (),
        vision: Sequence[int] = (),
        grad: bool = False,
    ) -> ForwardResult:
        """One forward pass: target log-probs plus the captures a method asks for.

        Args:
            images (torch.Tensor): (B, S, S) working-frame images in [0, 1]; when they
                require grad, the log-probs are differentiable with respect to them.
            query (Query): the text and target.
            hidden (Sequence[int]): decoder layers whose output hidden states to keep
                (negative = from the end). Default: none.
            vision (Sequence[int]): vision-encoder blocks whose outputs to keep. Default: none.
            grad (bool): build the graph and keep ``.grad`` on every capture. Default: False.

        Returns:
            ForwardResult: one forward call of B sequences is counted; every backward pass
            through its log-probs is counted too (whoever runs it: Captum or
            :meth:`ForwardResult.backward`).

        Raises:
            IndexError: a layer index outside the model.
        """

    @abstractmethod
    def to_working(self, values: torch.Tensor, space: Space, reduce: Reduction) -> torch.Tensor:
        """Map model-space values back to the working frame.

        Args:
            values (torch.Tensor): ``"pixel"``: (B, ...) in the :meth:`pixel_values`
                layout (channels and copies reduced too); ``"patch"``: (B, ph * pw) in
                :attr:`Geometry.patch_order`; ``"token"``: (B, gh * gw) row-major.
            space (str): ``"pixel"``, ``"patch"`` or ``"token"``.
            reduce (str): ``"sum"`` (totals preserved: gradients, relevance) or
                ``"mean"`` (levels preserved: activations).

        Returns:
            torch.Tensor: (B, S, S) float32 in the working frame.
        """

    @abstractmethod
    def decoder_layers(self) -> Sequence[torch.nn.Module]:
        """The language model's decoder layers, first to last."""

    @abstractmethod
    def vision_layers(self) -> Sequence[torch.nn.Module]:
        """The vision encoder's blocks, first to last."""


class Adapter(Scorer, GradientSurface, AttentionSurface, GroundingSurface):
    """One loaded vision-language model behind the four surfaces.

    Attributes:
        model (torch.nn.Module): the underlying model (eval mode, parameters frozen).
    """

    def __init__(self, name: str, model: torch.nn.Module, options: LoadOptions) -> None:
        super().__init__(name, options)
        self.model = model

    @property
    def device(self) -> torch.device:
        """Device of the model's parameters (where inputs go)."""
        return next(self.model.parameters()).device
