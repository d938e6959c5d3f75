"""Genome FASTA access for regions and variants: user coordinates, contig checks, index placement.

Users type regions as ``chr:start-end``, 1-based and inclusive (``chr1:3,000,001-3,002,000``);
every message here speaks in those coordinates. Internally positions are 0-based, end exclusive.

Index placement: pyfaidx writes ``GENOME.fai`` (and ``GENOME.gzi`` for a bgzip FASTA) next to
the FASTA by default. :func:`open_genome` uses an index that already sits next to the FASTA
when it is at least as new as the FASTA, and otherwise builds its own in a cache folder
(``index_dir``, default ``$TISFM_HOME/genome-index`` or ``~/.tisfm/genome-index``) through
pyfaidx's ``indexname`` / ``gzi_indexname`` arguments, so nothing is ever written next to a
user's genome. Cached indices are named after the FASTA and a digest of its absolute path (two
``genome.fa`` in different folders do not collide), built under a temporary name and renamed
(two processes indexing the same genome never read a half-written index), and rebuilt when the
FASTA is newer than them.
"""

from __future__ import annotations

import hashlib
import os
import re
import secrets
from pathlib import Path
from typing import NamedTuple

import numpy as np

from .errors import TisfmError
from .sequences import GENOME_LUT
from .textfiles import check_input_file

_REGION = re.compile(r"^(?P<chrom>\S+):(?P<start>[0-9,]+)-(?P<end>[0-9,]+)$")


class Region(NamedTuple):
    """A genome interval in users' coordinates: 1-based, both ends included."""

    chrom: str
    start: int
    end: int

    def __str__(self):
        return f"{self.chrom}:{self.start}-{self.end}"

    def __len__(self):
        return self.end - self.start + 1


def _number(text):
    """An integer from digits with optional thousands commas (``1,000,000``)."""
    if not re.fullmatch(r"[0-9]{1,3}(,[0-9]{3})*|[0-9]+", text):
        return None
    return int(text.replace(",", ""))


def parse_region(text):
    """Parse ``chrom:start-end`` (1-based, inclusive; commas in the numbers allowed).

    Parameters
    ----------
    text : str
        E.g. ``chr1:3,000,001-3,002,000``. Surrounding blanks are ignored.

    Returns
    -------
    Region

    Raises
    ------
    TisfmError
        For text not of that form, a start below 1, or a start after the end.
    """
    match = _REGION.match(str(text).strip())
    start = end = None
    if match:
        start, end = _number(match["start"]), _number(match["end"])
    if start is None or end is None:
        raise TisfmError(f"region {text!r} is not of the form chrom:start-end (1-based, inclusive; "
                         "e.g. chr1:3000001-3002000)")
    if start < 1:
        raise TisfmError(f"region {text!r}: positions are 1-based, so the start must be >= 1")
    if start > end:
        raise TisfmError(f"region {text!r}: the start {start} lies after the end {end}")
    return Region(match["chrom"], start, end)


def default_index_dir():
    """Where genome indices are cached: ``genome-index`` in the user's tiSFM folder
    (:func:`tisfm_core.server.home_dir`)."""
    from .server import home_dir

    return home_dir() / "genome-index"


def _fresh(index, fasta):
    return index.is_file() and index.stat().st_mtime >= fasta.stat().st_mtime


def _is_bgzf_name(path):
    # pyfaidx decides by the name whether to read the file as BGZF
    return path.name.lower().endswith((".gz", ".bgz"))


def _open_fasta(path, fai, gzi):
    import pyfaidx

    try:
        return pyfaidx.Fasta(str(path), indexname=str(fai), gzi_indexname=None if gzi is None else str(gzi),
                             as_raw=True, sequence_always_upper=True)
    except (pyfaidx.FastaIndexingError, pyfaidx.UnsupportedCompressionFormat, ValueError, OSError,
            UnicodeDecodeError, EOFError) as exc:
        raise TisfmError(f"cannot index genome FASTA {path}: '{exc}'") from None


def _cached_index(path, index_dir):
    """Paths of a fresh .fai (and .gzi) for ``path`` in ``index_dir``, built there when needed."""
    folder = Path(index_dir).expanduser()
    key = hashlib.sha1(str(path.resolve()).encode()).hexdigest()[:12]
    fai = folder / f"{path.name}.{key}.fai"
    gzi = folder / f"{path.name}.{key}.gzi" if _is_bgzf_name(path) else None
    if _fresh(fai, path) and (gzi is None or _fresh(gzi, path)):
        return fai, gzi
    try:
        folder.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise TisfmError(f"cannot create the genome index folder {folder}: {exc.strerror or exc}") from None
    tag = f".{os.getpid()}.{secrets.token_hex(4)}.tmp"
    tmp_fai = fai.with_name(fai.name + tag)
    tmp_gzi = None if gzi is None else gzi.with_name(gzi.name + tag)
    try:
        _open_fasta(path, tmp_fai, tmp_gzi).close()
        if tmp_gzi is not None:
            os.replace(tmp_gzi, gzi)
        os.replace(tmp_fai, fai)
    except OSError as exc:
        raise TisfmError(f"cannot write the genome index in {folder}: {exc.strerror or exc}") from None
    finally:
        for tmp in (tmp_fai, tmp_gzi):
            if tmp is not None:
                tmp.unlink(missing_ok=True)
    return fai, gzi


class Genome:
    """An open genome FASTA (plain or bgzip): contig lengths and encoded slices.

    Use :func:`open_genome` to make one; close it (or use it as a context manager) when done.

    Attributes
    ----------
    path : Path
        The FASTA.
    index_path : Path
        The ``.fai`` index in use (next to the FASTA or in the cache folder).
    contigs : dict of str to int
        Contig lengths in bases, in file order.
    """

    def __init__(self, path, fasta, index_path):
        self.path = path
        self.index_path = index_path
        self._fasta = fasta
        self.contigs = {name: len(fasta[name]) for name in fasta.keys()}

    def __enter__(self):
        return self

    def __exit__(self, *exc):
        self.close()

    def close(self):
        self._fasta.close()

    def check_contig(self, chrom):
        """The length of ``chrom``; a TisfmError listing some contigs when it is not in the genome."""
        if chrom not in self.contigs:
            raise TisfmError(self.missing_contig(chrom))
        return self.contigs[chrom]

    def missing_contig(self, chrom):
        """The message for a contig that is not in this genome."""
        names = list(self.contigs)
        shown = ", ".join(f"'{n}'" for n in names[:5]) + (", ..." if len(names) > 5 else "")
        # the contig was typed (a region) or read from the user's own variants; the genome's
        # names are its contents, quoted (tisfm_core.server.redact)
        return f"contig {chrom} is not in {self.path.name} (its contigs: {shown})"

    def text(self, chrom, start, end):
        """Upper-case bases ``[start, end)`` (0-based) of ``chrom``, which must lie in the contig."""
        text = self._fasta[chrom][start:end]
        if len(text) != end - start:
            raise TisfmError(f"genome contig '{chrom}' returned {len(text)} bases for '{chrom}:"
                             f"{start + 1}-{end}'; is the FASTA index {self.index_path} stale?")
        return text

    def fetch(self, chrom, start, end):
        """Base indices (uint8, A=0 C=1 G=2 T=3, anything else 4) of ``[start, end)`` (0-based)."""
        return np.frombuffer(self.text(chrom, start, end).encode("ascii", "replace").translate(GENOME_LUT),
                             dtype=np.uint8)


def open_genome(path, *, index_dir=None):
    """Open a genome FASTA without writing anything next to it.

    Parameters
    ----------
    path : str or Path
        Plain FASTA, or a bgzip-compressed one named ``*.gz`` / ``*.bgz`` (plain gzip is refused
        by pyfaidx with the advice to use bgzip).
    index_dir : str or Path, optional
        Folder for the ``.fai`` / ``.gzi`` index when none is next to the FASTA, or that one is
        older than the FASTA; default :func:`default_index_dir`.

    Returns
    -------
    Genome

    Raises
    ------
    TisfmError
        For a missing file, a FASTA pyfaidx cannot index (lines of unequal width, plain gzip,
        duplicate names) or an index folder that cannot be written.
    """
    path = check_input_file(path, "genome FASTA")
    fai = Path(f"{path}.fai")
    gzi = Path(f"{path}.gzi") if _is_bgzf_name(path) else None
    if not (_fresh(fai, path) and (gzi is None or _fresh(gzi, path))):
        fai, gzi = _cached_index(path, default_index_dir() if index_dir is None else index_dir)
    return Genome(path, _open_fasta(path, fai, gzi), fai)


class RegionSequence(NamedTuple):
    """A region read from a genome: where it is and its bases."""

    region: Region
    indices: np.ndarray   #: uint8 (L,) base indices


def read_region(genome, region, *, max_length=None, index_dir=None):
    """The bases of a ``chrom:start-end`` region of a genome FASTA.

    Parameters
    ----------
    genome : str, Path or Genome
        The FASTA (opened with :func:`open_genome`) or an open :class:`Genome`.
    region : str or Region
        1-based, inclusive, as users type it (commas allowed).
    max_length : int, optional
        Longest region accepted, in bases.
    index_dir : str or Path, optional
        See :func:`open_genome`.

    Returns
    -------
    RegionSequence

    Raises
    ------
    TisfmError
        In the user's 1-based coordinates: malformed region, start after end, a contig missing
        from the genome, an end past the contig end, or a region longer than ``max_length``.
    """
    if not isinstance(region, Region):
        region = parse_region(region)
    if max_length is not None and len(region) > max_length:
        raise TisfmError(f"region {region} is {len(region):,} bp long; the limit is {max_length:,} bp")
    if not isinstance(genome, Genome):
        with open_genome(genome, index_dir=index_dir) as opened:
            return read_region(opened, region, max_length=max_length)
    size = genome.check_contig(region.chrom)
    if region.end > size:
        raise TisfmError(f"region {region} runs past the end of {region.chrom} ({size:,} bp, "
                         f"last position {size})")
    return RegionSequence(region, genome.fetch(region.chrom, region.start - 1, region.end))


def centred_window(genome, region, length, *, index_dir=None):
    """The ``length``-bp window centred on a region (what a model of that window sees there).

    The centre is the region's midpoint; bases outside the contig are N. Errors are in the
    user's 1-based coordinates (see :func:`read_region`).

    Returns
    -------
    SequenceSet
        One sequence, id = the region as ``chrom:start-end``.
    """
    from .sequences import SequenceSet

    if not isinstance(region, Region):
        region = parse_region(region)
    if not isinstance(genome, Genome):
        with open_genome(genome, index_dir=index_dir) as opened:
            return centred_window(opened, region, length)
    size = genome.check_contig(region.chrom)
    if region.end > size:
        raise TisfmError(f"region {region} runs past the end of {region.chrom} ({size:,} bp, "
                         f"last position {size})")
    start = (region.start - 1 + region.end) // 2 - length // 2      # 0-based, may hang over
    window = np.full(length, 4, dtype=np.uint8)
    lo, hi = max(start, 0), min(start + length, size)
    window[lo - start:hi - start] = genome.fetch(region.chrom, lo, hi)
    return SequenceSet(ids=[str(region)], indices=window[None])
