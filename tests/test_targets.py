"""Target tables and transforms, checked against scipy and hand computations."""

from pathlib import Path

import numpy as np
import pandas as pd
import pytest
from scipy import stats

from tisfm_core.errors import TisfmError
from tisfm_core.targets import (
    aggregate_lineages,
    apply_transform,
    match_ids,
    read_aitac_targets,
    read_lineage_map,
    read_parent_table,
    read_targets,
    tree_diff,
    zscore_rows,
)

SAMPLE = Path(__file__).resolve().parents[2] / "shared" / "data" / "immgen_sample"


def write(path, text):
    path.write_text(text)
    return path


def test_read_targets_values_and_header(tmp_path):
    path = write(tmp_path / "t.tsv", "\tB\tT.4\n\np1\t1.5\t-2\np2\t3e-1\t0\n")
    got = read_targets(path)
    assert got.index.tolist() == ["p1", "p2"] and got.columns.tolist() == ["B", "T.4"]
    assert got.index.name is None and (got.dtypes == np.float32).all()
    np.testing.assert_array_equal(got.to_numpy(), np.array([[1.5, -2], [0.3, 0]], np.float32))
    # R's write.table leaves out the row-name header cell; ids are kept as text; CRLF and a
    # leading blank line are fine.
    got = read_targets(write(tmp_path / "r.tsv", "\r\nB\tT.4\r\n007\t1\t2\r\n"))
    assert got.index.tolist() == ["007"] and got.columns.tolist() == ["B", "T.4"]
    assert read_targets(write(tmp_path / "n.tsv", "peak\tB\np1\t1\n")).index.name == "peak"


@pytest.mark.parametrize("text, pattern", [
    ("", "is empty"),
    ("peak\np1\n", "no output columns"),
    ("\tB\tC\tB\np1\t1\t2\t3\n",
     r"column name 'B' appears twice in the header \(columns 1 and 3\)"),
    ("\tB\tC\np1\t1\t2\np2\t1\n", r"line 3 \(row 'p2'\) has 2 tab-separated fields; expected 3"),
    ("\tB\tC\np1\t1\t2\np2\tabc\t1\n", r"line 3: row 'p2', column 'B' holds 'abc'"),
    ("\tB\tC\np1\t1\t2\np2\t1\t\n", r"line 3: row 'p2', column 'C' is empty"),
    ("\tB\tC\np1\t1\tNA\n", r"row 'p1', column 'C' holds 'NA'"),
    ("\tB\tC\np1\t1\t2\np2\tnan\t1\n", r"row 'p2', column 'B' holds 'nan'"),
    ("\tB\tC\np1\tinf\t2\n", r"row 'p1', column 'B' holds 'inf'"),
    ("\tB\tC\np1\t1\t2\np2\t1e39\t2\n", r"row 'p2', column 'B' holds '1e\+39'; .*within float32 range"),
    ("\tB\tC\np1\t1\t2\np1\t1\t3\n", r"region id 'p1' appears more than once"),
    ("\tB\tC\n", "no data rows"),
])
def test_read_targets_errors(tmp_path, text, pattern):
    path = write(tmp_path / "bad.tsv", text)
    with pytest.raises(TisfmError, match=pattern) as info:
        read_targets(path)
    assert "bad.tsv" in str(info.value)


def test_aitac_sample_matches_activity_tsv():
    if not (SAMPLE / "activity.tsv").is_file():
        pytest.skip("shared ImmGen sample not available")
    table = read_targets(SAMPLE / "activity.tsv")
    aitac = read_aitac_targets(SAMPLE / "cell_type_array.npy", SAMPLE / "peak_names.npy",
                               SAMPLE / "cell_types.tsv")
    assert aitac.shape == (100, 81) and aitac.index.tolist() == table.index.tolist()
    assert aitac.columns.tolist() == table.columns.tolist()
    # activity.tsv holds 6 significant digits, so it agrees to half a unit in the 6th digit
    # (relative 5e-6), not to an absolute 1e-6.
    np.testing.assert_allclose(aitac.to_numpy(), table.to_numpy(), rtol=5e-6, atol=1e-7)
    raw = np.load(SAMPLE / "cell_type_array.npy", allow_pickle=False)
    np.testing.assert_array_equal(aitac.to_numpy(), raw.astype(np.float32))


def test_read_aitac_targets_refuses_pickles_and_bad_shapes(tmp_path):
    values = tmp_path / "v.npy"
    np.save(values, np.ones((3, 2), np.float32))
    ids = tmp_path / "ids.npy"
    np.save(ids, np.array([b"a", b"b", b"c"]))
    got = read_aitac_targets(values, ids, ["x", "y"])
    assert got.index.tolist() == ["a", "b", "c"] and got.columns.tolist() == ["x", "y"]
    pickled = tmp_path / "obj.npy"
    np.save(pickled, np.array(["a", 1, None], dtype=object), allow_pickle=True)
    with pytest.raises(TisfmError, match="pickled arrays are refused"):
        read_aitac_targets(values, pickled, ["x", "y"])
    with pytest.raises(TisfmError, match="3 output names .* has 2 columns"):
        read_aitac_targets(values, ids, ["x", "y", "z"])
    short = tmp_path / "short.npy"
    np.save(short, np.array(["a", "b"]))
    with pytest.raises(TisfmError, match="has 2 ids but .* has 3 rows"):
        read_aitac_targets(values, short, ["x", "y"])


def test_match_ids_keeps_sequence_order_and_reports():
    seq_ids = ["s3", "a", "s1", "b", "s2", "c", "d", "e", "f"]
    tgt_ids = ["s1", "s2", "x", "s3"]
    m = match_ids(seq_ids, tgt_ids)
    assert m.n_matched == 3
    assert [seq_ids[i] for i in m.sequence_index] == ["s3", "s1", "s2"]
    assert [tgt_ids[i] for i in m.target_index] == ["s3", "s1", "s2"]
    assert m.missing_in_targets == ["a", "b", "c", "d", "e", "f"]
    assert m.missing_in_sequences == ["x"]
    line = m.summary()
    assert "matched 3 of 9 sequences and 3 of 4 target rows" in line
    assert "6 sequences have no target row (e.g. 'a', 'b', 'c', 'd', 'e')" in line and "'f'" not in line
    assert "1 target rows have no sequence (e.g. 'x')" in line
    with pytest.raises(TisfmError, match=r"chr1:100-400.*peak_1"):
        match_ids(["chr1:100-400", "chr1:500-800"], ["peak_1", "peak_2"])


def test_zscore_rows_matches_scipy():
    rng = np.random.default_rng(0)
    values = rng.normal(size=(20, 7)) * rng.uniform(0.1, 5, (20, 1))
    values[3] = 0.1  # constant row: zeros (scipy gives NaN)
    df = pd.DataFrame(values, columns=list("abcdefg"))
    got = zscore_rows(df)
    assert got.dtypes.eq(np.float32).all()
    keep = np.arange(20) != 3
    expected = np.zeros_like(values)
    expected[keep] = stats.zscore(values[keep], axis=1, ddof=0)
    np.testing.assert_allclose(got.to_numpy()[keep], expected[keep], rtol=1e-5, atol=1e-6)
    np.testing.assert_array_equal(got.to_numpy()[3], np.zeros(7))


def test_aggregate_lineages_by_hand(tmp_path):
    df = pd.DataFrame([[1, 2, 3, 4, 10], [0, 0, 1, 1, 0], [5, 5, 5, 5, 5]],
                      index=["r1", "r2", "r3"], columns=["c1", "c2", "c3", "c4", "c5"],
                      dtype=float)
    mapping_path = write(tmp_path / "map.tsv", "task\tcell_type\tlineage\nt0\tc3\tT\nt1\tc1\tB\n"
                         "t2\tc2\tB\nt3\tc4\tT\nt4\tc5\t\nt5\tother\tmyeloid\n")
    mapping = read_lineage_map(mapping_path)
    assert mapping.to_dict() == {"c3": "T", "c1": "B", "c2": "B", "c4": "T", "c5": "",
                                 "other": "myeloid"}
    got = aggregate_lineages(df, mapping)
    assert got.columns.tolist() == ["T", "B"]
    # Hand computation: z-scores over all 5 columns (population std), then lineage means.
    expected = []
    for row in df.to_numpy():
        mean, std = sum(row) / 5, (sum((x - sum(row) / 5) ** 2 for x in row) / 5) ** 0.5
        z = [(x - mean) / std if std else 0.0 for x in row]
        expected.append([(z[2] + z[3]) / 2, (z[0] + z[1]) / 2])
    np.testing.assert_allclose(got.to_numpy(), expected, atol=1e-6)
    with pytest.raises(TisfmError, match="not in the lineage table: 'c9'"):
        aggregate_lineages(df.assign(c9=1.0), mapping)
    table, info = apply_transform(df, f"lineage:{mapping_path}")
    pd.testing.assert_frame_equal(table, got)
    assert info == {"kind": "lineage", "source": str(mapping_path),
                    "mapping": {"c1": "B", "c2": "B", "c3": "T", "c4": "T", "c5": ""}}


def test_read_lineage_map_sample_layout():
    if not (SAMPLE / "cell_types.tsv").is_file():
        pytest.skip("shared ImmGen sample not available")
    mapping = read_lineage_map(SAMPLE / "cell_types.tsv")
    raw = pd.read_csv(SAMPLE / "cell_types.tsv", sep="\t", keep_default_na=False)
    assert mapping.index.tolist() == raw["cell_type"].tolist()
    assert mapping["MF.102+480+.PC"] == ""
    assert sorted(set(mapping) - {""}) == sorted(set(raw["lineage"]) - {""})


def test_tree_diff_matches_manual_subtraction(tmp_path):
    rng = np.random.default_rng(2)
    df = pd.DataFrame(rng.normal(size=(6, 4)), columns=["LT-HSC", "ST-HSC", "MPP", "CLP"])
    parents_path = write(tmp_path / "tree.tsv", "child\tparent\nLT-HSC\t\nST-HSC\tLT-HSC\n"
                         "MPP\tST-HSC\nCLP\tMPP\n")
    parents = read_parent_table(parents_path)
    diffs, edges = tree_diff(df, parents)
    assert diffs.columns.tolist() == ["ST-HSC-LT-HSC", "MPP-ST-HSC", "CLP-MPP"]
    assert edges[["child", "parent"]].to_numpy().tolist() == [
        ["ST-HSC", "LT-HSC"], ["MPP", "ST-HSC"], ["CLP", "MPP"]]
    assert edges["edge"].tolist() == diffs.columns.tolist()
    z = stats.zscore(df.to_numpy(), axis=1)
    expected = np.stack([z[:, 1] - z[:, 0], z[:, 2] - z[:, 1], z[:, 3] - z[:, 2]], axis=1)
    np.testing.assert_allclose(diffs.to_numpy(), expected, atol=1e-5)
    table, info = apply_transform(df, f"tree-diff:{parents_path}")
    pd.testing.assert_frame_equal(table, diffs)
    assert info["kind"] == "tree-diff" and info["edges"][0] == ["ST-HSC", "LT-HSC"]
    with pytest.raises(TisfmError, match="not target columns: 'CLP'"):
        tree_diff(df.drop(columns="CLP"), parents)


@pytest.mark.parametrize("text, pattern", [
    ("child\tparent\na\tb\nb\tc\nc\ta\n", r"cycle: 'a' -> 'b' -> 'c' -> 'a'"),
    ("child\tparent\na\ta\n", r"cycle: 'a' -> 'a'"),
    ("child\tparent\na\t\nb\ta\nb\ta\n", r"child 'b' appears twice \(lines 3 and 4\)"),
    ("kid\tparent\na\tb\n", r"lacks the column\(s\) child"),
])
def test_parent_table_errors(tmp_path, text, pattern):
    with pytest.raises(TisfmError, match=pattern):
        read_parent_table(write(tmp_path / "tree.tsv", text))


def test_parent_table_unknown_names(tmp_path):
    path = write(tmp_path / "tree.tsv", "child\tparent\nb\ta\nc\tq\n")
    assert read_parent_table(path)["parent"].tolist() == ["a", "q"]
    with pytest.raises(TisfmError, match=r"line 3: parent 'q' is not a known cell type"):
        read_parent_table(path, cell_types=["a", "b", "c"])


def test_apply_transform_simple_and_unknown():
    df = pd.DataFrame([[1.0, 3.0], [2.0, 2.0]], columns=["a", "b"])
    table, info = apply_transform(df, "none")
    assert info == {"kind": "none"} and (table.dtypes == np.float32).all()
    np.testing.assert_array_equal(table.to_numpy(), df.to_numpy())
    table, info = apply_transform(df, "zscore")
    assert info == {"kind": "zscore"}
    np.testing.assert_array_equal(table.to_numpy(), [[-1, 1], [0, 0]])
    with pytest.raises(TisfmError, match="expected one of: none, zscore, lineage:PATH.tsv"):
        apply_transform(df, "log1p")
