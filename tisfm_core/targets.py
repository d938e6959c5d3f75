"""Target tables (regions x outputs) and the paper's target transforms.

A target table is a ``pandas.DataFrame`` indexed by region id (str) with one ``float32`` column
per output (cell type, lineage or tree edge). Transforms: per-region z-scores across outputs,
lineage means of z-scores, and parent-child differences along a cell-type tree ("tree-diff").
"""

from __future__ import annotations

import io
import os
from dataclasses import dataclass, field

import numpy as np
import pandas as pd

from .atomic import read_arrays
from .errors import TisfmError
from .textfiles import check_input_file, is_gzip, iter_lines, read_text

TRANSFORMS = ("none", "zscore", "lineage:PATH.tsv", "tree-diff:PATH.tsv")


def _examples(values, k=5):
    """Up to ``k`` values, quoted (file contents are always quoted, see
    :func:`tisfm_core.server.redact`)."""
    values = [f"'{v}'" for v in values]
    return ", ".join(values[:k]) + (f", ... ({len(values)} in all)" if len(values) > k else "")


def _check_frame(frame, source):
    """Refuse empty ids, duplicate ids and non-finite values; return the frame as float32."""
    ids = frame.index
    empty = np.flatnonzero(ids.astype(str) == "")
    if empty.size:
        raise TisfmError(f"{source}: row {empty[0] + 1} has an empty region id")
    repeated = ids.duplicated()
    if repeated.any():
        raise TisfmError(f"{source}: region id '{ids[np.argmax(repeated)]}' appears more than "
                         "once; ids must be unique")
    # targets are trained in float32: cast first (one float32 copy, no float64 one), so that a
    # value beyond float32's range (1e39) is infinite and refused like inf itself
    with np.errstate(over="ignore"):
        table = frame.astype(np.float32)
    bad = ~np.isfinite(table.to_numpy())
    if bad.any():
        row, col = np.argwhere(bad)[0]
        raise TisfmError(f"{source}: row '{ids[row]}', column '{frame.columns[col]}' holds "
                         f"'{float(frame.iat[row, col]):g}'; expected a finite number within float32 "
                         f"range (|value| <= {np.finfo(np.float32).max:.3g})")
    return table


def read_targets(path):
    """Read a target table.

    Parameters
    ----------
    path : str or Path
        Tab-separated file with a header row. The first column holds region ids (its header
        cell may be empty, or missing as written by R's ``write.table``); the other columns are
        outputs named by the header.

    Returns
    -------
    pandas.DataFrame
        Shape (N, R), index = region ids (str), ``float32`` values.

    Raises
    ------
    TisfmError
        Naming the file, line, row id and column, for: an empty file, no output columns,
        duplicate column names, a line with the wrong number of fields, a non-numeric,
        empty, NaN or infinite value, an empty or duplicate region id.
    """
    path = check_input_file(path, "target file")
    # First pass, streamed: header and the field count of every line (pandas would silently
    # pad short lines with NaN).
    header, header_line, n_fields, lines = None, 0, None, []
    for lineno, line in enumerate(iter_lines(path, "target file"), 1):
        line = line.rstrip("\r\n")
        if not line:
            continue
        if header is None:
            header, header_line = line.split("\t"), lineno
            continue
        count = line.count("\t") + 1
        if n_fields is None:
            n_fields = count if count == len(header) + 1 else len(header)
        if count != n_fields:
            row_id = line.split("\t", 1)[0]
            raise TisfmError(f"{path} line {lineno} (row '{row_id}') has {count} "
                             f"tab-separated fields; expected {n_fields} like the header")
        lines.append(lineno)
    if header is None:
        raise TisfmError(f"target file {path} is empty")
    # R writes the header without a cell for the row names: then every header field is an output.
    names = header if n_fields == len(header) + 1 else header[1:]
    index_name = None if len(names) == len(header) or not header[0].strip() else header[0]
    if not names and ("," in header[0] or ";" in header[0]):
        raise TisfmError(f"target file {path} looks comma- or semicolon-separated (header "
                         f"'{header[0][:60]}'); target tables must be tab-separated")
    if not names:
        raise TisfmError(f"target file {path} has no output columns (the header holds only "
                         f"'{header[0]}'); expected: id, then one column per output")
    seen = {}
    for k, name in enumerate(names):
        if not name.strip():
            raise TisfmError(f"{path}: output column {k + 1} has an empty name in the header")
        if name in seen:
            raise TisfmError(f"{path}: column name '{name}' appears twice in the header "
                             f"(columns {seen[name] + 1} and {k + 1})")
        seen[name] = k
    if not lines:
        raise TisfmError(f"target file {path} has a header but no data rows")

    # Second pass: the C parser. No NA conversion, so empty or "NA" cells make a column
    # non-numeric and are reported below with their text.
    options = dict(sep="\t", header=None, skiprows=header_line, names=range(n_fields), index_col=0,
                   na_filter=False, encoding="utf-8-sig", compression="gzip" if is_gzip(path) else None)
    try:   # float32 straight from the parser: half the memory of float64 for an atlas
        with np.errstate(over="ignore"):      # beyond float32 becomes inf, refused below
            table = pd.read_csv(path, dtype={0: str, **dict.fromkeys(range(1, n_fields), np.float32)},
                                **options)
        if not np.isfinite(table.to_numpy()).all():
            raise ValueError("not finite")   # read again in float64 to quote the cell as written
    except ValueError:   # a cell that is not a number: read again untyped to say which, below
        table = pd.read_csv(path, dtype={0: str}, **options)
    table.columns = names
    table.index = table.index.astype(str)
    table.index.name = index_name
    for column in table.columns:
        dtype = table[column].dtype
        if not pd.api.types.is_numeric_dtype(dtype) or pd.api.types.is_bool_dtype(dtype):
            raw = table[column].astype(str)
            parsed = pd.to_numeric(raw, errors="coerce")
            row = int(np.argmax(parsed.isna().to_numpy()))
            text = raw.iloc[row]
            what = "is empty" if not text.strip() else f"holds {text!r}"
            raise TisfmError(f"{path} line {lines[row]}: row '{table.index[row]}', column "
                             f"'{column}' {what}; expected a finite number")
    return _check_frame(table, str(path))


def read_aitac_targets(values_npy, ids_npy, names):
    """Read targets stored in AI-TAC's sample format.

    Parameters
    ----------
    values_npy : str or Path
        ``cell_type_array.npy``: numeric array of shape (N, R).
    ids_npy : str or Path
        ``peak_names.npy``: bytes or str array of shape (N,).
    names : list of str, str or Path, or None
        The R output names, or a TSV with a ``cell_type`` column listing them in column order;
        None names them ``task0``, ``task1``, ...

    Returns
    -------
    pandas.DataFrame
        Shape (N, R), index = region ids (str), ``float32`` values.
    """
    values = read_arrays(values_npy, what="target array")
    ids = read_arrays(ids_npy, what="peak-name array")
    if values.ndim != 2 or values.dtype.kind not in "iuf":
        raise TisfmError(f"target array {values_npy} must be a numeric (N, R) array, got shape "
                         f"{values.shape} and dtype {values.dtype}")
    if ids.ndim != 1 or ids.dtype.kind not in "SU":
        raise TisfmError(f"peak-name array {ids_npy} must be a 1-D bytes or str array, got shape "
                         f"{ids.shape} and dtype {ids.dtype}")
    if len(ids) != len(values):
        raise TisfmError(f"peak-name array {ids_npy} has {len(ids)} ids but target array "
                         f"{values_npy} has {len(values)} rows")
    if ids.dtype.kind == "S":
        ids = np.char.decode(ids, "utf-8")
    if names is None:
        names = [f"task{i}" for i in range(values.shape[1])]
    elif isinstance(names, (str, os.PathLike)):
        names = _read_named_columns(names, ("cell_type",), "cell-type table")[1]["cell_type"].tolist()
    names = [str(n) for n in names]
    if len(names) != values.shape[1]:
        raise TisfmError(f"{len(names)} output names were given but target array {values_npy} "
                         f"has {values.shape[1]} columns")
    repeated = pd.Index(names).duplicated()
    if repeated.any():
        raise TisfmError(f"output name '{names[np.argmax(repeated)]}' appears twice")
    frame = pd.DataFrame(values, index=pd.Index(ids.astype(str)), columns=names)
    return _check_frame(frame, str(values_npy))


@dataclass
class IdMatch:
    """Pairing of sequence rows with target rows.

    Attributes
    ----------
    sequence_index, target_index : numpy.ndarray
        ``int64`` arrays of shape (n_matched,): row ``sequence_index[k]`` of the sequences goes
        with row ``target_index[k]`` of the targets, in sequence order.
    n_matched : int
    missing_in_targets : list of str
        Sequence ids without a target row (sequence order).
    missing_in_sequences : list of str
        Target ids without a sequence (target order).
    """

    sequence_index: np.ndarray
    target_index: np.ndarray
    n_matched: int
    missing_in_targets: list = field(default_factory=list)
    missing_in_sequences: list = field(default_factory=list)

    def summary(self):
        """One line: counts, with up to 5 example ids of each unmatched side."""
        n_seq = self.n_matched + len(self.missing_in_targets)
        n_tgt = self.n_matched + len(self.missing_in_sequences)
        text = (f"matched {self.n_matched} of {n_seq} sequences and {self.n_matched} of "
                f"{n_tgt} target rows")
        if self.missing_in_targets:
            text += (f"; {len(self.missing_in_targets)} sequences have no target row (e.g. "
                     f"{_examples(self.missing_in_targets[:5])})")
        if self.missing_in_sequences:
            text += (f"; {len(self.missing_in_sequences)} target rows have no sequence (e.g. "
                     f"{_examples(self.missing_in_sequences[:5])})")
        return text


def match_ids(sequence_ids, target_ids):
    """Pair sequences with target rows by id, keeping the sequence order.

    Parameters
    ----------
    sequence_ids, target_ids : array-like of str
        Shapes (N,) and (M,); target ids must be unique.

    Returns
    -------
    IdMatch

    Raises
    ------
    TisfmError
        When the target ids repeat, or no id matches (showing examples of both sides).
    """
    sequence_ids = pd.Index(np.asarray(sequence_ids, dtype=str))
    target_ids = pd.Index(np.asarray(target_ids, dtype=str))
    repeated = target_ids.duplicated()
    if repeated.any():
        raise TisfmError(f"target id '{target_ids[np.argmax(repeated)]}' appears more than once")
    position = target_ids.get_indexer(sequence_ids)
    found = position >= 0
    if not found.any():
        raise TisfmError("no sequence id matches a target id: sequences have e.g. "
                         f"{_examples(sequence_ids[:3], 3)}; targets have e.g. "
                         f"{_examples(target_ids[:3], 3)} (check that both files use the same "
                         "naming, e.g. 'chr1:100-400' vs 'peak_1')")
    return IdMatch(
        sequence_index=np.flatnonzero(found).astype(np.int64),
        target_index=position[found].astype(np.int64),
        n_matched=int(found.sum()),
        missing_in_targets=sequence_ids[~found].tolist(),
        missing_in_sequences=target_ids[~target_ids.isin(sequence_ids)].tolist(),
    )


def zscore_rows(df):
    """Z-score every region (row) across outputs.

    Parameters
    ----------
    df : pandas.DataFrame
        Shape (N, R).

    Returns
    -------
    pandas.DataFrame
        ``float32``, same shape and labels: ``(x - mean) / std`` per row with the population
        std (ddof=0); rows whose values are all equal become all zeros.
    """
    values = df.to_numpy(dtype=np.float64)
    centred = values - values.mean(axis=1, keepdims=True)
    std = values.std(axis=1, keepdims=True)
    # Exact max == min catches constant rows whose float std is a tiny non-zero residue.
    constant = (values.max(axis=1, initial=-np.inf) == values.min(axis=1, initial=np.inf))[:, None]
    z = np.where(constant | (std == 0), 0.0, centred / np.where(std == 0, 1.0, std))
    return pd.DataFrame(z.astype(np.float32), index=df.index, columns=df.columns)


def _read_named_columns(path, required, what):
    path = check_input_file(path, what)
    text = read_text(path, what)   # small tables: gzip and decoding errors handled in one place
    try:
        table = pd.read_csv(io.StringIO(text), sep="\t", dtype=str, keep_default_na=False)
    except (pd.errors.ParserError, pd.errors.EmptyDataError) as exc:
        raise TisfmError(f"{what} {path} is not a readable TSV: {exc}") from None
    table.columns = [c.strip() for c in table.columns]
    missing = [c for c in required if c not in table.columns]
    if missing:
        raise TisfmError(f"{what} {path} lacks the column(s) {', '.join(missing)} (found: "
                         f"{_examples(table.columns)}); expected a header with "
                         f"{', '.join(required)}")
    table = table[list(required)].apply(lambda col: col.str.strip())
    empty = np.flatnonzero(table[required[0]].to_numpy() == "")
    if empty.size:
        raise TisfmError(f"{what} {path} line {empty[0] + 2}: empty {required[0]}")
    repeated = table[required[0]].duplicated()
    if repeated.any():
        row = int(np.argmax(repeated))
        name = table[required[0]].iloc[row]
        first = int(np.flatnonzero(table[required[0]].to_numpy() == name)[0])
        raise TisfmError(f"{what} {path}: {required[0]} '{name}' appears twice (lines {first + 2} "
                         f"and {row + 2})")
    return path, table


def read_lineage_map(path):
    """Read a cell type -> lineage table.

    Parameters
    ----------
    path : str or Path
        TSV with a header naming the columns ``cell_type`` and ``lineage`` (other columns, such
        as ``task`` in the ImmGen sample's ``cell_types.tsv``, are ignored).

    Returns
    -------
    pandas.Series
        Lineage (str) indexed by cell type, in file order; ``""`` marks a cell type that belongs
        to no lineage (it is excluded from lineage means).
    """
    _, table = _read_named_columns(path, ("cell_type", "lineage"), "lineage table")
    return pd.Series(table["lineage"].to_numpy(dtype=object), name="lineage",
                     index=pd.Index(table["cell_type"].to_numpy(dtype=object), name="cell_type"))


def aggregate_lineages(df, mapping):
    """Lineage targets as in the paper: row z-scores across all cell types, averaged per lineage.

    Parameters
    ----------
    df : pandas.DataFrame
        Shape (N, C), one column per cell type.
    mapping : pandas.Series
        Lineage per cell type (see :func:`read_lineage_map`); ``""`` excludes a cell type.

    Returns
    -------
    pandas.DataFrame
        Shape (N, n_lineages), ``float32``; lineages ordered by first appearance in ``mapping``
        (lineages without any cell type in ``df`` are left out).

    Raises
    ------
    TisfmError
        When a column of ``df`` has no entry in ``mapping``, or no lineage remains.
    """
    missing = [c for c in df.columns if c not in mapping.index]
    if missing:
        raise TisfmError(f"{len(missing)} cell type(s) of the targets are not in the lineage "
                         f"table: {_examples(missing, 10)}")
    z = zscore_rows(df)
    lineage = mapping.fillna("").astype(str)
    used = lineage[lineage.index.isin(df.columns) & (lineage != "").to_numpy()]
    lineages = list(dict.fromkeys(used.tolist()))
    if not lineages:
        raise TisfmError("no cell type of the targets belongs to a lineage")
    means = {lin: z[used.index[(used == lin).to_numpy()]].to_numpy(dtype=np.float64).mean(axis=1)
             for lin in lineages}
    return pd.DataFrame(means, index=df.index).astype(np.float32)


def _find_cycle(parent_of):
    """A list of names forming a cycle in the child -> parent map, or None."""
    state = {}  # 1: on the current walk, 2: known to reach a root
    for start in parent_of:
        walk, node = [], start
        while node in parent_of and node not in state:
            state[node] = 1
            walk.append(node)
            node = parent_of[node]
        if state.get(node) == 1:
            return walk[walk.index(node):] + [node]
        for name in walk:
            state[name] = 2
    return None


def read_parent_table(path, *, cell_types=None):
    """Read a cell-type tree as a child -> parent table.

    Parameters
    ----------
    path : str or Path
        TSV with a header naming the columns ``child`` and ``parent``; a root has an empty
        parent (or no row at all).
    cell_types : iterable of str, optional
        When given, every child and parent must be one of these.

    Returns
    -------
    pandas.DataFrame
        Columns ``child``, ``parent`` (``""`` for roots), in file order.

    Raises
    ------
    TisfmError
        For a missing column, an empty or duplicate child, a cycle (named), or a name outside
        ``cell_types``.
    """
    path, table = _read_named_columns(path, ("child", "parent"), "parent table")
    parent_of = {c: p for c, p in zip(table["child"], table["parent"]) if p}
    cycle = _find_cycle(parent_of)
    if cycle:
        raise TisfmError(f"parent table {path} has a cycle: {' -> '.join(repr(c) for c in cycle)}")
    if cell_types is not None:
        known = set(cell_types)
        for row, (child, parent) in enumerate(zip(table["child"], table["parent"])):
            for role, name in (("child", child), ("parent", parent)):
                if name and name not in known:
                    raise TisfmError(f"parent table {path} line {row + 2}: {role} '{name}' is not "
                                     "a known cell type")
    return table.reset_index(drop=True)


def tree_diff(df, parents):
    """Parent-child differences of row z-scores (the paper's tree-diff targets).

    Parameters
    ----------
    df : pandas.DataFrame
        Shape (N, C), one column per cell type.
    parents : pandas.DataFrame
        Columns ``child`` and ``parent`` (see :func:`read_parent_table`); rows with an empty
        parent are roots and give no edge.

    Returns
    -------
    diffs : pandas.DataFrame
        Shape (N, n_edges), ``float32``; column ``"{child}-{parent}"`` = z[child] - z[parent],
        with z the row z-scores across all cell types.
    edges : pandas.DataFrame
        Columns ``edge``, ``child``, ``parent``, one row per column of ``diffs``, same order
        (unambiguous even when names contain ``-``).
    """
    if not {"child", "parent"} <= set(parents.columns):
        raise TisfmError("the parent table needs the columns 'child' and 'parent'")
    parent = parents["parent"].fillna("").astype(str)
    edges = pd.DataFrame({"child": parents["child"].astype(str)[parent != ""].to_numpy(),
                          "parent": parent[parent != ""].to_numpy()})
    if edges.empty:
        raise TisfmError("the parent table has no edge (every row is a root)")
    absent = [name for name in dict.fromkeys(edges["child"].tolist() + edges["parent"].tolist())
              if name not in df.columns]
    if absent:
        raise TisfmError(f"{len(absent)} cell type(s) of the parent table are not target columns: "
                         f"{_examples(absent, 10)}")
    edges.insert(0, "edge", edges["child"] + "-" + edges["parent"])
    repeated = edges["edge"].duplicated()
    if repeated.any():
        raise TisfmError(f"two edges share the label '{edges['edge'][np.argmax(repeated)]}'")
    z = zscore_rows(df)
    values = (z[edges["child"]].to_numpy(dtype=np.float64)
              - z[edges["parent"]].to_numpy(dtype=np.float64))
    diffs = pd.DataFrame(values.astype(np.float32), index=df.index, columns=edges["edge"].tolist())
    return diffs, edges


def apply_transform(df, spec):
    """Apply a target transform given as text (as on the command line).

    Parameters
    ----------
    df : pandas.DataFrame
        Shape (N, C) raw targets.
    spec : str
        ``"none"``, ``"zscore"``, ``"lineage:PATH.tsv"`` (see :func:`read_lineage_map`) or
        ``"tree-diff:PATH.tsv"`` (see :func:`read_parent_table`).

    Returns
    -------
    table : pandas.DataFrame
        The transformed ``float32`` targets.
    description : dict
        JSON-serialisable: ``{"kind": ...}`` plus ``"source"`` (the path) and ``"mapping"``
        ({cell type: lineage} for the columns of ``df``) or ``"edges"`` ([[child, parent], ...]).
    """
    kind, _, source = str(spec).partition(":")
    kind = kind.strip().lower()
    if kind in ("none", "zscore") and not source:
        table = df.astype(np.float32) if kind == "none" else zscore_rows(df)
        return table, {"kind": kind}
    if kind == "lineage" and source:
        mapping = read_lineage_map(source)
        table = aggregate_lineages(df, mapping)
        return table, {"kind": kind, "source": source,
                       "mapping": {str(c): str(mapping[c]) for c in df.columns}}
    if kind == "tree-diff" and source:
        diffs, edges = tree_diff(df, read_parent_table(source))
        return diffs, {"kind": kind, "source": source,
                       "edges": edges[["child", "parent"]].to_numpy().tolist()}
    raise TisfmError(f"unknown target transform {spec!r}; expected one of: {', '.join(TRANSFORMS)}")
