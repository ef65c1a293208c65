"""Metric functions on hand-computed answers."""

import math

import numpy as np
import pytest

from moenas.predictor import metrics as M
from moenas.predictor.models import conformal_halfwidth

Y = np.array([10.0, 20.0, 40.0, 80.0])
P = np.array([11.0, 19.0, 40.0, 72.0])  # errors +10%, -5%, 0%, -10%


def test_known_answers():
    assert M.mape(Y, P) == pytest.approx((10 + 5 + 0 + 10) / 4)
    assert M.rmspe(Y, P) == pytest.approx(math.sqrt((100 + 25 + 0 + 100) / 4))
    assert M.rmse(Y, P) == pytest.approx(math.sqrt((1 + 1 + 0 + 64) / 4))
    assert M.within(Y, P, 5) == 50.0  # -5% and 0% (the boundary counts)
    assert M.within(Y, P, 10) == 100.0
    assert M.kendall_tau(Y, P) == pytest.approx(1.0)
    assert M.kendall_tau(Y, P[::-1]) == pytest.approx(-1.0)
    assert M.spearman_rho(Y, [1, 3, 2, 4]) == pytest.approx(0.8)
    assert M.coverage(Y, Y * 0.95, P) == 50.0  # 10 in [9.5, 11]; 20 not <= 19; 40 in; 80 not <= 72


def test_report_and_learning_curve():
    r = M.report(Y, P, Y * 0.9, Y * 1.1, 0.9, noise_floor=2.0)
    assert r["n"] == 4 and r["coverage"] == 100.0 and r["mape_over_noise"] == pytest.approx(6.25 / 2)
    y = np.linspace(1, 2, 100)
    curve = M.learning_curve_points(lambda tr, te: y[te], 100, y=y)
    assert [c["n_train"] for c in curve] == [25, 50, 75] and all(c["mape"] == 0 for c in curve)


def test_conformal_halfwidth():
    r = np.arange(1, 10) / 100.0  # 9 residuals 0.01 .. 0.09
    assert conformal_halfwidth(r, 0.8) == pytest.approx(0.08)  # ceil(10 * 0.8) = 8th smallest
    assert conformal_halfwidth(r, 0.95) == pytest.approx(0.09)  # capped at the largest
    with pytest.raises(ValueError):
        conformal_halfwidth(r, 1.0)
