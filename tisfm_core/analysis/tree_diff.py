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


def tree_layout(edges_df, *, widths=None, gap=1.0, spread=1.0):
    """Layered top-down layout of a tree (or forest) in which no two boxes of a level overlap.

    The positioning step of Graphviz ``dot`` (Gansner et al. 1993, section 4) for a tree: y is
    the depth (0 at the roots, so draw with the y axis pointing down); nodes of one level keep
    their depth-first order (children in the order their edges appear, so no edges cross); and
    the x coordinates solve the linear program

        minimise  sum over edges |x_parent - x_child| + 2 sum over parents |x_parent - m_parent|
        subject to  x_next - x_prev >= (w_prev + w_next) / 2 + gap   (neighbours in a level)
                    w / 2 <= x <= spread * W - w / 2

    where w is a node's box width, m the midpoint of a parent's first and last child and W the
    width of the widest level (its boxes side by side, ``gap`` apart): edges as vertical and
    parents as centred as the boxes allow, in a drawing ``spread`` times as wide as it must be.
    Two boxes of one level never overlap, however wide the labels.

    Parameters
    ----------
    edges_df : pandas.DataFrame or sequence of (child, parent)
        A table with ``child`` and ``parent`` columns (e.g. :func:`edge_metrics`).
    widths : mapping node -> float, optional
        Box width of each node (e.g. its label's width in pixels); 0 for nodes not given.
    gap : float, default 1.0
        Smallest distance between two boxes of one level (in the units of ``widths``).
    spread : float, default 1.0
        Width of the drawing over the narrowest possible (>= 1; more lets edges stand straighter).

    Returns
    -------
    pandas.DataFrame
        Columns ``node``, ``x`` (box centre; the leftmost box starts at 0), ``y``, ``depth``,
        ``parent`` ("" for roots) and ``width``, in depth-first order.

    Raises
    ------
    TisfmError
        For a node with two parents, a self-loop, a cycle, a negative width or gap, or a
        spread below 1.
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
    width = {n: float((widths or {}).get(n, 0.0)) for n in nodes}
    if not all(w >= 0 for w in width.values()) or not gap >= 0 or not spread >= 1:
        raise TisfmError("tree_layout: widths and gap must be >= 0 and spread >= 1")
    roots = [n for n in nodes if n not in parent_of]
    if not roots and nodes:
        raise TisfmError("the edges form a cycle: no node is a root")
    # depth-first order and depths (iterative: a long chain must not hit the recursion limit)
    depth, order = {}, []
    for root in roots:
        stack = [(root, 0)]
        while stack:
            node, d = stack.pop()
            depth[node] = d
            order.append(node)
            stack.extend((c, d + 1) for c in reversed(children.get(node, [])))
    if len(order) != len(nodes):
        cyclic = next(n for n in nodes if n not in depth)
        raise TisfmError(f"the edges form a cycle through {cyclic!r}")
    x = _layered_x(order, depth, parent_of, children, width, float(gap), float(spread))
    return pd.DataFrame({"node": order, "x": [x[n] for n in order],
                         "y": [float(depth[n]) for n in order], "depth": [depth[n] for n in order],
                         "parent": [parent_of.get(n, "") for n in order],
                         "width": [width[n] for n in order]})


def _layered_x(order, depth, parent_of, children, width, gap, spread):
    """The x coordinates of :func:`tree_layout`'s linear program (scipy's HiGHS solver)."""
    from scipy.optimize import linprog
    from scipy.sparse import coo_matrix

    index = {n: i for i, n in enumerate(order)}
    n = len(order)
    if n == 0:
        return {}
    edges = [(index[p], index[c]) for c, p in parent_of.items()]
    parents = [(index[p], index[kids[0]], index[kids[-1]]) for p, kids in children.items()]
    levels = {}
    for node in order:
        levels.setdefault(depth[node], []).append(node)
    narrowest = max(sum(width[v] for v in level) + gap * (len(level) - 1) for level in levels.values())
    # variables: x (n), then the |edge| slacks, then the |centring| slacks
    n_var = n + len(edges) + len(parents)
    cost = np.r_[np.zeros(n), np.ones(len(edges)), np.full(len(parents), 2.0)]
    rows, cols, vals, bound = [], [], [], []

    def constraint(terms, limit):   # sum(coef * var) <= limit
        row = len(bound)
        for col, val in terms:
            rows.append(row)
            cols.append(col)
            vals.append(val)
        bound.append(limit)

    for k, (p, c) in enumerate(edges):
        slack = n + k
        constraint([(p, 1.0), (c, -1.0), (slack, -1.0)], 0.0)
        constraint([(p, -1.0), (c, 1.0), (slack, -1.0)], 0.0)
    for k, (p, first, last) in enumerate(parents):
        slack = n + len(edges) + k
        constraint([(p, 1.0), (first, -0.5), (last, -0.5), (slack, -1.0)], 0.0)
        constraint([(p, -1.0), (first, 0.5), (last, 0.5), (slack, -1.0)], 0.0)
    for level in levels.values():
        for a, b in zip(level, level[1:]):
            constraint([(index[a], 1.0), (index[b], -1.0)], -((width[a] + width[b]) / 2 + gap))
    bounds = [(width[v] / 2, spread * narrowest - width[v] / 2) for v in order] + [(0.0, None)] * (n_var - n)
    matrix = coo_matrix((vals, (rows, cols)), shape=(len(bound), n_var)).tocsr()
    result = linprog(cost, A_ub=matrix if bound else None, b_ub=bound or None, bounds=bounds,
                     method="highs")
    if result.status != 0:   # the program is always feasible and bounded: this is a solver failure
        raise TisfmError(f"the tree layout could not be solved ({result.message})")
    return {node: float(result.x[index[node]]) for node in order}
