"""Variant effects: reference vs alternative allele in the model's window centred on each variant.

Variants come from a VCF (plain or bgzip, read with pysam; multi-allelic sites split into one
variant per ALT) or are typed as ``chr:pos:ref:alt`` (1-based ``pos``, the VCF convention). For
every variant the window of the model's length L is centred on the REF allele in the genome
(the reference window) and on the ALT allele in the genome with ALT in place of REF (the
alternative window), so an indel keeps the window length and re-centres it. Variants that
cannot be scored are refused one by one, with the reason in the user's 1-based coordinates;
the others are still scored, in batched forward passes.
"""

from __future__ import annotations

import re
import sys
from typing import NamedTuple

import numpy as np
import pandas as pd

from .errors import TisfmError, check_integer, check_outputs
from .genome import Genome, _number, open_genome
from .scan import model_parts
from .sequences import GENOME_LUT
from .textfiles import check_input_file, iter_lines
from .training import evaluation, predict_batches

__all__ = ["Variant", "VariantScores", "VariantWindows", "describe", "parse_variant", "read_vcf",
           "score_variants", "variant_windows"]

_BASES = re.compile(r"^[ACGTN]+$")
#: Variants whose windows are built and predicted at a time (bounds memory: 2 x 8192 x L bytes).
_CHUNK = 8192


class Variant(NamedTuple):
    """One ALT allele at one site; ``pos`` is 1-based (the first REF base, as in a VCF)."""

    chrom: str
    pos: int
    ref: str
    alt: str
    id: str = ""
    source: str = ""  #: where it came from, for messages (e.g. ``calls.vcf record 3``)

    def __str__(self):
        return f"{self.chrom}:{self.pos}:{self.ref}:{self.alt}"


def _allele(text):
    """Upper-case sequence alleles; symbolic alleles and breakends keep their case (contig names)."""
    text = str(text).strip()
    return text if text.startswith("<") or "[" in text or "]" in text else text.upper()


def _short(allele, limit=12):
    return allele if len(allele) <= limit else f"{allele[:limit - 3]}...({len(allele)} bp)"


def describe(variant):
    """A variant as users read it: ``calls.vcf record 3 (rs12), chr1:1000 A>G``."""
    where = f"{variant.chrom}:{variant.pos} {_short(variant.ref)}>{_short(variant.alt)}"
    name = f" ({variant.id})" if variant.id else ""
    return f"{variant.source}{name}, {where}" if variant.source else f"{where}{name}"


def parse_variant(text):
    """Parse a typed variant ``chrom:pos:ref:alt``; several ALTs (``A:G,T``) give one each.

    Parameters
    ----------
    text : str
        1-based position (commas allowed); alleles in any case.

    Returns
    -------
    list of Variant

    Raises
    ------
    TisfmError
        For text not of that form or a position below 1.
    """
    parts = str(text).strip().rsplit(":", 3)
    pos = _number(parts[1]) if len(parts) == 4 else None
    if pos is None or not parts[0] or not parts[2] or not parts[3]:
        raise TisfmError(f"variant {text!r} is not of the form chrom:pos:ref:alt (1-based pos; e.g. "
                         "chr1:3000123:A:G)")
    if pos < 1:
        raise TisfmError(f"variant {text!r}: positions are 1-based, so pos must be >= 1")
    return [Variant(parts[0], pos, _allele(parts[2]), _allele(alt)) for alt in parts[3].split(",")]


def _record_line(path, k):
    """Line number and text of the k-th (1-based) record of a text VCF, or None."""
    seen = 0
    try:
        for lineno, line in enumerate(iter_lines(path, "VCF file"), 1):
            if line.strip() and not line.startswith("#"):
                seen += 1
                if seen == k:
                    return lineno, line.rstrip("\n")
    except TisfmError:  # a BCF file: binary, no lines to show
        return None
    return None


def read_vcf(path):
    """Read the variants of a VCF or BCF file with pysam, one :class:`Variant` per ALT allele.

    Nothing is refused here but unreadable files: symbolic alleles (``<DEL>``, ``*``,
    breakends), records without an ALT (``.``) and unknown contigs are kept, so that
    :func:`score_variants` reports each with its reason.

    Parameters
    ----------
    path : str or Path
        Plain or bgzip-compressed VCF (``.vcf``, ``.vcf.gz``), or BCF.

    Returns
    -------
    list of Variant
        In file order; ``source`` is ``<file name> record <k>`` (1-based record number) and
        ``id`` the ID column ("" for ``.``).

    Raises
    ------
    TisfmError
        For a missing file, a file that is not VCF/BCF (or lacks the ``#CHROM`` header), a
        plain-gzip (not bgzip) file, a record htslib cannot parse (naming its line) or a file
        without records.
    """
    import pysam

    path = check_input_file(path, "VCF file")
    old = pysam.set_verbosity(0)   # htslib would print its own warnings on stderr
    variants, count = [], 0
    try:
        try:
            handle = pysam.VariantFile(str(path))
        except NotImplementedError:
            raise TisfmError(f"VCF file {path} is compressed with plain gzip, which htslib cannot read "
                             "as a VCF: decompress it (gunzip) or compress it with bgzip") from None
        except (ValueError, OSError) as exc:
            raise TisfmError(f"VCF file {path} is not a readable VCF/BCF file (is the '#CHROM' header "
                             f"line missing?): {exc}") from None
        with handle:
            try:
                for record in handle:
                    count += 1
                    source = f"{path.name} record {count}"
                    ident = "" if record.id in (None, ".") else str(record.id)
                    for alt in record.alts or (".",):
                        variants.append(Variant(str(record.contig), int(record.pos), _allele(record.ref),
                                                _allele(alt), ident, source))
            except (ValueError, OSError) as exc:
                found = _record_line(path, count + 1)
                where = f"line {found[0]} ({_short(found[1], 60)!r})" if found else f"record {count + 1}"
                raise TisfmError(f"VCF file {path}, {where}: htslib cannot parse this record ({exc}); "
                                 "expected tab-separated CHROM POS ID REF ALT ... columns") from None
    finally:
        pysam.set_verbosity(old)
    if count == 0:
        raise TisfmError(f"VCF file {path} has no records: there are no variants to score")
    return variants


def _as_variants(variants):
    if isinstance(variants, (str, Variant)):
        variants = [variants]
    out = []
    for v in variants:
        if isinstance(v, Variant):
            out.append(v)
        elif isinstance(v, str):
            out.extend(parse_variant(v))
        elif isinstance(v, tuple) and len(v) == 4 and _number(str(v[1])) is not None:
            out.append(Variant(str(v[0]), _number(str(v[1])), _allele(v[2]), _allele(v[3])))
        else:
            raise TisfmError(f"a variant must be a Variant, 'chrom:pos:ref:alt' or (chrom, pos, ref, alt), "
                             f"got {v!r}")
    if not out:
        raise TisfmError("no variants were given")
    return out


def _allele_problem(v):
    alt = v.alt
    if alt in (".", ""):
        return "the record has no ALT allele ('.')"
    if alt.startswith("<"):
        return f"symbolic ALT allele {alt} is not supported: only alleles written as bases can be scored"
    if alt == "*":
        return "ALT '*' (an allele deleted by an overlapping variant) has no bases to score"
    if "[" in alt or "]" in alt:
        return f"breakend ALT {_short(alt, 30)} is not supported: only alleles written as bases can be scored"
    for name, allele in (("REF", v.ref), ("ALT", alt)):
        if not _BASES.match(allele):
            return f"{name} {_short(allele)!r} holds characters other than A, C, G, T and N"
    if alt == v.ref:
        return "ALT equals REF"
    if v.pos < 1:
        return f"position {v.pos} is not a 1-based position (>= 1)"
    return None


class VariantWindows(NamedTuple):
    """The two model inputs of one variant.

    ``ref`` and ``alt`` are uint8 base indices (L,); the variant's REF allele occupies
    ``ref[ref_offset:ref_offset + len(REF)]`` and its ALT allele
    ``alt[alt_offset:alt_offset + len(ALT)]`` (0-based offsets in the windows).
    """

    ref: np.ndarray
    alt: np.ndarray
    ref_offset: int
    alt_offset: int


def _windows(v, genome, length):
    """The reference and alternative windows of ``v``; a TisfmError with the reason otherwise."""
    problem = _allele_problem(v)
    if problem:
        raise TisfmError(problem)
    if v.chrom not in genome.contigs:
        raise TisfmError(genome.missing_contig(v.chrom))
    size = genome.contigs[v.chrom]
    p, r, a = v.pos - 1, len(v.ref), len(v.alt)
    if v.pos > size:
        raise TisfmError(f"position {v.pos} lies past the end of {v.chrom} ({size} bp)")
    if p + r > size:
        raise TisfmError(f"the REF allele ({r} bp from {v.pos}) runs past the end of {v.chrom} "
                         f"(last position {size})")
    found = genome.text(v.chrom, p, p + r)
    if found != v.ref:
        span = f"{v.chrom}:{v.pos}" if r == 1 else f"{v.chrom}:{v.pos}-{v.pos + r - 1}"
        raise TisfmError(f"REF {_short(v.ref)} does not match the genome: {span} is {_short(found)}")
    if max(r, a) > length:
        which = "REF" if r >= a else "ALT"
        raise TisfmError(f"the {which} allele ({max(r, a)} bp) is longer than the model's {length}-bp "
                         "window")
    # Window starts: REF centred in the genome, ALT centred in the genome with ALT in place of
    # REF; the alternative sequence left of p is the genome, right of ALT the genome after REF.
    ref_lo = p + r // 2 - length // 2
    alt_lo = p + a // 2 - length // 2
    lo = min(ref_lo, alt_lo)
    hi = max(ref_lo + length, alt_lo + length - a + r)
    if lo < 0:
        raise TisfmError(f"the {length}-bp window centred on it would start {-lo} bp before the start "
                         f"of {v.chrom}")
    if hi > size:
        raise TisfmError(f"the {length}-bp window centred on it would end {hi - size} bp past the end "
                         f"of {v.chrom} ({size} bp)")
    segment = genome.fetch(v.chrom, lo, hi)
    alt_codes = np.frombuffer(v.alt.encode("ascii").translate(GENOME_LUT), dtype=np.uint8)
    applied = np.concatenate([segment[:p - lo], alt_codes, segment[p + r - lo:]])
    return VariantWindows(ref=segment[ref_lo - lo:ref_lo - lo + length].copy(),
                          alt=applied[alt_lo - lo:alt_lo - lo + length],
                          ref_offset=p - ref_lo, alt_offset=p - alt_lo)


def variant_windows(model_or_run, variant, genome, *, index_dir=None):
    """The reference and alternative windows of one variant, e.g. to run TISM on them.

    Parameters
    ----------
    model_or_run : model, Run, run folder, or int
        What fixes the window length L (an int is L itself).
    variant : Variant or str
        A :class:`Variant` or ``chrom:pos:ref:alt`` with a single ALT.
    genome : str, Path or Genome
    index_dir : str or Path, optional
        See :func:`tisfm_core.genome.open_genome`.

    Returns
    -------
    VariantWindows
        ``ref`` and ``alt`` uint8 (L,) and the 0-based offsets of the alleles in them;
        ``np.stack([w.ref, w.alt])`` is ready for :func:`tisfm_core.attribution.tism`.

    Raises
    ------
    TisfmError
        Naming the variant and why it cannot be scored (as in :func:`score_variants`).
    """
    length = check_integer(model_or_run, "window length") if isinstance(model_or_run, int) \
        else model_parts(model_or_run)[2]
    found = _as_variants(variant)
    if len(found) != 1:
        raise TisfmError(f"give one variant with one ALT allele, got {len(found)}")
    v = found[0]
    if not isinstance(genome, Genome):
        with open_genome(genome, index_dir=index_dir) as opened:
            return variant_windows(length, v, opened)
    try:
        return _windows(v, genome, length)
    except TisfmError as exc:
        raise TisfmError(f"{describe(v)}: {exc}") from None


class VariantScores(NamedTuple):
    """The result of :func:`score_variants`."""

    table: pd.DataFrame   #: one row per variant (per ALT allele), input order
    problems: list        #: one line per refused variant: where it came from and why
    outputs: list         #: the R output names, in column order


def score_variants(model_or_run, variants, genome, *, outputs=None, batch_size=256, device=None,
                   index_dir=None, verbose=False):
    """Predictions of the reference and alternative windows of every variant, and their difference.

    Parameters
    ----------
    model_or_run : TISFM, AITAC, Run or run folder
    variants : iterable of Variant or str
        E.g. :func:`read_vcf`'s list, or ``chrom:pos:ref:alt`` strings (a multi-ALT string gives
        one variant per ALT).
    genome : str, Path or Genome
        Genome FASTA (opened with :func:`tisfm_core.genome.open_genome`) or an open Genome.
    outputs : sequence of str or int, optional
        Outputs to report, in the order wanted; default all.
    batch_size : int, default 256
        Windows per forward pass (reference and alternative windows of many variants together).
    device : str or torch.device, optional
        Default: CUDA when present, else CPU.
    index_dir : str or Path, optional
        See :func:`tisfm_core.genome.open_genome`.
    verbose : bool, default False
        Print progress to stderr.

    Returns
    -------
    VariantScores
        ``table``: one row per variant in input order, columns ``id``, ``chrom``, ``pos``
        (1-based), ``ref``, ``alt``, ``status`` ("scored" or "refused"), ``message`` (the reason
        for a refused variant, "" otherwise), ``top_output`` (the output with the largest
        \\|diff\\|) and ``max_abs_diff``, then ``ref:<output>`` and ``alt:<output>`` (the
        predictions of the two windows), ``diff:<output>`` (alt - ref) and ``rank:<output>``
        for every output: the rank of that output's \\|diff\\| among the variant's outputs (1 =
        largest; ties in output order). Refused rows hold NaN / missing values there.
        ``problems``: ``"<where>, chrom:pos REF>ALT: <reason>"`` per refused variant.

    Raises
    ------
    TisfmError
        For no variants, an unknown output, or a genome FASTA that cannot be opened; problems
        of single variants are reported in the table instead.
    """
    model, names, length = model_parts(model_or_run, device=device)
    outs = check_outputs(outputs, len(names), names)
    variants = _as_variants(variants)
    batch_size = check_integer(batch_size, "batch_size")
    if not isinstance(genome, Genome):
        with open_genome(genome, index_dir=index_dir) as opened:
            return _score(model, names, length, outs, variants, opened, batch_size, device, verbose)
    return _score(model, names, length, outs, variants, genome, batch_size, device, verbose)


def _score(model, names, length, outs, variants, genome, batch_size, device, verbose):
    n, n_out = len(variants), len(outs)
    ref_pred = np.full((n, n_out), np.nan, dtype=np.float32)
    alt_pred = np.full((n, n_out), np.nan, dtype=np.float32)
    messages = [""] * n
    problems = []
    with evaluation(model, device) as dev:
        for lo in range(0, n, _CHUNK):
            rows, refs, alts = [], [], []
            for i in range(lo, min(lo + _CHUNK, n)):
                try:
                    w = _windows(variants[i], genome, length)
                except TisfmError as exc:
                    messages[i] = str(exc)
                    problems.append(f"{describe(variants[i])}: {exc}")
                    continue
                rows.append(i)
                refs.append(w.ref)
                alts.append(w.alt)
            if rows:
                pred = predict_batches(model, np.stack(refs + alts), batch_size=batch_size, device=dev)[:, outs]
                ref_pred[rows], alt_pred[rows] = pred[:len(rows)], pred[len(rows):]
            if verbose:
                print(f"variants: {min(lo + _CHUNK, n)}/{n}", file=sys.stderr, flush=True)
    return VariantScores(_table(variants, messages, ref_pred, alt_pred, [names[o] for o in outs]),
                         problems, [names[o] for o in outs])


def _table(variants, messages, ref_pred, alt_pred, labels):
    diff = alt_pred - ref_pred
    scored = ~np.isnan(diff).any(axis=1)
    magnitude = np.abs(np.nan_to_num(diff))
    # rank 1 = largest |diff|; a stable sort keeps ties in output order
    order = np.argsort(-magnitude, axis=1, kind="stable")
    rank = np.empty_like(order)
    np.put_along_axis(rank, order, np.arange(1, diff.shape[1] + 1)[None], axis=1)
    table = pd.DataFrame({
        "id": [v.id for v in variants], "chrom": [v.chrom for v in variants],
        "pos": np.array([v.pos for v in variants], dtype=np.int64),
        "ref": [v.ref for v in variants], "alt": [v.alt for v in variants],
        "status": np.where(scored, "scored", "refused"), "message": messages,
        "top_output": pd.array(np.where(scored, np.asarray(labels, dtype=object)[order[:, 0]], None),
                               dtype="string"),
        "max_abs_diff": np.where(scored, magnitude.max(axis=1), np.nan).astype(np.float32)})
    columns = {}
    for kind, values in (("ref", ref_pred), ("alt", alt_pred), ("diff", diff)):
        for k, name in enumerate(labels):
            columns[f"{kind}:{name}"] = values[:, k]
    for k, name in enumerate(labels):
        columns[f"rank:{name}"] = pd.array(np.where(scored, rank[:, k], None), dtype="Int64")
    return pd.concat([table, pd.DataFrame(columns)], axis=1)
