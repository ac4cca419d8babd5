"""OpenCLIP models (BiomedCLIP) behind the dual-encoder adapter: an optional extra.

``pip install "cxr-attrib[openclip]"`` installs ``open_clip_torch``; without it, loading
an OpenCLIP key is a one-line :class:`~cxr_attrib.errors.ModelLoadError` saying so.
"""

from __future__ import annotations

from typing import Any

from cxr_attrib.adapter import LoadOptions
from cxr_attrib.errors import ModelLoadError

__all__ = ["OPENCLIP_CARDS", "OPENCLIP_EXTRA", "load_openclip", "require_open_clip"]

OPENCLIP_EXTRA = 'pip install "cxr-attrib[openclip]"'
"""How to install the optional OpenCLIP dependency."""

OPENCLIP_CARDS: dict[str, tuple[str, str, str]] = {
    "biomedclip": ("hf-hub:microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224", "MIT",
                   "BiomedCLIP (OpenCLIP, ViT-B/16 + PubMedBERT; needs the openclip extra)"),
}
"""Registry key -> (OpenCLIP model name, licence, summary)."""


def require_open_clip(name: str) -> Any:
    """The ``open_clip`` module, or a one-line ModelLoadError naming ``name`` and the extra."""
    try:
        import open_clip
    except ImportError as exc:
        raise ModelLoadError(
            f"model {name!r} is an OpenCLIP model and needs the optional open_clip_torch package, which is not "
            f"installed or cannot be imported ({type(exc).__name__}: {exc}); install it with: {OPENCLIP_EXTRA}"
        ) from exc
    return open_clip


def load_openclip(source: str, options: LoadOptions, *, name: str | None = None) -> Any:
    """Load an OpenCLIP model (see :data:`OPENCLIP_CARDS`).

    Raises:
        ModelLoadError: ``open_clip_torch`` missing (one line with the install command).
    """
    name = name or source
    require_open_clip(name)
    raise ModelLoadError(
        f"model {name!r}: OpenCLIP models are not wired to the adapter surfaces in this version; "
        "export the checkpoint to a transformers CLIPModel folder and load that folder."
    )
