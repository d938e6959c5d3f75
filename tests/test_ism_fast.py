"""Exact ISM by the model's structure (tisfm_core.mutagenesis) against the naive loop.

Every incremental result is compared with ``ism(method="naive")``, which runs each variant
through the whole model, in the same dtype: fp32 for ordinary pooling weights, fp64 (the model
cast with ``.double()``) where |a| is large enough that fp32 softmax pooling itself rounds at
the 1e-5 level. Models are random but with unsaturated sigmoids, so that substitutions matter.
"""

import numpy as np
import pytest
import torch

from conftest import REPO, random_motifs
from tisfm_core import native
from tisfm_core.aitac import AITAC
from tisfm_core.attribution import _ism_fill, estimate_ism_seconds, ism, ism_method, tism
from tisfm_core.errors import TisfmError
from tisfm_core.model import TISFM, VARIANTS, TISFMConfig
from tisfm_core.mutagenesis import _TisfmPlan, _width_groups
from tisfm_core.sequences import one_hot

L = 60
SHIPPED = REPO / "trained_models"


def _tisfm(variant="base", *, pool=None, n_outputs=4, random_state=0, **config):
    """A small tiSFM of motifs of widths 4..11 (so several width groups), sigmoids in range.

    ``variant`` names a paper variant or is a dict of the flags of a custom one."""
    motifs = random_motifs(9, widths=(4, 11, 7, 5, 9), random_state=random_state)
    flags = VARIANTS[variant] if isinstance(variant, str) else variant
    cfg = TISFMConfig(**{**flags, "n_motifs": len(motifs), "n_outputs": n_outputs, "length": L,
                         "kernel_width": motifs.max_width, **config})
    kernels = motifs.kernels(era=cfg.era, n_pad_channels=cfg.n_pad_channels)
    model = TISFM(cfg, kernels, random_state=random_state)
    g = torch.Generator().manual_seed(random_state)
    with torch.no_grad():
        model.scale.copy_(3 + 2 * torch.rand(model.scale.shape, generator=g))
        model.bias.copy_(-5 - 2 * torch.rand(model.bias.shape, generator=g))
        if pool is None:
            model.pool_weight.copy_(-2 + 6 * torch.rand(model.pool_weight.shape, generator=g))
        else:
            model.pool_weight.fill_(pool)
        model.final.bias.normal_(generator=g)
        if model.position_emb is not None:
            model.position_emb.weight.mul_(0.3)
    return model.eval()


@pytest.fixture(params=["native", "torch"])
def kernels(request, monkeypatch):
    """The incremental tiSFM engine on the native CPU kernel, then on its torch code."""
    if request.param == "torch":
        monkeypatch.setattr(native, "library", lambda: None)
    elif native.library() is None:
        pytest.skip("the native kernels cannot be built here")
    return request.param


def _plan_is(model, kernels):
    plan = _TisfmPlan(model, np.arange(model.config.n_outputs), torch.device("cpu"))
    assert plan.native == (kernels == "native")


def _sequences(n=3, length=L, random_state=1):
    idx = np.random.default_rng(random_state).integers(0, 4, size=(n, length)).astype(np.uint8)
    idx[0, [0, 7, length - 1]] = 4      # N at both ends and inside
    idx[-1, 20:26] = 4                  # a run of N
    return idx


def _assert_equal_to_naive(model, idx, atol=1e-5, **kw):
    fast = ism(model, idx, method="incremental", **kw)
    naive = ism(model, idx, method="naive", **kw)
    assert fast.shape == naive.shape and fast.dtype == np.float32
    assert np.abs(naive).max() > 1e-3                    # the substitutions do change the outputs
    np.testing.assert_allclose(fast, naive, rtol=0, atol=atol)
    ref = one_hot(idx).astype(bool)
    assert np.all(np.moveaxis(fast, 1, 0)[:, ref] == 0)  # 0 at the reference base
    assert np.all(np.moveaxis(fast, 3, 1)[idx == 4] == 0)  # 0 at N positions
    return fast


@pytest.mark.parametrize("variant, config", [
    ("base", {}),
    ("interaction", {}),
    (dict(attention=False, interaction=True, pooling="max"), {}),   # max pooling, no attention
    (dict(attention=False, interaction=False, pooling="max"), {}),
    ("base", dict(era="paper")),                                          # left-aligned kernels
    ("interaction", dict(positional=False, n_pad_channels=0)),
])
def test_incremental_tisfm_equals_naive(variant, config, kernels):
    model = _tisfm(variant, **config)
    assert ism_method(model) == "incremental"
    _plan_is(model, kernels)
    _assert_equal_to_naive(model, _sequences())


@pytest.mark.parametrize("pool", [0.0, -4.0, 6.0, 40.0, -60.0])
def test_incremental_equals_naive_for_pooling_weights_fp32(pool, kernels):
    _assert_equal_to_naive(_tisfm("interaction", pool=pool), _sequences(2))


@pytest.mark.parametrize("pool", [120.0, -150.0, 500.0])
def test_incremental_equals_naive_for_large_pooling_weights_fp64(pool):
    # fp32 softmax pooling with |a| > 80 rounds near 1e-5 by itself, so both run in fp64
    _assert_equal_to_naive(_tisfm("interaction", pool=pool).double(), _sequences(2))


def test_outputs_subsets_and_small_batches(kernels):
    model = _tisfm("interaction", n_outputs=5)
    idx = _sequences(2)
    full = _assert_equal_to_naive(model, idx)
    np.testing.assert_allclose(ism(model, idx, outputs=[4, 1], method="incremental"), full[:, [4, 1]],
                               rtol=0, atol=1e-6)
    np.testing.assert_allclose(ism(model, idx, outputs=[3], batch_size=5), full[:, [3]], rtol=0, atol=1e-6)
    np.testing.assert_allclose(ism(model, one_hot(idx[:1])), full[:1], rtol=0, atol=1e-6)


def test_incremental_agrees_with_tism_on_a_nearly_linear_model():
    # independent check: with very flat sigmoids the model is almost linear in the input, so
    # first-order TISM and exact ISM must agree closely
    model = _tisfm("base", pool=0.0)
    with torch.no_grad():
        model.scale.fill_(0.01)
        model.bias.zero_()
    idx = _sequences(1)
    exact, taylor = ism(model, idx), tism(model, idx)
    assert np.abs(exact).max() > 1e-6
    np.testing.assert_allclose(exact, taylor, rtol=0, atol=2e-3 * np.abs(exact).max())


def test_width_groups_cover_every_motif_once():
    widths = np.array([4, 11, 7, 0, 5, 9, 11, 4, 0])
    groups = _width_groups(widths)
    assert 1 <= len(groups) <= 3
    flat = np.concatenate(groups)
    assert sorted(flat.tolist()) == [i for i in range(len(widths)) if widths[i] > 0]
    assert [widths[g].max() for g in groups] == sorted((widths[g].max() for g in groups), reverse=True)
    assert _width_groups(np.zeros(3, dtype=np.int64)) == []          # only padding features


def _aitac(length, random_state=0, n_outputs=3):
    torch.manual_seed(random_state)
    model = AITAC(n_outputs=n_outputs, length=length, n_filters=12)
    g = torch.Generator().manual_seed(random_state)
    with torch.no_grad():
        for block in (model.layer1, model.layer2, model.layer3):
            bn = block[4]
            bn.running_mean.normal_(generator=g)
            bn.running_var.uniform_(0.5, 2.0, generator=g)
            bn.weight.uniform_(0.5, 1.5, generator=g)
            bn.bias.normal_(0, 0.2, generator=g)
    return model.eval()


@pytest.mark.parametrize("length", [48, 131])
def test_incremental_aitac_equals_naive(length):
    model = _aitac(length)
    assert ism_method(model) == "incremental"
    _assert_equal_to_naive(model, _sequences(3, length))
    np.testing.assert_allclose(ism(model, _sequences(2, length), outputs=[2, 0], batch_size=7,
                                   method="incremental"),
                               ism(model, _sequences(2, length), outputs=[2, 0], method="naive"),
                               rtol=0, atol=1e-5)


@pytest.mark.parametrize("variant", ["full", "attention", "maxpool"])
def test_attention_variants_use_the_naive_loop(variant):
    model = _tisfm(variant)
    assert ism_method(model) == "naive"
    with pytest.raises(TisfmError, match="attention"):
        ism(model, _sequences(1), method="incremental")
    idx = _sequences(1)
    np.testing.assert_array_equal(ism(model, idx), ism(model, idx, method="naive"))


def test_method_checks_and_estimate():
    model = _tisfm("base")
    with pytest.raises(TisfmError, match="method"):
        ism(model, _sequences(1), method="fast")
    with pytest.raises(TisfmError, match="incremental ISM is not available"):
        ism(torch.nn.Sequential(torch.nn.Flatten(), torch.nn.Linear(4 * L, 2)), _sequences(1),
            method="incremental")
    with torch.no_grad():
        model.pool_weight[0] = 900.0
    assert ism_method(model) == "naive"                  # beyond fp64's exponent range
    seconds = estimate_ism_seconds(_tisfm("base"), _sequences(4), probe=8)
    assert np.isfinite(seconds) and seconds > 0


def _shipped(name):
    path = SHIPPED / name
    if not (path / "model.safetensors").exists():
        pytest.skip(f"{path} is not available")
    from tisfm_core.runs import load_run
    return load_run(path).model.eval()


@pytest.mark.parametrize("name", ["ablations/base", "ablations/interaction", "ablations/aitac"])
def test_shipped_models_incremental_equals_naive(name, kernels):
    # both ends (partial windows, N) and the middle of a 300-bp sequence: 60 of its 300 positions,
    # so that the naive loop stays short
    model = _shipped(name).eval()
    assert ism_method(model) == "incremental"
    idx = _sequences(1, 300, random_state=5)             # with N at both ends and inside
    outs = np.array([0, 3, 6])
    got = {}
    with torch.inference_mode():
        for method in ("incremental", "naive"):
            got[method] = np.zeros((1, 3, 4, 300), dtype=np.float32)
            for span in ((0, 20), (140, 160), (280, 300)):
                _ism_fill(model, idx, outs, span, 512, torch.device("cpu"), method, got[method], False)
    assert np.abs(got["naive"]).max() > 1e-3
    np.testing.assert_allclose(got["incremental"], got["naive"], rtol=0, atol=1e-5)


@pytest.mark.parametrize("name", ["cv_full/fold_0", "ablations/maxpool"])
def test_shipped_attention_models_choose_naive(name):
    assert ism_method(_shipped(name)) == "naive"


def test_cli_method_option(tmp_path, capsys):
    from tisfm_core.attribution import load_attribution
    from tisfm_core.cli import build_parser
    from tisfm_core.runs import save_run
    from tisfm_core.sequences import decode

    model = _tisfm("base")
    motifs = random_motifs(9, widths=(4, 11, 7, 5, 9), random_state=0)
    run = save_run(tmp_path / "run", model, outputs=["a", "b", "c", "d"], motifs=motifs)
    idx = _sequences(2)
    fasta = tmp_path / "s.fa"
    fasta.write_text("".join(f">s{i}\n{t}\n" for i, t in enumerate(decode(idx))))
    parser = build_parser()
    saved = {}
    for method in ("incremental", "naive"):
        out = tmp_path / f"{method}.npz"
        args = parser.parse_args(["ism", str(run), "--sequences", str(fasta), "--out", str(out),
                                  "--method", method])
        args.func(args)
        assert f"({method}) -> " in capsys.readouterr().out
        saved[method] = load_attribution(out).values
    np.testing.assert_allclose(saved["incremental"], saved["naive"], rtol=0, atol=1e-5)
    with pytest.raises(SystemExit):
        parser.parse_args(["ism", str(run), "--sequences", str(fasta), "--out", "x.npz", "--method", "fast"])


def test_large_calibrated_changes_keep_the_torch_path():
    # the native kernel forms sigmoid(z + dz) from exp(-z) exp(-dz); beyond |dz| = 40 the torch
    # code runs instead, and is exact there too
    model = _tisfm("base")
    with torch.no_grad():
        model.scale.mul_(25.0)
        model.bias.mul_(25.0)
    plan = _TisfmPlan(model, np.arange(model.config.n_outputs), torch.device("cpu"))
    assert not plan.native
    _assert_equal_to_naive(model, _sequences(2))
