"""Concept pools: normal chest X-rays with one binary mask per anatomical concept.

A pool is what concept transfer maps onto a new image: each reference is a normal
radiograph with a mask for every one of the 11 :data:`CONCEPTS`. Pools are
registered by name through the ``register_pools`` hook and read lazily: listing a
pool costs nothing, a reference's pixels are read (and validated) the first time it
is asked for. The on-disk format (a folder with ``manifest.json``, PNG images and PNG
masks; no pickle) is described in ``docs/concept-pools.md``;
:func:`load_pool` reads it and :func:`write_pool` writes it.

Examples::

    >>> import numpy as np
    >>> image = np.zeros((8, 8), np.float32)
    >>> masks = {name: np.ones((8, 8), bool) for name in CONCEPTS}
    >>> pool = ConceptPool.from_references("toy", [PoolReference("r0", image, masks)])
    >>> len(pool), pool.ids, pool[0].masks["left_lung"].shape
    (1, ('r0',), (8, 8))
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from functools import lru_cache
from pathlib import Path
from types import MappingProxyType
from typing import Any

import numpy as np
import numpy.typing as npt
from PIL import Image

from .errors import DataError, ImageLoadError
from .imageio import load_image
from .outputs import write_files
from .paths import ensure_outside_data
from .safeio import read_bytes, regular_file_exists

_MAX_MANIFEST_BYTES = 64 << 20
"""Budget of a pool's manifest.json (a 10,000-reference manifest is about 15 MB)."""

__all__ = [
    "CONCEPTS",
    "COMPOSITES",
    "KEEP_READ",
    "MANIFEST",
    "POOL_FORMAT",
    "ConceptPool",
    "PoolError",
    "PoolReference",
    "load_pool",
    "mask_box",
    "write_pool",
]

CONCEPTS: tuple[str, ...] = (
    "cardiac_silhouette",
    "left_lung",
    "right_lung",
    "mediastinum",
    "upper_mediastinum",
    "left_clavicle",
    "right_clavicle",
    "left_hilar",
    "right_hilar",
    "left_costophrenic_angle",
    "right_costophrenic_angle",
)
"""The 11 anatomical concepts of MedFocus, in the paper's order (patient sides)."""

COMPOSITES: Mapping[str, tuple[str, ...]] = MappingProxyType(
    {
        "bilateral_lungs": ("left_lung", "right_lung"),
        "bilateral_clavicles": ("left_clavicle", "right_clavicle"),
        "bilateral_hilar": ("left_hilar", "right_hilar"),
        "bilateral_costophrenic": ("left_costophrenic_angle", "right_costophrenic_angle"),
    }
)
"""Composite concepts: the members of a left/right pair (reported as separate boxes)."""

MANIFEST = "manifest.json"
"""File name of a pool folder's manifest."""

POOL_FORMAT = "cxr-attrib-concept-pool"
"""Value of the manifest's ``format`` field."""

KEEP_READ = 4
"""How many read references a :class:`ConceptPool` keeps in memory."""

_VERSION = 1
_NAME_CHARS = frozenset("abcdefghijklmnopqrstuvwxyz0123456789_-")

BoolMask = npt.NDArray[np.bool_]


class PoolError(DataError):
    """A concept pool that cannot be used: malformed manifest, missing or bad mask."""


def mask_box(mask: npt.ArrayLike) -> tuple[float, float, float, float] | None:
    """Tight box of the True pixels of a mask.

    Args:
        mask (array-like): ``(H, W)`` bool.

    Returns:
        tuple | None: ``(x1, y1, x2, y2)`` in pixels of the mask's frame, exclusive
        ends; None when the mask is empty.

    Examples::

        >>> m = np.zeros((5, 6), bool); m[1:3, 2:5] = True
        >>> mask_box(m)
        (2.0, 1.0, 5.0, 3.0)
    """
    values = np.asarray(mask, dtype=bool)
    rows = np.flatnonzero(values.any(axis=1))
    cols = np.flatnonzero(values.any(axis=0))
    if rows.size == 0:
        return None
    return float(cols[0]), float(rows[0]), float(cols[-1] + 1), float(rows[-1] + 1)


@dataclass(frozen=True, eq=False)
class PoolReference:
    """One normal reference image with its concept masks (input frame of the reference).

    Attributes:
        id (str): the reference's id, unique in its pool.
        image (np.ndarray): ``(H, W)`` float32 grey image in [0, 1] (read-only).
        masks (Mapping[str, np.ndarray]): concept -> ``(H, W)`` bool mask, one per
            name in :data:`CONCEPTS`, each non-empty (read-only).

    Raises:
        PoolError: a concept missing, a mask of another size, an empty mask.
    """

    id: str
    image: npt.NDArray[np.float32]
    masks: Mapping[str, BoolMask] = field(repr=False)

    def __post_init__(self) -> None:
        image = np.array(self.image, dtype=np.float32, order="C")
        if image.ndim != 2 or image.size == 0 or not np.isfinite(image).all():
            raise PoolError(f"reference {self.id!r}: image must be a finite non-empty (H, W) array, "
                            f"got shape {image.shape}")
        image.setflags(write=False)
        missing = [name for name in CONCEPTS if name not in self.masks]
        if missing:
            raise PoolError(f"reference {self.id!r}: no mask for concept(s) {', '.join(missing)}; "
                            f"a pool needs one mask per concept: {', '.join(CONCEPTS)}")
        masks = {}
        for name in CONCEPTS:
            mask = np.array(self.masks[name], dtype=bool, order="C")
            if mask.shape != image.shape:
                raise PoolError(f"reference {self.id!r}: mask {name!r} has shape {mask.shape}, "
                                f"but the image has shape {image.shape}; masks must match the image")
            if not mask.any():
                raise PoolError(f"reference {self.id!r}: mask {name!r} is empty; every concept must "
                                "cover at least one pixel")
            mask.setflags(write=False)
            masks[name] = mask
        object.__setattr__(self, "image", image)
        object.__setattr__(self, "masks", MappingProxyType(masks))


class ConceptPool(Sequence[PoolReference]):
    """A named, lazily read sequence of :class:`PoolReference`.

    Args:
        name (str): registry name, lower case letters, digits, ``_`` and ``-``.
        ids (Sequence[str]): reference ids, unique, at least one.
        load (Callable[[int], PoolReference]): reads reference ``i``; the
            :data:`KEEP_READ` most recently read references are kept, so a pool of
            large radiographs never sits in memory whole (concept transfer keeps its
            own small working-frame copies).
        fingerprint (str): identifies the pool's content (a hash of the manifest and of every file it names, or of
            the generator's seeds); part of every cache key built on this pool.
        source (str): where the pool comes from, for messages. Default: the name.

    Raises:
        PoolError: bad name, no references, duplicate ids.
    """

    def __init__(
        self,
        name: str,
        ids: Sequence[str],
        load: Callable[[int], PoolReference],
        fingerprint: str,
        source: str | None = None,
    ) -> None:
        ids = _check_ids(_check_name(name), ids, source or name)
        self.name = name
        self.ids = ids
        self.fingerprint = str(fingerprint)
        self.source = source or name
        self._load = lru_cache(maxsize=KEEP_READ)(load)

    @classmethod
    def from_references(cls, name: str, references: Iterable[PoolReference]) -> ConceptPool:
        """An in-memory pool of already validated references.

        Args:
            name (str): the pool's name.
            references (Iterable[PoolReference]): its references, in order.

        Returns:
            ConceptPool: with a fingerprint hashed from every image and mask.
        """
        refs = tuple(references)
        digest = hashlib.sha256()
        for ref in refs:
            digest.update(ref.id.encode() + repr(ref.image.shape).encode() + ref.image.tobytes())
            for concept in CONCEPTS:
                digest.update(np.packbits(ref.masks[concept]).tobytes())
        return cls(name, [r.id for r in refs], refs.__getitem__, digest.hexdigest(), source="<memory>")

    def __len__(self) -> int:
        return len(self.ids)

    def __getitem__(self, index: int) -> PoolReference:  # type: ignore[override]
        if isinstance(index, slice):
            raise TypeError("ConceptPool indices must be integers")
        position = range(len(self.ids))[index]
        reference = self._load(position)
        if reference.id != self.ids[position]:
            raise PoolError(f"pool {self.name!r}: reference {position} loaded with id {reference.id!r}, "
                            f"expected {self.ids[position]!r}")
        return reference

    def __iter__(self) -> Iterator[PoolReference]:
        return (self[i] for i in range(len(self)))

    def __repr__(self) -> str:
        return f"ConceptPool({self.name!r}, {len(self)} references, source={self.source!r})"

    def validate(self) -> None:
        """Read every reference now (a malformed one raises :class:`PoolError`)."""
        for _ in self:
            pass


def _check_name(name: object) -> str:
    if not isinstance(name, str) or not name or not set(name) <= _NAME_CHARS:
        raise PoolError(f"pool name must be lower-case letters, digits, '_' or '-', got {name!r}")
    return name


def _check_ids(name: str, ids: Iterable[object], source: str) -> tuple[str, ...]:
    ids = tuple(str(i) for i in ids)
    if not ids:
        raise PoolError(f"pool {name!r} ({source}) has no references; a pool needs at least one")
    duplicates = sorted({i for i in ids if ids.count(i) > 1})
    if duplicates:
        raise PoolError(f"pool {name!r} ({source}): duplicate reference ids {duplicates}")
    return ids


# ---------------------------------------------------------------------- on disk


def load_pool(folder: str | os.PathLike[str], *, name: str | None = None) -> ConceptPool:
    """Open a pool folder (see ``docs/concept-pools.md``); images are read lazily.

    Args:
        folder (str | PathLike): the folder holding ``manifest.json``.
        name (str | None): registry name. Default: the manifest's ``name``.

    Returns:
        ConceptPool: references read on first access, validated as they are read.

    Raises:
        PoolError: no manifest, malformed JSON, a wrong field, a concept missing from
            a reference, or a file path leaving the folder (each names the field).
    """
    root = Path(folder).expanduser()
    path = root / MANIFEST
    if not regular_file_exists(path, what="pool manifest"):
        raise PoolError(f"{root}: not a concept pool folder (no {MANIFEST}); build one with "
                        "`cxr-attrib pool build` or see docs/concept-pools.md")
    raw = read_bytes(path, what="pool manifest", max_bytes=_MAX_MANIFEST_BYTES)
    try:
        manifest = json.loads(raw)
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise PoolError(f"{path}: malformed JSON ({exc}); see docs/concept-pools.md") from None
    entries = _check_manifest(manifest, path)
    pool_name = name if name is not None else manifest["name"]

    def load(index: int) -> PoolReference:
        entry = entries[index]
        image = _read_grey(root, entry["image"], path)
        masks = {c: _read_grey(root, entry["masks"][c], path) > 0.5 for c in CONCEPTS}
        return PoolReference(entry["id"], image, masks)

    return ConceptPool(pool_name, [e["id"] for e in entries], load,
                       _fingerprint(root, raw, entries, path), source=str(root))


def _fingerprint(root: Path, manifest: bytes, entries: list[dict[str, Any]], path: Path) -> str:
    """SHA-256 over the manifest and the content of every file it names, in manifest order.

    A pool rebuilt in place (same manifest, new images or masks) gets a new
    fingerprint, so caches keyed by it never serve the old pool's transfers.
    """
    digest = hashlib.sha256(manifest)
    for entry in entries:
        for relative in (entry["image"], *(entry["masks"][c] for c in CONCEPTS)):
            try:
                content = read_bytes(_inside(root, relative, path), what="pool file")
            except DataError as exc:
                raise PoolError(f"{path}: cannot read {relative!r}: {exc}") from None
            digest.update(len(content).to_bytes(8, "little") + content)
    return digest.hexdigest()


def _check_manifest(manifest: Any, path: Path) -> list[dict[str, Any]]:
    """The manifest's reference entries, after checking every field."""

    def bad(field_name: str, expected: str, got: Any) -> PoolError:
        return PoolError(f"{path}: field {field_name!r} must be {expected}, got {got!r}; "
                         "see docs/concept-pools.md")

    if not isinstance(manifest, dict):
        raise bad("<top level>", "a JSON object", type(manifest).__name__)
    if manifest.get("format") != POOL_FORMAT:
        raise bad("format", repr(POOL_FORMAT), manifest.get("format"))
    if manifest.get("version") != _VERSION:
        raise bad("version", str(_VERSION), manifest.get("version"))
    if not isinstance(manifest.get("name"), str):
        raise bad("name", "a string", manifest.get("name"))
    concepts = manifest.get("concepts")
    if not isinstance(concepts, list) or set(CONCEPTS) - set(concepts):
        missing = sorted(set(CONCEPTS) - set(concepts)) if isinstance(concepts, list) else list(CONCEPTS)
        raise PoolError(f"{path}: field 'concepts' misses {', '.join(missing)}; a pool needs masks "
                        f"for all of {', '.join(CONCEPTS)}")
    references = manifest.get("references")
    if not isinstance(references, list) or not references:
        raise bad("references", "a non-empty list", references)
    for i, entry in enumerate(references):
        where = f"references[{i}]"
        if not isinstance(entry, dict):
            raise bad(where, "an object", entry)
        if not isinstance(entry.get("id"), str) or not entry["id"]:
            raise bad(f"{where}.id", "a non-empty string", entry.get("id"))
        if not isinstance(entry.get("image"), str):
            raise bad(f"{where}.image", "a relative file path", entry.get("image"))
        masks = entry.get("masks")
        if not isinstance(masks, dict):
            raise bad(f"{where}.masks", "an object concept -> file", masks)
        missing = [c for c in CONCEPTS if not isinstance(masks.get(c), str)]
        if missing:
            raise PoolError(f"{path}: {where} (id {entry['id']!r}) has no mask file for "
                            f"{', '.join(missing)}; every reference needs all 11 concepts")
    return references


def _read_grey(root: Path, relative: str, manifest: Path) -> npt.NDArray[np.float32]:
    """A pool file as ``(H, W)`` float32 in [0, 1]; the path must stay in the folder."""
    try:
        pixels = load_image(_inside(root, relative, manifest)).pixels
    except ImageLoadError as exc:
        raise PoolError(f"{manifest}: cannot read {relative!r}: {exc}") from None
    return pixels.astype(np.float32) / np.float32(255.0)


def _inside(root: Path, relative: str, manifest: Path) -> Path:
    """``root / relative`` resolved, refused when it leaves the pool folder."""
    target = (root / relative).resolve()
    if not target.is_relative_to(root.resolve()):
        raise PoolError(f"{manifest}: file {relative!r} lies outside the pool folder; use paths "
                        "relative to the folder")
    return target


def write_pool(
    folder: str | os.PathLike[str],
    name: str,
    references: Iterable[PoolReference],
    *,
    protected: Iterable[str | os.PathLike[str]] = (),
    overwrite: bool = False,
) -> Path:
    """Write references as a pool folder (8-bit PNG images and masks + manifest).

    Args:
        folder (str | PathLike): the new pool folder; never inside ``$CXR_ATTRIB_DATA``
            nor inside a ``protected`` folder.
        name (str): the pool's name, stored in the manifest.
        references (Iterable[PoolReference]): validated references.
        protected (Iterable[str | PathLike]): further folders never written into
            (e.g. the source data folder). Default: ().
        overwrite (bool): allow a folder that already has a manifest. Default: False.

    Returns:
        Path: the folder; :func:`load_pool` reads it back (images rounded to 8 bits).

    Raises:
        DataError: the folder is inside a data root or protected folder, or already
            holds a pool and ``overwrite`` is False.
    """
    root = ensure_outside_data(folder, protected=protected, what="a concept pool")
    if (root / MANIFEST).exists() and not overwrite:
        raise PoolError(f"{root} already holds a concept pool; choose another --out or overwrite")
    _check_name(name)
    entries = []
    files: dict[Path, bytes] = {}
    for ref in references:
        stem = _safe_stem(ref.id)
        image_path = f"images/{stem}.png"
        files[root / image_path] = _png(np.round(np.clip(ref.image, 0, 1) * 255).astype(np.uint8))
        masks = {}
        for concept in CONCEPTS:
            masks[concept] = f"masks/{stem}/{concept}.png"
            files[root / masks[concept]] = _png(ref.masks[concept].astype(np.uint8) * 255)
        entries.append({"id": ref.id, "image": image_path, "masks": masks})
    manifest = {"format": POOL_FORMAT, "version": _VERSION, "name": name,
                "concepts": list(CONCEPTS), "references": entries}
    _check_ids(name, [e["id"] for e in entries], str(root))
    files[root / MANIFEST] = (json.dumps(manifest, indent=1) + "\n").encode("utf-8")
    write_files(files, root=root, protected=protected)  # all files or none; no link below root followed
    return root


def _safe_stem(reference_id: str) -> str:
    """A file stem for an id: its safe characters plus a short hash (ids stay distinct)."""
    keep = "".join(ch if ch.isalnum() or ch in "-_." else "_" for ch in reference_id)[:60]
    return f"{keep}-{hashlib.sha256(reference_id.encode()).hexdigest()[:8]}"


def _png(pixels: npt.NDArray[np.uint8]) -> bytes:
    """8-bit grey PNG bytes of ``pixels``."""
    buffer = io.BytesIO()
    Image.fromarray(pixels, mode="L").save(buffer, format="PNG")
    return buffer.getvalue()
