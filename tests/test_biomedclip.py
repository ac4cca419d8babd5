"""BiomedCLIP without open_clip: an OpenCLIP-layout tiny checkpoint, converted on load.

The reference forward below is written from the state-dict tensors (timm's ViT: pre-norm
blocks, fused qkv, LayerNorm eps 1e-6, exact GELU, CLS after the final norm, linear head;
BERT through transformers, CLS of the last hidden state, MLP projection), independently
of the loader's transformers modules.
"""

from __future__ import annotations

import json
import shutil

import numpy as np
import pytest
import torch
from tiny_biomedclip import MEAN, SIZES, STD, VOCAB, save_tiny_biomedclip, tiny_bert_config, tiny_state_dict

from cxr_attrib import attribute
from cxr_attrib.adapter import LoadOptions, Query
from cxr_attrib.errors import ModelLoadError
from cxr_attrib.models import load_adapter
from cxr_attrib.targets import build_prompt
from cxr_attrib.testing.tiny_models import load_tiny_adapter

QUESTION = "Is there evidence of pleural effusion in the image?"
OPTIONS = LoadOptions(dtype="float32", device="cpu", local_files_only=True)
F = torch.nn.functional


def query(answer: str) -> Query:
    return Query(QUESTION, "direct", build_prompt(QUESTION, "direct"), answer)


def images(count: int, seed: int = 0) -> list[np.ndarray]:
    """Working-frame images on the 1/255 lattice (what ``attribute`` makes of any image)."""
    rng = np.random.default_rng(seed)
    return [(rng.integers(0, 256, (224, 224)) / 255.0).astype(np.float32) for _ in range(count)]


@pytest.fixture(scope="module")
def folder(tmp_path_factory):
    return save_tiny_biomedclip(tmp_path_factory.mktemp("biomedclip") / "tiny", seed=4)


@pytest.fixture(scope="module")
def adapter(folder):
    return load_tiny_adapter(folder)


def reference_vision(state: dict[str, torch.Tensor], grey: np.ndarray) -> torch.Tensor:
    """(L, E) every token of timm's ViT after the final norm, through the linear head."""
    x = torch.from_numpy(np.stack([grey] * 3))[None]
    x = (x - torch.tensor(MEAN)[None, :, None, None]) / torch.tensor(STD)[None, :, None, None]
    v = "visual.trunk."
    x = F.conv2d(x, state[v + "patch_embed.proj.weight"], state[v + "patch_embed.proj.bias"], stride=SIZES["patch"])
    x = torch.cat([state[v + "cls_token"], x.flatten(2).transpose(1, 2)], 1) + state[v + "pos_embed"]
    width = SIZES["width"]
    heads, dim = width // 64, 64
    for i in range(SIZES["layers"]):
        b = f"{v}blocks.{i}."
        h = F.layer_norm(x, (width,), state[b + "norm1.weight"], state[b + "norm1.bias"], eps=1e-6)
        qkv = (h @ state[b + "attn.qkv.weight"].T + state[b + "attn.qkv.bias"]).reshape(1, -1, 3, heads, dim)
        q, k, val = qkv.permute(2, 0, 3, 1, 4)
        mixed = (torch.softmax(q @ k.transpose(-1, -2) / dim**0.5, -1) @ val).transpose(1, 2).reshape(1, -1, width)
        x = x + mixed @ state[b + "attn.proj.weight"].T + state[b + "attn.proj.bias"]
        h = F.layer_norm(x, (width,), state[b + "norm2.weight"], state[b + "norm2.bias"], eps=1e-6)
        h = F.gelu(h @ state[b + "mlp.fc1.weight"].T + state[b + "mlp.fc1.bias"])
        x = x + h @ state[b + "mlp.fc2.weight"].T + state[b + "mlp.fc2.bias"]
    x = F.layer_norm(x, (width,), state[v + "norm.weight"], state[v + "norm.bias"], eps=1e-6)
    return x[0] @ state["visual.head.proj.weight"].T


def reference_text(state: dict[str, torch.Tensor], prompts: list[str]) -> torch.Tensor:
    """(n, E) CLS of BERT's last hidden state through the MLP projection."""
    from transformers import BertModel

    bert = BertModel(tiny_bert_config(), add_pooling_layer=False).eval()
    bert.load_state_dict({k.removeprefix("text.transformer."): t for k, t in state.items()
                          if k.startswith("text.transformer.") and ".pooler." not in k and "position_ids" not in k})
    vocab = {word: i for i, word in enumerate(VOCAB)}
    rows = [[vocab["[CLS]"], *(vocab[w] for w in p.split()), vocab["[SEP]"]] for p in prompts]
    longest = max(map(len, rows))
    ids = torch.tensor([r + [0] * (longest - len(r)) for r in rows])
    cls = bert(input_ids=ids, attention_mask=(ids != 0).long()).last_hidden_state[:, 0]
    return F.gelu(cls @ state["text.proj.0.weight"].T) @ state["text.proj.2.weight"].T


def test_scalar_equals_the_hand_written_open_clip_forward(adapter):
    state = tiny_state_dict(seed=4)
    batch = images(2)
    with torch.no_grad():
        image = torch.stack([reference_vision(state, grey)[0] for grey in batch])
        text = reference_text(state, ["pleural effusion", "no pleural effusion"])
        cos = F.normalize(image, dim=-1) @ F.normalize(text, dim=-1).T
        expected = torch.log_softmax(state["logit_scale"].exp() * cos, dim=-1)
    assert expected[:, 0].exp().sub(0.5).abs().max() > 1e-3  # the prompts are told apart
    torch.testing.assert_close(adapter.score(batch, query("Yes")), expected[:, :1], atol=1e-5, rtol=0)
    torch.testing.assert_close(adapter.score(batch, query("No")), expected[:, 1:], atol=1e-5, rtol=0)
    assert (adapter.family, type(adapter).__name__, adapter.geometry.patch_grid) == ("openclip", "BiomedClipAdapter",
                                                                                      (7, 7))


def test_similarity_map_is_the_hand_cosine_of_the_patch_tokens(adapter):
    state = tiny_state_dict(seed=4)
    grey = images(1, seed=3)[0]
    result = attribute(adapter, grey, QUESTION, method="similarity_map", answer="Yes", sigma=0.0)
    with torch.no_grad():
        patches = reference_vision(state, grey)[1:]
        text = reference_text(state, ["pleural effusion"])
    expected = F.cosine_similarity(patches, text, dim=-1).reshape(7, 7).numpy()
    np.testing.assert_allclose(result.grid, expected, atol=1e-5)
    assert result.meta.info["prompt"] == "pleural effusion"


def test_attention_reads_the_cls_row_of_every_vit_block(adapter):
    maps = adapter.attention(images(1)[0], query("Yes"), layers=[0, 1])
    assert list(maps.rows) == [0] and set(maps.maps) == {0, 1}
    assert maps.maps[1].shape == (1, 50)
    torch.testing.assert_close(maps.maps[1].sum(-1), torch.ones(1))


@pytest.mark.parametrize("old, new, named", [
    ("visual.trunk.blocks.1.mlp.fc2.weight", "visual.trunk.blocks.1.mlp.fc3.weight", ["mlp.fc3.weight"]),
    ("text.transformer.encoder.layer.1.output.dense.weight", "text.transformer.encoder.layer.1.output.dens.weight",
     ["lacks text.transformer.encoder.layer.1.output.dense.weight", "text.transformer.encoder.layer.1.output.dens.weight"]),
    ("visual.head.proj.weight", "visual.head.projection.weight", ["missing keys visual.head.proj.weight"]),
])
def test_a_renamed_key_is_refused_naming_it(old, new, named, tmp_path):
    state = tiny_state_dict(seed=4)
    state[new] = state.pop(old)
    with pytest.raises(ModelLoadError) as info:
        load_tiny_adapter(save_tiny_biomedclip(tmp_path / "renamed", state=state))
    message = str(info.value)
    assert all(part in message for part in named) and "\n" not in message


def test_a_config_that_is_not_the_biomedclip_layout_is_refused_naming_the_field(folder, tmp_path):
    copy = tmp_path / "other"
    shutil.copytree(folder, copy)
    config = json.loads((copy / "open_clip_config.json").read_text())
    config["model_cfg"]["text_cfg"]["pooler_type"] = "mean_pooler"
    (copy / "open_clip_config.json").write_text(json.dumps(config))
    with pytest.raises(ModelLoadError, match="text_cfg.pooler_type is 'mean_pooler'") as info:
        load_tiny_adapter(copy)
    assert "\n" not in str(info.value)


def test_registry_key_loads_from_the_hugging_face_cache_and_fails_in_one_line_without(folder, tmp_path, monkeypatch):
    import huggingface_hub.constants as hub

    from cxr_attrib.registry import model_cards

    with pytest.raises(ModelLoadError) as info:
        load_adapter("biomedclip", OPTIONS)
    assert "\n" not in str(info.value) and "biomedclip" in str(info.value)
    source = model_cards()["biomedclip"].source
    repo = tmp_path / f"models--{source.replace('/', '--')}"
    shutil.copytree(folder, repo / "snapshots" / ("0" * 40))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path))
    by_key = load_adapter("biomedclip", LoadOptions(dtype="float32", device="cpu"))
    by_hub_id = load_adapter(source, LoadOptions(dtype="float32", device="cpu"))  # no config.json: not a transformers repo
    by_folder = load_tiny_adapter(folder)
    assert (by_key.name, by_key.family) == ("biomedclip", "openclip")
    batch = images(1, seed=7)
    torch.testing.assert_close(by_key.score(batch, query("Yes")), by_folder.score(batch, query("Yes")), atol=0, rtol=0)
    torch.testing.assert_close(by_hub_id.score(batch, query("Yes")), by_folder.score(batch, query("Yes")), atol=0, rtol=0)
