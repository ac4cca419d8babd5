"""Cache of concept transfers: they depend only on the image, the pool and the parameters.

The key is the SHA-256 of the working-frame image's float32 bytes and shape, the
pool's name and content fingerprint, and the transfer parameters, so one image
transferred once serves every model and every method that asks again. Entries live
in memory and, when a folder is given, on disk as ``<key>.json`` (boxes, reference,
scores, info) plus ``<key>.npz`` (the bit-packed masks); no pickle. The folder is
never inside the data root (``$CXR_ATTRIB_DATA``).
"""

from __future__ import annotations

import hashlib
import io
import json
import os
from collections import OrderedDict
from types import MappingProxyType
from typing import Any

import numpy as np
import numpy.typing as npt

from cxr_attrib.errors import DataError
from cxr_attrib.outputs import write_files
from cxr_attrib.paths import ensure_outside_data
from cxr_attrib.pools import CONCEPTS, ConceptPool
from cxr_attrib.safeio import load_npz, read_json, regular_file_exists

from .concepts import ConceptTransfer

__all__ = ["TransferCache", "default_cache"]

_FORMAT = "cxr-attrib-concept-transfer"
_VERSION = 1  # bump when the transfer's results change, so old disk entries are not reused
_MAX_ENTRY_BYTES = 64 << 20
"""Budget of one cache entry file (decoded arrays in total): 11 bit-packed masks are far below it."""


class TransferCache:
    """In-memory (and optionally on-disk) store of :class:`ConceptTransfer` by content hash.

    Args:
        folder (str | PathLike | None): also keep entries in this folder (created when
            missing; refused inside the data root). Default: None (memory only).
        max_entries (int): entries kept in memory, least recently used dropped first
            (an entry holds 11 ``(S, S)`` masks, about 0.55 MB at S = 224).
            Default: 256.

    Raises:
        DataError: ``folder`` lies inside ``$CXR_ATTRIB_DATA``.

    Examples::

        >>> cache = TransferCache()
        >>> len(cache)
        0
    """

    def __init__(self, folder: str | os.PathLike[str] | None = None, *, max_entries: int = 256) -> None:
        if isinstance(max_entries, bool) or not isinstance(max_entries, int) or max_entries < 1:
            raise DataError(f"max_entries must be an int >= 1, got {max_entries!r}")
        self.folder = None if folder is None else ensure_outside_data(folder, what="the concept-transfer cache")
        self.max_entries = max_entries
        self._memory: OrderedDict[str, ConceptTransfer] = OrderedDict()
        self.hits = 0
        self.misses = 0

    def __len__(self) -> int:
        return len(self._memory)

    @staticmethod
    def key(image: npt.NDArray[np.float32], pool: ConceptPool, params: dict[str, Any]) -> str:
        """Hex SHA-256 of the image bytes and shape, the pool, the parameters and the format version."""
        digest = hashlib.sha256()
        pixels = np.ascontiguousarray(image, dtype=np.float32)
        digest.update(repr(pixels.shape).encode() + pixels.tobytes())
        digest.update(json.dumps([_FORMAT, _VERSION, pool.name, pool.fingerprint, params], sort_keys=True).encode())
        return digest.hexdigest()

    def get(self, key: str) -> ConceptTransfer | None:
        """The cached transfer for ``key`` (memory first, then the folder), or None."""
        found = self._memory.get(key)
        if found is not None:
            self._memory.move_to_end(key)
        elif self.folder is not None:
            found = self._read(key)
            if found is not None:
                self._remember(key, found)
        if found is None:
            self.misses += 1
        else:
            self.hits += 1
        return found

    def put(self, key: str, transfer: ConceptTransfer) -> None:
        """Keep ``transfer`` under ``key`` (and write it to the folder, if any)."""
        self._remember(key, transfer)
        if self.folder is not None:
            self._write(key, transfer)

    def _remember(self, key: str, transfer: ConceptTransfer) -> None:
        self._memory[key] = transfer
        self._memory.move_to_end(key)
        while len(self._memory) > self.max_entries:
            self._memory.popitem(last=False)

    def clear(self) -> None:
        """Forget the in-memory entries (files on disk stay)."""
        self._memory.clear()

    def _write(self, key: str, transfer: ConceptTransfer) -> None:
        packed = {c: np.packbits(transfer.masks[c]) for c in CONCEPTS}
        size = int(transfer.masks[CONCEPTS[0]].shape[0])
        buffer = io.BytesIO()
        np.savez_compressed(buffer, **packed)
        record = {
            "format": _FORMAT, "version": _VERSION, "size": size, "pool": transfer.pool,
            "reference": transfer.reference, "reference_id": transfer.reference_id,
            "boxes": {c: list(transfer.boxes[c]) for c in CONCEPTS}, "cost": transfer.cost,
            "scores": list(transfer.scores), "info": _plain(transfer.info),
        }
        write_files({self.folder / f"{key}.npz": buffer.getvalue(),
                     self.folder / f"{key}.json": (json.dumps(record, indent=1) + "\n").encode("utf-8")},
                    root=self.folder)

    def _read(self, key: str) -> ConceptTransfer | None:
        meta, arrays = self.folder / f"{key}.json", self.folder / f"{key}.npz"
        what = "concept-transfer cache entry"
        if not (regular_file_exists(meta, what=what) and regular_file_exists(arrays, what=what)):
            return None
        try:
            record = read_json(meta, what="concept-transfer cache entry", max_bytes=_MAX_ENTRY_BYTES)
            if record.get("format") != _FORMAT or record.get("version") != _VERSION:
                return None
            size = int(record["size"])
            packed = load_npz(arrays, what="concept-transfer cache entry", max_bytes=_MAX_ENTRY_BYTES)
            masks = {c: np.unpackbits(packed[c], count=size * size).reshape(size, size).astype(bool)
                     for c in CONCEPTS}
            boxes = {c: tuple(float(v) for v in record["boxes"][c]) for c in CONCEPTS}
        except (OSError, ValueError, KeyError, TypeError) as exc:
            raise DataError(f"concept-transfer cache entry {meta} is unreadable ({exc}); delete it") from None
        for mask in masks.values():
            mask.setflags(write=False)
        return ConceptTransfer(record["pool"], int(record["reference"]), record["reference_id"],
                               MappingProxyType(boxes), MappingProxyType(masks), float(record["cost"]),
                               tuple(float(s) for s in record["scores"]), MappingProxyType(record["info"]))


def _plain(value: Any) -> Any:
    """Mappings and tuples as JSON-ready dicts and lists."""
    if isinstance(value, (dict, MappingProxyType)):
        return {str(k): _plain(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_plain(v) for v in value]
    return value


_DEFAULT = TransferCache()


def default_cache() -> TransferCache:
    """The process-wide in-memory cache used when none is given."""
    return _DEFAULT
