"""Study atlases: the truth of every recipe is recoverable by an oracle built from the truth alone
(planted sites + rules in truth.json), and the planted sites are in the sequences."""

import json

import numpy as np
import pandas as pd
import pytest
from conftest import CISBP

from tisfm_core.atlases import RECIPES, make_atlas
from tisfm_core.errors import TisfmError
from tisfm_core.motifs import read_meme
from tisfm_core.sequences import encode


def _oracle_features(truth, sites, n):
    """x[i, term] from the rules as truth.json states them (written independently of atlases.py)."""
    gap_lo, gap_hi = truth["sites"]["pair_gap"]
    window = truth["sites"]["position_window"]
    length = truth["recipe"]["length"]
    x = np.zeros((n, len(truth["terms"])))
    by_region = {key: grp for key, grp in sites.groupby(["term", "region"])}
    for (t, region), grp in by_region.items():
        role = truth["terms"][t]["role"]
        if role == "pair":
            a = grp[grp["member"] == 0]
            b = grp[grp["member"] == 1]
            x[region, t] = float(any(gap_lo <= max(sb - ea, sa - eb) <= gap_hi
                                     for sa, ea in zip(a["start"], a["end"])
                                     for sb, eb in zip(b["start"], b["end"])))
            continue
        if role == "positional":
            centre = (grp["start"] + grp["end"]) / 2
            k = int((abs(centre - length / 2) <= window).sum())
        else:
            k = len(grp)
        x[region, t] = k if role == "counter" else 2 * k / (k + 1)
    return x


@pytest.mark.parametrize("recipe", RECIPES, ids=[r.name for r in RECIPES])
def test_oracle_recovers_every_atlas(recipe, tmp_path):
    if "cisbp" in (recipe.motifs, recipe.plant_from) and not CISBP.exists():
        pytest.skip(f"{CISBP} is not available")
    info = make_atlas(recipe.scaled(2500), tmp_path, motif_files={"cisbp": CISBP})
    truth = json.loads((tmp_path / "truth.json").read_text())
    assert truth == json.loads(json.dumps(info["truth"]))
    sites = pd.read_csv(tmp_path / "sites.tsv", sep="\t")
    y = pd.read_csv(tmp_path / "targets.tsv", sep="\t", index_col=0)
    assert list(y.columns) == truth["outputs"] and len(y) == 2500
    x = _oracle_features(truth, sites, len(y))
    assert (x != 0).any(axis=0).all()       # every planted term occurs
    design = np.c_[np.ones(len(y)), x]
    coef, *_ = np.linalg.lstsq(design, y.to_numpy(), rcond=None)
    resid = y.to_numpy() - design @ coef
    r2 = 1 - resid.var(axis=0) / y.to_numpy().var(axis=0)
    # a regression on the true features explains all but the noise
    np.testing.assert_allclose(r2, truth["r2_ceiling"], atol=0.06)
    # ... with the planted effect sizes
    sizes = np.array([[term["size"].get(o, 0.0) for o in truth["outputs"]] for term in truth["terms"]])
    assert np.corrcoef(coef[1:].ravel(), sizes.ravel())[0, 1] > 0.95
    # per_output lists every planted motif of every output with the sign of its effect
    expected = {o: sorted((m, int(np.sign(term["size"][o]))) for term in truth["terms"]
                          for m in term["motifs"] if o in term["size"]) for o in truth["outputs"]}
    got = {o: sorted((e["motif"], e["sign"]) for e in truth["per_output"][o]) for o in truth["outputs"]}
    assert got == expected and all(expected.values())


@pytest.mark.parametrize("recipe", [r for r in RECIPES if "cisbp" not in (r.motifs, r.plant_from)][:1],
                         ids=lambda r: r.name)
def test_planted_sites_are_in_the_sequences(recipe, tmp_path):
    make_atlas(recipe.scaled(400), tmp_path)
    planted = read_meme(tmp_path / "planted.meme")
    sites = pd.read_csv(tmp_path / "sites.tsv", sep="\t")
    seqs = encode([line for line in (tmp_path / "sequences.fa").read_text().splitlines()
                   if not line.startswith(">")])
    better = []
    for row in sites.itertuples():
        m = planted.matrices[planted.index(row.motif)]
        window = seqs[row.region, row.start:row.end]
        assert len(window) == len(m)
        # log-likelihood ratio against a uniform background, best strand
        llr = max(np.log2(4 * mm[np.arange(len(m)), window] + 1e-9).sum() for mm in (m, m[::-1, ::-1]))
        better.append(llr > 0)
    assert np.mean(better) > 0.95


def test_bad_recipes_are_refused(tmp_path):
    with pytest.raises(TisfmError, match="no atlas recipe"):
        make_atlas("no-such-atlas", tmp_path)
    with pytest.raises(TisfmError, match="needs a file"):
        make_atlas(RECIPES[0], tmp_path, motif_files={})
