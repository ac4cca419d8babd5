"""The embedded default models: tiny real-class VLMs trained on phantom VQA.

``phantom-qwen`` (``Qwen2_5_VLForConditionalGeneration``) and ``phantom-gemma``
(``Gemma3ForConditionalGeneration``) ship inside the wheel as ordinary Hugging Face
folders and load through the same adapters as real checkpoints. They were trained
by ``python -m cxr_attrib.phantom.training`` (see docs/phantom.md).
"""

from __future__ import annotations

import dataclasses
from functools import partial
from importlib.resources import files
from typing import Any

from cxr_attrib.adapter import Adapter, LoadOptions, ModelCard
from cxr_attrib.hookspecs import hookimpl

from .gemma3 import Gemma3Adapter
from .qwen2_5_vl import QwenVLAdapter

EMBEDDED = {
    "phantom-qwen": (QwenVLAdapter, "Embedded ~1M-parameter Qwen2.5-VL-class model trained on phantom VQA"),
    "phantom-gemma": (Gemma3Adapter, "Embedded ~1M-parameter Gemma-3-class model trained on phantom VQA"),
}


def embedded_folder(key: str) -> str:
    """Path of the embedded model folder ``key`` inside the installed package."""
    return str(files(__package__) / "embedded" / key)


def _load(adapter_cls: type, key: str, source: str, options: LoadOptions) -> Adapter:
    return adapter_cls.load(source, dataclasses.replace(options, local_files_only=True), name=key)


@hookimpl
def register_adapters(register: Any) -> None:
    """Register ``phantom-qwen`` and ``phantom-gemma``."""
    for key, (adapter_cls, summary) in EMBEDDED.items():
        register(ModelCard(key=key, source=embedded_folder(key), family=adapter_cls.family, summary=summary,
                           load=partial(_load, adapter_cls, key)))
