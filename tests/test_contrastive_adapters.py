"""The contrastive (CLIP-style) adapter family: loading, the explained scalar, the answer, bad input.

The explained scalar is checked against a hand computation from the model's own
``get_image_features`` / ``get_text_features`` and the image processor's pixels; the
CheXzero key map against an independent inverse written here.
"""

from __future__ import annotations

import numpy as np
import pytest
import torch
from click.testing import CliRunner
from PIL import Image

from cxr_attrib import attribute
from cxr_attrib.adapter import LoadOptions, Query
from cxr_attrib.cli import cli
from cxr_attrib.contrastive import PromptPair, check_threshold, finding_from_query
from cxr_attrib.errors import InputError, ModelLoadError
from cxr_attrib.models import load_adapter
from cxr_attrib.targets import TargetError, build_prompt
from cxr_attrib.testing.tiny_models import load_tiny_adapter
from cxr_attrib_adapters.contrastive.chexzero import load_chexzero, openai_to_hf
from cxr_attrib_adapters.contrastive.hf import load_dual_encoder
from cxr_attrib_adapters.contrastive.tiny import save_tiny_dual_encoder

QUESTION = "Is there evidence of pleural effusion in the image?"
OPTIONS = LoadOptions(dtype="float32", device="cpu", local_files_only=True)


def query(answer: str = "Yes", question: str = QUESTION) -> Query:
    return Query(question, "direct", build_prompt(question, "direct"), answer)


def images(count: int, seed: int = 0) -> list[np.ndarray]:
    """Working-frame images that are exact multiples of 1/255 (so the processor's uint8 path is exact)."""
    rng = np.random.default_rng(seed)
    return [(rng.integers(0, 256, (224, 224)) / 255.0).astype(np.float32) for _ in range(count)]


def processor_pixels(adapter, batch: list[np.ndarray]) -> torch.Tensor:
    """Pixels from the checkpoint's own image processor (PIL path), as an independent reference."""
    from transformers import AutoImageProcessor

    processor = AutoImageProcessor.from_pretrained(adapter.folder, backend="pil")
    rgb = [Image.fromarray(np.round(i * 255).astype(np.uint8)).convert("RGB") for i in batch]
    return processor(images=rgb, return_tensors="pt")["pixel_values"]


def _features(output):
    return output if isinstance(output, torch.Tensor) else output.pooler_output


@pytest.fixture(scope="module")
def folders(tmp_path_factory):
    root = tmp_path_factory.mktemp("dual")
    return {family: save_tiny_dual_encoder(family, root / family) for family in ("clip", "siglip")}


@pytest.fixture(scope="module")
def clip(folders):
    adapter = load_tiny_adapter(folders["clip"])
    adapter.folder = folders["clip"]
    return adapter


@pytest.fixture(scope="module")
def siglip(folders):
    adapter = load_tiny_adapter(folders["siglip"])
    adapter.folder = folders["siglip"]
    return adapter


def test_folders_resolve_to_the_family_of_their_class(clip, siglip):
    assert (clip.family, type(clip.model).__name__) == ("clip", "CLIPModel")
    assert (siglip.family, type(siglip.model).__name__) == ("siglip", "SiglipModel")


def test_clip_scalar_equals_hand_computation_from_the_models_own_features(clip):
    batch = images(3)
    pixels = processor_pixels(clip, batch)
    torch.testing.assert_close(clip.pixel_inputs(batch), pixels, atol=1e-5, rtol=0)
    model, tokenizer = clip.model, clip.tokenizer
    with torch.no_grad():
        img = _features(model.get_image_features(pixel_values=pixels))
        txt = _features(model.get_text_features(**tokenizer(["pleural effusion", "no pleural effusion"],
                                                            padding=True, return_tensors="pt")))
        cos = torch.nn.functional.normalize(img, dim=-1) @ torch.nn.functional.normalize(txt, dim=-1).T
        expected = torch.log_softmax(model.logit_scale.exp() * cos, dim=-1)
    torch.testing.assert_close(clip.score(batch, query("Yes")), expected[:, :1], atol=1e-5, rtol=0)
    torch.testing.assert_close(clip.score(batch, query("No")), expected[:, 1:], atol=1e-5, rtol=0)


def test_siglip_scalar_is_the_pairwise_sigmoid_with_bias(siglip):
    batch = images(2, seed=1)
    pixels = processor_pixels(siglip, batch)
    torch.testing.assert_close(siglip.pixel_inputs(batch), pixels, atol=1e-5, rtol=0)
    model, tokenizer = siglip.model, siglip.tokenizer
    with torch.no_grad():
        img = _features(model.get_image_features(pixel_values=pixels))
        tokens = tokenizer(["pleural effusion"], padding="max_length", max_length=16, return_tensors="pt")
        txt = _features(model.get_text_features(input_ids=tokens["input_ids"]))
        cos = torch.nn.functional.normalize(img, dim=-1) @ torch.nn.functional.normalize(txt, dim=-1).T
        logit = model.logit_scale.exp() * cos + model.logit_bias
    torch.testing.assert_close(siglip.score(batch, query("Yes")), torch.nn.functional.logsigmoid(logit),
                               atol=1e-5, rtol=0)
    torch.testing.assert_close(siglip.score(batch, query("No")), torch.nn.functional.logsigmoid(-logit),
                               atol=1e-5, rtol=0)


def test_a_batch_of_64_encodes_the_text_once(clip):
    batch = images(64, seed=2)
    fresh = query(question="Is there evidence of mass in the image?")
    before, calls = clip.text_encodings, clip.counter.forward_calls
    scores = clip.score(batch, fresh)
    assert scores.shape == (64, 1)
    assert clip.text_encodings - before == 1
    assert clip.counter.forward_calls - calls == 1
    clip.score(batch[:2], fresh)
    assert clip.text_encodings - before == 1  # cached per prompt


def test_bare_phrase_and_question_explain_the_same_scalar(clip):
    batch = images(2, seed=3)
    torch.testing.assert_close(clip.score(batch, query(question="pleural effusion")), clip.score(batch, query()))


def test_answer_comes_from_the_threshold(folders, clip):
    image = images(1, seed=4)[0]
    p = float(clip.p_positive([image], query()))
    prompt = build_prompt(QUESTION, "direct")
    expected = "Yes" if p >= 0.5 else "No"
    generation = clip.generate(image, prompt)
    assert generation.text == expected
    assert generation.logprobs[0] == pytest.approx(np.log(p if expected == "Yes" else 1 - p), abs=1e-5)
    strict = load_dual_encoder(str(folders["clip"]), OPTIONS, threshold=min(0.999, p + 1e-3))
    lenient = load_dual_encoder(str(folders["clip"]), OPTIONS, threshold=max(0.001, p - 1e-3))
    assert (strict.generate(image, prompt).text, lenient.generate(image, prompt).text) == ("No", "Yes")


def test_attribute_records_the_answer_logprob_and_counts_the_answer_as_a_generation(clip):
    image = np.round(images(1, seed=5)[0] * 255).astype(np.uint8)
    result = attribute(clip, image, QUESTION, method="occlusion", tiles=2)
    p = float(clip.p_positive([image.astype(np.float32) / 255], query()))
    chosen = p if result.answer == "Yes" else 1 - p
    assert result.meta.info["answer_logprob"] == pytest.approx(np.log(chosen), abs=1e-5)
    assert result.meta.passes["generate_calls"] == 1
    assert result.target.tokens == (("pleural effusion",) if result.answer == "Yes" else ("no pleural effusion",))


def test_custom_templates_change_the_prompts(folders):
    adapter = load_dual_encoder(str(folders["clip"]), OPTIONS, prompts=PromptPair("a {finding}", "no sign of {finding}"))
    encoding = adapter.encode(images(1), query("No"))
    assert encoding.target_tokens == ("no sign of pleural effusion",)


@pytest.mark.parametrize("text, expected", [
    ("Is there evidence of pleural effusion in the image?", "pleural effusion"),
    ("is there any evidence of  mass in this image ?", "mass"),
    ("Is there evidence of nodule in the image? Answer directly with yes or no without any explanation.", "nodule"),
    ("  cardiomegaly\n", "cardiomegaly"),
])
def test_finding_from_query(text, expected):
    assert finding_from_query(text) == expected


@pytest.mark.parametrize("text", ["", "   ", "What is in the image?", "Is the heart enlarged?", "x" * 201])
def test_a_query_without_a_finding_is_refused_naming_it(text):
    with pytest.raises(InputError) as info:
        finding_from_query(text)
    assert "\n" not in str(info.value) and repr(text[:20])[:10] in str(info.value)


@pytest.mark.parametrize("positive, negative, problem", [
    ("", "no {finding}", "empty"),
    ("{finding}", "   ", "empty"),
    ("a finding", "no {finding}", "exactly once"),
    ("{finding} {finding}", "no {finding}", "exactly once"),
    ("{finding} {site}", "no {finding}", "{site}"),
])
def test_bad_templates_are_refused(positive, negative, problem):
    with pytest.raises(InputError, match="template") as info:
        PromptPair(positive, negative)
    assert problem in str(info.value)


@pytest.mark.parametrize("value", [0, 1, 0.0, 1.0, -0.1, 1.5, True, "0.5", float("nan")])
def test_thresholds_outside_the_open_unit_interval_are_refused(value, folders):
    with pytest.raises(InputError, match="threshold"):
        check_threshold(value)
    with pytest.raises(InputError, match="threshold"):
        load_dual_encoder(str(folders["clip"]), OPTIONS, threshold=value)


def test_an_answer_without_verdict_is_refused(clip):
    with pytest.raises(TargetError, match="yes/no"):
        clip.score(images(1), query("Maybe, hard to tell"))


def test_offline_registry_keys_fail_in_one_line():
    for key in ("clip_vit_b16", "medsiglip_448", "xray_siglip", "xray_clip"):
        with pytest.raises(ModelLoadError) as info:
            load_adapter(key, OPTIONS)
        assert "\n" not in str(info.value) and key in str(info.value)


def test_models_lists_the_licences():
    out = CliRunner().invoke(cli, ["models", "--json"])
    assert out.exit_code == 0, out.output
    import json

    rows = {row["key"]: row for row in json.loads(out.output)}
    assert rows["xray_siglip"]["licence"] == rows["xray_clip"]["licence"] == "CC-BY-NC-4.0"
    assert rows["clip_vit_b16"]["family"] == "clip" and rows["medsiglip_448"]["family"] == "siglip"


# -- CheXzero: OpenAI-CLIP state dict ------------------------------------------------------------


def hf_to_openai(state: dict[str, torch.Tensor]) -> dict[str, torch.Tensor]:
    """An independent inverse of the documented key map (the original OpenAI CLIP layout)."""
    out: dict[str, torch.Tensor] = {}
    towers = {"vision_model.encoder.layers.": "visual.transformer.resblocks.",
              "text_model.encoder.layers.": "transformer.resblocks."}
    names = {"layer_norm1": "ln_1", "layer_norm2": "ln_2", "self_attn.out_proj": "attn.out_proj",
             "mlp.fc1": "mlp.c_fc", "mlp.fc2": "mlp.c_proj"}
    fused: dict[str, dict[str, torch.Tensor]] = {}
    for key, value in state.items():
        if key.endswith("position_ids"):
            continue
        for hf, oa in towers.items():
            if key.startswith(hf):
                index, rest = key[len(hf):].split(".", 1)
                module, kind = rest.rsplit(".", 1)
                if module in ("self_attn.q_proj", "self_attn.k_proj", "self_attn.v_proj"):
                    fused.setdefault(f"{oa}{index}.attn.in_proj_{kind}", {})[module[10]] = value
                else:
                    out[f"{oa}{index}.{names[module]}.{kind}"] = value
                break
        else:
            plain = {
                "vision_model.embeddings.class_embedding": "visual.class_embedding",
                "vision_model.embeddings.position_embedding.weight": "visual.positional_embedding",
                "vision_model.embeddings.patch_embedding.weight": "visual.conv1.weight",
                "vision_model.pre_layrnorm.weight": "visual.ln_pre.weight",
                "vision_model.pre_layrnorm.bias": "visual.ln_pre.bias",
                "vision_model.post_layernorm.weight": "visual.ln_post.weight",
                "vision_model.post_layernorm.bias": "visual.ln_post.bias",
                "text_model.embeddings.token_embedding.weight": "token_embedding.weight",
                "text_model.embeddings.position_embedding.weight": "positional_embedding",
                "text_model.final_layer_norm.weight": "ln_final.weight",
                "text_model.final_layer_norm.bias": "ln_final.bias",
                "logit_scale": "logit_scale",
            }
            if key in plain:
                out[plain[key]] = value
            elif key == "visual_projection.weight":
                out["visual.proj"] = value.T
            elif key == "text_projection.weight":
                out["text_projection"] = value.T
            else:
                raise AssertionError(f"unmapped {key}")
    for key, parts in fused.items():
        out[key] = torch.cat([parts["q"], parts["k"], parts["v"]])
    return out


@pytest.fixture(scope="module")
def openai_clip(tmp_path_factory):
    """A tiny CLIPModel with OpenAI's head width (64), saved, and its OpenAI-layout state dict file."""
    root = tmp_path_factory.mktemp("chexzero")
    one_head = {"hidden_size": 64, "intermediate_size": 96, "num_attention_heads": 1}
    folder = save_tiny_dual_encoder("clip", root / "hf", seed=3, text_config=one_head, vision_config=one_head)
    adapter = load_tiny_adapter(folder)
    state = hf_to_openai({k: v.clone() for k, v in adapter.model.state_dict().items()})
    state["input_resolution"] = torch.tensor(224)
    path = root / "best_tiny.pt"
    torch.save(state, path)
    return adapter, folder, path, state


def test_chexzero_state_dict_converts_to_the_same_model(openai_clip):
    reference, folder, path, _ = openai_clip
    converted = load_chexzero(path, OPTIONS, processor=str(folder))
    batch = images(2, seed=6)
    torch.testing.assert_close(converted.score(batch, query()), reference.score(batch, query()), atol=1e-5, rtol=0)
    assert converted.geometry.patch_grid == reference.geometry.patch_grid
    assert converted.model.config.vision_config.hidden_act == "quick_gelu"


def test_a_state_dict_file_resolves_to_chexzero(openai_clip, monkeypatch):
    _, folder, path, _ = openai_clip
    import cxr_attrib_adapters.contrastive.chexzero as module

    monkeypatch.setattr(module.load_chexzero, "__kwdefaults__", {**module.load_chexzero.__kwdefaults__,
                                                                  "processor": str(folder)})
    adapter = load_adapter(str(path), OPTIONS)
    assert type(adapter).__name__ == "ClipAdapter" and "CheXzero" in adapter.processing_note


def test_state_dict_with_missing_or_unexpected_keys_names_them(openai_clip):
    state = openai_clip[3]
    missing = {k: v for k, v in state.items() if k not in ("visual.proj", "ln_final.weight")}
    with pytest.raises(ModelLoadError, match="missing keys ln_final.weight, visual.proj"):
        openai_to_hf(missing)
    extra = {**state, "visual.extra_head.weight": torch.zeros(1), "transformer.resblocks.0.gate": torch.zeros(1)}
    with pytest.raises(ModelLoadError, match=r"transformer\.resblocks\.0\.gate, visual\.extra_head\.weight"):
        openai_to_hf(extra)


def test_chexzero_without_a_file_is_a_one_line_error(tmp_path):
    with pytest.raises(ModelLoadError, match="not a file") as info:
        load_adapter("chexzero", OPTIONS)
    assert "\n" not in str(info.value)
    bad = tmp_path / "bad.pt"
    bad.write_bytes(b"not a pickle")
    with pytest.raises(ModelLoadError, match="cannot read"):
        load_chexzero(bad, OPTIONS)


@pytest.mark.parametrize("key, family", [("clip_vit_b16", "clip"), ("medsiglip_448", "siglip")])
def test_registry_key_and_hub_id_load_from_the_hugging_face_cache(key, family, folders, tmp_path, monkeypatch):
    """The real checkpoints' code path: the key's Hub id, resolved from a (here: fake) local HF cache, offline."""
    import shutil

    import huggingface_hub.constants as hub

    from cxr_attrib.registry import model_cards

    source = model_cards()[key].source
    repo = tmp_path / f"models--{source.replace('/', '--')}"
    shutil.copytree(folders[family], repo / "snapshots" / ("0" * 40))
    (repo / "refs").mkdir()
    (repo / "refs" / "main").write_text("0" * 40)
    monkeypatch.setattr(hub, "HF_HUB_CACHE", str(tmp_path))
    monkeypatch.setenv("HF_HUB_OFFLINE", "1")
    monkeypatch.setattr(hub, "HF_HUB_OFFLINE", True)
    by_key = load_adapter(key, LoadOptions(dtype="float32", device="cpu"))
    by_id = load_adapter(source, LoadOptions(dtype="float32", device="cpu"))
    assert (by_key.name, by_key.family, by_id.name, by_id.family) == (key, family, source, family)
    batch = images(1, seed=7)
    torch.testing.assert_close(by_key.score(batch, query()), by_id.score(batch, query()))
