"""BiomedCLIP: an OpenCLIP-format checkpoint, converted on load to transformers modules (no open_clip).

BiomedCLIP (``microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224``) is released as
an OpenCLIP folder: ``open_clip_config.json``, ``open_clip_pytorch_model.bin`` (a
``torch.save``-d state dict) and the PubMedBERT tokenizer files. Its ``model_cfg`` is
``embed_dim`` 512; a timm ViT-B/16 vision trunk (``timm_model_name``
``vit_base_patch16_224``, image size 224, ``timm_pool`` ``""``, i.e. the trunk's own CLS
token pooling after its final layer norm, and ``timm_proj`` ``"linear"``: a bias-free
linear head to the joint space); a Hugging Face BERT text tower (PubMedBERT) pooled at
the CLS token of the last hidden state (``pooler_type``
``"cls_last_hidden_state_pooler"``: BERT's own pooler layer is not used) and projected
by an ``"mlp"`` (Linear without bias to ``(width + embed_dim) // 2``, exact GELU, Linear
without bias), with ``context_length`` 256. The text attention mask is "token is not
the pad token", as OpenCLIP's text encoder builds it. These facts follow
mlfoundations/open_clip at commit 89fb801f1e6087880e951fc8354b8a2077b79c6d:
``src/open_clip/timm_model.py`` (``TimmModel``: ``trunk`` + ``head.proj``),
``src/open_clip/hf_model.py`` (``HFTextEncoder``: ``transformer`` + ``pooler`` +
``proj``, the MLP projection) and ``src/open_clip/factory.py`` (a stale
``text.transformer.embeddings.position_ids`` is dropped on load); timm's
``VisionTransformer`` uses LayerNorm with eps 1e-6, no pre-norm, exact GELU and a
position embedding that covers the CLS token, as transformers' ``ViTModel`` does.

:func:`openclip_to_hf` maps the released keys (``{i}`` = block index; the fused ``qkv``
is split into equal thirds in query, key, value order) onto :class:`BiomedClipModel`
(module names of transformers 5's ``ViTModel``)::

    visual.trunk.cls_token                 vision_model.embeddings.cls_token
    visual.trunk.pos_embed                 vision_model.embeddings.position_embeddings
    visual.trunk.patch_embed.proj.*        vision_model.embeddings.patch_embeddings.projection.*
    visual.trunk.blocks.{i}.norm1.*        vision_model.layers.{i}.layernorm_before.*
    visual.trunk.blocks.{i}.attn.qkv.*     vision_model.layers.{i}.attention.{q,k,v}_proj.*
    visual.trunk.blocks.{i}.attn.proj.*    vision_model.layers.{i}.attention.o_proj.*
    visual.trunk.blocks.{i}.norm2.*        vision_model.layers.{i}.layernorm_after.*
    visual.trunk.blocks.{i}.mlp.fc1.*      vision_model.layers.{i}.mlp.fc1.*
    visual.trunk.blocks.{i}.mlp.fc2.*      vision_model.layers.{i}.mlp.fc2.*
    visual.trunk.norm.*                    vision_model.layernorm.*
    visual.head.proj.weight                visual_projection.weight
    text.transformer.X                     text_model.X   (BertModel keys)
    text.proj.0.weight / text.proj.2.weight  text_projection.0.weight / text_projection.2.weight  ("mlp")
    text.proj.weight                       text_projection.weight                                ("linear")
    logit_scale                            logit_scale

``text.transformer.pooler.*`` (present in checkpoints written before OpenCLIP stopped
building BERT's unused pooler) and the ``position_ids`` / ``token_type_ids`` buffers are
dropped; any other key, or a missing one, is a one-line error naming the first few.
Widths, depths, patch, image size, vocabulary and context length are read from the
tensor shapes (heads = width / 64, as in ViT-B and BERT-base) and checked against the
config. Pixels are normalised with ``preprocess_cfg`` mean and std (OpenAI CLIP's when
absent) after a bicubic resize.
"""

from __future__ import annotations

import os
import re
from collections.abc import Mapping
from typing import Any, ClassVar

import torch

from cxr_attrib.adapter import LoadOptions
from cxr_attrib.contrastive import DEFAULT_THRESHOLD, PromptPair
from cxr_attrib.errors import ModelLoadError
from cxr_attrib.safeio import read_json

from cxr_attrib.hf import check_hub_access, load_step, resolve_device_dtype
from ._base import DualEncoderAdapter
from .chexzero import read_state_dict
from .hf import clip_log_probs

__all__ = ["BIOMEDCLIP_CARD", "BiomedClipAdapter", "BiomedClipModel", "is_openclip_folder", "load_biomedclip",
           "openclip_to_hf"]

BIOMEDCLIP_CARD = ("microsoft/BiomedCLIP-PubMedBERT_256-vit_base_patch16_224", "MIT",
                   "BiomedCLIP (ViT-B/16 + PubMedBERT, OpenCLIP checkpoint converted to transformers on load)")
"""The ``biomedclip`` registry key: (Hugging Face id, licence, summary)."""

CONFIG_FILE = "open_clip_config.json"
WEIGHTS_FILE = "open_clip_pytorch_model.bin"
MAX_WEIGHTS_BYTES = 4 << 30
"""Largest weights file read (bytes); BiomedCLIP is about 0.8 GB."""

_OPENAI_MEAN = (0.48145466, 0.4578275, 0.40821073)
_OPENAI_STD = (0.26862954, 0.26130258, 0.27577711)
_VIT_EPS = 1e-6  # timm VisionTransformer's LayerNorm
_BERT_EPS = 1e-12  # BERT's LayerNorm (PubMedBERT's config)
_DROPPED = re.compile(r"^text\.transformer\.(pooler\..*|embeddings\.(position_ids|token_type_ids))$")
_BLOCK = re.compile(r"^visual\.trunk\.blocks\.(\d+)\.(.+)$")
_BLOCK_MAP = {
    "norm1": "layernorm_before", "attn.proj": "attention.o_proj", "norm2": "layernorm_after",
    "mlp.fc1": "mlp.fc1", "mlp.fc2": "mlp.fc2",
}
_PLAIN = {
    "visual.trunk.cls_token": "vision_model.embeddings.cls_token",
    "visual.trunk.pos_embed": "vision_model.embeddings.position_embeddings",
    "visual.trunk.patch_embed.proj.weight": "vision_model.embeddings.patch_embeddings.projection.weight",
    "visual.trunk.patch_embed.proj.bias": "vision_model.embeddings.patch_embeddings.projection.bias",
    "visual.trunk.norm.weight": "vision_model.layernorm.weight",
    "visual.trunk.norm.bias": "vision_model.layernorm.bias",
    "visual.head.proj.weight": "visual_projection.weight",
    "logit_scale": "logit_scale",
}
_PROJECTIONS = {"mlp": {"text.proj.0.weight": "text_projection.0.weight", "text.proj.2.weight": "text_projection.2.weight"},
                "linear": {"text.proj.weight": "text_projection.weight"}}


class BiomedClipModel(torch.nn.Module):
    """The converted model: ``ViTModel`` + linear head, ``BertModel`` + projection, ``logit_scale``.

    Attributes:
        vision_model (transformers.ViTModel): the timm ViT trunk (no pooler); its
            ``last_hidden_state`` is after the final layer norm, CLS token first.
        visual_projection (torch.nn.Linear): width -> joint space, no bias.
        text_model (transformers.BertModel): the text tower (no pooler).
        text_projection (torch.nn.Module): CLS hidden state -> joint space (MLP or linear).
        logit_scale (torch.nn.Parameter): log of the softmax temperature's inverse, scalar.
        context_length (int): most tokens the text tower reads.
    """

    def __init__(self, vision_config: Any, text_config: Any, embed_dim: int, projection: str) -> None:
        from transformers import BertModel, ViTModel

        super().__init__()
        self.vision_model = ViTModel(vision_config, add_pooling_layer=False)
        self.visual_projection = torch.nn.Linear(vision_config.hidden_size, embed_dim, bias=False)
        self.text_model = BertModel(text_config, add_pooling_layer=False)
        width = text_config.hidden_size
        if projection == "mlp":
            hidden = (width + embed_dim) // 2
            self.text_projection: torch.nn.Module = torch.nn.Sequential(
                torch.nn.Linear(width, hidden, bias=False), torch.nn.GELU(), torch.nn.Linear(hidden, embed_dim, bias=False))
        else:
            self.text_projection = torch.nn.Linear(width, embed_dim, bias=False)
        self.logit_scale = torch.nn.Parameter(torch.zeros(()))
        self.context_length = int(text_config.max_position_embeddings)

    def text_features(self, input_ids: torch.Tensor, attention_mask: torch.Tensor) -> torch.Tensor:
        """(n, D) joint-space text embeddings: CLS of the last hidden state, projected (not normalised)."""
        out = self.text_model(input_ids=input_ids, attention_mask=attention_mask)
        return self.text_projection(out.last_hidden_state[:, 0])


def is_openclip_folder(reference: str) -> bool:
    """True when ``reference`` is a folder holding an ``open_clip_config.json``."""
    return os.path.isdir(reference) and os.path.isfile(os.path.join(reference, CONFIG_FILE))


def _first(keys: list[str]) -> str:
    return ", ".join(sorted(keys)[:4]) + (" ..." if len(keys) > 4 else "")


def _released(key: str) -> str:
    """A converted text-tower key under its name in the released file (others unchanged)."""
    return "text.transformer." + key.removeprefix("text_model.") if key.startswith("text_model.") else key


def _count_blocks(state: Mapping[str, torch.Tensor], pattern: re.Pattern[str]) -> int:
    found = {int(m.group(1)) for k in state if (m := pattern.match(k))}
    return max(found) + 1 if found else 0


def openclip_to_hf(state: Mapping[str, torch.Tensor], projection: str = "mlp", *,
                   name: str = "state dict") -> tuple[dict[str, torch.Tensor], dict[str, Any]]:
    """Rename an OpenCLIP timm-ViT + HF-BERT state dict to :class:`BiomedClipModel` keys.

    Args:
        state: OpenCLIP-layout tensors (see the module docstring).
        projection (str): the text projection type, ``"mlp"`` or ``"linear"``. Default: "mlp".
        name (str): what to call it in messages (e.g. the file). Default: "state dict".

    Returns:
        tuple: ``(hf_state, shapes)``: converted tensors and the architecture read from
        the shapes (``vision`` / ``text`` dicts of config values, ``embed_dim``).

    Raises:
        ModelLoadError: missing or unexpected keys (the first few named).
    """
    state = {k.removeprefix("module."): v for k, v in state.items() if not _DROPPED.match(k.removeprefix("module."))}
    needed = {*_PLAIN, *_PROJECTIONS[projection], "visual.trunk.blocks.0.attn.qkv.weight",
              "visual.trunk.blocks.0.mlp.fc1.weight", "text.transformer.embeddings.word_embeddings.weight",
              "text.transformer.embeddings.position_embeddings.weight",
              "text.transformer.embeddings.token_type_embeddings.weight",
              "text.transformer.encoder.layer.0.intermediate.dense.weight"}
    missing = sorted(needed - set(state))
    if missing:
        raise ModelLoadError(f"{name} is not an OpenCLIP timm-ViT + BERT state dict: missing keys {_first(missing)}")
    hf: dict[str, torch.Tensor] = {}
    unexpected: list[str] = []
    plain = {**_PLAIN, **_PROJECTIONS[projection]}
    for key, value in state.items():
        if key in plain:
            hf[plain[key]] = value
        elif key.startswith("text.transformer."):
            hf["text_model." + key.removeprefix("text.transformer.")] = value
        elif (match := _BLOCK.match(key)) is not None:
            base, (module, _, kind) = f"vision_model.layers.{match.group(1)}.", match.group(2).rpartition(".")
            if module == "attn.qkv" and kind in ("weight", "bias"):
                for part, chunk in zip("qkv", value.chunk(3, dim=0)):
                    hf[f"{base}attention.{part}_proj.{kind}"] = chunk.contiguous()
            elif module in _BLOCK_MAP and kind in ("weight", "bias"):
                hf[f"{base}{_BLOCK_MAP[module]}.{kind}"] = value
            else:
                unexpected.append(key)
        else:
            unexpected.append(key)
    if unexpected:
        raise ModelLoadError(f"{name} has keys that are not OpenCLIP timm-ViT + BERT's: {_first(unexpected)}")
    width, _, patch, _ = state["visual.trunk.patch_embed.proj.weight"].shape
    grid = round((state["visual.trunk.pos_embed"].shape[1] - 1) ** 0.5)
    words, text_width = state["text.transformer.embeddings.word_embeddings.weight"].shape
    shapes = {
        "embed_dim": int(state["visual.head.proj.weight"].shape[0]),
        "vision": {
            "hidden_size": int(width), "num_hidden_layers": _count_blocks(state, _BLOCK),
            "num_attention_heads": max(1, int(width) // 64),
            "intermediate_size": int(state["visual.trunk.blocks.0.mlp.fc1.weight"].shape[0]),
            "patch_size": int(patch), "image_size": int(patch) * grid,
        },
        "text": {
            "vocab_size": int(words), "hidden_size": int(text_width),
            "num_hidden_layers": _count_blocks(state, re.compile(r"^text\.transformer\.encoder\.layer\.(\d+)\.")),
            "num_attention_heads": max(1, int(text_width) // 64),
            "intermediate_size": int(state["text.transformer.encoder.layer.0.intermediate.dense.weight"].shape[0]),
            "max_position_embeddings": int(state["text.transformer.embeddings.position_embeddings.weight"].shape[0]),
            "type_vocab_size": int(state["text.transformer.embeddings.token_type_embeddings.weight"].shape[0]),
        },
    }
    return hf, shapes


def _model_config(path: str, name: str) -> tuple[dict[str, Any], dict[str, Any]]:
    """``(model_cfg, preprocess_cfg)`` of an ``open_clip_config.json``, refusing what is not BiomedCLIP-shaped."""
    raw = read_json(path, what="OpenCLIP config")
    cfg = raw.get("model_cfg") if isinstance(raw, dict) else None
    if not isinstance(cfg, dict) or not isinstance(cfg.get("vision_cfg"), dict) or not isinstance(cfg.get("text_cfg"), dict):
        raise ModelLoadError(f"{path!r} has no model_cfg with vision_cfg and text_cfg; it is not an OpenCLIP config.")
    vision, text = cfg["vision_cfg"], cfg["text_cfg"]
    checks = [
        ("vision_cfg.timm_model_name", str(vision.get("timm_model_name", "")).startswith("vit_"), "a timm ViT (vit_*)"),
        ("vision_cfg.timm_pool", vision.get("timm_pool", "") in ("", "token"), "'' or 'token' (CLS pooling)"),
        ("vision_cfg.timm_proj", vision.get("timm_proj") == "linear", "'linear'"),
        ("vision_cfg.timm_proj_bias", not vision.get("timm_proj_bias", False), "false"),
        ("text_cfg.hf_model_name", "bert" in str(text.get("hf_model_name", "")).lower(), "a BERT model"),
        ("text_cfg.pooler_type", text.get("pooler_type") == "cls_last_hidden_state_pooler",
         "'cls_last_hidden_state_pooler'"),
        ("text_cfg.proj", text.get("proj") in _PROJECTIONS, "'mlp' or 'linear'"),
    ]
    for field, ok, expected in checks:
        if not ok:
            head, _, leaf = field.partition(".")
            raise ModelLoadError(f"model {name!r}: {path!r} {field} is {cfg[head].get(leaf)!r}; this loader reads "
                                 f"{expected} (the BiomedCLIP layout).")
    preprocess = raw.get("preprocess_cfg", {})
    return cfg, preprocess if isinstance(preprocess, dict) else {}


def _local_folder(source: str, name: str, local_files_only: bool) -> str:
    """``source`` when it is a folder, else the Hub snapshot folder of the three kinds of files."""
    if os.path.isdir(source):
        return source
    from huggingface_hub import snapshot_download

    patterns = [CONFIG_FILE, WEIGHTS_FILE, "*.json", "vocab.txt"]
    try:
        return snapshot_download(source, allow_patterns=patterns, local_files_only=True)
    except Exception:  # not cached (or a partial cache): download unless told not to
        if local_files_only:
            raise ModelLoadError(f"cannot load model {name!r}: {source!r} is not in the local Hugging Face cache and "
                                 "local files only was asked; download it once with network, or pass its folder.") from None
    check_hub_access(source, name, local_files_only)
    return load_step(lambda: snapshot_download(source, allow_patterns=patterns), name, source)


class BiomedClipAdapter(DualEncoderAdapter):
    """:class:`BiomedClipModel` behind the dual-encoder surfaces (CLIP's 2-way softmax).

    The image embedding is the CLS token after the final layer norm, through the
    linear head; patch tokens reach the joint space the same way. Attention and
    layer methods read the ViT blocks (``vision_model.layers``).
    """

    family = "openclip"
    cls_token = True
    patch_recipe: ClassVar[str] = "BiomedCLIP: final layer norm + linear head of the patch tokens (as of the CLS token)"

    @property
    def image_size(self) -> int:
        return int(self.model.vision_model.config.image_size)

    @property
    def patch_size(self) -> int:
        return int(self.model.vision_model.config.patch_size)

    @property
    def num_attention_heads(self) -> int:
        return int(self.model.vision_model.config.num_attention_heads)

    def vision_layers(self) -> list[torch.nn.Module]:
        return list(self.model.vision_model.layers)

    def _text_features(self, prompts: list[str]) -> torch.Tensor:
        encoded = self.tokenizer(prompts, padding=True, truncation=True, max_length=self.model.context_length,
                                 return_tensors="pt")
        ids = encoded["input_ids"].to(self.device)
        return self.model.text_features(ids, (ids != self.tokenizer.pad_token_id).long())

    def _vision(self, pixels: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        tokens = self.model.visual_projection(self.model.vision_model(pixel_values=pixels).last_hidden_state)
        return tokens[:, 0], tokens[:, 1:]

    def _vision_attentions(self, pixels: torch.Tensor) -> tuple[torch.Tensor, list[torch.Tensor]]:
        vision = self.model.vision_model
        before = vision.config._attn_implementation
        vision.set_attn_implementation("eager")
        try:
            out = vision(pixel_values=pixels, output_attentions=True)
        finally:
            vision.set_attn_implementation(before)
        return self.model.visual_projection(out.last_hidden_state[:, 0]), list(out.attentions)

    def _log_probs(self, image: torch.Tensor, positive: torch.Tensor, negative: torch.Tensor) -> torch.Tensor:
        return clip_log_probs(self.model.logit_scale, image, positive, negative)


def load_biomedclip(
    source: str,
    options: LoadOptions,
    *,
    name: str | None = None,
    prompts: PromptPair | None = None,
    threshold: float = DEFAULT_THRESHOLD,
) -> BiomedClipAdapter:
    """Load an OpenCLIP BiomedCLIP checkpoint (folder or Hub id) as a :class:`BiomedClipAdapter`.

    Args:
        source (str): a folder with ``open_clip_config.json``, ``open_clip_pytorch_model.bin``
            and the tokenizer files, or a Hugging Face id (read from the local cache
            first). The weights are loaded with ``weights_only=True``.
        options (LoadOptions): dtype, device, working size, ``local_files_only``.
        name (str | None): the reference for messages (a registry key). Default: ``source``.
        prompts (PromptPair | None): templates. Default: ``"{finding}"`` / ``"no {finding}"``.
        threshold (float): p(positive) for "Yes", in (0, 1). Default: 0.5.

    Returns:
        BiomedClipAdapter: model in eval mode, parameters frozen.

    Raises:
        ModelLoadError: files missing (offline: one line naming key and id), a config that
            is not the BiomedCLIP layout, shapes that disagree with it, or missing /
            unexpected weight keys (the first few named).
    """
    from transformers import AutoTokenizer, BertConfig, ViTConfig

    name = name or source
    folder = _local_folder(source, name, options.local_files_only)
    config_path, weights_path = os.path.join(folder, CONFIG_FILE), os.path.join(folder, WEIGHTS_FILE)
    for path in (config_path, weights_path):
        if not os.path.isfile(path):
            raise ModelLoadError(f"model {name!r}: {folder!r} has no {os.path.basename(path)}; an OpenCLIP BiomedCLIP "
                                 f"folder holds {CONFIG_FILE}, {WEIGHTS_FILE} and the tokenizer files.")
    cfg, preprocess = _model_config(config_path, name)
    projection = cfg["text_cfg"]["proj"]
    state = read_state_dict(weights_path, what="OpenCLIP weights file", max_bytes=MAX_WEIGHTS_BYTES)
    hf, shapes = openclip_to_hf(state, projection, name=repr(weights_path))
    declared = {"embed_dim": (cfg.get("embed_dim"), shapes["embed_dim"]),
                "vision_cfg.image_size": (cfg["vision_cfg"].get("image_size", shapes["vision"]["image_size"]),
                                          shapes["vision"]["image_size"]),
                "text_cfg.context_length": (cfg["text_cfg"].get("context_length", shapes["text"]["max_position_embeddings"]),
                                            shapes["text"]["max_position_embeddings"])}
    for field, (said, found) in declared.items():
        if said != found:
            raise ModelLoadError(f"model {name!r}: {config_path!r} says {field} = {said!r} but the weights have {found}.")
    tokenizer = load_step(lambda: AutoTokenizer.from_pretrained(folder, local_files_only=True), name, folder)
    vision = ViTConfig(**shapes["vision"], hidden_act="gelu", layer_norm_eps=_VIT_EPS, qkv_bias=True,
                       hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    text = BertConfig(**shapes["text"], hidden_act="gelu", layer_norm_eps=_BERT_EPS, pad_token_id=tokenizer.pad_token_id,
                      hidden_dropout_prob=0.0, attention_probs_dropout_prob=0.0)
    model = BiomedClipModel(vision, text, shapes["embed_dim"], projection)
    expected = set(model.state_dict())
    absent, extra = sorted(expected - set(hf)), sorted(set(hf) - expected)
    if absent or extra:  # text keys are named as in the file; the rest as in the converted model
        problems = [f"lacks {_first([_released(k) for k in absent])}"] if absent else []
        if extra:
            problems.append(f"has keys that are not OpenCLIP timm-ViT + BERT's: {_first([_released(k) for k in extra])}")
        raise ModelLoadError(f"model {name!r}: {weights_path!r} {'; '.join(problems)}")
    hf["logit_scale"] = hf["logit_scale"].reshape(())
    try:
        model.load_state_dict(hf, strict=True)
    except RuntimeError as exc:  # a tensor whose shape disagrees with the others
        raise ModelLoadError(f"model {name!r}: {weights_path!r} does not fit together: "
                             f"{' '.join(str(exc).split())[:300]}") from exc
    device, dtype = resolve_device_dtype(options)
    model.to(dtype=dtype)
    if device is not None:
        model.to(device)
    model.eval().requires_grad_(False)
    return BiomedClipAdapter(
        name, model, options, tokenizer=tokenizer, image_mean=preprocess.get("mean", _OPENAI_MEAN),
        image_std=preprocess.get("std", _OPENAI_STD),
        resample="bilinear" if preprocess.get("interpolation") == "bilinear" else "bicubic",
        prompts=prompts, threshold=threshold,
        note=f"OpenCLIP checkpoint converted to ViTModel + BertModel; {type(tokenizer).__name__}",
    )
