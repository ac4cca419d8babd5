"""Loading helpers for Hugging Face adapters (public: plugins use them too).

* :func:`load_step` runs one ``from_pretrained`` call and turns missing files
  (offline, not downloaded, incomplete folder) into a one-line
  :class:`~cxr_attrib.errors.ModelLoadError` naming the key and the Hub id and saying
  how to fix it;
* :func:`read_model_type` reads ``model_type`` from a folder's ``config.json`` or a
  ``namespace/name`` Hub id (for the ``resolve_adapter`` hook);
* :func:`check_hub_access` fails fast, in one line, when a Hub id is not in the
  local cache and the Hub cannot be reached (offline mode or no network), instead of
  the Hub client's retries;
* :func:`resolve_device_dtype` applies ``LoadOptions`` (``"auto"`` = bfloat16 on
  CUDA, float32 otherwise);
* :func:`load_processing` loads the full HF processor (PIL image backend) when it can
  be built and otherwise composes tokenizer + PIL image processor + chat template
  (some processors insist on a video processor that needs torchvision).
"""

from __future__ import annotations

import json
import os
import socket
from collections.abc import Callable
from dataclasses import dataclass
from functools import lru_cache
from typing import Any, TypeVar
from urllib.parse import urlparse

import torch

from cxr_attrib.adapter import LoadOptions
from cxr_attrib.errors import ModelLoadError, UnreadableFileError
from cxr_attrib.safeio import read_text

__all__ = [
    "ProcessingParts",
    "check_hub_access",
    "load_processing",
    "load_step",
    "read_model_type",
    "resolve_device_dtype",
]

HUB_PROBE_TIMEOUT_S = 3.0
"""Seconds to wait for a TCP connection to the Hub before calling the network offline."""
_TRUE = {"1", "on", "yes", "true"}

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


def _describe(name: str, source: str) -> str:
    return f"{source!r} (a Hugging Face id)" if name == source else f"{name!r} (Hugging Face id {source!r})"


def _download_hint(source: str) -> str:
    return (
        f"Download them where there is network (`hf download {source}`) into the Hugging Face cache, "
        "or pass a local folder holding config.json, the weights and the tokenizer/processor files "
        "as the model."
    )


def _offline_mode() -> bool:
    return any(os.environ.get(name, "").strip().lower() in _TRUE for name in ("HF_HUB_OFFLINE", "TRANSFORMERS_OFFLINE"))


def check_hub_access(source: str, name: str, local_files_only: bool) -> None:
    """Fail fast when Hub id ``source`` would need the network and cannot have it.

    Nothing happens for a folder, for ``local_files_only`` (the loaders then fail
    at once on missing files) or when ``config.json`` is in the local Hugging Face
    cache. Otherwise offline mode (``HF_HUB_OFFLINE`` / ``TRANSFORMERS_OFFLINE``)
    or a Hub that does not accept a TCP connection within
    :data:`HUB_PROBE_TIMEOUT_S` is a one-line error, instead of the Hub
    client's retries (about 25 s).

    Args:
        source (str): Hugging Face id or local folder.
        name (str): the reference the user gave (for messages).
        local_files_only (bool): the loaders will not touch the network.

    Raises:
        ModelLoadError: not cached, and offline mode is set or the Hub is unreachable.
    """
    from huggingface_hub import constants, try_to_load_from_cache

    if os.path.isdir(source) or local_files_only:
        return
    try:
        cached = try_to_load_from_cache(source, "config.json")
    except ValueError:  # not a valid repo id: the loaders say so
        return
    if isinstance(cached, str):
        return
    what = _describe(name, source)
    if _offline_mode():
        raise ModelLoadError(
            f"cannot load model {what}: its files are not available locally (not in the Hugging Face "
            "cache) and offline mode is on (HF_HUB_OFFLINE / TRANSFORMERS_OFFLINE), so the Hub was not "
            f"asked. {_download_hint(source)}"
        )
    url = urlparse(constants.ENDPOINT)
    port = url.port or (443 if url.scheme == "https" else 80)
    try:
        socket.create_connection((url.hostname, port), timeout=HUB_PROBE_TIMEOUT_S).close()
    except OSError as exc:
        raise ModelLoadError(
            f"cannot load model {what}: its files are not available locally (not in the Hugging Face "
            f"cache); tried the network and the Hub ({constants.ENDPOINT}) is unreachable, this machine "
            f"is offline ({type(exc).__name__}: {exc}). {_download_hint(source)}"
        ) from exc


def load_step(step: Callable[[], _T], name: str, source: str) -> _T:
    """Run one ``from_pretrained`` step; turn missing or corrupt files into a one-line ModelLoadError."""
    from safetensors import SafetensorError

    try:
        return step()
    except SafetensorError as exc:
        raise ModelLoadError(
            f"cannot load model {name!r} from {source!r}: a .safetensors weights file is truncated or "
            f"corrupt ({_first_line(exc)}). Re-download or re-copy the weights."
        ) from exc
    except (OSError, ValueError) as exc:
        if os.path.isdir(source):
            raise ModelLoadError(
                f"cannot load model {name!r} from folder {source!r}: {_first_line(exc)}. "
                "Expected a Hugging Face checkpoint folder (config.json, weights, tokenizer and "
                "processor files as written by save_pretrained)."
            ) from exc
        raise ModelLoadError(
            f"cannot load model {_describe(name, source)}: its files are not available locally and cannot "
            f"be downloaded here (offline or no network; {_first_line(exc)}). {_download_hint(source)}"
        ) from exc


@lru_cache(maxsize=64)
def read_model_type(reference: str, local_files_only: bool = False) -> str | None:
    """The ``model_type`` of a local checkpoint folder or a ``namespace/name`` Hub id.

    Args:
        reference (str): a folder holding ``config.json``, or a Hugging Face id.
        local_files_only (bool): never touch the network. Default: False.

    Returns:
        str | None: e.g. ``"qwen2_5_vl"``; None when there is no config (not a folder
        with config.json, not a ``namespace/name`` id, or no such repository).

    Raises:
        ModelLoadError: a folder whose ``config.json`` is not a JSON object, or a Hub
            id that is not cached while the Hub is unreachable (see
            :func:`check_hub_access`).
    """
    if os.path.isdir(reference):
        path = os.path.join(reference, "config.json")
        try:
            config = json.loads(read_text(path, what="model config"))
        except UnreadableFileError as exc:
            if not os.path.lexists(path):
                return None
            raise ModelLoadError(f"cannot read {path}: {exc}") from None
        except OSError as exc:
            raise ModelLoadError(f"cannot read {path}: {_first_line(exc)}") from exc
        except ValueError as exc:  # JSONDecodeError, UnicodeDecodeError
            raise ModelLoadError(
                f"{path} is not valid JSON ({_first_line(exc)}); the checkpoint folder is damaged: "
                "re-copy or re-download it."
            ) from exc
        if not isinstance(config, dict):
            raise ModelLoadError(f"{path} holds a JSON {type(config).__name__}; expected an object.")
        value = config.get("model_type")
        return value if isinstance(value, str) else None
    if os.path.exists(reference) or reference.count("/") != 1:
        return None
    from transformers import AutoConfig

    if _cached_without_config(reference):
        return None  # a cached repository without config.json (e.g. an OpenCLIP one) is no transformers model
    check_hub_access(reference, reference, local_files_only)

    try:
        return AutoConfig.from_pretrained(reference, local_files_only=local_files_only).model_type
    except (OSError, ValueError):
        return None


def _cached_without_config(repo_id: str) -> bool:
    """Whether Hub id ``repo_id`` has a snapshot in the local Hugging Face cache but no ``config.json``."""
    from huggingface_hub import constants, try_to_load_from_cache

    folder = os.path.join(constants.HF_HUB_CACHE, "models--" + repo_id.replace("/", "--"), "snapshots")
    if not os.path.isdir(folder):
        return False
    try:
        return not isinstance(try_to_load_from_cache(repo_id, "config.json"), str)
    except ValueError:  # not a valid repo id
        return False


def resolve_device_dtype(options: LoadOptions) -> tuple[torch.device | None, torch.dtype]:
    """The device to move the model to and the dtype to load it in.

    Args:
        options (LoadOptions): ``device`` (None picks CUDA when available),
            ``device_map`` (then no device: ``from_pretrained`` places the weights) and
            ``dtype`` (``"auto"``: bfloat16 when the model goes to CUDA, else float32);
            see :meth:`LoadOptions.resolved`.

    Returns:
        tuple: ``(device or None, dtype)``.

    Raises:
        LoadOptionsError: a CUDA device where CUDA is not available.
    """
    resolved = options.resolved()
    device = None if resolved.device is None else torch.device(resolved.device)
    return device, getattr(torch, resolved.dtype)


def _template_file(source: str, local_files_only: bool) -> str | None:
    from transformers.utils import cached_file

    for filename in ("chat_template.jinja", "chat_template.json"):
        path = cached_file(
            source, filename, local_files_only=local_files_only,
            _raise_exceptions_for_missing_entries=False, _raise_exceptions_for_connection_errors=False,
        )
        if path is None:
            continue
        text = read_text(path, what="chat template")
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
