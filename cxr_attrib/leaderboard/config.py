"""The configuration of one leaderboard run and the identity of its work units.

A run is fully described by a :class:`RunConfig`; two stores belong to the same run
exactly when their configurations are equal (:attr:`RunConfig.digest`). A work unit
is one (sample, model, method, params, mode, seed); its id is the SHA-256 of a
canonical JSON key, so it is the same on every machine and in every process.
"""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field
from typing import Any

from cxr_attrib.errors import DataError

__all__ = ["FILTERS", "RunConfig", "canonical_json", "sample_key", "stable_hash", "unit_id"]

FILTERS = ("auto", "exact", "inpaint", "none")
"""``--filter`` choices; a stored configuration holds the resolved one (not ``auto``)."""


def canonical_json(value: Any) -> str:
    """JSON with sorted keys and no spaces: equal values give equal text.

    >>> canonical_json({"b": 1, "a": [1.5, None]})
    '{"a":[1.5,null],"b":1}'
    """
    return json.dumps(value, sort_keys=True, separators=(",", ":"), ensure_ascii=False, allow_nan=False)


def stable_hash(value: Any) -> str:
    """SHA-256 hex digest of :func:`canonical_json` (never Python's salted ``hash()``)."""
    return hashlib.sha256(canonical_json(value).encode("utf-8")).hexdigest()


def unit_id(sample: str, model: str, method: str, params: Mapping[str, Any], mode: str, seed: int) -> str:
    """The id of one work unit: SHA-256 of its canonical key.

    Args:
        sample (str): sample id (unique within the benchmark).
        model (str): model reference as given on the command line.
        method (str): method label (a registered name, or a variant ``name[k=v,...]``).
        params (Mapping): the method's full hyper-parameters (defaults merged in).
        mode (str): ``"direct"`` or ``"reasoning"``.
        seed (int): the seed of the method and of the scorer.

    Returns:
        str: 64 hex characters.
    """
    return stable_hash({"sample": sample, "model": model, "method": method, "params": dict(params),
                        "mode": mode, "seed": int(seed)})


def sample_key(sample: str, model: str, mode: str) -> str:
    """The key that places a (sample, model, mode) group, and all its units, on one shard.

    Every method unit of one sample and model lands on the same shard, so the causal
    filter and the model's answer are computed once per sample and model in a run.
    """
    return stable_hash({"sample": sample, "model": model, "mode": mode})


@dataclass(frozen=True)
class RunConfig:
    """Everything that decides what a leaderboard run computes.

    Attributes:
        benchmark (str): registered benchmark name.
        split (str): benchmark split, e.g. ``"direct"``.
        mode (str | None): prompt mode; None uses each sample's own mode.
        models (tuple[str, ...]): model references, in run order.
        methods (tuple[str, ...]): method labels, in run order (priors and
            references included): a registered name or a variant
            ``name[key=value,...]`` (:mod:`cxr_attrib.variants`, canonical form).
        params (dict[str, dict]): label -> full hyper-parameters (defaults merged).
        seed (int): seed of the methods and of the scorer's random regions.
        limit (int | None): at most this many candidate samples (after per_finding).
        per_finding (int | None): the first N candidate samples of each finding.
        filter (str): resolved causal filter: ``"exact"`` (the benchmark's own
            counterfactuals), ``"inpaint"`` (approximate) or ``"none"``.
        max_new_tokens (int): generation budget of the model's answers.
        steps (int): deletion / insertion steps of the scorer.
        n_random (int): random regions of the scorer.
        fraction (float): share of the content in the scorer's top / random regions.
        fill (str | float): how the scorer fills removed pixels
            (:func:`~cxr_attrib.perturb.pixel_remover`).
        recognition (int): the recognition pass scores the first N positives and N
            negatives of each finding per model (0 = no pass).
    """

    benchmark: str
    split: str
    models: tuple[str, ...]
    methods: tuple[str, ...]
    mode: str | None = None
    params: dict[str, dict[str, Any]] = field(default_factory=dict)
    seed: int = 0
    limit: int | None = None
    per_finding: int | None = None
    filter: str = "none"
    max_new_tokens: int = 64
    steps: int = 10
    n_random: int = 8
    fraction: float = 0.1
    fill: str | float = "noisy_linear"
    recognition: int = 0

    def to_dict(self) -> dict[str, Any]:
        """Plain JSON-safe dict (tuples become lists)."""
        data = asdict(self)
        data["models"], data["methods"] = list(self.models), list(self.methods)
        return data

    @classmethod
    def from_dict(cls, data: Mapping[str, Any]) -> RunConfig:
        """Inverse of :meth:`to_dict`.

        Raises:
            DataError: unknown or missing fields.
        """
        known = set(cls.__dataclass_fields__)
        unknown = sorted(set(data) - known)
        if unknown:
            raise DataError(f"leaderboard configuration has unknown field(s) {unknown}; known: {sorted(known)}")
        try:
            return cls(**{**data, "models": tuple(data["models"]), "methods": tuple(data["methods"])})
        except (KeyError, TypeError) as exc:
            raise DataError(f"malformed leaderboard configuration {dict(data)!r}: {exc}") from exc

    @property
    def digest(self) -> str:
        """SHA-256 of the canonical configuration: equal digests, same run."""
        return stable_hash(self.to_dict())

    def describe_difference(self, other: RunConfig) -> str:
        """``field: mine != theirs`` for every field that differs, ``; ``-joined."""
        mine, theirs = self.to_dict(), other.to_dict()
        return "; ".join(f"{k}: {mine[k]!r} != {theirs[k]!r}" for k in mine if mine[k] != theirs[k])
