"""The SYNTHETIC demo atlas: files, background statistics, planted motifs and derived targets.

Every check recomputes its answer from the written files (motif scans, z-scores, dinucleotide
counts) instead of trusting the generator's own bookkeeping.
"""

from __future__ import annotations

import filecmp
import json

import numpy as np
import pandas as pd
import pytest
from numpy.lib.stride_tricks import sliding_window_view

from tisfm_core import immgen
from tisfm_core.cli import build_parser
from tisfm_core.cli.demo import cmd_demo_data
from tisfm_core.demo import FILES, background_chain, make_demo_atlas
from tisfm_core.errors import TisfmError
from tisfm_core.motifs import read_meme
from tisfm_core.sequences import read_fasta
from tisfm_core.targets import read_lineage_map, read_parent_table, read_targets

N = 600
BACKGROUND = np.array([0.29, 0.21, 0.21, 0.29])


@pytest.fixture(scope="module")
def atlas(tmp_path_factory):
    out = tmp_path_factory.mktemp("demo") / "atlas"
    info = make_demo_atlas(out, n_regions=N, random_state=3)
    return out, info


@pytest.fixture(scope="module")
def data(atlas):
    out, _ = atlas
    return {
        "seqs": read_fasta(out / "sequences.fa"),
        "cells": read_targets(out / "targets_celltypes.tsv"),
        "lineages": read_targets(out / "targets_lineages.tsv"),
        "treediff": read_targets(out / "targets_treediff.tsv"),
        "motifs": read_meme(out / "motifs.meme"),
        "truth": json.loads((out / "truth.json").read_text()),
    }


def best_scores(indices, matrix):
    """Best log-odds score (both strands, background 0.29/0.21/0.21/0.29) per sequence."""
    log_odds = np.log2((matrix + 0.01) / 1.04 / BACKGROUND)
    one_hot = np.eye(5, 4)[indices]  # N (index 4) -> all-zero column
    windows = sliding_window_view(one_hot, matrix.shape, axis=(1, 2))[:, :, 0]
    forward = np.einsum("nlwb,wb->nl", windows, log_odds)
    reverse = np.einsum("nlwb,wb->nl", windows, log_odds[::-1, ::-1])
    return np.maximum(forward, reverse).max(axis=1), log_odds.max(axis=1).sum()


def hits(data, tf, fraction=0.7):
    matrix = data["motifs"].matrices[data["motifs"].index(data["truth"]["motifs"][tf])]
    best, top = best_scores(data["seqs"].indices, matrix)
    return best >= fraction * top


def test_files_exist_and_parse(atlas, data):
    out, info = atlas
    assert sorted(p.name for p in out.iterdir()) == sorted(FILES.values())
    assert info["files"] == {key: str(out / name) for key, name in FILES.items()}
    cell_types = immgen.cell_types()["cell_type"].tolist()
    seqs = data["seqs"]
    assert seqs.indices.shape == (N, 300) and (seqs.indices < 4).all()
    assert list(data["cells"].columns) == cell_types
    header = (out / "targets_celltypes.tsv").read_text().split("\n", 1)[0].split("\t")
    assert header == ["id"] + cell_types
    for name in ("cells", "lineages", "treediff"):
        assert data[name].index.tolist() == seqs.ids.tolist()
    assert set(data["lineages"].columns) == set(immgen.LINEAGES)
    assert list(data["treediff"].columns) == [f"{c}-{p}" for c, p in immgen.tree_edges()]
    assert read_lineage_map(out / "lineage_map.tsv").equals(immgen.lineage_map())
    assert read_parent_table(out / "parents.tsv").equals(immgen.parent_table())
    assert 150 <= len(data["motifs"]) <= 170
    assert data["motifs"].max_width <= 17
    assert "SYNTHETIC" in (out / "README.md").read_text()
    truth = data["truth"]
    assert truth["synthetic"] is True and truth["n_regions"] == N and truth["length"] == 300
    assert truth["random_state"] == 3 and truth["noise_sd"] > 0
    for tf, motif_id in truth["motifs"].items():
        data["motifs"].index(motif_id)  # raises if a planted motif is missing from motifs.meme
    assert truth["constant"] == [truth["motifs"]["CTCF"]]
    total = sum(p.stat().st_size for p in out.iterdir())
    assert total < 2e6  # 600 regions; 20,000 regions give about 26 MB


def test_truth_names_the_switching_edges(data):
    truth = data["truth"]
    by_edge = {edge: {e["name"]: e["sign"] for e in rows} for edge, rows in truth["per_edge"].items()}
    assert by_edge["proB.FrBC.BM-proB.FrA.BM"] == {"Pax5": 1, "Ebf1": 1}
    assert by_edge["T.4.Th-T.DP.Th"] == {"Zbtb7b": -1}
    assert "T.8.Th-T.DP.Th" not in by_edge
    for edge in by_edge:
        assert edge in data["treediff"].columns
    lineage = {lin: {e["name"]: e["sign"] for e in rows} for lin, rows in truth["per_lineage"].items()}
    assert lineage["B"] == {"Pax5": 1, "Ebf1": 1}
    assert lineage["abT"]["Zbtb7b"] == -1 and lineage["abT"]["Lef1"] == 1
    assert not any("CTCF" in rows for rows in lineage.values())
    assert set(truth["cooperative"]["names"]) == {"Ets1", "Runx1"}


def test_background_is_mouse_like(data):
    text = "".join("ACGT"[b] for b in data["seqs"].indices.ravel())
    seqs = ["".join("ACGT"[b] for b in row) for row in data["seqs"].indices]
    n_c, n_g = sum(s.count("C") for s in seqs), sum(s.count("G") for s in seqs)
    n_bases = sum(len(s) for s in seqs)
    gc = (n_c + n_g) / n_bases
    assert 0.40 <= gc <= 0.45
    n_cg = sum(s.count("CG") for s in seqs)  # "CG" cannot overlap itself
    expected = (n_c / n_bases) * (n_g / n_bases) * sum(len(s) - 1 for s in seqs)
    assert n_cg / expected < 0.5
    assert len(text) == N * 300


def test_background_chain():
    base, pairs, transition = background_chain()
    np.testing.assert_allclose(base, BACKGROUND)
    np.testing.assert_allclose(base @ transition, base, atol=1e-12)  # stationary
    np.testing.assert_allclose(transition.sum(1), 1, atol=1e-12)
    np.testing.assert_allclose(pairs[1, 2] / (base[1] * base[2]), 0.25, atol=1e-9)
    # strand symmetric: freq(xy) == freq(revcomp(xy)) = freq(comp(y) comp(x))
    np.testing.assert_allclose(pairs, pairs[::-1, ::-1].T, atol=1e-12)


def test_planted_pax5_sites_are_found_by_a_scan(data):
    planted = hits(data, "Pax5").mean()
    rng = np.random.default_rng(0)
    shuffled = rng.permuted(data["seqs"].indices, axis=1)
    matrix = data["motifs"].matrices[data["motifs"].index(data["truth"]["motifs"]["Pax5"])]
    best, top = best_scores(shuffled, matrix)
    background = (best >= 0.7 * top).mean()
    assert planted > background + 0.05


def test_pax5_sites_raise_the_b_lineage_target(data):
    found = hits(data, "Pax5")
    b = data["lineages"]["B"].to_numpy()
    gap = b[found].mean() - b[~found].mean()
    se = np.sqrt(b[found].var() / found.sum() + b[~found].var() / (~found).sum())
    assert gap > 3 * se


def test_zbtb7b_sites_lower_the_cd4_edge(data):
    found = hits(data, "Zbtb7b")
    edge = data["treediff"]["T.4.Th-T.DP.Th"].to_numpy()
    gap = edge[found].mean() - edge[~found].mean()
    se = np.sqrt(edge[found].var() / found.sum() + edge[~found].var() / (~found).sum())
    assert gap < -3 * se
    cd8 = data["treediff"]["T.8.Th-T.DP.Th"].to_numpy()
    assert abs(cd8[found].mean() - cd8[~found].mean()) < abs(gap)


def _zscores(cells):
    values = cells.to_numpy(dtype=np.float64)
    return (values - values.mean(1, keepdims=True)) / values.std(1, keepdims=True)


def test_lineage_targets_are_lineage_means_of_zscores(data):
    z = _zscores(data["cells"])
    lineage = immgen.cell_type_lineages()
    columns = list(data["cells"].columns)
    for name in immgen.LINEAGES:
        members = [k for k, c in enumerate(columns) if lineage[c] == name]
        np.testing.assert_allclose(data["lineages"][name], z[:, members].mean(1), atol=2e-4)


def test_treediff_targets_are_child_minus_parent_zscores(data):
    z = _zscores(data["cells"])
    column = {c: k for k, c in enumerate(data["cells"].columns)}
    for child, parent in immgen.tree_edges():
        np.testing.assert_allclose(data["treediff"][f"{child}-{parent}"],
                                   z[:, column[child]] - z[:, column[parent]], atol=2e-3)


def test_ctcf_cancels_after_zscoring(data):
    found = hits(data, "CTCF").astype(float)
    assert 0.08 < found.mean() < 0.4
    # CTCF raises every cell type: visible in the raw row means ...
    assert np.corrcoef(found, data["cells"].to_numpy().mean(1))[0, 1] > 0.1
    # ... and gone from every lineage target once rows are z-scored
    for name in data["lineages"].columns:
        assert abs(np.corrcoef(found, data["lineages"][name])[0, 1]) < 0.12, name
    # positive control with the same scan: Pax5 does correlate with the B target
    assert np.corrcoef(hits(data, "Pax5"), data["lineages"]["B"])[0, 1] > 0.2


def test_same_seed_same_files_other_seed_different(atlas, tmp_path):
    out, _ = atlas
    make_demo_atlas(tmp_path / "same", n_regions=N, random_state=3)
    for name in FILES.values():
        assert filecmp.cmp(out / name, tmp_path / "same" / name, shallow=False), name
    make_demo_atlas(tmp_path / "other", n_regions=N, random_state=4)
    for name in ("sequences.fa", "targets_celltypes.tsv", "targets_lineages.tsv"):
        assert not filecmp.cmp(out / name, tmp_path / "other" / name, shallow=False), name
    assert filecmp.cmp(out / "motifs.meme", tmp_path / "other" / "motifs.meme", shallow=False)


def test_bad_arguments(tmp_path):
    with pytest.raises(TisfmError, match="length"):
        make_demo_atlas(tmp_path / "a", n_regions=10, length=20)
    with pytest.raises(TisfmError, match="n_regions"):
        make_demo_atlas(tmp_path / "a", n_regions=0)
    (tmp_path / "file").write_text("x")
    with pytest.raises(TisfmError, match="is a file"):
        make_demo_atlas(tmp_path / "file", n_regions=10)


def test_cli_handler_refuses_a_non_empty_folder_without_force(tmp_path, capsys):
    parser = build_parser()
    out = tmp_path / "demo"
    out.mkdir()
    (out / "notes.txt").write_text("keep me")
    args = parser.parse_args(["demo-data", "--out", str(out), "--regions", "40", "--seed", "1"])
    assert (args.regions, args.seed, args.force) == (40, 1, False)
    with pytest.raises(TisfmError, match="--force"):
        args.func(args)
    assert not (out / "sequences.fa").exists()
    args = parser.parse_args(["demo-data", "--out", str(out), "--regions", "40", "--force"])
    assert args.func is cmd_demo_data and args.seed == 0  # the handler of demo-data
    args.func(args)
    assert "SYNTHETIC" in capsys.readouterr().out
    assert len(read_fasta(out / "sequences.fa")) == 40
    assert (out / "notes.txt").read_text() == "keep me"
    default = parser.parse_args(["demo-data", "--out", str(tmp_path / "x")])
    assert (default.regions, default.seed) == (20000, 0)
    assert isinstance(pd.read_csv(out / "targets_lineages.tsv", sep="\t"), pd.DataFrame)
