"""A tiny random-weight :class:`~transformers.SamModel` of the real class, built offline.

It stands in for MedSAM (a SAM ViT-B) in tests and benchmarks: same classes, same
processor and forward pass, about 40 k parameters. Configuration: vision hidden 32,
2 layers (the second global), 2 heads, MLP 64, input side 64, patch 8 (8 x 8
embeddings), 16 output channels; prompt encoder and mask decoder hidden 16. The
processor is the PIL-backend :class:`SamImageProcessorPil` (no torchvision), resizing
the long side to 64 and padding to 64 x 64.
"""

from __future__ import annotations

import os
from pathlib import Path

import torch

__all__ = ["save_tiny_sam", "tiny_sam"]


def tiny_sam(seed: int = 0) -> tuple[torch.nn.Module, object]:
    """Build the tiny SAM model and its processor in memory.

    Args:
        seed (int): weight seed. Default: 0.

    Returns:
        tuple: ``(SamModel, SamProcessor)``, float32, eval mode.
    """
    from transformers import SamConfig, SamModel, SamProcessor
    from transformers.models.sam.configuration_sam import (
        SamMaskDecoderConfig,
        SamPromptEncoderConfig,
        SamVisionConfig,
    )
    from transformers.models.sam.image_processing_pil_sam import SamImageProcessorPil

    side, patch = 64, 8
    vision = SamVisionConfig(
        hidden_size=32, num_hidden_layers=2, num_attention_heads=2, mlp_dim=64, image_size=side,
        patch_size=patch, output_channels=16, global_attn_indexes=[1], window_size=4, num_pos_feats=8,
    )
    prompt = SamPromptEncoderConfig(hidden_size=16, image_size=side, patch_size=patch, mask_input_channels=4)
    decoder = SamMaskDecoderConfig(
        hidden_size=16, num_hidden_layers=2, num_attention_heads=2, mlp_dim=32, iou_head_hidden_dim=16
    )
    config = SamConfig(
        vision_config=vision.to_dict(), prompt_encoder_config=prompt.to_dict(), mask_decoder_config=decoder.to_dict()
    )
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model = SamModel(config).eval()
    processor = SamProcessor(
        image_processor=SamImageProcessorPil(
            size={"longest_edge": side}, pad_size={"height": side, "width": side},
            mask_size={"longest_edge": side // 4}, mask_pad_size={"height": side // 4, "width": side // 4},
        )
    )
    return model, processor


def save_tiny_sam(folder: str | os.PathLike, seed: int = 0) -> Path:
    """Write the tiny SAM model and processor to ``folder`` (Hugging Face layout).

    Args:
        folder (str | PathLike): target folder (created if missing).
        seed (int): weight seed. Default: 0.

    Returns:
        Path: the folder, loadable by :meth:`cxr_attrib.segmentation.BoxSegmenter.from_folder`.
    """
    path = Path(folder)
    path.mkdir(parents=True, exist_ok=True)
    model, processor = tiny_sam(seed)
    model.save_pretrained(path)
    processor.save_pretrained(path)
    return path
