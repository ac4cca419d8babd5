"""The built-in ``phantom`` concept pool: 16 normal phantoms with their exact masks.

Nothing is stored on disk: reference ``i`` is rendered from its fixed seed
(:func:`~cxr_attrib_phantom.vqa.reference_seeds`) the first time it is asked for,
so the pool is deterministic and costs nothing until concept transfer uses it.
"""

from __future__ import annotations

import hashlib

from cxr_attrib.hookspecs import hookimpl
from cxr_attrib.pools import ConceptPool, PoolReference

from .anatomy import generate_phantom
from .vqa import reference_seeds

__all__ = ["POOL_NAME", "phantom_pool", "register_pools"]

POOL_NAME = "phantom"
"""Registry name of the built-in pool."""


def phantom_pool(n: int = 16, seed: int = 0, size: int = 224) -> ConceptPool:
    """A lazily rendered pool of ``n`` normal phantoms (the references of :func:`reference_pool`).

    Args:
        n (int, optional): number of references. Default: ``16`` (the paper's pool size).
        seed (int, optional): seeds the choice of phantom seeds. Default: ``0``.
        size (int, optional): image side ``S`` in pixels. Default: ``224``.

    Returns:
        ConceptPool: named ``"phantom"``; reference ids are ``"phantom-<seed>"``, images
        ``(S, S)`` float32 in [0, 1] with the 11 exact concept masks.

    Examples::

        >>> pool = phantom_pool(n=2)
        >>> len(pool), pool[0].image.shape
        (2, (224, 224))
    """
    seeds = reference_seeds(n, seed)
    ids = [f"phantom-{s}" for s in seeds]

    def load(index: int) -> PoolReference:
        phantom = generate_phantom(seeds[index], size)
        return PoolReference(ids[index], phantom.image, phantom.masks)

    fingerprint = hashlib.sha256(f"phantom-pool:v1:{size}:{seeds}".encode()).hexdigest()
    return ConceptPool(POOL_NAME, ids, load, fingerprint, source=f"phantom generator (n={n}, seed={seed})")


@hookimpl
def register_pools(register) -> None:
    register(phantom_pool())
