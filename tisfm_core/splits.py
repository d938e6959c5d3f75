"""Train / validation / test splits of region rows, and their JSON files.

A split is a dict with the keys ``"train"``, ``"val"`` and ``"test"``, each a sorted ``int64``
array of row indices into the matched (sequence, target) table; the three are disjoint.
"""

from __future__ import annotations

import json
import numbers

import numpy as np

from .atomic import read_json, write_text
from .errors import TisfmError, check_integer

SPLIT_KEYS = ("train", "val", "test")


def kfold_split(n, *, n_folds=10, fold=0, random_state=0):
    """One fold of the paper's cross-validation: 8 folds train, 1 validation, 1 test.

    A permutation of ``0..n-1`` drawn with ``numpy.random.default_rng(random_state)`` is dealt
    into ``n_folds`` folds whose sizes differ by at most one. Fold ``fold`` is the test set,
    fold ``(fold + 1) % n_folds`` the validation set, the others the training set.

    Parameters
    ----------
    n : int
        Number of rows.
    n_folds : int, default 10
        At least 3 and at most ``n``.
    fold : int, default 0
        Test fold, ``0 <= fold < n_folds``.
    random_state : int, default 0
        Seed; the same seed gives the same folds for every ``fold``.

    Returns
    -------
    dict of str to numpy.ndarray
        ``{"train", "val", "test"}``: sorted ``int64`` row indices.
    """
    n = check_integer(n, "n", 1)
    n_folds = check_integer(n_folds, "n_folds", 3)
    fold = check_integer(fold, "fold", 0)
    if fold >= n_folds:
        raise TisfmError(f"fold must lie in 0..{n_folds - 1}, got {fold}")
    if n < n_folds:
        raise TisfmError(f"{n} rows cannot be dealt into {n_folds} folds; use fewer folds")
    folds = np.array_split(np.random.default_rng(random_state).permutation(n), n_folds)
    val_fold = (fold + 1) % n_folds
    train = [f for k, f in enumerate(folds) if k not in (fold, val_fold)]
    return {"train": np.sort(np.concatenate(train)).astype(np.int64),
            "val": np.sort(folds[val_fold]).astype(np.int64),
            "test": np.sort(folds[fold]).astype(np.int64)}


def holdout_split(n, *, val_fraction=0.1, test_fraction=0.1, random_state=0):
    """A single random train / validation / test split, for quick runs.

    Parameters
    ----------
    n : int
        Number of rows.
    val_fraction, test_fraction : float, default 0.1
        Shares of rows (rounded; at least one row each when the fraction is > 0).
    random_state : int, default 0
        Seed for ``numpy.random.default_rng``.

    Returns
    -------
    dict of str to numpy.ndarray
        ``{"train", "val", "test"}``: sorted ``int64`` row indices.
    """
    n = check_integer(n, "n", 1)
    sizes = []
    for name, fraction in (("val_fraction", val_fraction), ("test_fraction", test_fraction)):
        if not isinstance(fraction, numbers.Real) or not 0 <= fraction < 1:
            raise TisfmError(f"{name} must lie in [0, 1), got {fraction!r}")
        sizes.append(max(1, int(round(n * fraction))) if fraction > 0 else 0)
    n_val, n_test = sizes
    if n - n_val - n_test < 1:
        raise TisfmError(f"with {n} rows, val_fraction={val_fraction} and test_fraction="
                         f"{test_fraction} leave no training rows")
    order = np.random.default_rng(random_state).permutation(n)
    return {"train": np.sort(order[n_val + n_test:]).astype(np.int64),
            "val": np.sort(order[:n_val]).astype(np.int64),
            "test": np.sort(order[n_val:n_val + n_test]).astype(np.int64)}


def _validate(split, source, n=None):
    """Check keys, integer lists, range and disjointness; return int64 arrays."""
    if not isinstance(split, dict):
        raise TisfmError(f"{source} must map 'train', 'val' and 'test' to index lists")
    missing = [k for k in SPLIT_KEYS if k not in split]
    extra = [str(k) for k in split if k not in SPLIT_KEYS]
    if missing or extra:
        raise TisfmError(f"{source} must have exactly the keys train, val, test (missing: "
                         f"{', '.join(missing) or 'none'}; unexpected: "
                         f"{', '.join(extra) or 'none'})")
    arrays = {}
    for key in SPLIT_KEYS:
        values = split[key]
        if isinstance(values, np.ndarray):
            if values.ndim != 1 or (values.size and values.dtype.kind not in "iu"):
                raise TisfmError(f"{source}: '{key}' must be a 1-D integer array, got shape "
                                 f"{values.shape} and dtype {values.dtype}")
            values = values.tolist()
        if not isinstance(values, (list, tuple)):
            raise TisfmError(f"{source}: '{key}' must be a list of row indices")
        for position, value in enumerate(values):
            if isinstance(value, bool) or not isinstance(value, numbers.Integral):
                raise TisfmError(f"{source}: '{key}' entry {position} is {value!r}; expected an "
                                 "integer row index")
        array = np.asarray(values, dtype=np.int64)
        low = np.flatnonzero(array < 0)
        high = np.flatnonzero(array >= n) if n is not None else low[:0]
        if low.size or high.size:
            position = int(low[0] if low.size else high[0])
            limit = f"0..{n - 1}" if n is not None else ">= 0"
            raise TisfmError(f"{source}: '{key}' entry {position} is {array[position]}; row "
                             f"indices must be {limit}")
        unique, counts = np.unique(array, return_counts=True)
        if (counts > 1).any():
            raise TisfmError(f"{source}: '{key}' lists row {unique[counts > 1][0]} more than once")
        arrays[key] = array
    for i, a in enumerate(SPLIT_KEYS):
        for b in SPLIT_KEYS[i + 1:]:
            shared = np.intersect1d(arrays[a], arrays[b])
            if shared.size:
                raise TisfmError(f"{source}: row {shared[0]} is in both '{a}' and '{b}'; the "
                                 "sets must be disjoint")
    return arrays


def save_split(split, path):
    """Write a split as JSON (``{"train": [...], "val": [...], "test": [...]}``), atomically.

    Parameters
    ----------
    split : dict
        As returned by :func:`kfold_split` or :func:`holdout_split`; validated first.
    path : str or Path
        Destination; written to a temporary file in the same folder, then renamed.
    """
    arrays = _validate(split, "the split")
    text = json.dumps({key: arrays[key].tolist() for key in SPLIT_KEYS}, separators=(",", ":"))
    write_text(path, text + "\n")


def load_split(path, n=None):
    """Read and validate a split written by :func:`save_split`.

    Parameters
    ----------
    path : str or Path
        JSON file.
    n : int, optional
        Number of rows; when given, every index must lie in ``0..n-1``.

    Returns
    -------
    dict of str to numpy.ndarray
        ``{"train", "val", "test"}``: ``int64`` row indices.

    Raises
    ------
    TisfmError
        For a missing file, invalid JSON, missing or extra keys, non-integer entries, indices
        out of range, repeated rows, or a row in two sets.
    """
    data = read_json(path, what="split file")
    return _validate(data, f"split file {path}", n)
