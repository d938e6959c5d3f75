"""Cross-validation and hold-out splits, and their JSON files."""

import json

import numpy as np
import pytest

from tisfm_core.errors import TisfmError
from tisfm_core.splits import holdout_split, kfold_split, load_split, save_split


@pytest.mark.parametrize("n, n_folds", [(103, 10), (30, 3), (10, 10)])
def test_kfold_partitions_and_rotates(n, n_folds):
    splits = [kfold_split(n, n_folds=n_folds, fold=i, random_state=4) for i in range(n_folds)]
    test_count = np.zeros(n, dtype=int)
    for i, split in enumerate(splits):
        assert set(split) == {"train", "val", "test"}
        everything = np.concatenate([split["train"], split["val"], split["test"]])
        np.testing.assert_array_equal(np.sort(everything), np.arange(n))  # a partition
        for part in split.values():
            assert part.dtype == np.int64 and (np.diff(part) > 0).all()
        # Validation of fold i is the test set of fold i + 1.
        np.testing.assert_array_equal(split["val"], splits[(i + 1) % n_folds]["test"])
        test_count[split["test"]] += 1
    assert (test_count == 1).all()
    sizes = [len(s["test"]) for s in splits]
    assert max(sizes) - min(sizes) <= 1 and sum(sizes) == n
    assert all(len(s["train"]) == n - len(s["val"]) - len(s["test"]) for s in splits)


def test_kfold_seed():
    a = kfold_split(200, fold=3, random_state=1)
    b = kfold_split(200, fold=3, random_state=1)
    c = kfold_split(200, fold=3, random_state=2)
    for key in a:
        np.testing.assert_array_equal(a[key], b[key])
    assert not np.array_equal(a["test"], c["test"])
    # The folds are slices of the seeded permutation (independent recomputation).
    perm = np.random.default_rng(1).permutation(200)
    np.testing.assert_array_equal(a["test"], np.sort(perm[60:80]))
    np.testing.assert_array_equal(a["val"], np.sort(perm[80:100]))


@pytest.mark.parametrize("kwargs, pattern", [
    ({"n": 50, "n_folds": 2}, "n_folds must be an integer >= 3"),
    ({"n": 50, "fold": 10}, r"fold must lie in 0..9"),
    ({"n": 50, "fold": -1}, "fold must be an integer >= 0"),
    ({"n": 5}, "5 rows cannot be dealt into 10 folds"),
])
def test_kfold_errors(kwargs, pattern):
    with pytest.raises(TisfmError, match=pattern):
        kfold_split(**kwargs)


def test_holdout_split():
    split = holdout_split(101, val_fraction=0.1, test_fraction=0.2, random_state=3)
    assert (len(split["val"]), len(split["test"]), len(split["train"])) == (10, 20, 71)
    np.testing.assert_array_equal(np.sort(np.concatenate(list(split.values()))), np.arange(101))
    assert len(holdout_split(5, val_fraction=0.01, test_fraction=0.0)["val"]) == 1
    with pytest.raises(TisfmError, match="leave no training rows"):
        holdout_split(2, val_fraction=0.5, test_fraction=0.4)
    with pytest.raises(TisfmError, match=r"test_fraction must lie in \[0, 1\)"):
        holdout_split(10, test_fraction=1.0)


def test_save_load_round_trip(tmp_path):
    split = kfold_split(57, n_folds=5, fold=2)
    path = tmp_path / "sub" / "split.json"
    save_split(split, path)
    assert [p.name for p in path.parent.iterdir()] == ["split.json"]  # no temp file left
    on_disk = json.loads(path.read_text())
    assert on_disk == {k: v.tolist() for k, v in split.items()}
    loaded = load_split(path, n=57)
    for key in split:
        np.testing.assert_array_equal(loaded[key], split[key])
        assert loaded[key].dtype == np.int64
    with pytest.raises(TisfmError, match=r"entry \d+ is 5\d; row indices must be 0..49"):
        load_split(path, n=50)


@pytest.mark.parametrize("text, pattern", [
    ('{"train": [0, 1], "val": [2], "test": [3]', "not valid JSON"),
    ('{"train": [0, 1], "val": [2]}', "missing: test"),
    ('{"train": [0], "val": [2], "test": [3], "extra": []}', "unexpected: extra"),
    ('{"train": [0, 1.5], "val": [2], "test": [3]}', r"'train' entry 1 is 1.5"),
    ('{"train": [0, true], "val": [2], "test": [3]}', r"'train' entry 1 is True"),
    ('{"train": [0, 1], "val": [1], "test": [3]}', r"row 1 is in both 'train' and 'val'"),
    ('{"train": [0, 0], "val": [1], "test": [3]}', r"'train' lists row 0 more than once"),
    ('{"train": [0, -1], "val": [1], "test": [3]}', r"'train' entry 1 is -1"),
    ('[0, 1]', "JSON object"),
])
def test_load_split_errors(tmp_path, text, pattern):
    path = tmp_path / "split.json"
    path.write_text(text)
    with pytest.raises(TisfmError, match=pattern) as info:
        load_split(path)
    assert "split.json" in str(info.value)
    with pytest.raises(TisfmError, match="does not exist"):
        load_split(tmp_path / "missing.json")
