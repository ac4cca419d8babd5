"""The embedded default models: tiny real-class VLMs trained on phantom VQA.

``phantom-qwen`` (``Qwen2_5_VLForConditionalGeneration``), ``phantom-gemma``
(``Gemma3ForConditionalGeneration``) and ``phantom-clip`` (``CLIPModel``, a dual
encoder; ``python tools/train_phantom_clip.py``) ship inside the wheel as ordinary Hugging Face
folders and load, offline, through the same adapters as real checkpoints. They were
trained by ``python tools/train_phantom.py`` (see docs/phantom.md).
"""

from __future__ import annotations

from importlib.resources import files
from typing import Any

from cxr_attrib.adapter import ModelCard
from cxr_attrib.hookspecs import hookimpl

from .contrastive.hf import card_loader
from .gemma3 import Gemma3Adapter
from .qwen2_5_vl import QwenVLAdapter


def embedded_folder(key: str) -> str:
    """Path of the embedded model folder ``key`` inside the installed package."""
    return str(files(__package__) / "embedded" / key)


@hookimpl
def register_adapters(register: Any) -> None:
    """Register ``phantom-qwen``, ``phantom-gemma`` and ``phantom-clip``."""
    qwen = {"phantom-qwen": (embedded_folder("phantom-qwen"),
                             "Embedded ~1M-parameter Qwen2.5-VL-class model trained on phantom VQA")}
    gemma = {"phantom-gemma": (embedded_folder("phantom-gemma"),
                               "Embedded ~1M-parameter Gemma-3-class model trained on phantom VQA")}
    for card in QwenVLAdapter.cards(qwen, local_files_only=True) + Gemma3Adapter.cards(gemma, local_files_only=True):
        register(card)
    register(ModelCard(
        key="phantom-clip", source=embedded_folder("phantom-clip"), family="clip", licence="Apache-2.0",
        summary="Embedded ~0.3M-parameter CLIPModel (dual encoder) trained on phantom images and finding prompts",
        load=card_loader(local_files_only=True),
    ))
