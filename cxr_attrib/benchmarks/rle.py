"""SIIM-ACR run-length encoded masks (the relative, column-major RLE of the challenge).

An ``EncodedPixels`` value is a whitespace-separated list of integer pairs
``offset length``. Pixels are numbered in **column-major** order (index
``col * height + row``, down each column first), and each ``offset`` counts from the
end of the previous run (from pixel 0 for the first run): run ``k`` covers indices
``[start_k, start_k + length_k)`` with ``start_k = end_{k-1} + offset_k`` and
``end_k = start_k + length_k``. ``-1`` means an empty mask (no pneumothorax).
"""

from __future__ import annotations

import numpy as np

from ..errors import DataError

__all__ = ["EMPTY_RLE", "decode_rle", "parse_rle"]

EMPTY_RLE = "-1"
"""The ``EncodedPixels`` value of an image without pneumothorax."""


def parse_rle(text: str, shape: tuple[int, int], *, where: str) -> np.ndarray:
    """Parse and check one RLE string; return its runs as absolute column-major indices.

    Args:
        text (str): the ``EncodedPixels`` value.
        shape (tuple[int, int]): (H, W) of the mask it encodes.
        where (str): file and line, for messages.

    Returns:
        np.ndarray: (K, 2) int64 ``start, end`` (exclusive) of each run; (0, 2) for ``-1``.

    Raises:
        DataError: a non-integer value, an odd count, a negative offset, a length < 1,
            or a run that overruns the ``H * W`` pixels (names the value and the run).

    Examples::

        >>> parse_rle("1 2 3 1", (4, 2), where="x").tolist()
        [[1, 3], [6, 7]]
    """
    text = text.strip()
    if text == EMPTY_RLE:
        return np.zeros((0, 2), dtype=np.int64)
    parts = text.split()
    try:
        values = np.array([int(part) for part in parts], dtype=np.int64)
    except (ValueError, OverflowError):
        bad = next(part for part in parts if not part.lstrip("-").isdigit())
        raise DataError(f"{where}: RLE value {bad[:40]!r} is not an integer; EncodedPixels is 'offset length ...' or -1.") from None
    if not values.size or values.size % 2:
        raise DataError(f"{where}: RLE has {values.size} values; it needs offset/length pairs (an even count) or -1.")
    offsets, lengths = values[0::2], values[1::2]
    if (offsets < 0).any() or (lengths < 1).any():
        k = int(np.flatnonzero((offsets < 0) | (lengths < 1))[0])
        raise DataError(
            f"{where}: RLE run {k} has offset {int(offsets[k])} and length {int(lengths[k])}; "
            "offsets must be >= 0 and lengths >= 1."
        )
    ends = np.cumsum(offsets + lengths)
    starts = ends - lengths
    total = shape[0] * shape[1]
    if ends[-1] > total:
        k = int(np.flatnonzero(ends > total)[0])
        raise DataError(
            f"{where}: RLE run {k} ends at pixel {int(ends[k])}, beyond the {shape[0]}x{shape[1]} "
            f"image ({total} pixels); the mask does not fit its image."
        )
    return np.stack([starts, ends], axis=1)


def decode_rle(runs: np.ndarray, shape: tuple[int, int]) -> np.ndarray:
    """The (H, W) bool mask of runs from :func:`parse_rle`.

    Examples::

        >>> decode_rle(parse_rle("1 2 3 1", (4, 2), where="x"), (4, 2)).astype(int).tolist()
        [[0, 0], [1, 0], [1, 1], [0, 0]]
    """
    height, width = shape
    flat = np.zeros(height * width + 1, dtype=np.int32)
    np.add.at(flat, runs[:, 0], 1)
    np.add.at(flat, runs[:, 1], -1)
    covered = np.cumsum(flat[:-1]) > 0
    return covered.reshape(width, height).T.copy()
