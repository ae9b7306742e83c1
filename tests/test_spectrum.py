"""Singular-value entropy and top-singular-value share (mmselect.features.spectrum)."""

import math

import numpy as np
import pytest
import torch

from mmselect.features.spectrum import spectrum_stats


def reference(matrix: torch.Tensor) -> tuple[float, float]:
    """SVE and sigma_1 / sum(sigma) from a full SVD of one unpadded token matrix."""
    sigma = torch.linalg.svdvals(matrix.to(torch.float64))
    p = sigma / sigma.sum()
    p = p[p > 0]
    return float(-(p * p.log()).sum()), float(sigma[0] / sigma.sum())


def padded_batch(matrices, total_tokens, width, generator, left=False):
    """Stack matrices into [B, T, d] with random garbage (not zeros) in the padding."""
    hidden = torch.randn(len(matrices), total_tokens, width, generator=generator) * 50
    mask = torch.zeros(len(matrices), total_tokens, dtype=torch.bool)
    for b, m in enumerate(matrices):
        rows = torch.arange(total_tokens - len(m), total_tokens) if left else torch.arange(len(m))
        hidden[b, rows] = m
        mask[b, rows] = True
    return hidden, mask


def test_hand_worked_two_singular_values():
    # Orthogonal rows of norms 3 and 1: sigma = (3, 1), p = (3/4, 1/4).
    m = torch.tensor([[[3.0, 0.0, 0.0], [0.0, 1.0, 0.0]]])
    sve, top = spectrum_stats(m, torch.ones(1, 2, dtype=torch.bool))
    expected = -(0.75 * math.log(0.75) + 0.25 * math.log(0.25))  # 0.5623...
    assert sve.dtype == torch.float64 and top.dtype == torch.float64
    assert sve.item() == pytest.approx(expected, abs=1e-12)
    assert top.item() == pytest.approx(0.75, abs=1e-12)


@pytest.mark.parametrize("width", [16, 5])  # T <= d (A A^T) and T > d (A^T A)
def test_matches_svdvals_with_padding(width):
    g = torch.Generator().manual_seed(width)
    lengths = [3, 7, 12, 1]
    matrices = [torch.randn(n, width, generator=g) * (1 + i) for i, n in enumerate(lengths)]
    hidden, mask = padded_batch(matrices, 12, width, g)
    sve, top = spectrum_stats(hidden, mask)
    for b, m in enumerate(matrices):
        ref_sve, ref_top = reference(m)
        assert sve[b].item() == pytest.approx(ref_sve, rel=1e-9, abs=1e-9)
        assert top[b].item() == pytest.approx(ref_top, rel=1e-9)
    # A single token has one singular value: entropy 0, share 1.
    assert sve[3].item() == pytest.approx(0.0, abs=1e-12) and top[3].item() == pytest.approx(1.0)


def test_padding_amount_and_side_do_not_change_result():
    g = torch.Generator().manual_seed(3)
    matrices = [torch.randn(6, 8, generator=g), torch.randn(4, 8, generator=g)]
    tight, tight_mask = padded_batch(matrices, 6, 8, g)
    long, long_mask = padded_batch(matrices, 40, 8, g, left=True)  # T=40 > d=8, 34 padding rows
    long[~long_mask] = float("nan")  # whatever the padding holds, it is ignored
    a = spectrum_stats(tight, tight_mask)
    b = spectrum_stats(long, long_mask)
    for x, y in zip(a, b):
        torch.testing.assert_close(x, y, rtol=1e-10, atol=1e-12)


def test_low_precision_input_and_rank_deficiency():
    g = torch.Generator().manual_seed(4)
    m = torch.randn(9, 32, generator=g).to(torch.bfloat16)
    sve, top = spectrum_stats(m.unsqueeze(0), torch.ones(1, 9, dtype=torch.bool))
    ref_sve, ref_top = reference(m)  # the same bf16 values, decomposed in float64
    assert sve.item() == pytest.approx(ref_sve, rel=1e-9)
    assert top.item() == pytest.approx(ref_top, rel=1e-9)
    # Five copies of one row: a single non-zero singular value, so entropy ~0 and share ~1.
    row = torch.randn(1, 32, generator=g)
    sve, top = spectrum_stats(row.repeat(5, 1).unsqueeze(0), torch.ones(1, 5, dtype=torch.bool))
    assert sve.item() < 1e-6 and top.item() > 1 - 1e-6


def test_empty_and_zero_samples_are_nan():
    hidden = torch.randn(3, 4, 6)
    hidden[1] = 0.0
    mask = torch.tensor([[True, True, False, False], [True, True, True, False], [False] * 4])
    sve, top = spectrum_stats(hidden, mask)
    assert np.isfinite(sve[0].item()) and np.isfinite(top[0].item())
    assert torch.isnan(sve[1:]).all() and torch.isnan(top[1:]).all()


def test_shape_errors():
    with pytest.raises(ValueError):
        spectrum_stats(torch.zeros(2, 3), torch.ones(2, 3, dtype=torch.bool))
    with pytest.raises(ValueError):
        spectrum_stats(torch.zeros(2, 3, 4), torch.ones(2, 4, dtype=torch.bool))
