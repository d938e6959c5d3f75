"""TF-TF interaction influence against final-layer importance (paper Fig. 3B).

The gate is u = y * sigmoid(A y + c) with A of shape (out, in) as in ``nn.Linear``; column j of
A holds everything motif j feeds into the other gates, so its influence is sum_i |A_ij|.
"""

from __future__ import annotations

import numpy as np
import pandas as pd

from ..errors import TisfmError
from .final_layer import as_run, final_layer, require_tisfm


def interaction_influence(run):
    """Per-motif interaction influence and final-layer importance.

    Parameters
    ----------
    run : Run or str or Path

    Returns
    -------
    pandas.DataFrame
        One row per motif in motif-file order with columns ``motif``, ``name``, ``influence``
        (column sums of |A| over the real motifs: sum over dim 0 of the (out, in) weight),
        ``max_abs_weight`` (max over outputs of |w|) and ``importance`` (max_abs_weight over its
        maximum across motifs, in [0, 1]; all zero when the final layer is all zero).

    Raises
    ------
    TisfmError
        For a baseline run (AI-TAC, linear) or a variant without the interaction gate (named in the message).
    """
    run = as_run(run)
    require_tisfm(run, "TF-TF interaction layer")
    W = final_layer(run)
    A = run.model.interaction_weights
    if A is None:
        raise TisfmError(f"run {run.name} is the {run.model.config.variant!r} variant, which has no "
                         "TF-TF interaction layer")
    influence = np.abs(A.cpu().numpy().astype(np.float64)).sum(axis=0)
    strength = np.abs(W.to_numpy(dtype=np.float64)).max(axis=1)
    top = strength.max(initial=0.0)
    return pd.DataFrame({"motif": run.motif_ids, "name": run.motif_names, "influence": influence,
                         "max_abs_weight": strength,
                         "importance": strength / top if top > 0 else np.zeros_like(strength)})
