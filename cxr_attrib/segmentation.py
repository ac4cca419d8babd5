"""Box-prompted segmentation: refine rough boxes to the tight box of a predicted mask.

Built on transformers' :class:`~transformers.SamModel` / :class:`~transformers.SamProcessor`
(SAM, and MedSAM, which is a SAM ViT-B checkpoint). Every box of one image goes
into ONE batched forward call: the image is encoded once and the mask decoder
answers all prompts together. Each box is replaced by the tight box of its best
mask, the one of SAM's three candidates with the highest predicted IoU.

Everything here is in the **working frame**: the image is ``(S, S)`` and boxes are
``(x1, y1, x2, y2)`` working-frame pixels with exclusive ends.

Weights are local only (``from_pretrained(..., local_files_only=True)``); a folder
that cannot be read raises :class:`~cxr_attrib.errors.ModelLoadError` naming it.

Example::

    >>> seg = BoxSegmenter.from_folder("/models/medsam-vit-base")       # doctest: +SKIP
    >>> refined = seg.segment(working_image, [(30, 40, 120, 150)])       # doctest: +SKIP
    >>> refined.boxes                                                     # doctest: +SKIP
    ((34.0, 41.0, 117.0, 149.0),)
"""

from __future__ import annotations

import functools
import json
import os
from collections.abc import Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import numpy.typing as npt
import torch

from .errors import ModelLoadError
from .method import Param
from .pools import mask_box
from .safeio import read_json
from .typing import WorkingImage

__all__ = ["SAM_PARAM", "BoxSegmenter", "Segmentation", "load_segmenter"]

SAM_PARAM = Param(str, path=True, optional=True, doc="SAM / MedSAM checkpoint folder refining the boxes")
"""The declaration of a method's ``sam`` parameter (None: no refinement)."""

Box = tuple[float, float, float, float]


@dataclass(frozen=True, eq=False)
class Segmentation:
    """Masks and refined boxes for the N prompt boxes of one image.

    Attributes:
        masks (np.ndarray): (N, S, S) bool, the best mask of each prompt (working frame).
        iou (np.ndarray): (N,) float32 predicted IoU of that mask.
        boxes (tuple[Box, ...]): N refined boxes, working frame, exclusive ends; a
            prompt whose best mask is empty keeps its own box.
        empty (tuple[int, ...]): indices of the prompts whose best mask was empty.
    """

    masks: npt.NDArray[np.bool_]
    iou: npt.NDArray[np.float32]
    boxes: tuple[Box, ...]
    empty: tuple[int, ...]


class BoxSegmenter:
    """A SAM-family model and its processor, prompted with boxes.

    Args:
        model (transformers.SamModel): the segmentation model (eval mode).
        processor (transformers.SamProcessor): its processor (resize to the model's
            input side, normalise, pad; scales the prompt boxes alike).
        source (str): where the weights came from (for ``meta.info``). Default: "".
    """

    def __init__(self, model: torch.nn.Module, processor: object, source: str = "") -> None:
        self.model = model.eval()
        self.processor = processor
        self.source = source

    @classmethod
    def from_folder(cls, path: str | os.PathLike, *, device: str | torch.device = "cpu") -> BoxSegmenter:
        """Load a SAM checkpoint (e.g. MedSAM ViT-B) from a local folder.

        Args:
            path (str | PathLike): folder with ``config.json``, the weights and the
                processor's config, as written by ``save_pretrained``.
            device (str | torch.device): where to put the model. Default: "cpu".

        Returns:
            BoxSegmenter: the loaded model, float32, eval mode.

        Raises:
            ModelLoadError: the folder is missing, is not a folder, or does not hold
                a loadable SAM model and processor.
        """
        from transformers import SamModel, SamProcessor

        folder = Path(path)
        if not folder.is_dir() or not (folder / "config.json").is_file():
            raise ModelLoadError(
                f"sam={os.fspath(path)!r} is not a readable SAM checkpoint folder: expected a folder with "
                "config.json, the weights and the processor config (as written by save_pretrained), "
                "e.g. a local copy of a MedSAM ViT-B checkpoint."
            )
        try:
            model_type = read_json(folder / "config.json", what="SAM config").get("model_type")
        except (OSError, ValueError, AttributeError) as err:
            raise ModelLoadError(f"sam={os.fspath(path)!r}: config.json is not a JSON object ({err}).") from err
        if model_type != "sam":
            raise ModelLoadError(
                f"sam={os.fspath(path)!r} holds a {model_type!r} model; expected a SAM checkpoint "
                "(config.json model_type 'sam', e.g. MedSAM ViT-B)."
            )
        try:
            model = SamModel.from_pretrained(folder, local_files_only=True, dtype=torch.float32)
            processor = SamProcessor.from_pretrained(folder, local_files_only=True)
        except (OSError, ValueError, KeyError, TypeError) as err:
            raise ModelLoadError(
                f"sam={os.fspath(path)!r}: cannot load a SAM model and processor from this folder ({err})."
            ) from err
        return cls(model.to(device), processor, source=os.fspath(folder))

    @torch.no_grad()
    def segment(self, image: WorkingImage, boxes: Sequence[Box]) -> Segmentation:
        """Segment every box of one image in ONE batched model call.

        Args:
            image (np.ndarray): (S, S) float32 working-frame grey image in [0, 1].
            boxes (Sequence[Box]): N >= 1 prompt boxes, working frame, exclusive ends.

        Returns:
            Segmentation: the best mask per box (highest predicted IoU of SAM's three
            candidates) and its tight box.

        Raises:
            ValueError: no boxes, or an image that is not (S, S).
        """
        if len(boxes) == 0:
            raise ValueError("segment() needs at least one prompt box")
        if image.ndim != 2:
            raise ValueError(f"image must be (S, S) grey, got shape {image.shape}")
        rgb = np.repeat(np.round(np.clip(image, 0.0, 1.0) * 255.0).astype(np.uint8)[..., None], 3, axis=-1)
        prompts = [[[float(v) for v in box] for box in boxes]]
        encoded = self.processor(images=rgb, input_boxes=prompts, return_tensors="pt")
        dtype = next(self.model.parameters()).dtype
        device = next(self.model.parameters()).device
        out = self.model(
            pixel_values=encoded["pixel_values"].to(device, dtype),
            input_boxes=encoded["input_boxes"].to(device, dtype),
            multimask_output=True,
        )
        masks = self.processor.image_processor.post_process_masks(
            out.pred_masks.float().cpu(), encoded["original_sizes"], encoded["reshaped_input_sizes"]
        )[0]  # (N, 3, S, S) bool
        iou = out.iou_scores[0].float().cpu()  # (N, 3)
        best = iou.argmax(dim=-1)
        chosen = masks[torch.arange(len(boxes)), best].numpy().astype(bool)
        refined, empty = [], []
        for i, (mask, box) in enumerate(zip(chosen, boxes)):
            tight = mask_box(mask)
            if tight is None:
                empty.append(i)
                tight = tuple(float(v) for v in box)
            refined.append(tight)
        best_iou = iou.gather(-1, best[:, None])[:, 0].numpy().astype(np.float32)
        return Segmentation(masks=chosen, iou=best_iou, boxes=tuple(refined), empty=tuple(empty))


@functools.lru_cache(maxsize=2)
def _cached_segmenter(folder: str, device: str) -> BoxSegmenter:
    return BoxSegmenter.from_folder(folder, device=device)


def load_segmenter(path: str | os.PathLike, *, device: str | torch.device = "cpu") -> BoxSegmenter:
    """:meth:`BoxSegmenter.from_folder`, loaded once per process per (folder, device).

    Args:
        path (str | PathLike): the checkpoint folder.
        device (str | torch.device): where to put the model. Default: "cpu".

    Returns:
        BoxSegmenter: shared between calls; do not modify it.

    Raises:
        ModelLoadError: see :meth:`BoxSegmenter.from_folder`.
    """
    return _cached_segmenter(os.path.realpath(os.fspath(path)), str(device))
