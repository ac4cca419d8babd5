"""Float32 log-probs of target tokens without a full-vocabulary log-softmax.

The explained scalar is the teacher-forced log-probability of the target tokens in
float32 (docs/user-guide.md). Materialising (B, T, V) float32 log-softmax values is wasteful
(V is 150k-260k for real checkpoints), so :func:`token_logprobs` keeps only the
predictor rows, upcasts the LM head slice by slice and keeps a running log-sum-exp.
"""

from __future__ import annotations

import torch

__all__ = ["token_logprobs"]

VOCAB_CHUNK_ELEMENTS = 1 << 25
"""Largest LM-head slice upcast to float32 at once (elements; 128 MiB)."""


def token_logprobs(
    hidden: torch.Tensor,
    head: torch.nn.Module,
    targets: torch.Tensor,
) -> torch.Tensor:
    """Float32 log-probs of target tokens from final hidden states, vocabulary-chunked.

    Never builds more than one ``(R, chunk)`` slice of logits: the LM head's weight
    is upcast slice by slice and a running log-sum-exp is kept.

    Args:
        hidden (torch.Tensor): (R, H) final hidden states of the predictor rows (any
            float dtype; upcast to float32 here).
        head (torch.nn.Module): the LM head, a ``Linear(H, V)`` (bias optional).
        targets (torch.Tensor): (R,) long token ids predicted by each row.

    Returns:
        torch.Tensor: (R,) float32 natural-log probabilities, differentiable with
        respect to ``hidden``.

    Examples::

        >>> head = torch.nn.Linear(4, 10, bias=False)
        >>> h = torch.randn(3, 4)
        >>> t = torch.tensor([1, 2, 3])
        >>> ref = torch.log_softmax(head(h), -1).gather(1, t[:, None])[:, 0]
        >>> bool(torch.allclose(token_logprobs(h, head, t), ref, atol=1e-6))
        True
    """
    weight = head.weight
    bias = getattr(head, "bias", None)
    rows = hidden.to(device=weight.device, dtype=torch.float32)
    targets = targets.to(weight.device)
    chunk = max(1, VOCAB_CHUNK_ELEMENTS // weight.shape[1])
    total: torch.Tensor | None = None
    for start in range(0, weight.shape[0], chunk):
        logits = rows @ weight[start : start + chunk].float().T
        if bias is not None:
            logits = logits + bias[start : start + chunk].float()
        part = torch.logsumexp(logits, dim=-1)
        total = part if total is None else torch.logaddexp(total, part)
    picked = (rows * weight[targets].float()).sum(-1)
    if bias is not None:
        picked = picked + bias[targets].float()
    assert total is not None
    return picked - total
