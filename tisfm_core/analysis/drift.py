"""Kernel drift of fine-tuned runs: how far each PWM kernel moved, and what it now resembles,
against the original PWMs (:func:`kernel_drift`) and against a fine-tune's parent
(:func:`lineage_drift`).

For motif k the original kernel is channel 2k of ``MotifSet.kernels(era)`` and the tuned kernel
channel 2k of the model's kernel stack, both cut to the motif's own columns (w_k x 4). The paper
reports that 92% of tuned kernels stay closest to their own original motif, with mean MSE 0.04.

Similarity of a tuned kernel t (w_t x 4) to an original motif o (w_o x 4) is the best Pearson
correlation of the overlapping entries over every ungapped alignment (all column offsets) of t
against o and against o's reverse complement, counting only alignments that overlap by at least
ceil(min(w_t, w_o) / 2) columns. All pairs are scored exactly (no candidate prefilter): the sums
behind each correlation are matrix products of sliding windows, so 862 x 862 motifs take a few
seconds.
"""

from __future__ import annotations

import numpy as np
import pandas as pd
from numpy.lib.stride_tricks import sliding_window_view

from ..errors import TisfmError
from ..motifs import MotifSet, kernel_slots, load_motifs
from .final_layer import as_run, require_motifs, require_tisfm

#: Tuned kernels scored per block (bounds the memory of the (n_o, offsets, block) sums).
BLOCK = 32


def _padded(matrices, width):
    """(n, width, 4) left-aligned stack and its (n, width) column mask."""
    out = np.zeros((len(matrices), width, 4))
    mask = np.zeros((len(matrices), width))
    for k, m in enumerate(matrices):
        out[k, : len(m)] = m
        mask[k, : len(m)] = 1.0
    return out, mask


def _windows(stack, width):
    """All offsets of a (n, width, c) stack: (n, 2 * width - 1, width * c) sliding windows."""
    pad = np.pad(stack, ((0, 0), (width - 1, width - 1), (0, 0)))
    win = sliding_window_view(pad, width, axis=1)  # (n, S, c, width)
    return np.ascontiguousarray(win.transpose(0, 1, 3, 2)).reshape(len(stack), 2 * width - 1, -1)


def _unique_masks(widths, width):
    """Distinct widths, the index of each motif's width, and their (u, width) column masks."""
    unique, index = np.unique(widths, return_inverse=True)
    masks = (np.arange(width)[None, :] < unique[:, None]).astype(np.float64)
    return unique, index, masks


def similarity_matrix(tuned, original):
    """Best-alignment Pearson similarity of every tuned kernel to every original motif.

    Parameters
    ----------
    tuned, original : sequence of numpy.ndarray, each (w, 4)

    Returns
    -------
    similarity : numpy.ndarray, shape (n_tuned, n_original)
        Best Pearson r over offsets and both orientations of the original (-inf where no
        alignment qualifies, e.g. a constant matrix).
    reverse : numpy.ndarray of bool, same shape
        True where the best alignment uses the original's reverse complement.
    """
    wt = np.array([len(m) for m in tuned])
    wo = np.array([len(m) for m in original])
    width = int(max(wt.max(), wo.max()))
    T, _ = _padded(tuned, width)
    Tf = T.reshape(len(T), -1)
    Tsq = Tf**2
    _, t_index, t_masks = _unique_masks(wt, width)
    _, o_index, o_masks = _unique_masks(wo, width)
    mt4 = np.repeat(t_masks, 4, axis=1)  # (u_t, 4W) in (column, base) order
    mo_win = _windows(o_masks[:, :, None], width)  # (u_o, S, W)
    overlap = mo_win @ t_masks.T  # (u_o, S, u_t) columns in common
    need = np.ceil(np.minimum.outer(wo, wt) / 2)  # (n_o, n_t)
    mo4_win = np.repeat(mo_win, 4, axis=2)  # (u_o, S, 4W)
    best = np.full((len(tuned), len(original)), -np.inf)
    reverse = np.zeros(best.shape, dtype=bool)
    for strand, mats in ((False, original), (True, [m[::-1, ::-1] for m in original])):
        O, _ = _padded(mats, width)
        o_win = _windows(O, width)  # (n_o, S, 4W)
        sy_u = o_win @ mt4.T  # (n_o, S, u_t): sum of original entries over the overlap
        syy_u = (o_win**2) @ mt4.T
        for start in range(0, len(tuned), BLOCK):
            block = slice(start, start + BLOCK)
            ti = t_index[block]
            sxy = o_win @ Tf[block].T  # (n_o, S, b)
            sx = (mo4_win @ Tf[block].T)[o_index]
            sxx = (mo4_win @ Tsq[block].T)[o_index]
            sy, syy = sy_u[:, :, ti], syy_u[:, :, ti]
            cols = overlap[o_index][:, :, ti]
            n = 4 * cols
            # n^2 times the variances; (near-)constant overlaps have no correlation
            vx, vy = n * sxx - sx**2, n * syy - sy**2
            floor = 1e-12 * n**2
            ok = (cols >= need[:, None, block]) & (vx > floor) & (vy > floor)
            r = (n * sxy - sx * sy) / np.sqrt(np.where(ok, vx * vy, 1.0))
            r = np.where(ok, r, -np.inf).max(axis=1).T
            better = r > best[block]
            best[block] = np.where(better, r, best[block])
            reverse[block] = np.where(better, strand, reverse[block])
    return best, reverse


def _original_set(run, original):
    if original is None:
        return require_motifs(run)
    motifs = original if isinstance(original, MotifSet) else load_motifs(original)
    if list(motifs.ids) != run.motif_ids:
        raise TisfmError(f"the original motif set {motifs.source!r} does not list the motif ids of "
                         f"run {run.name} in the same order")
    return motifs


def _cut(stack, motifs, config):
    """Each motif's forward-strand kernel cut to its own columns: list of (w, 4) float64."""
    start = kernel_slots(motifs.widths, config.kernel_width, config.era)
    return [np.asarray(stack[2 * k, :, start[k]:start[k] + int(w)]).T.astype(np.float64)
            for k, w in enumerate(motifs.widths)]


def _compare(tuned, reference, motifs):
    """MSE, nearest reference and self-similarity of each tuned kernel: dict of columns."""
    mse = np.array([np.mean((t - o) ** 2) for t, o in zip(tuned, reference)])
    sim, rev = similarity_matrix(tuned, reference)
    nearest = np.argmax(sim, axis=1)
    rows = np.arange(len(motifs))
    ids, names = np.array(motifs.ids, dtype=object), np.array(motifs.names, dtype=object)
    return {"mse": mse, "nearest": ids[nearest].tolist(), "nearest_name": names[nearest].tolist(),
            "similarity": sim[rows, nearest], "nearest_reverse": rev[rows, nearest],
            "self_similarity": sim[rows, rows], "is_self": nearest == rows}


def kernel_drift(run, original=None):
    """Per-motif drift of the kernels of a (fine-tuned) run from the original PWMs.

    Parameters
    ----------
    run : Run or str or Path
    original : MotifSet or str or Path or None, default None
        The PWMs the run started from (a motif file or spec for :func:`load_motifs`); None
        uses the run's own motifs.meme. Ids must match the run's, in order.

    Returns
    -------
    pandas.DataFrame
        One row per motif in motif-file order: ``motif``, ``name``, ``width``, ``mse`` (mean of
        the w x 4 squared differences tuned - original), ``nearest`` and ``nearest_name`` (the
        original motif most similar to the tuned kernel), ``similarity`` (its best-alignment
        Pearson r), ``nearest_reverse`` (best alignment on its reverse complement),
        ``self_similarity`` (the tuned kernel against its own original) and ``is_self``.
        A run whose kernels were never fine-tuned has mse 0 throughout.

    Raises
    ------
    TisfmError
        For an AI-TAC run, a run without motifs.meme (and no ``original``), or ids that differ.
    """
    run = as_run(run)
    require_tisfm(run, "motif kernels")
    motifs = _original_set(run, original)
    cfg = run.model.config
    if motifs.max_width > cfg.kernel_width:
        raise TisfmError(f"the original motif set has motifs wider ({motifs.max_width}) than the "
                         f"kernels of run {run.name} ({cfg.kernel_width})")
    base = motifs.kernels(era=cfg.era, n_pad_channels=cfg.n_pad_channels, width=cfg.kernel_width)
    tuned = _cut(run.model.kernels.detach().cpu().numpy(), motifs, cfg)
    columns = _compare(tuned, _cut(base, motifs, cfg), motifs)
    return pd.DataFrame({"motif": list(motifs.ids), "name": list(motifs.names),
                         "width": motifs.widths, **columns})


def kernels_moved(run, atol=1e-3):
    """Whether any kernel of a tiSFM run differs from its original PWM by more than ``atol``
    (default: more than the float16 rounding of weights stored in half precision); False for
    runs without motifs.meme."""
    run = as_run(run)
    require_tisfm(run, "motif kernels")
    if run.motifs is None:
        return False
    cfg = run.model.config
    base = run.motifs.kernels(era=cfg.era, n_pad_channels=cfg.n_pad_channels, width=cfg.kernel_width)
    return bool(np.abs(run.model.kernels.detach().cpu().numpy() - base).max() > atol)


def lineage_drift(run, parent=None):
    """Kernel drift of a fine-tuned run against the original PWMs and against its parent.

    Parameters
    ----------
    run : Run or str or Path
        A tiSFM run (usually a fine-tune with ``--train all``).
    parent : Run or str or Path, optional
        Default the parent the run records (:func:`tisfm_core.finetune.load_parent_of`).

    Returns
    -------
    pandas.DataFrame
        The columns of :func:`kernel_drift` (against the PWMs) and the same measures against
        the parent's kernels, prefixed ``parent_``: ``parent_mse``, ``parent_nearest`` (the
        parent kernel most similar to the run's), ``parent_nearest_name``,
        ``parent_similarity``, ``parent_nearest_reverse``, ``parent_self_similarity`` and
        ``parent_is_self`` (the nearest parent kernel is the motif's own).

    Raises
    ------
    TisfmError
        For AI-TAC runs, a run without parent, or a parent with other motifs.
    """
    from ..finetune import load_parent_of

    run = as_run(run)
    parent = load_parent_of(run) if parent is None else as_run(parent)
    for r in (run, parent):
        require_tisfm(r, "motif kernels")
    if parent.motif_ids != run.motif_ids or parent.model.config.kernel_width != run.model.config.kernel_width:
        raise TisfmError(f"runs {run.name} and {parent.name} have other motifs: their kernels "
                         "cannot be compared")
    df = kernel_drift(run)
    motifs, cfg = require_motifs(run), run.model.config
    columns = _compare(_cut(run.model.kernels.detach().cpu().numpy(), motifs, cfg),
                       _cut(parent.model.kernels.detach().cpu().numpy(), motifs, cfg), motifs)
    for key, values in columns.items():
        df[f"parent_{key}"] = values
    return df


def drift_summary(df):
    """Headline numbers of :func:`kernel_drift` (or :func:`lineage_drift`).

    Returns
    -------
    dict
        ``n_motifs``, ``fraction_self_nearest`` (share of tuned kernels whose nearest original
        motif is their own; paper 0.92), ``mean_mse`` (paper 0.04) and ``median_mse``; for a
        :func:`lineage_drift` table also ``parent_fraction_self_nearest``, ``parent_mean_mse``
        and ``parent_median_mse``, the same against the parent's kernels.
    """
    for col in ("is_self", "mse"):
        if col not in df.columns:
            raise TisfmError(f"drift_summary expects the table returned by kernel_drift (column {col!r})")
    if len(df) == 0:
        raise TisfmError("the drift table is empty")
    out = {"n_motifs": len(df)}
    for prefix in ("", "parent_") if "parent_is_self" in df.columns else ("",):
        out.update({f"{prefix}fraction_self_nearest": float(df[f"{prefix}is_self"].mean()),
                    f"{prefix}mean_mse": float(df[f"{prefix}mse"].mean()),
                    f"{prefix}median_mse": float(df[f"{prefix}mse"].median())})
    return out
