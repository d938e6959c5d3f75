"""``tism`` and ``ism``: per-base attribution of a run's outputs."""

from __future__ import annotations

import time

from ..mutagenesis import METHODS
from .common import device_arg, outputs_list


def _attribute(a, method):
    from ..attribution import ism, ism_method, save_attribution, tism
    from ..dataset import load_sequences
    from ..runs import load_run

    run = load_run(a.run, device=device_arg(a.device))
    seqs = load_sequences(a.sequences, length=int(run.config["model"]["config"]["length"]))
    chosen = outputs_list(a.outputs)
    fn = tism if method == "tism" else ism
    extra = {} if method == "tism" else {"method": a.method}
    started = time.perf_counter()
    values = fn(run.model, seqs.indices, outputs=chosen, output_names=run.outputs,
                batch_size=a.batch_size, device=device_arg(a.device), **extra)
    seconds = time.perf_counter() - started
    names = run.outputs if chosen is None else chosen
    save_attribution(a.out, values, seqs.ids, names, indices=seqs.indices)
    how = "" if method == "tism" else f" ({ism_method(run.model, a.method)})"
    print(f"{method}: {len(seqs)} sequences x {len(names)} outputs x {seqs.length} bp in "
          f"{seconds:.2f} s{how} -> {a.out}")
    return values


def cmd_tism(a):
    """``tisfm tism RUN --sequences S --out F.npz``: TISM values of a run's outputs."""
    return _attribute(a, "tism")


def cmd_ism(a):
    """``tisfm ism RUN --sequences S --out F.npz``: exact ISM values of a run's outputs."""
    return _attribute(a, "ism")


def add_parsers(sub):
    for name, func, batch, text in (
            ("tism", cmd_tism, 64, "Taylor in-silico mutagenesis (first-order, fast) of a run"),
            ("ism", cmd_ism, 512, "exact in-silico mutagenesis (every single-base substitution) of a run")):
        p = sub.add_parser(name, help=text, description=text)
        p.add_argument("run", help="run directory")
        p.add_argument("--sequences", required=True, help="FASTA or two-column TSV (id, sequence)")
        p.add_argument("--out", required=True,
                       help="output .npz: values (N, R, 4, L), ids, outputs, indices")
        p.add_argument("--outputs", help="comma-separated output names (default: all)")
        p.add_argument("--batch-size", type=int, default=batch,
                       help=f"{'sequences' if name == 'tism' else 'variants'} per batch (default {batch})")
        p.add_argument("--device", default="auto", help="auto | cpu | cuda (default auto)")
        if name == "ism":
            p.add_argument("--method", default="auto", choices=list(METHODS),
                           help="incremental: recompute only what a substitution reaches (tiSFM "
                                "without attention, AI-TAC); naive: every variant through the whole "
                                "model; auto (default): incremental where the model allows it")
        p.set_defaults(func=func)
