"""Loading helpers shared by the Hugging Face adapters.

* :func:`load_step` runs one ``from_pretrained`` call and turns missing files
  (offline, not downloaded, incomplete folder) into a one-line
  :class:`~cxr_attrib.errors.ModelLoadError` naming the key and the Hub id and saying
  how to fix it;
* :func:`read_model_type` reads ``model_type`` from a folder's ``config.json`` or a
  ``namespace/name`` Hub id (for the ``resolve_adapter`` hook);
* :func:`resolve_device_dtype` applies ``LoadOptions`` (``"auto"`` = bfloat16 on
  CUDA, float32 otherwise);
* :func:`load_processing` loads the full HF processor (PIL image backend) when it can
  be built and otherwise composes tokenizer + PIL image processor + chat template
  (Qwen2.5-VL's processor insists on a video processor that needs torchvision).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, TypeVar

import torch

from cxr_attrib.adapter import LoadOptions
from cxr_attrib.errors import ModelLoadError

__all__ = ["ProcessingParts", "load_processing", "load_step", "read_model_type", "resolve_device_dtype"]

_T = TypeVar("_T")


@dataclass(frozen=True)
class ProcessingParts:
    """What turns images and text into model inputs for one checkpoint.

    Attributes:
        tokenizer: a fast (offset-capable) HF tokenizer.
        image_processor: the PIL-backend image processor.
        chat_template (str): Jinja chat template.
        processor: the full HF processor when it could be built, else None.
        note (str): how the parts were obtained (recorded in ``describe()``).
    """

    tokenizer: Any
    image_processor: Any
    chat_template: str
    processor: Any | None
    note: str


def _first_line(exc: BaseException) -> str:
    text = str(exc).strip().splitlines()
    return f"{type(exc).__name__}: {text[0] if text else ''}"


def load_step(step: Callable[[], _T], name: str, source: str) -> _T:
    """Run one ``from_pretrained`` step; turn missing files into a one-line ModelLoadError."""
    try:
        return step()
    except (OSError, ValueError) as exc:
        if os.path.isdir(source):
            raise ModelLoadError(
                f"cannot load model {name!r} from folder {source!r}: {_first_line(exc)}. "
                "Expected a Hugging Face checkpoint folder (config.json, weights, tokenizer and "
                "processor files as written by save_pretrained)."
            ) from exc
        where = f"{source!r} (a Hugging Face id)" if name == source else f"{name!r} (Hugging Face id {source!r})"
        raise ModelLoadError(
            f"cannot load model {where}: its files are not available locally and cannot be "
            f"downloaded here (offline or no network; {_first_line(exc)}). Download them where there "
            f"is network (`hf download {source}`) into the Hugging Face cache, or pass a local folder "
            "holding config.json, the weights and the tokenizer/processor files as the model."
        ) from exc


@lru_cache(maxsize=64)
def read_model_type(reference: str, local_files_only: bool = False) -> str | None:
    """The ``model_type`` of a local checkpoint folder or a ``namespace/name`` Hub id.

    Args:
        reference (str): a folder holding ``config.json``, or a Hugging Face id.
        local_files_only (bool): never touch the network. Default: False.

    Returns:
        str | None: e.g. ``"qwen2_5_vl"``; None when there is no readable config
        (not a folder with config.json, not a ``namespace/name`` id, or not available).
    """
    if os.path.isdir(reference):
        try:
            with open(os.path.join(reference, "config.json"), encoding="utf-8") as handle:
                value = json.load(handle).get("model_type")
        except (OSError, ValueError):
            return None
        return value if isinstance(value, str) else None
    if os.path.exists(reference) or reference.count("/") != 1:
        return None
    from transformers import AutoConfig

    try:
        return AutoConfig.from_pretrained(reference, local_files_only=local_files_only).model_type
    except (OSError, ValueError):
        return None


def resolve_device_dtype(options: LoadOptions) -> tuple[torch.device | None, torch.dtype]:
    """The device to move the model to and the dtype to load it in.

    Args:
        options (LoadOptions): ``device`` (None picks CUDA when available),
            ``device_map`` (then no device: ``from_pretrained`` places the weights) and
            ``dtype`` (``"auto"``: bfloat16 when the model goes to CUDA, else float32).

    Returns:
        tuple: ``(device or None, dtype)``.

    Raises:
        ModelLoadError: an unknown dtype name.
    """
    cuda = torch.cuda.is_available()
    device = None
    if options.device_map is None:
        device = torch.device(options.device or ("cuda" if cuda else "cpu"))
        cuda = device.type == "cuda"
    names = {"float32": torch.float32, "bfloat16": torch.bfloat16, "float16": torch.float16}
    if options.dtype == "auto":
        return device, torch.bfloat16 if cuda else torch.float32
    if options.dtype not in names:
        raise ModelLoadError(
            f"unknown dtype {options.dtype!r}; expected 'auto' or one of {sorted(names)}. "
            "Pass LoadOptions(dtype=...) with one of those."
        )
    return device, names[options.dtype]


def _template_file(source: str, local_files_only: bool) -> str | None:
    from transformers.utils import cached_file

    for filename in ("chat_template.jinja", "chat_template.json"):
        path = cached_file(
            source, filename, local_files_only=local_files_only,
            _raise_exceptions_for_missing_entries=False, _raise_exceptions_for_connection_errors=False,
        )
        if path is None:
            continue
        with open(path, encoding="utf-8") as handle:
            text = handle.read()
        return json.loads(text)["chat_template"] if filename.endswith(".json") else text
    return None


def load_processing(source: str, name: str, local_files_only: bool) -> ProcessingParts:
    """Load the full processor when it can be built, else compose its parts.

    Args:
        source (str): Hugging Face id or local folder.
        name (str): the reference the user gave (for messages).
        local_files_only (bool): never touch the network.

    Returns:
        ProcessingParts: tokenizer, PIL image processor, chat template, processor or None.

    Raises:
        ModelLoadError: files missing, or no chat template anywhere.
    """
    from transformers import AutoImageProcessor, AutoProcessor, AutoTokenizer

    kwargs = {"local_files_only": local_files_only}
    try:
        processor = AutoProcessor.from_pretrained(source, backend="pil", **kwargs)
        tokenizer, image_processor = processor.tokenizer, processor.image_processor
        template = processor.chat_template or tokenizer.chat_template
        note = f"full processor {type(processor).__name__}"
    except Exception as exc:  # e.g. a video processor that needs torchvision
        processor = None
        tokenizer = load_step(lambda: AutoTokenizer.from_pretrained(source, **kwargs), name, source)
        image_processor = load_step(
            lambda: AutoImageProcessor.from_pretrained(source, backend="pil", **kwargs), name, source
        )
        template = tokenizer.chat_template or _template_file(source, local_files_only)
        note = f"tokenizer + {type(image_processor).__name__} (full processor unavailable: {_first_line(exc)})"
    if not getattr(tokenizer, "is_fast", False):
        raise ModelLoadError(
            f"model {name!r} has a slow tokenizer ({type(tokenizer).__name__}); expected a fast "
            "tokenizer (tokenizer.json) because target spans need character offsets."
        )
    if not template:
        raise ModelLoadError(
            f"model {name!r} has no chat template (looked in the processor, tokenizer_config.json, "
            "chat_template.jinja and chat_template.json); add the checkpoint's chat template file."
        )
    return ProcessingParts(tokenizer, image_processor, template, processor, note)
