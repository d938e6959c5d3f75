"""ImmGen package data: the 81 cell types, their lineages and the hand-curated lineage tree."""

from __future__ import annotations

from collections import deque

import numpy as np
import pandas as pd
import pytest
from conftest import IMMGEN, need

from tisfm_core import immgen
from tisfm_core.targets import (
    aggregate_lineages,
    read_lineage_map,
    read_parent_table,
    tree_diff,
)


def test_cell_types_count_uniqueness_and_lineages():
    table = immgen.cell_types()
    assert list(table.columns) == ["cell_type", "lineage"]
    assert len(table) == 81
    assert table["cell_type"].is_unique
    assert set(table["lineage"]) == set(immgen.LINEAGES) | {""}
    assert immgen.LINEAGES == ("abT", "B", "gdT", "innate.lym", "myeloid", "stem", "T.act")
    # the one cell type without a lineage in the source
    assert table.loc[table["lineage"] == "", "cell_type"].tolist() == ["MF.102+480+.PC"]
    counts = table["lineage"].value_counts().to_dict()
    assert counts == {"B": 18, "myeloid": 15, "abT": 15, "innate.lym": 10, "T.act": 10, "gdT": 7,
                      "stem": 5, "": 1}
    assert immgen.cell_type_lineages() == dict(zip(table["cell_type"], table["lineage"]))


def test_cell_types_equal_the_shared_ai_tac_table():
    shared = pd.read_csv(need(IMMGEN / "cell_types.tsv"), sep="\t", dtype=str, keep_default_na=False)
    table = immgen.cell_types()
    assert table["cell_type"].tolist() == shared["cell_type"].tolist()
    assert table["lineage"].tolist() == shared["lineage"].tolist()


def test_lineage_map_feeds_aggregate_lineages():
    mapping = immgen.lineage_map()
    assert mapping.index.tolist() == immgen.cell_types()["cell_type"].tolist()
    assert read_lineage_map(immgen.CELL_TYPES_TSV).equals(mapping)
    rng = np.random.default_rng(0)
    df = pd.DataFrame(rng.normal(size=(5, 81)), columns=mapping.index)
    out = aggregate_lineages(df, mapping)
    values = df.to_numpy()
    z = (values - values.mean(1, keepdims=True)) / values.std(1, keepdims=True)
    stem = [k for k, c in enumerate(df.columns) if c.startswith(("LTHSC", "STHSC", "MMP"))]
    assert len(stem) == 5
    np.testing.assert_allclose(out["stem"], z[:, stem].mean(1), atol=1e-5)
    assert set(out.columns) == set(immgen.LINEAGES)


def _parents():
    table = immgen.parent_table()
    return dict(zip(table["child"], table["parent"]))


def test_parent_table_names_root_and_cycles():
    table = immgen.parent_table()
    names = set(immgen.cell_types()["cell_type"])
    assert list(table.columns) == ["child", "parent"]
    assert table["child"].is_unique and set(table["child"]) == names
    assert set(table["parent"]) - {""} <= names
    roots = table.loc[table["parent"] == "", "child"].tolist()
    assert roots == [immgen.ROOT] == ["LTHSC.34-.BM"]
    # no cycle: every walk up the tree reaches the root within 81 steps
    parent_of = _parents()
    for name in names:
        node, steps = name, 0
        while parent_of[node]:
            node, steps = parent_of[node], steps + 1
            assert steps <= len(names), f"cycle through {name}"
        assert node == immgen.ROOT


def test_every_cell_type_reachable_from_the_root():
    children = {}
    for child, parent in _parents().items():
        children.setdefault(parent, []).append(child)
    seen, queue = {immgen.ROOT}, deque([immgen.ROOT])
    while queue:
        for child in children.get(queue.popleft(), []):
            assert child not in seen
            seen.add(child)
            queue.append(child)
    assert seen == set(immgen.cell_types()["cell_type"])


def test_required_edges():
    parent_of = _parents()
    assert parent_of["proB.FrBC.BM"] == "proB.FrA.BM"
    assert parent_of["proB.FrA.BM"] == "proB.CLP.BM"
    assert parent_of["LTHSC.34+.BM"] == "LTHSC.34-.BM"
    assert parent_of["STHSC.150-.BM"] == "LTHSC.34+.BM"
    chain = ["preT.DN1.Th", "preT.DN2a.Th", "preT.DN2b.Th", "preT.DN3.Th", "T.DN4.Th", "T.ISP.Th",
             "T.DP.Th"]
    for parent, child in zip(chain, chain[1:]):
        assert parent_of[child] == parent
    assert parent_of["T.4.Th"] == "T.DP.Th" and parent_of["T.8.Th"] == "T.DP.Th"
    assert parent_of["T.4.Nve.Sp"] == "T.4.Th" and parent_of["T.8.Nve.Sp"] == "T.8.Th"
    assert parent_of["B.T1.Sp"] == "B.FrE.BM" and parent_of["B.T2.Sp"] == "B.T1.Sp"
    for child in ("B.T3.Sp", "B.Fo.Sp", "B.MZ.Sp"):
        assert parent_of[child] == "B.T2.Sp"
    # every myeloid cell type descends from the myeloid-biased MPP3
    for child, lineage in immgen.cell_type_lineages().items():
        if lineage == "myeloid":
            node = child
            while node not in ("MMP3.48+.BM", ""):
                node = parent_of[node]
            assert node == "MMP3.48+.BM", child


def test_tree_edges_and_tree_diff_with_the_shipped_table():
    edges = immgen.tree_edges()
    assert len(edges) == 80 and len(set(edges)) == 80
    assert edges == [(c, p) for c, p in _parents().items() if p]
    # the shipped file passes the core reader's own validation
    table = read_parent_table(immgen.PARENTS_TSV, cell_types=immgen.cell_types()["cell_type"])
    assert len(table) == 81
    rng = np.random.default_rng(1)
    df = pd.DataFrame(rng.normal(size=(4, 81)), columns=immgen.cell_types()["cell_type"])
    diffs, info = tree_diff(df, immgen.parent_table())
    assert diffs.shape == (4, 80)
    values = df.to_numpy()
    z = (values - values.mean(1, keepdims=True)) / values.std(1, keepdims=True)
    col = list(df.columns)
    np.testing.assert_allclose(diffs["T.4.Th-T.DP.Th"],
                               z[:, col.index("T.4.Th")] - z[:, col.index("T.DP.Th")], atol=1e-5)


@pytest.mark.parametrize("path", [immgen.CELL_TYPES_TSV, immgen.PARENTS_TSV])
def test_package_files_are_files(path):
    assert path.is_file()
    assert "\r" not in path.read_text(encoding="utf-8")
