"""The linear baseline: features and ridge fit against independent NumPy computations, exact
count thresholds, and the run format (save, load, final layer, refusals)."""

import itertools

import numpy as np
import pytest
import torch
from conftest import planted_dataset, random_motifs

from tisfm_core.analysis import final_layer, pooling_vs_ic
from tisfm_core.attribution import ism, tism
from tisfm_core.dataset import load_dataset
from tisfm_core.errors import TisfmError
from tisfm_core.linear import (LinearBaseline, LinearConfig, fit_linear, log_odds,
                               score_thresholds)
from tisfm_core.runs import load_run
from tisfm_core.specs import DataSpec, ModelSpec, TrainTask
from tisfm_core.splits import kfold_split
from tisfm_core.training import TrainSettings
from tisfm_core.workflows import train_run


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("linear")
    motifs = random_motifs(5, widths=(4, 5, 6), random_state=3)
    fasta, tsv, meme, motifs = planted_dataset(tmp, n=400, length=40, n_outputs=3, motifs=motifs)
    data = load_dataset(fasta, tsv)
    split = kfold_split(len(data), n_folds=5, fold=0)
    return tmp, fasta, tsv, meme, motifs, {k: data.subset(v) for k, v in split.items()}


def _numpy_features(motifs, indices):
    """Max log-odds and site counts by explicit loops over positions and strands."""
    thresholds = score_thresholds(motifs.matrices)
    out = np.zeros((len(indices), 2 * len(motifs)))
    for k, matrix in enumerate(motifs.matrices):
        lo = np.log2((matrix + 0.01) / (1 + 0.04) / 0.25)
        rc = lo[::-1, ::-1]
        w = len(lo)
        for i, seq in enumerate(indices):
            scores = [m[np.arange(w), seq[p:p + w]].sum() for m in (lo, rc)
                      for p in range(len(seq) - w + 1)]
            out[i, k] = max(scores)
            out[i, len(motifs) + k] = sum(s >= thresholds[k] - 1e-4 for s in scores)
    return out


def test_features_equal_a_direct_scan(planted):
    *_, motifs, parts = planted
    model = LinearBaseline.from_motifs(motifs, n_outputs=3, length=40)
    idx = parts["test"].indices[:25]
    got = model.raw_features(torch.nn.functional.one_hot(torch.from_numpy(idx).long(), 4)
                             .permute(0, 2, 1).float()).numpy()
    want = _numpy_features(motifs, idx)
    np.testing.assert_allclose(got[:, :5], want[:, :5], atol=1e-4)
    np.testing.assert_array_equal(got[:, 5:], want[:, 5:])
    assert want[:, 5:].sum() > 0   # the counts are not trivially zero


def test_thresholds_have_the_exact_null_pvalue():
    motifs = random_motifs(3, widths=(5, 6, 7), random_state=1)
    for pvalue in (1e-2, 1e-3):
        thresholds = score_thresholds(motifs.matrices, pvalue)
        for matrix, t in zip(motifs.matrices, thresholds):
            lo = log_odds(matrix)
            # every site of the motif's width, by enumeration
            scores = np.array([lo[np.arange(len(lo)), s].sum()
                               for s in itertools.product(range(4), repeat=len(lo))])
            assert np.mean(scores >= t + 0.05) <= pvalue            # rare enough
            assert np.mean(scores >= t - 0.05 * len(lo)) > pvalue * 0.5 or t == lo.max(1).sum()


def test_fit_equals_closed_form_ridge(planted):
    *_, motifs, parts = planted
    tr, va = parts["train"], parts["val"]
    alphas = (1e-3, 1e-1, 10.0)
    model = LinearBaseline.from_motifs(motifs, n_outputs=3, length=40)
    result = fit_linear(model, (tr.indices, tr.targets), (va.indices, va.targets), alphas=alphas)
    X, V = _numpy_features(motifs, tr.indices), _numpy_features(motifs, va.indices)
    mean, sd = X.mean(0), X.std(0)
    sd[sd < 1e-8] = 1.0
    Z, Zv = (X - mean) / sd, (V - mean) / sd
    y = tr.targets.astype(np.float64)
    val = []
    for alpha in alphas:
        # min (1/n) ||y - y_mean - Z b||^2 + alpha ||b||^2
        b = np.linalg.solve(Z.T @ Z / len(Z) + alpha * np.eye(Z.shape[1]),
                            Z.T @ (y - y.mean(0)) / len(Z))
        val.append(np.mean((Zv @ b + y.mean(0) - va.targets) ** 2))
    best = int(np.argmin(val))
    assert result["best"]["alpha"] == alphas[best] == model.config.ridge
    np.testing.assert_allclose(result["val_mse"], val, rtol=1e-6)
    b = np.linalg.solve(Z.T @ Z / len(Z) + alphas[best] * np.eye(Z.shape[1]),
                        Z.T @ (y - y.mean(0)) / len(Z))
    np.testing.assert_allclose(model.final.weight.detach().numpy().T, b, atol=1e-5)
    np.testing.assert_allclose(model.final_weights.numpy(), (b[:5] + b[5:]).T, atol=1e-5)
    x = torch.nn.functional.one_hot(torch.from_numpy(va.indices).long(), 4).permute(0, 2, 1).float()
    with torch.no_grad():
        pred = model(x).numpy()
    np.testing.assert_allclose(pred, Zv @ b + y.mean(0), atol=1e-4)


def test_linear_run_saves_loads_and_feeds_the_final_layer_views(planted, tmp_path):
    tmp, fasta, tsv, meme, motifs, _ = planted
    task = TrainTask(data=DataSpec(targets=str(tsv), sequences=str(fasta), folds=5),
                     model=ModelSpec(variant="linear", motifs=str(meme)),
                     training=TrainSettings(device="cpu"))
    out = train_run(tmp_path / "lin", task, verbose=False)
    run = load_run(out, device="cpu")
    assert run.kind == "linear" and run.has_motif_layer
    assert run.config["training"]["ridge"]["alphas"]
    W = final_layer(run)
    assert list(W.index) == list(motifs.ids) and W.shape == (5, 3)
    np.testing.assert_allclose(W.to_numpy().T, (run.model.max_weights + run.model.count_weights).numpy())
    # output k is driven by motif k (conftest.planted_dataset): its weight is that output's largest
    for k in range(3):
        assert W.to_numpy()[:, k].argmax() == k
    idx = load_dataset(fasta, tsv).indices[:4]
    with pytest.raises(TisfmError, match="site-count"):
        tism(run.model, idx)
    values = ism(run.model, idx)
    assert values.shape == (4, 3, 4, 40) and np.abs(values).max() > 0
    with pytest.raises(TisfmError, match="linear baseline"):
        pooling_vs_ic(run)


def test_bad_linear_configs_are_refused():
    with pytest.raises(TisfmError, match="count_pvalue"):
        LinearConfig(n_motifs=2, n_outputs=1, count_pvalue=1.5)
    with pytest.raises(TisfmError, match="unknown fields"):
        LinearConfig.from_dict({"n_motifs": 2, "n_outputs": 1, "pooling": "max"})
    with pytest.raises(TisfmError, match="finetune"):
        TrainTask(data=DataSpec(targets="t.tsv", sequences="s.fa"), model=ModelSpec(variant="linear"),
                  training=TrainSettings(finetune_epochs=2))
