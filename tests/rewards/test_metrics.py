import numpy as np
import pytest

from rewards.metrics import auroc, pearson, relative_change, value_order_correlation


def test_voc_worked_examples():
    assert value_order_correlation(np.array([0.1, 0.2, 0.3, 0.4])) == pytest.approx(1.0)
    assert value_order_correlation(np.array([0.4, 0.3, 0.2, 0.1])) == pytest.approx(-1.0)
    assert value_order_correlation(np.array([0.5, 0.5, 0.5])) == 0.0
    assert value_order_correlation(np.array([0.5])) == 0.0
    # ranks [0, 2, 1, 3] against [0, 1, 2, 3]: Spearman 1 - 6*2/(4*15) = 0.8
    assert value_order_correlation(np.array([0.1, 0.3, 0.2, 0.4])) == pytest.approx(0.8)
    # a tie shares its mean rank: ranks [1, 1, 3] against [1, 2, 3] correlate by 0.866, not 1
    assert value_order_correlation(np.array([0.0, 0.0, 1.0])) == pytest.approx(np.sqrt(3) / 2)


def test_auroc_worked_examples():
    assert auroc([3, 4], [1, 2]) == 1.0
    assert auroc([1, 2], [3, 4]) == 0.0
    assert auroc([5, 5, 5], [5, 5]) == 0.5
    assert auroc([2, 3], [1, 2]) == pytest.approx((1 + 0.5 + 1 + 1) / 4)


def test_pearson_worked_examples():
    assert pearson([1, 2, 3], [2, 4, 6]) == pytest.approx(1.0)
    assert pearson([1, 2, 3], [3, 2, 1]) == pytest.approx(-1.0)
    assert pearson([1, 2, 3], [5, 5, 5]) == 0.0
    # centred [-1, 0, 1] and [-1, 2, -1]: covariance 0
    assert pearson([1, 2, 3], [0, 3, 0]) == pytest.approx(0.0)
    with pytest.raises(ValueError):
        pearson([1, 2], [1, 2, 3])


def test_relative_change_worked_examples():
    assert relative_change([1.0, -2.0], [1.0, -2.0]) == 0.0
    assert relative_change([1.0, -2.0], [1.5, -1.0]) == pytest.approx((0.5 + 1.0) / 3.0)
    assert relative_change([0.0, 0.0], [1.0, 1.0]) == 0.0
