"""The model-adapter contract every attribution method relies on.

An adapter wraps one loaded vision-language model and hides its family's details
(chat template, image-token layout, pixel packing) behind one surface:

* :meth:`Adapter.encode` builds model inputs for a batch of working-frame images
  and ONE text (prompt + teacher-forced answer) and says where the image tokens
  and the target tokens are;
* :meth:`Adapter.score` returns per-token target log-probs in float32 for a batch
  of images (the scalar every gradient / perturbation method explains is their sum);
* :meth:`Adapter.generate` answers greedily;
* :meth:`Adapter.pixel_inputs` / :meth:`Adapter.score_pixels` /
  :meth:`Adapter.pixels_to_working` give gradient methods a differentiable
  pixels -> target function with the batch on dimension 0 and a way back to space.

Adapters are registered by families in plugins (``register_adapters``) and resolved
from any model reference with the ``resolve_adapter`` hook; the core never imports
one by name.
"""

from __future__ import annotations

import dataclasses
from abc import ABC, abstractmethod
from collections.abc import Callable, Sequence
from dataclasses import dataclass, field
from typing import Any, ClassVar

import torch

from .errors import LoadOptionsError
from .targets import Mode, SpanPolicy
from .typing import WorkingImage

__all__ = [
    "Adapter",
    "Encoding",
    "Generation",
    "LoadOptions",
    "ModelCard",
    "PassCounter",
    "Query",
]


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
    """

    text: str
    token_ids: tuple[int, ...]
    logprobs: tuple[float, ...]


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
        load (Callable[[str, LoadOptions], Adapter]): loads ``source`` with options.
    """

    key: str
    source: str
    family: str
    summary: str
    load: Callable[[str, LoadOptions], "Adapter"] = field(repr=False, compare=False)


class Adapter(ABC):
    """One loaded vision-language model behind the surface methods use.

    Attributes:
        family (str): adapter family name (class attribute).
        name (str): the reference it was loaded from (registry key, id or folder).
        model (torch.nn.Module): the underlying HF model (eval mode).
        options (LoadOptions): the options it was loaded with.
        counter (PassCounter): pass counts since the last reset.
    """

    family: ClassVar[str]

    def __init__(self, name: str, model: torch.nn.Module, options: LoadOptions) -> None:
        self.name = name
        self.model = model
        self.options = options
        self.counter = PassCounter()

    @property
    def working_size(self) -> int:
        """Side S of the square working frame the adapter expects."""
        return self.options.working_size

    @property
    def device(self) -> torch.device:
        """Device of the model's input embeddings."""
        return next(self.model.parameters()).device

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

    @abstractmethod
    def pixel_inputs(self, images: Sequence[WorkingImage]) -> torch.Tensor:
        """Processed pixel values with the batch on dimension 0: (B, ...) float32."""

    @abstractmethod
    def score_pixels(self, pixels: torch.Tensor, encoding: Encoding) -> torch.Tensor:
        """Differentiable target scalar from processed pixels.

        Args:
            pixels: (B', ...) as returned by :meth:`pixel_inputs` (B' may differ from
                ``encoding.batch_size``; the text is repeated).
            encoding: an encoding of the query (any batch size).

        Returns:
            (B',) float32 sum of target-token log-probs, differentiable w.r.t. ``pixels``.
        """

    @abstractmethod
    def pixels_to_working(self, attribution: torch.Tensor) -> torch.Tensor:
        """Map a pixel-space attribution (B, ...) back to space: (B, S, S) float32.

        Channels are summed; family-specific packing (Qwen's 2x2 merge windows) is undone.
        """

    @abstractmethod
    def decoder_layers(self) -> Sequence[torch.nn.Module]:
        """The language model's decoder layers, first to last (for hooks)."""

    def describe(self) -> dict[str, Any]:
        """JSON-safe facts recorded in result meta."""
        return {"family": self.family, "name": self.name}
