"""apportion: the largest-remainder split of a budget over parts, checked on hand-worked cases."""

import numpy as np
import pytest

from mmselect.budget import apportion, apportion_detail
from mmselect.errors import BudgetError


def test_equal_weights_give_the_remainder_to_the_earlier_parts():
    # 10/3 = 3.33 each: floors 3+3+3 = 9, the one left goes to the first part (equal remainders)
    assert apportion(10, [1, 1, 1]).tolist() == [4, 3, 3]
    assert apportion(11, [1, 1, 1]).tolist() == [4, 4, 3]


def test_largest_fractional_part_gets_the_remainder():
    # 7 * 1/3 = 2.33, 7 * 2/3 = 4.67: floors 2 + 4, the remaining one to the second part (0.67 > 0.33)
    assert apportion(7, [1, 2]).tolist() == [2, 5]
    # 3 * (0.5, 0.25, 0.25) = 1.5, 0.75, 0.75: floors 1 + 0 + 0, two left to the 0.75s
    assert apportion(3, [0.5, 0.25, 0.25]).tolist() == [1, 1, 1]


def test_integer_weights_are_split_exactly():
    # 5 * (1, 4, 10) / 15 = 1/3, 4/3, 10/3: every remainder is exactly 1/3, so the tie goes to the
    # first part. In float64 the third share's fraction comes out largest (3.3333333333333335 - 3).
    assert apportion(5, [1, 4, 10]).tolist() == [1, 1, 3]
    assert apportion(5, np.array([1, 4, 10], dtype=np.int64)).tolist() == [1, 1, 3]


def test_a_capped_part_passes_its_excess_on_in_proportion():
    # raw 1, 1, 8; the third is capped at 4 and the other 6 go 3 + 3
    assert apportion(10, [1, 1, 8], caps=[10, 10, 4]).tolist() == [3, 3, 4]
    # cascade: raw 7.2, 3.6, 1.2 -> first capped at 4; 8 over (3, 1) = 6, 2 -> second capped at 4;
    # the last 4 to the third
    assert apportion(12, [6, 3, 1], caps=[4, 4, 10]).tolist() == [4, 4, 4]
    # shares 2.5 + 2.5: the first is capped at 2, the second takes 3
    assert apportion(5, [1, 1], caps=[2, 10]).tolist() == [2, 3]


def test_a_part_below_its_floor_is_raised_and_the_rest_resplit():
    # raw 1, 9: the first is raised to 3, the other 7 go to the second
    assert apportion(10, [1, 9], floors=[3, 0]).tolist() == [3, 7]


def test_infeasible_budgets_are_refused():
    with pytest.raises(BudgetError, match="caps"):
        apportion(10, [1, 1], caps=[3, 3])
    with pytest.raises(BudgetError, match="floors"):
        apportion(2, [1, 1], floors=[2, 2])
    with pytest.raises(BudgetError, match=">= 0"):
        apportion(2, [1.0, float("nan")])
    with pytest.raises(BudgetError, match="all 0"):
        apportion(2, [0, 0])


def test_zero_budget_and_zero_weight_parts():
    assert apportion(0, [1, 2, 3]).tolist() == [0, 0, 0]
    assert apportion(4, [0, 1, 1]).tolist() == [0, 2, 2]


def test_detail_without_fill_stops_at_the_floors():
    detail = apportion_detail(7, [1, 1, 1], fill=False)  # 7/3 = 2.33 each
    assert detail.budgets.tolist() == [2, 2, 2] and detail.shortfall == 1
    assert detail.raw.tolist() == pytest.approx([7 / 3] * 3)


def test_random_splits_sum_to_k_within_caps_and_are_deterministic():
    rng = np.random.default_rng(0)
    for _ in range(200):
        n = int(rng.integers(1, 8))
        caps = rng.integers(0, 20, size=n)
        if caps.sum() == 0:
            continue
        weights = rng.random(n) if rng.random() < 0.5 else rng.integers(1, 9, size=n)
        k = int(rng.integers(0, caps.sum() + 1))
        budgets = apportion(k, weights, caps=caps)
        assert budgets.sum() == k and (budgets <= caps).all() and (budgets >= 0).all()
        assert apportion(k, weights, caps=caps).tolist() == budgets.tolist()
