"""Build concept pools from ImaGenome-style scene graphs or from a folder of masks.

Two sources, both read-only (the pool is written elsewhere by
:func:`cxr_attrib.pools.write_pool`):

* **Scene graphs** (Chest ImaGenome): one ``<image_id>_SceneGraph.json`` per image,
  a JSON object with ``image_id`` and ``objects``, a list whose entries carry
  ``bbox_name`` (an ImaGenome anatomical region, :data:`IMAGENOME_REGIONS`) and
  ``original_x1``, ``original_y1``, ``original_x2``, ``original_y2`` (pixels of the
  original image, exclusive ends as recorded). Each concept's mask is its region's
  box, clipped to the image. The image is ``<image_id>.<ext>`` anywhere under the
  images folder (PNG, JPEG, TIFF or DICOM).
* **A mask folder**: ``images/<id>.<ext>`` and ``masks/<id>/<concept>.png`` (any
  non-zero pixel is inside), one mask per concept of every image.
"""

from __future__ import annotations

import json
import math
import os
from collections.abc import Iterable, Iterator
from pathlib import Path

import numpy as np

from .errors import DataError, ImageLoadError
from .imageio import load_image
from .pools import CONCEPTS, PoolError, PoolReference
from .safeio import read_json, regular_file_exists

__all__ = ["IMAGENOME_REGIONS", "IMAGE_SUFFIXES", "folder_references", "scene_graph_references"]

IMAGENOME_REGIONS: dict[str, str] = {
    "cardiac_silhouette": "cardiac silhouette",
    "left_lung": "left lung",
    "right_lung": "right lung",
    "mediastinum": "mediastinum",
    "upper_mediastinum": "upper mediastinum",
    "left_clavicle": "left clavicle",
    "right_clavicle": "right clavicle",
    "left_hilar": "left hilar structures",
    "right_hilar": "right hilar structures",
    "left_costophrenic_angle": "left costophrenic angle",
    "right_costophrenic_angle": "right costophrenic angle",
}
"""Concept -> the Chest ImaGenome ``bbox_name`` whose box is its mask."""

IMAGE_SUFFIXES = (".png", ".jpg", ".jpeg", ".tif", ".tiff", ".dcm", ".dicom")
"""Image file suffixes looked up (case-insensitive)."""

_COORDS = ("original_x1", "original_y1", "original_x2", "original_y2")
_SCENE_SUFFIX = "_SceneGraph.json"


def scene_graph_references(
    scene_graphs: str | os.PathLike[str],
    images: str | os.PathLike[str],
    *,
    ids: Iterable[str] | None = None,
) -> Iterator[PoolReference]:
    """Pool references from Chest ImaGenome scene graphs (masks = region boxes).

    Args:
        scene_graphs (str | PathLike): folder of ``<image_id>_SceneGraph.json`` files.
        images (str | PathLike): folder searched (recursively) for ``<image_id>.<ext>``.
        ids (Iterable[str] | None): the image ids to use (e.g. normal studies only).
            Default: None (every scene graph in the folder).

    Yields:
        PoolReference: one per scene graph, image in its own (input) frame.

    Raises:
        PoolError: a malformed scene graph, a region missing, a box outside the image,
            a missing image; the message names the file and the field.
    """
    folder = Path(scene_graphs)
    if not folder.is_dir():
        raise PoolError(f"scene-graph folder {folder} is not a folder")
    files = {p.name[: -len(_SCENE_SUFFIX)]: p for p in folder.glob(f"*{_SCENE_SUFFIX}")}
    wanted = sorted(files) if ids is None else [i.strip() for i in ids if i.strip()]
    missing = [i for i in wanted if i not in files]
    if missing:
        raise PoolError(f"no {_SCENE_SUFFIX} in {folder} for image id(s) {', '.join(missing[:5])}")
    if not wanted:
        raise PoolError(f"{folder} holds no *{_SCENE_SUFFIX} file; expected Chest ImaGenome scene graphs")
    found = _index_images(Path(images))
    for image_id in wanted:
        boxes = _scene_graph_boxes(files[image_id])
        if image_id not in found:
            raise PoolError(f"{files[image_id]}: no image {image_id}.<{'|'.join(s[1:] for s in IMAGE_SUFFIXES)}> "
                            f"under {images}")
        pixels = _read(found[image_id])
        masks = {c: _box_mask(boxes[c], pixels.shape, files[image_id], c) for c in CONCEPTS}
        yield PoolReference(image_id, pixels, masks)


def folder_references(folder: str | os.PathLike[str]) -> Iterator[PoolReference]:
    """Pool references from ``images/<id>.<ext>`` and ``masks/<id>/<concept>.png``.

    Args:
        folder (str | PathLike): the folder holding ``images/`` and ``masks/``.

    Yields:
        PoolReference: one per image, sorted by id.

    Raises:
        PoolError: no images, a missing mask file (named), a mask of another size.
    """
    root = Path(folder)
    images = sorted(p for p in (root / "images").glob("*") if p.suffix.lower() in IMAGE_SUFFIXES)
    if not images:
        raise PoolError(f"{root / 'images'} holds no image ({', '.join(IMAGE_SUFFIXES)}); expected "
                        "images/<id>.<ext> and masks/<id>/<concept>.png")
    for path in images:
        masks = {}
        for concept in CONCEPTS:
            mask_path = root / "masks" / path.stem / f"{concept}.png"
            if not regular_file_exists(mask_path, what="pool mask"):
                raise PoolError(f"missing mask {mask_path} (concept {concept!r} of image {path.name}); "
                                "every image needs one mask per concept")
            masks[concept] = _read(mask_path) > 0
        yield PoolReference(path.stem, _read(path), masks)


def _index_images(folder: Path) -> dict[str, Path]:
    if not folder.is_dir():
        raise PoolError(f"image folder {folder} is not a folder")
    return {p.stem: p for p in sorted(folder.rglob("*")) if p.suffix.lower() in IMAGE_SUFFIXES}


def _read(path: Path) -> np.ndarray:
    try:
        return load_image(path).pixels.astype(np.float32) / np.float32(255.0)
    except ImageLoadError as exc:
        raise PoolError(str(exc)) from None


def _scene_graph_boxes(path: Path) -> dict[str, tuple[float, float, float, float]]:
    """Concept -> box from one scene graph (first object of each region)."""
    try:
        graph = read_json(path, what="scene graph")
    except DataError as exc:
        raise PoolError(f"{path}: malformed JSON ({exc})") from None
    objects = graph.get("objects") if isinstance(graph, dict) else None
    if not isinstance(objects, list):
        raise PoolError(f"{path}: expected a JSON object with an 'objects' list")
    by_region: dict[str, tuple[float, float, float, float]] = {}
    for i, obj in enumerate(objects):
        name = obj.get("bbox_name") if isinstance(obj, dict) else None
        if name not in IMAGENOME_REGIONS.values() or name in by_region:
            continue
        try:
            box = tuple(float(obj[k]) for k in _COORDS)
        except (KeyError, TypeError, ValueError):
            raise PoolError(f"{path}: objects[{i}] ({name!r}) needs numbers {', '.join(_COORDS)}") from None
        if not all(math.isfinite(v) for v in box) or box[2] <= box[0] or box[3] <= box[1]:
            raise PoolError(f"{path}: objects[{i}] ({name!r}) has an empty or invalid box {box}")
        by_region[name] = box  # type: ignore[assignment]
    missing = [c for c, region in IMAGENOME_REGIONS.items() if region not in by_region]
    if missing:
        raise PoolError(f"{path}: no box for region(s) "
                        f"{', '.join(repr(IMAGENOME_REGIONS[c]) for c in missing)}; a pool needs all 11")
    return {c: by_region[region] for c, region in IMAGENOME_REGIONS.items()}


def _box_mask(box: tuple[float, float, float, float], shape: tuple[int, ...], path: Path,
              concept: str) -> np.ndarray:
    """Pixels whose centre lies in the box (exclusive ends), clipped to the image."""
    height, width = shape
    x1, y1, x2, y2 = box
    cols = np.arange(width) + 0.5
    rows = np.arange(height) + 0.5
    mask = ((rows >= y1) & (rows < y2))[:, None] & ((cols >= x1) & (cols < x2))[None, :]
    if not mask.any():
        raise PoolError(f"{path}: the {IMAGENOME_REGIONS[concept]!r} box {box} covers no pixel of the "
                        f"{width}x{height} image; are the boxes in original-image pixels?")
    return mask
