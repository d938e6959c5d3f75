"""Models trained on tree-diff targets (paper Fig. 5): per-edge accuracy, motifs, tree layout.

A tree-diff run has one output per edge of a cell-type tree, named ``"{child}-{parent}"``, whose
target is activity(child) - activity(parent). Its config.json records the edges under
``transform.edges`` as [[child, parent], ...] and the test metrics under ``metrics.test``.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..errors import TisfmError
from .final_layer import as_run, final_layer, top_k


def _edges(run):
    """{output name: (child, parent)} of a tree-diff run; TisfmError for any other run."""
    transform = run.config.get("transform")
    kind = transform.get("kind") if isinstance(transform, dict) else None
    if kind != "tree-diff" or not transform.get("edges"):
        raise TisfmError(f"run {run.name} was not trained on tree-diff targets (config.json "
                         f"transform kind is {kind!r}, with no edge list); tree analyses need a "
                         "run trained with --transform tree-diff:PARENTS.tsv")
    by_label = {}
    for i, pair in enumerate(transform["edges"]):
        if not (isinstance(pair, (list, tuple)) and len(pair) == 2 and all(isinstance(v, str) for v in pair)):
            raise TisfmError(f"run {run.name}: config.json transform.edges[{i}] should be "
                             f"[child, parent], got {pair!r}")
        by_label[f"{pair[0]}-{pair[1]}"] = tuple(pair)
    missing = [o for o in run.outputs if o not in by_label]
    if missing:
        raise TisfmError(f"run {run.name}: output {missing[0]!r} is not an edge 'child-parent' of "
                         "config.json transform.edges")
    return {o: by_label[o] for o in run.outputs}


def _lineages(run):
    """Cell type -> lineage: the run's own mapping, else the ImmGen table when available."""
    mapping = run.config["transform"].get("lineages")
    if isinstance(mapping, dict):
        return {str(k): str(v) for k, v in mapping.items()}
    try:
        from ..immgen import cell_type_lineages
        return dict(cell_type_lineages())
    except (ImportError, TisfmError):
        # the lineage columns are annotations only: without a table they stay empty
        return {}


def _per_output(values, outputs, names, what, run):
    """Align a metric list to ``outputs`` (by the names stored with it, else by position)."""
    if names is not None and list(names) != list(outputs):
        lookup = dict(zip(names, values))
        absent = [o for o in outputs if o not in lookup]
        if absent:
            raise TisfmError(f"run {run.name}: {what} has no value for output {absent[0]!r}")
        values = [lookup[o] for o in outputs]
    if len(values) != len(outputs):
        raise TisfmError(f"run {run.name}: {what} has {len(values)} values for {len(outputs)} outputs")
    return np.array([np.nan if v is None else float(v) for v in values])


def edge_metrics(run, r2=None, threshold=0.05):
    """One row per edge (output) of a tree-diff run with its lineages and test accuracy.

    Parameters
    ----------
    run : Run or str or Path
    r2 : mapping or sequence of float or None, default None
        Per-edge R² to use instead of config.json ``metrics.test.r2`` (e.g. from a fresh
        evaluation): {edge: value} or one value per output in output order. ``test_pearson``
        still comes from config.json when present (NaN otherwise).
    threshold : float, default 0.05
        ``kept`` = R² > threshold (the paper keeps edges with R² > 0.05).

    Returns
    -------
    pandas.DataFrame
        Columns ``edge``, ``child``, ``parent``, ``child_lineage``, ``parent_lineage`` (from
        config.json ``transform.lineages``, else :func:`tisfm_core.immgen.cell_type_lineages`
        when that module exists; "" when unknown), ``test_r2``, ``test_pearson``, ``kept``;
        rows in output order.

    Raises
    ------
    TisfmError
        For a run not trained on tree-diff targets, or missing/misaligned metrics.
    """
    run = as_run(run)
    edges = _edges(run)
    outputs = run.outputs
    test = run.metrics.get("test") if isinstance(run.metrics, dict) else None
    test = test if isinstance(test, dict) else {}
    names = test.get("outputs")
    if r2 is None:
        if not isinstance(test.get("r2"), list):
            raise TisfmError(f"run {run.name} has no test R² in config.json (metrics.test.r2); "
                             "evaluate it and pass r2=")
        r2 = _per_output(test["r2"], outputs, names, "metrics.test.r2", run)
    elif isinstance(r2, (dict, pd.Series)):
        r2 = _per_output(list(r2.values()) if isinstance(r2, dict) else r2.tolist(), outputs,
                         list(r2.keys()) if isinstance(r2, dict) else list(r2.index), "r2", run)
    else:
        r2 = _per_output(list(r2), outputs, None, "r2", run)
    if isinstance(test.get("pearson"), list):
        pearson = _per_output(test["pearson"], outputs, names, "metrics.test.pearson", run)
    else:
        pearson = np.full(len(outputs), np.nan)
    lineage = _lineages(run)
    children = [edges[o][0] for o in outputs]
    parents = [edges[o][1] for o in outputs]
    return pd.DataFrame({
        "edge": outputs, "child": children, "parent": parents,
        "child_lineage": [lineage.get(c, "") for c in children],
        "parent_lineage": [lineage.get(p, "") for p in parents],
        "test_r2": r2, "test_pearson": pearson,
        "kept": kept_mask(r2, threshold),
    })


def kept_mask(r2, threshold=0.05):
    """The edge-keeping rule, in one place: test R² > ``threshold``; NaN is never kept."""
    return np.nan_to_num(np.asarray(r2, dtype=np.float64), nan=-np.inf) > threshold


def mark_kept(df, threshold=0.05):
    """The :func:`edge_metrics` table with its ``kept`` column recomputed for ``threshold``."""
    if "test_r2" not in df.columns:
        raise TisfmError("expected the table returned by edge_metrics (column 'test_r2')")
    return df.assign(kept=kept_mask(df["test_r2"], threshold))


def kept_edges(df, threshold=0.05):
    """Rows of :func:`edge_metrics` with test R² > ``threshold`` (NaN never kept), in order."""
    df = mark_kept(df, threshold)
    return df.loc[df["kept"]]


def edge_top_motifs(run, edges, k=5):
    """The top-k motifs by |w| of each given edge (zero weights never listed).

    Parameters
    ----------
    run : Run or str or Path
    edges : sequence of str or pandas.DataFrame
        Edge (output) names, or a table with an ``edge`` column such as :func:`kept_edges`.
    k : int, default 5

    Returns
    -------
    pandas.DataFrame
        Long format, columns ``edge``, ``rank`` (1 = largest |w|), ``motif``, ``name``,
        ``weight``; edges in the given order.
    """
    run = as_run(run)
    _edges(run)
    if isinstance(edges, pd.DataFrame):
        if "edge" not in edges.columns:
            raise TisfmError("the edge table needs an 'edge' column")
        edges = edges["edge"].tolist()
    edges = [edges] if isinstance(edges, str) else list(edges)
    W = final_layer(run)
    names = run.motif_names
    rows = []
    for edge in edges:
        if edge not in W.columns:
            raise TisfmError(f"run {run.name} has no edge {edge!r}")
        values = W[edge].to_numpy(dtype=np.float64)
        for rank, i in enumerate(top_k(values, k, by="abs"), start=1):
            rows.append((edge, rank, W.index[i], names[i], values[i]))
    return pd.DataFrame(rows, columns=["edge", "rank", "motif", "name", "weight"]).astype(
        {"rank": np.int64, "weight": np.float64})


def tree_layout(edges_df):
    """Top-down tidy layout of a tree (or forest) given by its edges.

    Leaves are spaced one unit apart on x in depth-first order (children in the order their
    edges appear); each parent sits at the midpoint of its first and last child; y = depth
    (0 at the roots, so draw with the y axis pointing down). Several roots are laid side by
    side in order of appearance. Nodes at the same depth never share an x.

    Parameters
    ----------
    edges_df : pandas.DataFrame or sequence of (child, parent)
        A table with ``child`` and ``parent`` columns (e.g. :func:`edge_metrics`).

    Returns
    -------
    pandas.DataFrame
        Columns ``node``, ``x``, ``y``, ``depth``, ``parent`` ("" for roots), in depth-first order.

    Raises
    ------
    TisfmError
        For a node with two parents, a self-loop or a cycle.
    """
    if isinstance(edges_df, pd.DataFrame):
        if not {"child", "parent"} <= set(edges_df.columns):
            raise TisfmError("the edge table needs 'child' and 'parent' columns")
        pairs = list(zip(edges_df["child"].astype(str), edges_df["parent"].astype(str)))
    else:
        pairs = [(str(c), str(p)) for c, p in edges_df]
    parent_of, children, nodes = {}, {}, {}
    for child, parent in pairs:
        if child == parent:
            raise TisfmError(f"edge {child}-{parent} joins a node to itself")
        if child in parent_of and parent_of[child] != parent:
            raise TisfmError(f"node {child!r} has two parents ({parent_of[child]!r} and {parent!r})")
        nodes.setdefault(parent, None)
        nodes.setdefault(child, None)
        if child not in parent_of:
            parent_of[child] = parent
            children.setdefault(parent, []).append(child)
    roots = [n for n in nodes if n not in parent_of]
    if not roots and nodes:
        raise TisfmError("the edges form a cycle: no node is a root")
    x, depth, order, next_leaf = {}, {}, [], 0.0
    for root in roots:
        stack = [(root, 0, False)]
        while stack:
            node, d, done = stack.pop()
            if done:
                kids = children[node]
                x[node] = (x[kids[0]] + x[kids[-1]]) / 2
                continue
            depth[node] = d
            order.append(node)
            if node in children:
                stack.append((node, d, True))
                stack.extend((c, d + 1, False) for c in reversed(children[node]))
            else:
                x[node] = next_leaf
                next_leaf += 1.0
    if len(order) != len(nodes):
        cyclic = next(n for n in nodes if n not in depth)
        raise TisfmError(f"the edges form a cycle through {cyclic!r}")
    return pd.DataFrame({"node": order, "x": [x[n] for n in order],
                         "y": [float(depth[n]) for n in order], "depth": [depth[n] for n in order],
                         "parent": [parent_of.get(n, "") for n in order]})
