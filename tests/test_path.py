"""Regularization path: fast mode equals slow mode, L1 reaches the closed-form lasso, paths
sparsify a planted problem in the right order, the stored weights reproduce the stored MSEs, the
best lambda is the per-output argmin, and path folders round-trip and fail cleanly."""

import json
import os
from types import SimpleNamespace

import numpy as np
import pandas as pd
import pytest
import torch
from conftest import planted_dataset, random_motifs
from scipy.linalg import hadamard
from torch import nn

from tisfm_core.aitac import AITAC
from tisfm_core.cli import build_parser
from tisfm_core.dataset import load_dataset
from tisfm_core.errors import TisfmError
from tisfm_core.path import (
    coefficients_at,
    load_path,
    parse_lambdas,
    path_from_arrays,
    regularization_path,
    top_coefficients,
)
from tisfm_core.specs import DataSpec, ModelSpec, PathSpec, TrainTask
from tisfm_core.training import TrainSettings, initialize_from_data, predict_batches
from tisfm_core.workflows import build_untrained, train_run

N_OUT = 3


def planted_arrays(n, motifs, length, random_state):
    """Output k is 1 where motif k's consensus is planted (in its own slot, no overlaps), + noise."""
    rng = np.random.default_rng(random_state)
    idx = rng.integers(0, 4, size=(n, length)).astype(np.uint8)
    on = rng.random((n, N_OUT)) < 0.4
    slot = length // N_OUT
    for k in range(N_OUT):
        site = motifs.matrices[k].argmax(1).astype(np.uint8)
        idx[on[:, k], k * slot + 2:k * slot + 2 + len(site)] = site
    return idx, (on + 0.1 * rng.normal(size=on.shape)).astype(np.float32)


def planted_parts(motifs, length, sizes=(400, 150, 150)):
    return {name: planted_arrays(n, motifs, length, random_state=s)
            for s, (name, n) in enumerate(zip(("train", "val", "test"), sizes))}


@pytest.fixture(scope="module")
def planted():
    motifs = random_motifs(6, widths=(12,), random_state=1)
    parts = planted_parts(motifs, 60)
    model = build_untrained("base", motifs=motifs, n_outputs=N_OUT, length=60, random_state=0)
    initialize_from_data(model, *parts["train"])
    return model.eval(), parts, motifs


LAMBDAS = np.r_[0.0, np.geomspace(1e-4, 1.0, 8)]


@pytest.fixture(scope="module")
def paths(planted):
    model, parts, motifs = planted
    return {pen: path_from_arrays(model, parts["train"], parts["val"], parts["test"],
                                  PathSpec(penalty=pen, lambdas=LAMBDAS, epochs=8, batch_size=64, device="cpu"),
                                  motif_ids=motifs.ids, motif_names=motifs.names,
                                  outputs=[f"out{k}" for k in range(N_OUT)])
            for pen in ("l1", "mcp")}


def test_fast_and_slow_modes_give_the_same_path():
    motifs = random_motifs(6)
    parts = planted_parts(motifs, 40, sizes=(128, 48, 48))
    model = build_untrained("full", motifs=motifs, n_outputs=N_OUT, length=40, random_state=0)
    initialize_from_data(model, *parts["train"])
    before = model.final.weight.detach().clone()
    threads = torch.get_num_threads()
    events = []
    res = {mode: path_from_arrays(model, parts["train"], parts["val"], parts["test"],
                                  PathSpec(penalty="mcp", lambdas=[3e-2, 0, 3e-3], epochs=2, batch_size=64,
                                           mode=mode, lr=0.05, device="cpu"),
                                  callback=events.append if mode == "fast" else None)
           for mode in ("fast", "slow")}
    fast, slow = res["fast"], res["slow"]
    np.testing.assert_array_equal(fast.lambdas, [0, 3e-3, 3e-2])  # sorted ascending
    assert [e["lam"] for e in events if e["event"] == "lambda"] == [0, 3e-3, 3e-2]
    assert sum(e["event"] == "epoch" for e in events) == fast.epochs.sum()
    assert (fast.mode, slow.mode) == ("fast", "slow")
    # the path moved the weights (else agreement would be vacuous), and left the model alone
    assert np.abs(fast.weights[-1] - before.numpy()).max() > 1e-2
    assert fast.n_nonzero[-1].sum() < fast.n_nonzero[0].sum()
    assert torch.equal(model.final.weight, before)
    assert torch.get_num_threads() == threads
    assert np.abs(fast.weights - slow.weights).max() < 1e-4
    assert np.abs(fast.intercepts - slow.intercepts).max() < 1e-4
    np.testing.assert_allclose(fast.val_mse, slow.val_mse, rtol=1e-5)
    np.testing.assert_allclose(fast.test_mse, slow.test_mse, rtol=1e-5)
    np.testing.assert_array_equal(fast.n_nonzero, slow.n_nonzero)
    np.testing.assert_array_equal(fast.epochs, slow.epochs)


class HadamardFeatures(nn.Module):
    """Stand-in tiSFM whose feature j is +1 where position j holds A and -1 where it holds C."""

    def __init__(self, m, r):
        super().__init__()
        self.config = SimpleNamespace(n_motifs=m, length=m)
        self.final = nn.Linear(m, r)
        nn.init.zeros_(self.final.weight)
        nn.init.zeros_(self.final.bias)

    def features(self, x):
        return 2 * x[:, 0, :] - 1

    def forward(self, x):
        return self.final(self.features(x))


def test_l1_path_reaches_the_closed_form_lasso_on_an_orthogonal_design():
    """The training loss is L(W, b) = 1/(N R) sum_n sum_r (y_nr - x_n.w_r - b_r)^2 (mean over batch
    and outputs; one full batch here). The prox step thresholds each weight by lr*lam/D in the
    metric of Adam's step lr*m/D, so its fixed points satisfy 0 in grad L + lam*d|w|: they minimise
    L + lam*||W||_1. With centred orthogonal +-1 columns (X^T X = N I, X^T 1 = 0) that is, per
    weight, w_rj = soft(x_j.y_r / N, lam*R/2) and b_r = mean(y_r). ReduceLROnPlateau anneals the lr
    below 5e-7 before the lambda stops, so Adam's steps (of size ~lr) end far below the 1e-3
    tolerance, which is itself far below the smallest non-zero (0.1) and the threshold margin."""
    design = hadamard(16)[:, 1:]                     # (16, 15): orthogonal, zero-mean columns
    n, m = design.shape
    r = 2
    idx = np.where(design > 0, 0, 1).astype(np.uint8)  # A where +1, C where -1
    w_true = np.zeros((r, m))
    w_true[0, :4] = [1.0, -0.8, 0.6, 0.45]
    w_true[1, 3:7] = [0.9, 0.6, -0.5, -0.1]
    rng = np.random.default_rng(0)
    y = (design @ w_true.T + [0.5, -0.2] + 0.01 * rng.normal(size=(n, r))).astype(np.float32)
    lam = 0.15
    z = (design.T @ (y - y.mean(0)) / n).T           # (R, M) marginal regressions
    closed = np.sign(z) * np.maximum(np.abs(z) - lam * r / 2, 0)
    assert 0 < (closed != 0).sum() < (w_true != 0).sum()  # the threshold removes some true weights

    res = path_from_arrays(HadamardFeatures(m, r), (idx, y), (idx, y), (idx, y),
                           PathSpec(penalty="l1", lambdas=[lam], epochs=3000, lr=0.01, batch_size=n,
                                    patience=3000, lr_patience=50, mode="fast", device="cpu"))
    assert res.epochs[0] < 3000                      # stopped by the annealed lr, i.e. converged
    np.testing.assert_array_equal(res.coefs[0] != 0, closed != 0)
    assert np.abs(res.coefs[0] - closed).max() < 1e-3
    assert np.abs(res.intercepts[0] - y.mean(0)).max() < 1e-3


@pytest.mark.parametrize("penalty", ["l1", "mcp"])
def test_planted_path_sparsifies_in_order_and_keeps_the_planted_motif_longest(paths, penalty):
    res = paths[penalty]
    nnz = res.n_nonzero
    np.testing.assert_array_equal(nnz, np.count_nonzero(res.coefs, axis=2))
    assert (nnz[0] == 6).all()                       # lambda 0: no penalty, no zeros
    assert (np.diff(nnz, axis=0) <= 0).all(), nnz.T  # larger lambdas: fewer or equal non-zeros
    assert (nnz[-1] < 6).all()
    for k in range(N_OUT):
        alive = res.coefs[:, k, :] != 0
        last = np.array([np.flatnonzero(alive[:, j]).max() if alive[:, j].any() else -1
                         for j in range(6)])
        assert last[k] > np.delete(last, k).max(), (k, last)


def test_stored_weights_reproduce_the_mses_and_best_index_is_the_per_output_argmin(planted, paths):
    model, parts, _ = planted
    res = paths["l1"]
    probe = build_untrained("base", motifs=random_motifs(6, widths=(12,), random_state=1),
                            n_outputs=N_OUT, length=60)
    probe.load_state_dict(model.state_dict())
    mse = {}
    for split in ("val", "test"):
        idx, y = parts[split]
        mse[split] = np.array([((predict_batches(res.apply(probe, i), idx) - y) ** 2).mean(0)
                               for i in range(len(res.lambdas))])
    np.testing.assert_allclose(res.val_mse, mse["val"], rtol=1e-4)
    np.testing.assert_allclose(res.test_mse, mse["test"], rtol=1e-4)
    # outputs are indexed directly: column r of the table is output r (no "overall" column)
    np.testing.assert_array_equal(res.best_index, np.argmin(mse["val"], axis=0))
    np.testing.assert_array_equal(res.best_lambdas, res.lambdas[np.argmin(mse["val"], axis=0)])


def test_coefficient_tables(paths):
    res = paths["mcp"]
    table = coefficients_at(res, 3)
    assert table.shape == (6, N_OUT) and list(table.columns) == res.outputs
    assert table.loc["M2", "out1"] == res.coefs[3, 1, 2]
    pd.testing.assert_frame_equal(coefficients_at(res, -1), coefficients_at(res, len(res.lambdas) - 1))
    for k in range(N_OUT):
        at_best = pd.Series(res.coefs[res.best_index[k], k], index=res.motif_ids)
        want = at_best[at_best != 0].abs().sort_values(ascending=False).index[:3].tolist()
        top = top_coefficients(res, f"out{k}", k=3)
        assert top.index.tolist() == want
        assert top.index[0] == f"M{k}"                # the planted motif leads its output
        assert top["name"].iloc[0] == f"TF{k}"
        assert (top["coef"] != 0).all()
    assert top_coefficients(res, 0, k=2).index.tolist() == top_coefficients(res, "out0", k=2).index.tolist()
    for bad in (lambda: coefficients_at(res, 99), lambda: top_coefficients(res, "nope"),
                lambda: top_coefficients(res, 0, k=0)):
        with pytest.raises(TisfmError):
            bad()


def test_save_and_load_round_trip(paths, tmp_path):
    res = paths["mcp"]
    res.save(tmp_path / "p")
    back = load_path(tmp_path / "p")
    for name in ("lambdas", "coefs", "intercepts", "weights", "val_mse", "test_mse", "n_nonzero",
                 "epochs", "best_index", "lambda_seconds"):
        np.testing.assert_array_equal(getattr(back, name), getattr(res, name), err_msg=name)
    assert (back.motif_ids, back.motif_names, back.outputs) == (list(res.motif_ids),
                                                                list(res.motif_names), res.outputs)
    assert (back.penalty, back.mcp_b, back.mode, back.settings) == ("mcp", 3.0, "fast", res.settings)
    with np.load(tmp_path / "p" / "path.npz", allow_pickle=False) as data:
        assert all(data[k].dtype != object for k in data.files)
    meta = json.loads((tmp_path / "p" / "path.json").read_text())
    assert {o: v["lambda"] for o, v in meta["best"].items()} == \
        {o: float(res.lambdas[i]) for o, i in zip(res.outputs, res.best_index)}


def test_corrupt_or_incomplete_path_folder_raises(paths, tmp_path):
    res = paths["l1"]
    folder = tmp_path / "p"
    res.save(folder)
    npz = folder / "path.npz"
    good = npz.read_bytes()
    with np.load(npz, allow_pickle=False) as data:
        arrays = {k: data[k] for k in data.files}
    npz.write_bytes(good[: len(good) // 2])
    with pytest.raises(TisfmError, match="not a readable"):
        load_path(folder)
    npz.write_bytes(b"not a zip file at all")
    with pytest.raises(TisfmError, match="not a readable"):
        load_path(folder)
    np.savez(npz, **{k: v for k, v in arrays.items() if k != "coefs"})
    with pytest.raises(TisfmError, match="coefs"):
        load_path(folder)
    np.savez(npz, **{**arrays, "best_index": arrays["best_index"] + 100})
    with pytest.raises(TisfmError, match="best_index"):
        load_path(folder)
    np.savez(npz, **{**arrays, "coefs": arrays["coefs"][:, :, :2]})
    with pytest.raises(TisfmError, match="coefs"):
        load_path(folder)
    (folder / "path.json").unlink()
    with pytest.raises(TisfmError, match="path.json"):
        load_path(folder)
    with pytest.raises(TisfmError, match="does not exist"):
        load_path(tmp_path / "missing")


def test_parse_lambdas():
    np.testing.assert_allclose(parse_lambdas("0.1:0.3:3"), [0, 0.1, 0.2, 0.3])
    np.testing.assert_allclose(parse_lambdas("1e-3:1e-1:3", log=True), [0, 1e-3, 1e-2, 1e-1])
    np.testing.assert_allclose(parse_lambdas("0:1:3"), [0, 0.5, 1])       # 0 not repeated
    np.testing.assert_allclose(parse_lambdas("0.5:0.5:1"), [0, 0.5])
    np.testing.assert_allclose(parse_lambdas("0.3:0.1:2"), [0, 0.1, 0.3])  # sorted
    for text, log in [("abc", False), ("1:2", False), ("a:2:3", False), ("1:2:x", False),
                      ("1:2:2.5", False), ("1:2:0", False), ("-1:2:3", False), ("0:1:3", True),
                      ("1:inf:3", False)]:
        with pytest.raises(TisfmError):
            parse_lambdas(text, log=log)


def test_invalid_arguments_are_user_errors(planted):
    model, parts, _ = planted
    base = dict(lambdas=[0, 1e-3], epochs=1, device="cpu")
    for kwargs in (dict(penalty="none"), dict(mode="fastest"), dict(lambdas=[-1.0]), dict(lambdas=[]),
                   dict(epochs=0), dict(lr=0.0), dict(mcp_b=1.0), dict(lambdas=list(range(500)))):
        with pytest.raises(TisfmError):
            PathSpec(**{**base, **kwargs})
    spec = PathSpec(**base)
    with pytest.raises(TisfmError, match="targets"):
        path_from_arrays(model, parts["train"], (parts["val"][0], parts["val"][1][:, :2]),
                         parts["test"], spec)
    bad_idx = parts["val"][0].copy()
    bad_idx[0, 0] = 7
    with pytest.raises(TisfmError, match="0..4"):
        path_from_arrays(model, parts["train"], (bad_idx, parts["val"][1]), parts["test"], spec)
    with pytest.raises(TisfmError, match="AI-TAC"):
        path_from_arrays(AITAC(n_outputs=N_OUT, length=60), parts["train"], parts["val"],
                         parts["test"], spec)


def test_run_path_cli_and_missing_training_data(tmp_path, capsys):
    fasta, tsv, meme, _ = planted_dataset(tmp_path, n=300, length=40, n_outputs=2)
    run = train_run(tmp_path / "run", TrainTask(
        data=DataSpec(targets=str(tsv), sequences=str(fasta), folds=5),
        model=ModelSpec(variant="base", motifs=str(meme)),
        training=TrainSettings(epochs=1, batch_size=64, device="cpu")), verbose=False)
    parser = build_parser()
    out = tmp_path / "path"
    argv = ["path", str(run), "--penalty", "l1", "--lambdas", "1e-4:1e-2:2", "--log", "--epochs", "2",
            "--out", str(out)]
    args = parser.parse_args(argv)
    args.func(args)
    lines = capsys.readouterr().out.splitlines()
    assert sum(line.startswith("lambda ") for line in lines) == 3   # 0, 1e-4, 1e-2
    assert sum(line.startswith("best lambda ") for line in lines) == 2
    res = load_path(out)
    np.testing.assert_allclose(res.lambdas, [0, 1e-4, 1e-2])
    assert res.run == str(run.resolve()) and res.outputs == ["out0", "out1"]
    stored = json.loads((out / "path.json").read_text())["run"]
    assert stored["rel"] == os.path.relpath(run.resolve(), out.resolve())  # move-safe

    # independent reload of the run's validation split: the stored weights give the stored MSEs
    split = json.loads((run / "split.json").read_text())
    val = load_dataset(fasta, tsv).subset(split["val"])
    from tisfm_core.runs import load_run
    model = load_run(run).model
    for i in range(3):
        pred = predict_batches(res.apply(model, i), val.indices)
        np.testing.assert_allclose(res.val_mse[i], ((pred - val.targets) ** 2).mean(0), rtol=1e-4)

    with pytest.raises(TisfmError, match="--force"):
        args.func(parser.parse_args(argv))
    args = parser.parse_args(argv[:-2] + ["--out", str(out), "--force", "--mode", "slow"])
    args.func(args)
    assert load_path(out).mode == "slow"

    fasta.rename(tmp_path / "moved.fa")
    with pytest.raises(TisfmError, match="needs the run's training data") as err:
        regularization_path(run, PathSpec(lambdas=[0], epochs=1, device="cpu"))
    assert str(fasta) in str(err.value)
