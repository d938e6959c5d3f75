"""Batched regression metrics against direct NumPy formulas on the pooled data."""

import json

import numpy as np
import pytest
import torch

from tisfm_core.errors import TisfmError
from tisfm_core.metrics import RegressionMetrics, metrics_table, regression_metrics

BATCHES = (7, 1, 23, 0, 19)  # uneven, including an empty batch


def make_data(n=50, r=5, offset=0.0, seed=0):
    rng = np.random.default_rng(seed)
    centred = rng.normal(size=(n, r)) * rng.uniform(0.5, 3, size=r)
    pred = offset + 0.6 * centred + rng.normal(scale=0.8, size=(n, r)) + 0.3
    return pred, centred + offset


def direct(pred, y):
    """Independent reference: pooled-data MSE, R² and np.corrcoef, column by column."""
    pred, y = np.asarray(pred, np.float64), np.asarray(y, np.float64)
    mse = ((y - pred) ** 2).mean(axis=0)
    r2 = 1 - ((y - pred) ** 2).sum(axis=0) / ((y - y.mean(axis=0)) ** 2).sum(axis=0)
    pearson = np.array([np.corrcoef(y[:, k], pred[:, k])[0, 1] for k in range(y.shape[1])])
    return mse, r2, pearson


def accumulate(pred, y, convert=lambda a: a):
    metrics = RegressionMetrics(y.shape[1])
    start = 0
    for size in BATCHES:
        metrics.update(convert(pred[start:start + size]), convert(y[start:start + size]))
        start += size
    assert start == len(y)
    return metrics.compute()


def assert_matches(result, pred, y, atol=1e-10):
    mse, r2, pearson = direct(pred, y)
    np.testing.assert_allclose(result["mse"], mse, rtol=0, atol=atol)
    np.testing.assert_allclose(result["r2"], r2, rtol=0, atol=atol)
    np.testing.assert_allclose(result["pearson"], pearson, rtol=0, atol=atol)
    assert result["n"] == len(y)


@pytest.mark.parametrize("offset", [0.0, 1e4])
def test_uneven_batches_equal_pooled_formulas(offset):
    # The large offset checks the sums are accurate away from zero (no catastrophic cancellation).
    pred, y = make_data(offset=offset)
    result = accumulate(pred, y)
    assert_matches(result, pred, y)
    assert result["r2"].dtype == np.float64 and result["r2"].shape == (5,)


def test_differs_from_mean_of_batch_means():
    # Guards the summed (not per-batch averaged) accumulation: a biased average would differ.
    pred, y = make_data()
    result = accumulate(pred, y)
    start, batch_mse = 0, []
    for size in BATCHES:
        if size:
            batch_mse.append(((y[start:start + size] - pred[start:start + size]) ** 2).mean(axis=0))
        start += size
    assert not np.allclose(result["mse"], np.mean(batch_mse, axis=0))


@pytest.mark.parametrize("dtype", [np.float32, np.float64])
@pytest.mark.parametrize("kind", ["numpy", "torch"])
def test_input_dtypes_and_types(dtype, kind):
    pred, y = make_data(seed=3)
    pred, y = pred.astype(dtype), y.astype(dtype)
    def convert(a):
        return torch.from_numpy(a).requires_grad_(True) if kind == "torch" else a

    # The reference sees exactly the same (possibly float32-rounded) values, in float64.
    assert_matches(accumulate(pred, y, convert), pred, y)


def test_constant_columns_give_nan():
    pred, y = make_data(r=3)
    y[:, 0] = 0.1  # constant target: R² and Pearson undefined
    pred[:, 1] = -2.7  # constant prediction: Pearson undefined, R² defined
    result = accumulate(pred, y)
    assert np.isnan(result["r2"][0]) and np.isnan(result["pearson"][0])
    assert np.isnan(result["pearson"][1])
    mse, r2, pearson = direct(pred, y)
    assert result["r2"][1] == pytest.approx(r2[1], abs=1e-10)
    np.testing.assert_allclose(result["mse"], mse, atol=1e-12)
    assert result["pearson"][2] == pytest.approx(pearson[2], abs=1e-10)


def test_one_shot_equals_batched_and_reset():
    pred, y = make_data(seed=5)
    one_shot = regression_metrics(pred, y)
    assert_matches(one_shot, pred, y)
    metrics = RegressionMetrics(5)
    metrics.update(pred[:10] + 100, y[:10])
    metrics.reset()
    metrics.update(pred, y)
    np.testing.assert_allclose(metrics.compute()["r2"], one_shot["r2"], atol=1e-12)


def test_perfect_prediction():
    _, y = make_data()
    result = regression_metrics(y, y)
    np.testing.assert_allclose(result["r2"], 1.0, atol=1e-12)
    np.testing.assert_allclose(result["pearson"], 1.0, atol=1e-12)
    assert np.all(result["mse"] == 0)


def test_metrics_table_rows():
    pred, y = make_data(r=3)
    y[:, 1] = 4.0
    result = regression_metrics(pred, y)
    rows = metrics_table(result, ["B", "T.4", "NK"])
    json.dumps(rows, allow_nan=False)  # nan must have become None
    assert [row["output"] for row in rows] == ["B", "T.4", "NK", "mean"]
    assert rows[1]["r2"] is None and rows[1]["pearson"] is None
    assert rows[0]["mse"] == pytest.approx(((y[:, 0] - pred[:, 0]) ** 2).mean())
    assert rows[-1]["mse"] == pytest.approx(result["mse"].mean())
    assert rows[-1]["r2"] == pytest.approx((result["r2"][0] + result["r2"][2]) / 2)
    assert all(row["n"] == 50 for row in rows)


def test_invalid_input_raises():
    metrics = RegressionMetrics(3)
    with pytest.raises(TisfmError, match="at least one row"):
        metrics.compute()
    with pytest.raises(TisfmError, match=r"\(B, 3\)"):
        metrics.update(np.zeros((4, 2)), np.zeros((4, 2)))
    with pytest.raises(TisfmError, match="same shape"):
        metrics.update(np.zeros((4, 3)), np.zeros((5, 3)))
    with pytest.raises(TisfmError, match="NaN"):
        metrics.update(np.full((2, 3), np.nan), np.zeros((2, 3)))
    with pytest.raises(TisfmError):
        RegressionMetrics(0)
    with pytest.raises(TisfmError):
        regression_metrics(np.zeros(3), np.zeros(3))
    with pytest.raises(TisfmError, match="output names"):
        metrics_table(regression_metrics(*make_data(r=2)), ["a", "b", "c"])
    with pytest.raises(TisfmError, match="lacks"):
        metrics_table({"mse": np.zeros(2)}, ["a", "b"])
