"""cxr-attrib: which part of a chest X-ray did a vision-language model use?

The public API, imported lazily so that ``import cxr_attrib`` stays cheap::

    from cxr_attrib import attribute
    result = attribute("phantom-qwen", "cxr.png", "Is there evidence of nodule in the image?",
                       method="occlusion")
"""

from __future__ import annotations

import importlib
from typing import Any

__version__ = "0.1.0"

_EXPORTS = {
    "attribute": "api",
    "Attribution": "result",
    "compare": "comparison",
    "Comparison": "comparison",
    "Concept": "result",
    "Target": "result",
    "TokenScore": "result",
    "Meta": "result",
    "Method": "method",
    "MethodOutput": "method",
    "MethodRequest": "method",
    "ConceptScore": "method",
    "Adapter": "adapter",
    "Scorer": "adapter",
    "GradientSurface": "adapter",
    "LoadOptions": "adapter",
    "ModelCard": "adapter",
    "Query": "adapter",
    "Benchmark": "benchmark",
    "Sample": "benchmark",
    "hookimpl": "hookspecs",
    "load_adapter": "models",
    "load_image": "imageio",
    "load_plugins": "registry",
    "methods": "registry",
    "CxrAttribError": "errors",
    "UnknownMethodError": "errors",
    "UnknownModelError": "errors",
    "ImageLoadError": "errors",
}

__all__ = ["__version__", *_EXPORTS]


def __getattr__(name: str) -> Any:
    if name in _EXPORTS:
        value = getattr(importlib.import_module(f".{_EXPORTS[name]}", __name__), name)
        globals()[name] = value
        return value
    raise AttributeError(f"module 'cxr_attrib' has no attribute {name!r}")


def __dir__() -> list[str]:
    return sorted(__all__)
