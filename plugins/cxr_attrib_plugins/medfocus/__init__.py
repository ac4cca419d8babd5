"""MedFocus: concept-based causal attribution (concept transfer by unbalanced OT).

Public pieces: :func:`transfer_concepts` maps a concept pool's 11 anatomical masks
onto a working-frame image and returns a :class:`ConceptTransfer`;
:class:`TransferCache` keeps finished transfers by content hash. The registered
method is :class:`~.method.MedFocus` (:mod:`.interventions` fills each concept and
measures the drop, :mod:`.decision` picks the winner or the whole image).
"""

from .cache import TransferCache, default_cache
from .transfer import (
    CONCEPT_PARAM_TYPES,
    TRANSFER_DEFAULTS,
    TRANSFER_PARAM_TYPES,
    ConceptTransfer,
    check_transfer_params,
    members,
    transfer_concepts,
    transfer_params,
)
from .transport import GridMeasure, NoSupportError, TransportFailure, UOTResult, grid_measure, solve_uot

__all__ = [
    "CONCEPT_PARAM_TYPES",
    "TRANSFER_DEFAULTS",
    "TRANSFER_PARAM_TYPES",
    "ConceptTransfer",
    "GridMeasure",
    "NoSupportError",
    "TransferCache",
    "TransportFailure",
    "UOTResult",
    "default_cache",
    "grid_measure",
    "members",
    "check_transfer_params",
    "solve_uot",
    "transfer_concepts",
    "transfer_params",
]
