"""Interpretation analyses of trained runs (the paper's Figs. 2-5 and the kernel drift).

Every function takes a run directory or a loaded :class:`~tisfm_core.runs.Run` and returns
pandas DataFrames, NumPy arrays or dicts; drawing is left to the app.

=====================  =====================================================================
module                 contents
=====================  =====================================================================
``final_layer``        weights table, per-output normalisation, top-k union, clustering order,
                       a fine-tune's change from its parent
``inclusion``          inclusion ratios over CV folds (Fig. 2B)
``pooling_ic``         pooling weight vs information content (Fig. 3A)
``interaction``        interaction influence vs final-layer importance (Fig. 3B)
``tree_diff``          per-edge metrics, top motifs and tree layout of tree-diff runs (Fig. 5)
``drift``              kernel drift of fine-tuned runs (against the PWMs and the parent)
=====================  =====================================================================
"""

from __future__ import annotations

from .drift import drift_summary, kernel_drift, kernels_moved, lineage_drift, similarity_matrix
from .final_layer import (
                          cluster_order,
                          final_layer,
                          final_layer_difference,
                          motif_table,
                          normalise_rows,
                          top_k,
                          top_k_union,
)
from .inclusion import cv_siblings, inclusion_filter, inclusion_ratio
from .interaction import interaction_influence
from .pooling_ic import correlations, outliers, pooling_vs_ic
from .tree_diff import (
                          edge_metrics,
                          edge_top_motifs,
                          kept_edges,
                          kept_mask,
                          mark_kept,
                          tree_layout,
)

__all__ = [
    "cluster_order", "correlations", "cv_siblings", "drift_summary", "edge_metrics",
    "edge_top_motifs", "final_layer", "final_layer_difference", "inclusion_filter", "inclusion_ratio",
    "interaction_influence", "kept_edges", "kept_mask", "kernel_drift", "kernels_moved", "lineage_drift", "mark_kept", "motif_table", "normalise_rows",
    "outliers", "pooling_vs_ic", "similarity_matrix", "top_k", "top_k_union", "tree_layout",
]
