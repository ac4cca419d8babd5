"""The embedded model folders: small, fp32, real classes, one-token answers (fast checks)."""

from __future__ import annotations

from pathlib import Path

import pytest
import torch
from safetensors.torch import load_file

from cxr_attrib.models import load_adapter
from cxr_attrib.registry import model_cards

CLASSES = {"phantom-qwen": "Qwen2_5_VLForConditionalGeneration", "phantom-gemma": "Gemma3ForConditionalGeneration"}


@pytest.mark.parametrize("key", sorted(CLASSES))
def test_embedded_folder_is_at_most_5_mb_of_fp32_safetensors(key):
    folder = Path(model_cards()[key].source)
    size = sum(p.stat().st_size for p in folder.iterdir())
    assert size <= 5_000_000, f"{key}: {size:,} bytes"
    weights = load_file(folder / "model.safetensors")
    assert all(t.dtype == torch.float32 for t in weights.values())
    assert {"config.json", "tokenizer.json", "chat_template.jinja"} <= {p.name for p in folder.iterdir()}


@pytest.mark.parametrize("key", sorted(CLASSES))
def test_embedded_model_is_the_real_class_with_one_token_answers(key):
    adapter = load_adapter(key)
    assert type(adapter.model).__name__ == CLASSES[key]
    assert adapter.grid == (8, 8)
    lengths = [len(adapter.tokenizer(word, add_special_tokens=False)["input_ids"]) for word in ("Yes", "No")]
    assert lengths == [1, 1], "the direct answer is one token, as in the real vocabularies"
