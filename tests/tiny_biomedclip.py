"""A tiny random BiomedCLIP checkpoint in OpenCLIP's released layout, written offline for the tests.

The key names are spelled out here from the released file's layout (timm ViT trunk under
``visual.trunk``, ``visual.head.proj``, a BERT under ``text.transformer`` with its unused
pooler and the old ``position_ids`` buffer, the MLP ``text.proj``, ``logit_scale``), not
taken from the loader, so a wrong name in the loader's map fails the tests.
"""

from __future__ import annotations

import json
from pathlib import Path

import torch

VOCAB = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]", "no", "there", "is", "evidence", "of", "pleural", "effusion",
         "nodule", "mass", "pneumothorax", "cardiomegaly", "consolidation", "opacity", "a", "chest", "x", "-", "ray"]
SIZES = {"width": 128, "layers": 2, "mlp": 96, "patch": 32, "image": 224, "text_width": 64, "text_layers": 2,
         "text_mlp": 80, "context": 16, "embed": 48}
MEAN, STD = [0.5, 0.45, 0.4], [0.25, 0.26, 0.27]


def tiny_bert_config():
    """The tiny text tower's BertConfig (heads = width / 64, as the loader assumes)."""
    from transformers import BertConfig

    return BertConfig(vocab_size=len(VOCAB), hidden_size=SIZES["text_width"], num_hidden_layers=SIZES["text_layers"],
                      num_attention_heads=SIZES["text_width"] // 64, intermediate_size=SIZES["text_mlp"],
                      max_position_embeddings=SIZES["context"], type_vocab_size=2, pad_token_id=0)


def tiny_state_dict(seed: int = 0) -> dict[str, torch.Tensor]:
    """Random tensors under the released BiomedCLIP key names (small dims)."""
    from transformers import BertModel

    g = torch.Generator().manual_seed(seed)

    def rand(*shape: int, scale: float = 0.1, centre: float = 0.0) -> torch.Tensor:
        return centre + scale * torch.randn(*shape, generator=g)

    w, m, p, s = SIZES["width"], SIZES["mlp"], SIZES["patch"], SIZES["image"]
    tokens = (s // p) ** 2 + 1
    state = {
        "visual.trunk.cls_token": rand(1, 1, w, scale=0.5),
        "visual.trunk.pos_embed": rand(1, tokens, w, scale=0.5),
        "visual.trunk.patch_embed.proj.weight": rand(w, 3, p, p, scale=0.02),
        "visual.trunk.patch_embed.proj.bias": rand(w),
        "visual.trunk.norm.weight": rand(w, centre=1.0), "visual.trunk.norm.bias": rand(w),
        "visual.head.proj.weight": rand(SIZES["embed"], w),
    }
    for i in range(SIZES["layers"]):
        b = f"visual.trunk.blocks.{i}."
        state.update({
            b + "norm1.weight": rand(w, centre=1.0), b + "norm1.bias": rand(w),
            b + "attn.qkv.weight": rand(3 * w, w), b + "attn.qkv.bias": rand(3 * w),
            b + "attn.proj.weight": rand(w, w), b + "attn.proj.bias": rand(w),
            b + "norm2.weight": rand(w, centre=1.0), b + "norm2.bias": rand(w),
            b + "mlp.fc1.weight": rand(m, w), b + "mlp.fc1.bias": rand(m),
            b + "mlp.fc2.weight": rand(w, m), b + "mlp.fc2.bias": rand(w),
        })
    torch.manual_seed(seed)
    bert = BertModel(tiny_bert_config(), add_pooling_layer=True)  # the released file still holds the pooler
    for key, value in bert.state_dict().items():
        state["text.transformer." + key] = value.clone()
    state["text.transformer.embeddings.position_ids"] = torch.arange(SIZES["context"])[None]
    tw, e = SIZES["text_width"], SIZES["embed"]
    state["text.proj.0.weight"] = rand((tw + e) // 2, tw, scale=0.3)
    state["text.proj.2.weight"] = rand(e, (tw + e) // 2, scale=0.3)
    state["logit_scale"] = torch.tensor(1.5)
    return state


def open_clip_config() -> dict:
    """BiomedCLIP's open_clip_config.json with the tiny sizes."""
    return {
        "model_cfg": {
            "embed_dim": SIZES["embed"],
            "vision_cfg": {"timm_model_name": "vit_tiny_patch32_224", "timm_model_pretrained": False, "timm_pool": "",
                           "timm_proj": "linear", "image_size": SIZES["image"]},
            "text_cfg": {"hf_model_name": "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract",
                         "hf_tokenizer_name": "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract", "proj": "mlp",
                         "pooler_type": "cls_last_hidden_state_pooler", "context_length": SIZES["context"]},
        },
        "preprocess_cfg": {"mean": MEAN, "std": STD},
    }


def save_tiny_biomedclip(folder: Path, seed: int = 0, state: dict[str, torch.Tensor] | None = None) -> Path:
    """Write config, weights (``torch.save``) and a BERT WordPiece tokenizer into ``folder``."""
    from transformers import BertTokenizer

    folder.mkdir(parents=True, exist_ok=True)
    (folder / "open_clip_config.json").write_text(json.dumps(open_clip_config()))
    torch.save(tiny_state_dict(seed) if state is None else state, folder / "open_clip_pytorch_model.bin")
    BertTokenizer(vocab={word: i for i, word in enumerate(VOCAB)}, do_lower_case=True).save_pretrained(folder)
    return folder
