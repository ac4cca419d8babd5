"""The contrastive (CLIP-style dual encoder) adapter family and its registry keys.

See :mod:`._base` for how a dual encoder serves the adapter surfaces, :mod:`.hf` for
``CLIPModel`` / ``SiglipModel``, :mod:`.chexzero` for OpenAI-CLIP state dicts and
:mod:`.biomedclip` for OpenCLIP-format BiomedCLIP checkpoints (converted on load,
without open_clip). ``phantom-clip``, the embedded model of this family, is registered here too.
"""

from __future__ import annotations

import os
from typing import Any

from cxr_attrib.adapter import LoadOptions, ModelCard
from cxr_attrib.hookspecs import hookimpl

from ._base import DualEncoderAdapter
from .biomedclip import BIOMEDCLIP_CARD, is_openclip_folder, load_biomedclip
from .chexzero import load_chexzero
from .hf import card_loader, resolve_dual_encoder

__all__ = ["CARDS", "DualEncoderAdapter"]

CARDS: dict[str, tuple[str, str, str, str]] = {
    "clip_vit_b16": ("openai/clip-vit-base-patch16", "clip", "MIT",
                     "OpenAI CLIP ViT-B/16, the general-domain reference (14x14 patches at 224 px)"),
    "medsiglip_448": ("google/medsiglip-448", "siglip", "Health AI Developer Foundations terms",
                      "MedSigLIP 448 px (SigLIP trained on medical images, chest X-rays included)"),
    "xray_siglip": ("StanfordAIMI/XraySigLIP__vit-l-16-siglip-384__webli", "siglip", "CC-BY-NC-4.0",
                    "XraySigLIP, the CheXagent by-product SigLIP vision-language encoder"),
    "xray_clip": ("StanfordAIMI/XrayCLIP__vit-b-16__laion2b-s34b-b88k", "clip", "CC-BY-NC-4.0",
                  "XrayCLIP, the CheXagent by-product CLIP encoder"),
}
"""Registry key -> (Hugging Face id, family, licence, summary)."""

CHEXZERO_FILE = "best_64_5e-05_original_22000_0.864.pt"
"""The released CheXzero weights file name (a local file: pass its path as the model)."""


def _chexzero(source: str, options: LoadOptions, *, name: str | None = None) -> DualEncoderAdapter:
    return load_chexzero(source, options, name=name or "chexzero")


@hookimpl
def register_adapters(register: Any) -> None:
    """Register the dual-encoder keys (CLIP, SigLIP, CheXzero, BiomedCLIP)."""
    for key, (source, family, licence, summary) in CARDS.items():
        register(ModelCard(key=key, source=source, family=family, summary=summary,
                           load=card_loader(), licence=licence))
    register(ModelCard(key="chexzero", source=CHEXZERO_FILE, family="clip", licence="MIT (code); weights: PhysioNet "
                       "credentialed", summary="CheXzero (OpenAI-CLIP state dict, converted; pass the local .pt path)",
                       load=_chexzero))
    source, licence, summary = BIOMEDCLIP_CARD
    register(ModelCard(key="biomedclip", source=source, family="openclip", summary=summary, licence=licence,
                       load=load_biomedclip))


def _state_dict_file(reference: str) -> bool:
    """A local .pt / .pth / .bin file: read as an OpenAI-CLIP state dict (CheXzero); errors name what is wrong."""
    return os.path.isfile(reference) and reference.endswith((".pt", ".pth", ".bin"))


@hookimpl
def resolve_adapter(reference: str, options: LoadOptions) -> DualEncoderAdapter | None:
    """Load a CLIP / SigLIP folder or Hub id, an OpenAI-CLIP state dict file (CheXzero), or an OpenCLIP folder or BiomedCLIP's Hub id."""
    if _state_dict_file(reference):
        return load_chexzero(reference, options)
    if is_openclip_folder(reference) or reference == BIOMEDCLIP_CARD[0]:
        return load_biomedclip(reference, options)
    return resolve_dual_encoder(reference, options, [source for source, *_ in CARDS.values()])
