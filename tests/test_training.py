"""Training: finds planted regulators, follows the paper's schedule, restores the best weights,
applies penalties, fine-tunes kernels only in stage 2, and resumes exactly."""

import math

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from conftest import planted_dataset

from tisfm_core.dataset import load_dataset
from tisfm_core.errors import TisfmError
from tisfm_core.metrics import regression_metrics
from tisfm_core.sequences import one_hot_torch
from tisfm_core.splits import kfold_split
from tisfm_core.training import TrainSettings, evaluate_arrays, fit, predict_batches
from tisfm_core.workflows import build_untrained


@pytest.fixture(scope="module")
def planted(tmp_path_factory):
    tmp = tmp_path_factory.mktemp("planted")
    fasta, tsv, meme, motifs = planted_dataset(tmp, n=900, length=60, n_outputs=3)
    data = load_dataset(fasta, tsv)
    split = kfold_split(len(data), n_folds=10, fold=0)
    parts = {k: data.subset(v) for k, v in split.items()}
    return motifs, parts


def _fit(motifs, parts, variant="full", **kw):
    model = build_untrained(variant, motifs=motifs, n_outputs=3, length=60, random_state=0)
    settings = TrainSettings(**{"epochs": 6, "batch_size": 64, **kw})
    tr, va = parts["train"], parts["val"]
    result = fit(model, (tr.indices, tr.targets), (va.indices, va.targets), settings)
    return model, result


def _ridge_r2(motifs, parts):
    """Independent baseline: ridge regression on each motif's best match score (both strands)."""
    k = torch.from_numpy(motifs.kernels())

    def feats(idx):
        s = F.conv1d(one_hot_torch(torch.from_numpy(idx)), k).amax(-1)
        return s.reshape(len(idx), -1, 2).amax(-1)[:, : len(motifs)].numpy().astype(np.float64)

    tr, te = parts["train"], parts["test"]
    a = np.c_[feats(tr.indices), np.ones(len(tr))]
    w = np.linalg.solve(a.T @ a + 1e-2 * np.eye(a.shape[1]), a.T @ tr.targets)
    pred = np.c_[feats(te.indices), np.ones(len(te))] @ w
    return regression_metrics(pred, te.targets)["r2"], w[:-1].T


def test_planted_regulators_found_at_least_as_well_as_ridge(planted):
    motifs, parts = planted
    model, _ = _fit(motifs, parts)
    te = parts["test"]
    r2 = evaluate_arrays(model, te.indices, te.targets)["r2"]
    ridge_r2, ridge_w = _ridge_r2(motifs, parts)
    assert np.nanmean(r2) >= np.nanmean(ridge_r2) - 0.02
    w = model.final_weights.numpy()
    # output k is driven by motif k: wherever ridge ranks it first, so must we
    for k in range(3):
        if np.argmax(np.abs(ridge_w[k])) == k:
            assert np.argmax(np.abs(w[k])) == k, (k, w[k])


def test_best_validation_weights_are_restored(planted):
    motifs, parts = planted
    model, result = _fit(motifs, parts, variant="base", epochs=5, lr=0.05)
    va = parts["val"]
    pred = predict_batches(model, va.indices, precision="bf16")
    val_loss = float(np.mean((pred - va.targets) ** 2))
    losses = [row["val_loss"] for row in result["history"]]
    assert result["best"]["val_loss"] == min(losses)
    assert val_loss == pytest.approx(min(losses), rel=1e-3)


def test_learning_rate_divided_by_10_after_patience_then_stop(planted):
    motifs, parts = planted
    _, result = _fit(motifs, parts, variant="base", epochs=40, lr_patience=0, lr=1e-3, min_lr=2e-6,
                     patience=None)
    history = result["history"]
    # the rule replayed from the validation losses (how many epochs improve depends on the CPU's
    # kernels): with patience 0 an epoch that does not beat the best by ReduceLROnPlateau's
    # relative threshold (1e-4) divides the next epoch's lr by 10; a stage stops below min_lr
    best, lr, expected = math.inf, 1e-3, []
    for row in history:
        expected.append(lr)
        if row["val_loss"] < best * (1 - 1e-4):
            best = row["val_loss"]
        else:
            lr /= 10
    assert [row["lr"] for row in history] == pytest.approx(expected, rel=1e-9)
    assert (len(history) < 40) == (lr < 2e-6)
    assert min(expected) < 1e-3   # the rule was exercised: at least one drop


def test_early_stopping_ends_a_stage_patience_epochs_after_the_best(planted):
    motifs, parts = planted
    # lr 0.3 overshoots the data-driven start: the validation loss stops improving early
    _, result = _fit(motifs, parts, variant="base", epochs=30, lr=0.3, patience=2)
    history, best = result["history"], result["best"]
    assert len(history) < 30
    assert len(history) - best["epoch"] == 2
    assert all(row["val_loss"] >= best["val_loss"] for row in history[best["epoch"]:])
    _, unstopped = _fit(motifs, parts, variant="base", epochs=len(history) + 2, lr=0.3, patience=None)
    assert len(unstopped["history"]) == len(history) + 2


def test_l1_penalty_zeroes_the_final_layer_and_leaves_other_parameters(planted):
    motifs, parts = planted
    model, _ = _fit(motifs, parts, variant="base", epochs=2, penalty="l1", lam=1e4)
    assert torch.count_nonzero(model.final.weight) == 0
    model_mcp, _ = _fit(motifs, parts, variant="base", epochs=2, penalty="mcp", lam=1e-4)
    assert torch.count_nonzero(model_mcp.final.weight) > 0


def test_kernels_change_only_in_the_finetune_stage(planted):
    motifs, parts = planted
    start = torch.from_numpy(motifs.kernels())
    frozen, _ = _fit(motifs, parts, variant="base", epochs=2)
    assert torch.equal(frozen.kernels.detach(), start)
    tuned, result = _fit(motifs, parts, variant="base", epochs=2, finetune_epochs=2)
    assert [r["stage"] for r in result["history"]] == ["frozen"] * 2 + ["finetune"] * 2
    drift = (tuned.kernels.detach() - start).abs().max()
    assert 0 < drift < 0.5


def test_same_seed_same_weights_other_seed_differs(planted):
    motifs, parts = planted
    a, _ = _fit(motifs, parts, variant="attention", epochs=2)
    b, _ = _fit(motifs, parts, variant="attention", epochs=2)
    c, _ = _fit(motifs, parts, variant="attention", epochs=2, random_state=1)
    assert all(torch.equal(p, q) for p, q in zip(a.state_dict().values(), b.state_dict().values()))
    assert not torch.equal(a.final.weight, c.final.weight)


def test_resume_after_interruption_gives_the_uninterrupted_result(planted, tmp_path):
    motifs, parts = planted
    tr, va = parts["train"], parts["val"]
    settings = TrainSettings(epochs=3, finetune_epochs=2, batch_size=64)

    def run(folder, stop_after=None):
        model = build_untrained("full", motifs=motifs, n_outputs=3, length=60, random_state=0)

        def stop(event):
            if event["event"] == "epoch" and stop_after and len(seen) == stop_after - 1:
                raise KeyboardInterrupt
            if event["event"] == "epoch":
                seen.append(1)
        seen = []
        try:
            fit(model, (tr.indices, tr.targets), (va.indices, va.targets), settings,
                checkpoint_dir=folder, callback=stop)
        except KeyboardInterrupt:
            model = build_untrained("full", motifs=motifs, n_outputs=3, length=60, random_state=5)
            fit(model, (tr.indices, tr.targets), (va.indices, va.targets), settings,
                checkpoint_dir=folder, resume=True)
        return model

    whole = run(tmp_path / "whole")
    for stop_after in (2, 4):   # inside stage 1, and inside the fine-tuning stage
        resumed = run(tmp_path / f"cut{stop_after}", stop_after=stop_after)
        for (name, p), q in zip(whole.state_dict().items(), resumed.state_dict().values()):
            assert torch.allclose(p, q, atol=1e-6), (stop_after, name)


def test_evaluation_uses_all_samples_summed(planted):
    motifs, parts = planted
    model = build_untrained("base", motifs=motifs, n_outputs=3, length=60)
    te = parts["test"]
    got = evaluate_arrays(model, te.indices, te.targets, batch_size=7)   # uneven batches
    with torch.no_grad():
        pred = model(one_hot_torch(torch.from_numpy(te.indices))).numpy()
    mse = ((pred - te.targets) ** 2).mean(0)
    r2 = 1 - ((pred - te.targets) ** 2).sum(0) / ((te.targets - te.targets.mean(0)) ** 2).sum(0)
    assert np.allclose(got["mse"], mse, rtol=1e-5) and np.allclose(got["r2"], r2, atol=1e-5)
    assert got["n"] == len(te)


def test_bad_settings_are_refused():
    with pytest.raises(TisfmError, match="penalty must be one of"):
        TrainSettings(penalty="l2")
    with pytest.raises(TisfmError, match="batch_size"):
        TrainSettings(batch_size=0)
    with pytest.raises(TisfmError, match="nothing to train"):
        TrainSettings(epochs=0)
