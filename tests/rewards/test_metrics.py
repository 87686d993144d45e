import numpy as np
import pytest

from rewards.metrics import auroc, value_order_correlation


def test_voc_worked_examples():
    assert value_order_correlation(np.array([0.1, 0.2, 0.3, 0.4])) == pytest.approx(1.0)
    assert value_order_correlation(np.array([0.4, 0.3, 0.2, 0.1])) == pytest.approx(-1.0)
    assert value_order_correlation(np.array([0.5, 0.5, 0.5])) == 0.0
    # ranks [0, 2, 1, 3] against [0, 1, 2, 3]: Spearman 1 - 6*2/(4*15) = 0.8
    assert value_order_correlation(np.array([0.1, 0.3, 0.2, 0.4])) == pytest.approx(0.8)


def test_auroc_worked_examples():
    assert auroc([3, 4], [1, 2]) == 1.0
    assert auroc([1, 2], [3, 4]) == 0.0
    assert auroc([2, 3], [1, 2]) == pytest.approx((1 + 0.5 + 1 + 1) / 4)
