"""Singular-value statistics of each sample's token matrix (the informativeness of DataTailor).

For one sample, ``M`` is the ``L x d`` matrix whose rows are the hidden states of its ``L``
non-padding tokens. With ``sigma_1 >= ... >= sigma_m`` (``m = min(L, d)``) its singular values
and ``p_j = sigma_j / sum_k sigma_k`` (the singular values themselves, not squared):

* ``sve = -sum_j p_j ln p_j`` (natural log, no truncation, not divided by ``ln m``);
* ``top_ratio = sigma_1 / sum_k sigma_k``.

:func:`spectrum_stats` computes both for a whole padded batch at once on the tensor's device.
The singular values come from the eigenvalues of the Gram matrix in float64 (``A A^T`` when
``T <= d``, else ``A^T A``), which is much cheaper than a full SVD and exact enough for an
entropy (the eigenvalues are clamped at zero before the square root).
"""

from __future__ import annotations

import torch

__all__ = ["spectrum_stats"]


def spectrum_stats(hidden: torch.Tensor, mask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
    """Singular-value entropy and top-singular-value share of each sample of a padded batch.

    Parameters
    ----------
    hidden : tensor ``[B, T, d]``, any floating dtype (bf16, fp16, fp32, fp64)
        Hidden states; row ``t`` of sample ``b`` is used when ``mask[b, t]`` is true.
    mask : bool tensor ``[B, T]``
        Which positions are real tokens (padding may be anywhere, not only on the right).

    Returns
    -------
    (sve, top_ratio) : two float64 tensors ``[B]`` on ``hidden``'s device.
        A sample with no token, or whose token matrix is all zeros, gets NaN for both.

    Padding never changes the result: masked rows are zeroed, which only adds zero eigenvalues
    to the Gram matrix, and only the ``min(L, d)`` largest eigenvalues of a sample with ``L``
    tokens are kept (the rest would be round-off around zero and would otherwise add tiny
    ``-p ln p`` terms to the entropy).
    """
    if hidden.dim() != 3:
        raise ValueError(f"hidden must be [B, T, d], got shape {tuple(hidden.shape)}")
    if mask.shape != hidden.shape[:2]:
        raise ValueError(f"mask must be [B, T] = {tuple(hidden.shape[:2])}, got {tuple(mask.shape)}")
    batch, tokens, width = hidden.shape
    mask = mask.to(device=hidden.device, dtype=torch.bool)
    a = hidden.to(torch.float64)
    a = a.masked_fill_(~mask.unsqueeze(-1), 0.0) if a is not hidden else a.masked_fill(~mask.unsqueeze(-1), 0.0)
    if tokens <= width:
        gram = a @ a.transpose(1, 2)  # [B, T, T]
    else:
        gram = a.transpose(1, 2) @ a  # [B, d, d]
    eigenvalues = torch.linalg.eigvalsh(gram)  # ascending, [B, m'] with m' = min(T, d)
    sigma = eigenvalues.clamp_min(0.0).sqrt().flip(-1)  # descending
    # Keep the min(L, d) largest singular values of each sample.
    length = mask.sum(dim=1)
    keep = torch.arange(sigma.shape[1], device=sigma.device).unsqueeze(0) < length.clamp(max=width).unsqueeze(1)
    sigma = torch.where(keep, sigma, torch.zeros_like(sigma))
    total = sigma.sum(dim=1)
    valid = total > 0
    safe_total = torch.where(valid, total, torch.ones_like(total))
    p = sigma / safe_total.unsqueeze(1)
    sve = -torch.special.xlogy(p, p).sum(dim=1)  # p = 0 contributes 0
    top_ratio = sigma[:, 0] / safe_total if sigma.shape[1] else torch.zeros(batch, dtype=torch.float64)
    nan = torch.full_like(sve, float("nan"))
    return torch.where(valid, sve, nan), torch.where(valid, top_ratio, nan)
