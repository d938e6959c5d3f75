"""``scan`` and ``variants``: regions longer than the window, and variant effects.

The work is :func:`tisfm_core.scan.scan_region` and :func:`tisfm_core.variants.score_variants`.
"""

from __future__ import annotations

import sys
import time
from pathlib import Path

from ..errors import TisfmError
from .common import UsageError, device_arg, outputs_list

#: Refused variants listed on stderr; the rest are counted (every reason is in the table).
_SHOWN_PROBLEMS = 20


def add_parsers(sub):
    text = "tile a region longer than the model's window: predictions and attribution along it"
    p = sub.add_parser("scan", help=text, description=text)
    p.add_argument("run", help="run directory")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--sequences", help="FASTA or two-column TSV (id, sequence) holding one sequence")
    source.add_argument("--region", help="chrom:start-end, 1-based and inclusive (commas allowed); needs "
                                         "--genome")
    p.add_argument("--genome", help="genome FASTA for --region (plain or bgzip)")
    p.add_argument("--index-dir", help="folder for the genome's .fai index when there is none next to the "
                                       "FASTA (default ~/.tisfm/genome-index)")
    p.add_argument("--stride", type=int, required=True, help="bases between window starts (1..window "
                                                             "length; the last window ends at the region's end)")
    p.add_argument("--attribution", choices=["tism", "ism", "none"], default="tism",
                   help="per-base attribution averaged over the windows covering each base (default tism)")
    p.add_argument("--outputs", help="comma-separated output names (default: all)")
    p.add_argument("--pad", choices=["refuse", "center"], default="refuse",
                   help="a region shorter than the window: refuse it (default) or pad it with N, centred")
    p.add_argument("--out", required=True,
                   help="output .npz (attribution track, window starts and predictions); the window "
                        "predictions also go to the TSV <out without .npz>.windows.tsv")
    p.add_argument("--batch-size", type=int, default=64, help="windows per forward pass (default 64)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present) | cpu | cuda (default auto)")
    p.set_defaults(func=cmd_scan)

    text = "reference vs alternative allele predictions for variants from a VCF or typed"
    p = sub.add_parser("variants", help=text, description=text)
    p.add_argument("run", help="run directory")
    source = p.add_mutually_exclusive_group(required=True)
    source.add_argument("--vcf", help="VCF or BCF file, plain or bgzip (multi-allelic sites are split)")
    source.add_argument("--variant", nargs="+", action="extend", metavar="CHR:POS:REF:ALT",
                        help="typed variants, 1-based POS (e.g. chr1:3000123:A:G)")
    p.add_argument("--genome", required=True, help="genome FASTA (plain or bgzip)")
    p.add_argument("--index-dir", help="folder for the genome's .fai index when there is none next to the "
                                       "FASTA (default ~/.tisfm/genome-index)")
    p.add_argument("--outputs", help="comma-separated output names (default: all)")
    p.add_argument("--out", required=True, help="output TSV: one row per variant and ALT allele")
    p.add_argument("--batch-size", type=int, default=256, help="windows per forward pass (default 256)")
    p.add_argument("--device", default="auto", help="auto (CUDA when present) | cpu | cuda (default auto)")
    p.set_defaults(func=cmd_variants)


def _one_sequence(path):
    """The single sequence of a FASTA/TSV file, any length."""
    from ..sequences import read_sequences
    from ..textfiles import iter_lines

    headers = sum(1 for line in iter_lines(path, "sequence file") if line.startswith(">"))
    if headers > 1:
        raise TisfmError(f"{path} holds {headers} sequences; tisfm scan takes one region per call")
    seqs = read_sequences(path)
    if len(seqs) > 1:
        raise TisfmError(f"{path} holds {len(seqs)} sequences; tisfm scan takes one region per call")
    return seqs.indices[0]


def cmd_scan(args):
    """``tisfm scan RUN --sequences S | --region R --genome G --stride N --out F.npz``."""
    from ..genome import read_region
    from ..runs import load_run
    from ..scan import MAX_REGION, save_scan, scan_region
    from ..workflows import write_table

    if args.region is not None and args.genome is None:
        raise UsageError("--region needs --genome (the FASTA the region is read from)")
    if args.sequences is not None and args.genome is not None:
        raise UsageError("--genome is used with --region only; --sequences already holds the bases")
    out = Path(args.out)
    table_path = out.with_suffix(".windows.tsv") if out.suffix == ".npz" else Path(f"{out}.windows.tsv")
    run = load_run(args.run, device=device_arg(args.device))
    if args.region is not None:
        sequence = read_region(args.genome, args.region, max_length=MAX_REGION, index_dir=args.index_dir)
    else:
        sequence = _one_sequence(args.sequences)
    started = time.perf_counter()
    result = scan_region(run, sequence, stride=args.stride, outputs=outputs_list(args.outputs),
                         attribution=None if args.attribution == "none" else args.attribution,
                         pad=args.pad, batch_size=args.batch_size, device=device_arg(args.device))
    seconds = time.perf_counter() - started
    save_scan(out, result)
    write_table(result.prediction_table(), table_path, index=False)
    where = args.region if args.region is not None else args.sequences
    print(f"scan: {where} ({len(result.indices)} bp): {len(result.starts)} windows of "
          f"{result.window_length} bp, stride {args.stride}, {len(result.outputs)} outputs, "
          f"attribution {args.attribution}, in {seconds:.2f} s -> {out}, {table_path}")
    return result


def cmd_variants(args):
    """``tisfm variants RUN --vcf V | --variant chr:pos:ref:alt ... --genome G --out F.tsv``."""
    from ..runs import load_run
    from ..variants import parse_variant, read_vcf, score_variants
    from ..workflows import write_table

    variants = read_vcf(args.vcf) if args.vcf is not None else [
        v for text in args.variant for v in parse_variant(text)]
    run = load_run(args.run, device=device_arg(args.device))
    started = time.perf_counter()
    scores = score_variants(run, variants, args.genome, outputs=outputs_list(args.outputs),
                            batch_size=args.batch_size, device=device_arg(args.device), index_dir=args.index_dir)
    seconds = time.perf_counter() - started
    write_table(scores.table, args.out, index=False)
    for line in scores.problems[:_SHOWN_PROBLEMS]:
        print(f"warning: refused {line}", file=sys.stderr)
    if len(scores.problems) > _SHOWN_PROBLEMS:
        print(f"warning: ... and {len(scores.problems) - _SHOWN_PROBLEMS} more refused variants (see "
              f"the message column of {args.out})", file=sys.stderr)
    n, refused = len(scores.table), len(scores.problems)
    if refused == n:
        raise TisfmError(f"none of the {n} variants could be scored (first: {scores.problems[0]}); "
                         f"every reason is in {args.out}")
    print(f"variants: {n - refused} of {n} scored ({refused} refused), {len(scores.outputs)} outputs, "
          f"in {seconds:.2f} s -> {args.out}")
    return scores
