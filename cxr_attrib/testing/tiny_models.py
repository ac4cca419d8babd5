"""Tiny random-weight models of the real model classes, built offline.

Each family with a registered tiny-model recipe (``register_tiny_models``; the
built-in adapters register ``qwen2_5_vl`` and ``gemma3``, see their ``*_tiny``
modules for the default sizes) gets a ``*ForConditionalGeneration`` of the real
transformers class with a few hundred thousand parameters, a byte-level BPE
tokenizer trained here (by the ``tokenizers`` library, deterministically) on a small
corpus of chest X-ray questions, answers and prompt suffixes, carrying the family's
real special tokens, a chat template that renders like the family's own, and the
family's PIL image processor. :func:`save_tiny_model` writes them in Hugging Face
layout, so the adapters load them by folder exactly like a real checkpoint. This
module never branches on a family: it looks the recipe up in the registry.

The tokenizers hold the special tokens plus the 256 byte symbols and the merges the
corpus yields (``vocab_size`` caps it at 640).
"""

from __future__ import annotations

import copy
import os
import tempfile
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import torch

from ..adapter import Adapter, LoadOptions
from ..errors import ModelLoadError
from ..registry import get_tiny_model_recipe, tiny_model_recipes
from ..tiny_recipe import TinyModelRecipe

__all__ = [
    "FAMILIES",
    "build_tiny_adapter",
    "load_tiny_adapter",
    "save_tiny_model",
    "tiny_config",
    "tiny_families",
    "tiny_tokenizer",
    "wired_adapter",
]

_DEFAULT_OPTIONS = LoadOptions(dtype="float32", device="cpu", local_files_only=True)


def tiny_families() -> tuple[str, ...]:
    """Families with a registered tiny-model recipe, e.g. ``("gemma3", "qwen2_5_vl")``."""
    return tuple(tiny_model_recipes())


def __getattr__(name: str) -> Any:
    if name == "FAMILIES":  # computed from the registry when first asked for
        return tiny_families()
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


_FINDINGS = (
    "nodule", "mass", "pleural effusion", "effusion", "consolidation", "pneumothorax",
    "cardiomegaly", "atelectasis", "edema", "opacity", "fracture", "pneumonia", "abnormality",
)
_REASONING = (
    "The left lung base is blunted. Answer: yes.",
    "The costophrenic angles are sharp and the lungs are clear. Answer: no.",
    "The cardiac silhouette is enlarged. The answer is yes.",
    "There is no evidence of pneumothorax. Answer: no.",
    "A round opacity is seen in the right upper lobe. Answer: yes.",
    "The heart size is normal and there is no effusion. Answer: no.",
    "Step 1: look at the lungs. Step 2: look at the heart and mediastinum. Answer: yes.",
)


def _corpus() -> list[str]:
    from ..targets import build_prompt, finding_question

    lines = ["You are a helpful assistant.", "user", "assistant", "model", "system", "Yes.", "No.", "Yes", "No"]
    for finding in _FINDINGS:
        question = finding_question(finding)
        lines += [build_prompt(question, "direct"), build_prompt(question, "reasoning")]
        lines += [f"No {finding}.", f"There is {finding} in the left lung.", f"no evidence of {finding}"]
    return lines + list(_REASONING) * 2


def tiny_tokenizer(
    family: str, vocab_size: int = 640, extra_corpus: Sequence[str] = (), *, split_digits: bool = False
) -> Any:
    """A byte-level BPE tokenizer with ``family``'s real special tokens and chat template.

    Args:
        family (str): a family with a tiny-model recipe, e.g. ``"qwen2_5_vl"`` or ``"gemma3"``.
        vocab_size (int): BPE vocabulary size including the 256 byte symbols and the
            special tokens (ids 0..k-1, in the order of the real vocabularies). Default: 640.
        extra_corpus (Sequence[str]): more training text for the merges (the phantom
            models add their rationales, which then take a few tokens instead of one per
            byte). Default: none.
        split_digits (bool): every digit is its own token, as in the real Qwen2.5-VL and
            Gemma 3 vocabularies (so ``112`` is three tokens whatever the corpus); the
            phantom models, which state box coordinates, use it. False keeps the plain
            byte-level splits the test fixtures were calibrated with. Default: False.

    Returns:
        A ``transformers`` fast tokenizer (deterministic for the arguments).
    """
    from tokenizers import Tokenizer, decoders, models, pre_tokenizers, trainers
    from transformers import PreTrainedTokenizerFast

    recipe = _recipe(family)
    core = Tokenizer(models.BPE())
    byte_level = pre_tokenizers.ByteLevel(add_prefix_space=False, use_regex=True)
    core.pre_tokenizer = (
        pre_tokenizers.Sequence([pre_tokenizers.Digits(individual_digits=True), byte_level])
        if split_digits else byte_level
    )
    core.decoder = decoders.ByteLevel()
    trainer = trainers.BpeTrainer(
        vocab_size=vocab_size, special_tokens=list(recipe.special_tokens),
        initial_alphabet=pre_tokenizers.ByteLevel.alphabet(), show_progress=False,
    )
    core.train_from_iterator(_corpus() + list(extra_corpus), trainer)
    tokenizer = PreTrainedTokenizerFast(tokenizer_object=core, **recipe.tokenizer_roles())
    tokenizer.chat_template = recipe.chat_template
    return tokenizer


def _recipe(family: str) -> TinyModelRecipe:
    return get_tiny_model_recipe(family)


def _merge(base: dict[str, Any], overrides: Mapping[str, Any]) -> dict[str, Any]:
    out = copy.deepcopy(base)
    for key, value in overrides.items():
        if isinstance(value, Mapping) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def _build_config(recipe: TinyModelRecipe, tokenizer: Any, overrides: Mapping[str, Any]) -> Any:
    return recipe.build_config(_merge(recipe.config_values(tokenizer), overrides))


def tiny_config(family: str, **overrides: Any) -> Any:
    """The family's tiny config object (sizes: see the family's tiny-model recipe).

    Args:
        family (str): a family with a tiny-model recipe, e.g. ``"qwen2_5_vl"`` or ``"gemma3"``.
        **overrides: config keyword arguments; dicts (``text_config={...}``,
            ``vision_config={...}``) are merged into the defaults key by key.

    Returns:
        The config object (token ids match :func:`tiny_tokenizer`).
    """
    return _build_config(_recipe(family), tiny_tokenizer(family), overrides)


def save_tiny_model(
    family: str,
    path: str | os.PathLike,
    seed: int = 0,
    *,
    vocab_size: int = 640,
    extra_corpus: Sequence[str] = (),
    split_digits: bool = False,
    **config_overrides: Any,
) -> Path:
    """Build a tiny random model of the real class and save it in Hugging Face layout.

    Writes ``config.json``, ``generation_config.json``, ``model.safetensors``, the
    tokenizer files with ``chat_template.jinja`` and the image processor config
    (as the family's recipe writes them: a full processor, or tokenizer + image
    processor where the full one needs torchvision).

    Args:
        family (str): a family with a tiny-model recipe, e.g. ``"qwen2_5_vl"`` or ``"gemma3"``.
        path (str | PathLike): folder to write (created if missing).
        seed (int): torch seed for the random weights. Default: 0.
        vocab_size (int): see :func:`tiny_tokenizer`. Default: 640.
        extra_corpus (Sequence[str]): see :func:`tiny_tokenizer`. Default: none.
        split_digits (bool): see :func:`tiny_tokenizer`. Default: False.
        **config_overrides: see :func:`tiny_config`.

    Returns:
        Path: ``path``.
    """
    recipe = _recipe(family)
    tokenizer = tiny_tokenizer(family, vocab_size, extra_corpus, split_digits=split_digits)
    config = _build_config(recipe, tokenizer, config_overrides)
    generator_state = torch.random.get_rng_state()
    torch.manual_seed(seed)
    try:
        model = recipe.build_model(config)
    finally:
        torch.random.set_rng_state(generator_state)
    model.generation_config.eos_token_id = tokenizer.convert_tokens_to_ids(list(recipe.stop_tokens))
    model.generation_config.pad_token_id = tokenizer.pad_token_id
    out = Path(path)
    out.mkdir(parents=True, exist_ok=True)
    model.save_pretrained(out)
    recipe.save_processing(out, tokenizer, config)
    return out


def load_tiny_adapter(path: str | os.PathLike, options: LoadOptions | None = None) -> Adapter:
    """Load a saved tiny model by folder through the ``resolve_adapter`` hook.

    Args:
        path (str | PathLike): a folder written by :func:`save_tiny_model`.
        options (LoadOptions | None): load options. Default: float32 on the CPU,
            working size 224, local files only.

    Returns:
        Adapter: the adapter the installed adapter plugins resolve the folder to.

    Raises:
        ModelLoadError: no installed adapter plugin recognises the folder.
    """
    from ..registry import plugin_manager

    options = options or _DEFAULT_OPTIONS
    adapter = plugin_manager().hook.resolve_adapter(reference=os.fspath(path), options=options)
    if adapter is None:
        raise ModelLoadError(
            f"no adapter plugin resolved the tiny model folder {os.fspath(path)!r}; expected the "
            "built-in adapters (entry points qwen2_5_vl and gemma3 of the cxr_attrib group) to be "
            "installed. Reinstall cxr-attrib or check CXR_ATTRIB_LOAD_PLUGINS / CXR_ATTRIB_BLOCK_PLUGINS."
        )
    return adapter


def build_tiny_adapter(
    family: str, seed: int = 0, *, options: LoadOptions | None = None, **overrides: Any
) -> Adapter:
    """Save a tiny model to a temporary folder and load it like any checkpoint.

    The folder goes through the ``resolve_adapter`` hook (the installed adapter
    plugins), so this also exercises loading by folder path.

    Args:
        family (str): a family with a tiny-model recipe, e.g. ``"qwen2_5_vl"`` or ``"gemma3"``.
        seed (int): weight seed. Default: 0.
        options (LoadOptions | None): load options. Default: float32 on the CPU,
            working size 224, local files only.
        **overrides: config overrides (see :func:`tiny_config`).

    Returns:
        Adapter: the loaded adapter (fully in memory; the folder is removed).
    """
    with tempfile.TemporaryDirectory(prefix=f"cxr-attrib-tiny-{family}-") as folder:
        return load_tiny_adapter(save_tiny_model(family, folder, seed=seed, **overrides), options)


def wired_adapter(
    family: str,
    region: tuple[float, float, float, float],
    *,
    seed: int = 0,
    gain: float = 4.0,
    options: LoadOptions | None = None,
) -> Adapter:
    """A tiny adapter whose target log-prob depends only on the pixels of ``region``.

    How (real classes, real forward pass, two documented edits):

    1. every vision attention output projection is zeroed, so an image token's
       feature depends only on the pixels of its own cell (e.g. Qwen's 2 x 2 merge
       window of patches, Gemma's average-pooling window);
    2. a forward hook on the image-feature output multiplies the features of tokens
       whose cell lies outside ``region`` by 0 and those inside by ``gain``.

    Both edits are the family recipe's (``isolate_vision_tokens``,
    ``gate_image_features``).

    Pixels outside ``region`` therefore have exactly zero effect (and zero gradient),
    while the tokens of ``region`` reach the answer through the language model.

    Args:
        family (str): a family with a tiny-model recipe, e.g. ``"qwen2_5_vl"`` or ``"gemma3"``.
        region (tuple): ``(x1, y1, x2, y2)`` working-frame pixels, exclusive ends; it
            must be a union of whole token cells (cell side S / grid, 28 px at 224).
        seed (int): weight seed. Default: 0.
        gain (float): factor on the region's image features. Default: 4.0.
        options (LoadOptions | None): see :func:`build_tiny_adapter`.

    Returns:
        Adapter: the wired adapter.

    Raises:
        ValueError: ``region`` does not align with the token grid or is empty.
    """
    adapter = build_tiny_adapter(family, seed=seed, options=options)
    size = adapter.working_size
    gh, gw = adapter.geometry.token_grid
    x1, y1, x2, y2 = region
    cells = [v * gw / size for v in (x1, x2)] + [v * gh / size for v in (y1, y2)]
    if any(abs(c - round(c)) > 1e-9 for c in cells) or not (0 <= x1 < x2 <= size and 0 <= y1 < y2 <= size):
        raise ValueError(
            f"region {region} must be a non-empty union of whole token cells of the {gh}x{gw} grid "
            f"(cells of {size / gw:g} x {size / gh:g} px in the {size} px working frame)."
        )
    c1, c2, r1, r2 = (round(c) for c in cells)
    mask = torch.zeros(gh, gw)
    mask[r1:r2, c1:c2] = gain
    recipe = _recipe(family)
    recipe.isolate_vision_tokens(adapter.model)
    recipe.gate_image_features(adapter.model, mask.flatten().to(adapter.device))
    return adapter
