"""``analyze``: interpretation tables of trained runs (TSV)."""

from __future__ import annotations

from ..analysis import (
    correlations,
    cv_siblings,
    drift_summary,
    edge_metrics,
    final_layer,
    final_layer_difference,
    inclusion_filter,
    inclusion_ratio,
    interaction_influence,
    kernel_drift,
    lineage_drift,
    normalise_rows,
    pooling_vs_ic,
    top_k_union,
)
from ..analysis.final_layer import DEFAULT_SCALE, SCALES
from ..analysis.groups import GROUPINGS, POOLINGS, grouped_final_layer
from ..errors import TisfmError

ANALYSES = ("final-layer", "inclusion", "pooling-ic", "interaction", "tree-diff", "drift",
            "parent-diff")


def add_parsers(sub):
    p = sub.add_parser("analyze", help="interpretation tables of trained runs (TSV)")
    p.add_argument("analysis", choices=ANALYSES,
                   help="final-layer (normalised weights of the top-k union), inclusion (ratios over "
                        "CV runs; one run = its whole CV set), pooling-ic, interaction, tree-diff "
                        "(edge metrics), drift (kernel drift of a fine-tuned run from the PWMs, "
                        "and from its parent for a tisfm finetune child), parent-diff (final layer "
                        "of a tisfm finetune child minus its parent's, for the outputs both have)")
    p.add_argument("runs", nargs="+", metavar="RUN", help="run directory (several for inclusion)")
    p.add_argument("--k", type=int, default=None,
                   help="top-k size (final-layer 5, inclusion 10)")
    p.add_argument("--threshold", type=float, default=None,
                   help="inclusion: keep motifs with ratio above it (0.5); tree-diff: R2 to keep "
                        "an edge (0.05)")
    p.add_argument("--output", help="pooling-ic: output whose coefficient is reported (default first)")
    p.add_argument("--group", choices=("motif",) + GROUPINGS, default="motif",
                   help="final-layer and inclusion: one row per motif (default), per TF name (tf: "
                        "Cebpb and Cebpb_2 together) or per motif-similarity cluster (cluster: "
                        "Tomtom p < 1e-5 on average), the weights of a row's motifs pooled")
    p.add_argument("--scale", choices=SCALES, default=None,
                   help="final-layer and inclusion: each weight times the standard deviation of "
                        "its motif's feature over the training sequences (sd, the default: the "
                        "change of the output per standard deviation; raw weights, with a note, "
                        "for a run that cannot provide it) or the weights as trained (raw)")
    p.add_argument("--pool", choices=POOLINGS, default="sum",
                   help="how --group pools a row's weights: sum (default), mean, or max_abs (the "
                        "weight of largest |w|, sign kept)")
    p.add_argument("--out", help="write the table as TSV instead of printing it")
    p.set_defaults(func=cmd_analyze)
    return p


def _table(a):
    from ..analysis.final_layer import as_run

    if a.analysis != "inclusion" and len(a.runs) != 1:
        raise TisfmError(f"analyze {a.analysis} takes one run, got {len(a.runs)}")
    for flag, value, default in (("--group", a.group, "motif"), ("--scale", a.scale, None)):
        if value != default and a.analysis not in ("final-layer", "inclusion"):
            raise TisfmError(f"{flag} applies to final-layer and inclusion, not {a.analysis}")
    grouped = a.group != "motif"
    if a.analysis == "final-layer":
        def table(scale):
            W = (grouped_final_layer(a.runs[0], by=a.group, how=a.pool, scale=scale)[0] if grouped
                 else final_layer(a.runs[0], scale=scale))
            return normalise_rows(W)
        W, note = _scaled(a.scale, table)
        return W.loc[top_k_union(W, k=a.k or 5)], note
    if a.analysis == "inclusion":
        runs = cv_siblings(a.runs[0]) if len(a.runs) == 1 else a.runs
        threshold = 0.5 if a.threshold is None else a.threshold
        groups = grouped_final_layer(runs[0], by=a.group, how=a.pool)[1] if grouped else None
        ratio, note = _scaled(a.scale, lambda scale: inclusion_ratio(runs, k=a.k or 10, groups=groups,
                                                                      how=a.pool, scale=scale))
        line = f"{len(runs)} runs, ratio > {threshold}"
        return inclusion_filter(ratio, threshold), line + (f"; {note}" if note else "")
    if a.analysis == "pooling-ic":
        df = pooling_vs_ic(a.runs[0], output=a.output)
        c = correlations(df)
        return df, (f"pooling vs IC: Pearson r {c['pearson_r']:.3f} (p {c['pearson_p']:.2g}), "
                    f"Spearman rho {c['spearman_rho']:.3f} (p {c['spearman_p']:.2g}), n {c['n']}")
    if a.analysis == "interaction":
        return interaction_influence(a.runs[0]), None
    if a.analysis == "tree-diff":
        run = as_run(a.runs[0])
        df = edge_metrics(run, threshold=0.05 if a.threshold is None else a.threshold)
        return df, f"{int(df['kept'].sum())} of {len(df)} edges kept"
    if a.analysis == "parent-diff":
        df = final_layer_difference(a.runs[0])
        top = df.abs().stack().idxmax()
        return df, (f"{df.shape[1]} shared output(s); largest change {df.loc[top]:+.4g} "
                    f"({top[0]} in {top[1]})")
    return _drift(as_run(a.runs[0]))


def _scaled(scale, table):
    """``table(scale)``; with no --scale, the default scale, or raw weights and a note saying why
    when a run cannot provide its feature scale."""
    if scale is not None:
        return table(scale), None
    try:
        return table(DEFAULT_SCALE), None
    except TisfmError as exc:
        if DEFAULT_SCALE == "raw":
            raise
        return table("raw"), f"raw weights: {exc}"


def _drift(run):
    """Drift against the PWMs, and against the parent when the run is a fine-tune whose parent
    is still there."""
    from ..finetune import load_parent_of, parent_path

    note = ""
    if parent_path(run) is None:
        df = kernel_drift(run)
    else:
        try:
            parent = load_parent_of(run)
        except TisfmError as exc:
            df, note = kernel_drift(run), f"; not compared with the parent: {exc}"
        else:
            df = lineage_drift(run, parent)
    s = drift_summary(df)
    line = (f"{s['fraction_self_nearest']:.1%} of tuned kernels nearest to their own motif, "
            f"mean MSE {s['mean_mse']:.4f}")
    if "parent_mse" in df.columns:
        line += (f"; against the parent {parent.name}: {s['parent_fraction_self_nearest']:.1%} "
                 f"nearest to their own kernel, mean MSE {s['parent_mean_mse']:.4f}")
    return df, line + note


def cmd_analyze(a):
    """Handler of ``tisfm analyze``: print the table (or write it with --out) and a summary line."""
    from ..workflows import write_table

    table, note = _table(a)
    index = a.analysis in ("final-layer", "inclusion", "parent-diff")
    if a.out:
        write_table(table, a.out, index=index)
        print(f"{len(table)} rows written to {a.out}")
    else:
        print(table.to_csv(sep="\t", index=index, float_format="%.4g"), end="")
    if note:
        print(note)
