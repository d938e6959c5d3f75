"""Transcription-factor motifs: one validated PWM set, its readers and writer, and the kernel stack.

A :class:`MotifSet` holds position probability matrices (rows = positions, columns A, C, G, T,
rows summing to 1) with unique ids, display names, the source they came from and a stable
fingerprint. tiSFM's first convolution uses these matrices as fixed kernels on both strands
(:meth:`MotifSet.kernels`).

Readers (all line based, errors name the file, the line and the motif):

- :func:`read_meme` -- MEME minimal format (also the motif sections of full MEME output);
- :func:`read_jaspar_file` -- JASPAR ``>MA0004.1 Arnt`` + ``A [ ... ]`` files and plain ``.pfm``;
- :func:`read_transfac` -- TRANSFAC matrix records (``AC``/``ID``/``P0`` ... ``//``);
- :func:`read_homer` -- HOMER ``.motif`` files;
- :func:`read_jaspar_release` -- a JASPAR release shipped offline with pyjaspar;
- :func:`load_motifs` -- any of the above, chosen from a spec (``"jaspar:2024"``) or the file content.

Biopython's JASPAR reader keeps only the first word of a name and reports ragged rows without a
line or motif, and its TRANSFAC reader rejects JASPAR's own TRANSFAC export (one space between
key and value), so the readers here are our own; the tests check them against Biopython on
well-formed files.
"""

from __future__ import annotations

import functools
import hashlib
import math
import re
import struct
import warnings
from dataclasses import dataclass
from pathlib import Path

import numpy as np

from .atomic import write_text
from .errors import TisfmError, check_integer
from .textfiles import check_input_file, read_text

__all__ = [
    "MotifSet",
    "read_meme",
    "write_meme",
    "read_jaspar_release",
    "read_jaspar_file",
    "read_transfac",
    "read_homer",
    "load_motifs",
    "motif_url",
]

BASES = "ACGT"
ERAS = ("head", "paper")
# Rows within this distance of 1 are probabilities with rounding error and are renormalised.
_ROW_SUM_TOLERANCE = 0.02
# A motif whose every row sums to more than this holds counts (e.g. a MEME file written from a PFM).
_COUNT_ROW_SUM = 1.5
# CIS-BP style ids "Pax5+M1848_1.02+I": TF symbol + CIS-BP motif id + D(irect)/I(nferred) evidence.
_CISBP_ID = re.compile(r"([^+\s]+)\+M\d+_\d+\.\d+\+[DI]")
_JASPAR_LETTER_ROW = re.compile(r"([ACGTacgt])\s*:?\s*\[(.*)\]")
# JASPAR matrix ids: a collection prefix (MA core, PB PBM, PF phylofacts, PH PBM-homeo, PL plants,
# CN CNE, POL polII, UN unvalidated), four digits and an optional version.
_JASPAR_ID = re.compile(r"(?:MA|PB|PF|PH|PL|CN|POL|UN)\d{4}(?:\.\d+)?")
_CISBP_MOTIF = re.compile(r"(?<![A-Za-z0-9])M\d+_\d+\.\d+(?![0-9])")
JASPAR_URL = "https://jaspar.elixir.no/matrix/{id}/"
CISBP_URL = "https://cisbp.ccbr.utoronto.ca/matchlist.php?searchField={id}"


def _display_name(motif_id, alt_name=None):
    """The name shown to users: the alternative name if given, the TF symbol of a CIS-BP id, else the id."""
    if alt_name:
        return alt_name
    match = _CISBP_ID.fullmatch(motif_id)
    return match.group(1) if match else motif_id


def motif_url(motif_id):
    """The database page of a motif id, or None when the id names no known database.

    JASPAR matrix ids (``MA0004.1``, also without the version) link to their JASPAR entry; ids
    that hold a CIS-BP motif id (``M1848_1.02``, also inside ``Pax5+M1848_1.02+I``) link to the
    CIS-BP search for that motif, which lists its TF.
    """
    text = str(motif_id).strip()
    if _JASPAR_ID.fullmatch(text):
        return JASPAR_URL.format(id=text)
    match = _CISBP_MOTIF.search(text)
    return CISBP_URL.format(id=match.group(0)) if match else None


def kernel_slots(widths, width, era):
    """First column of each motif in a kernel buffer ``width`` wide: the one rule of where a
    motif sits (centred, ``(W - w) // 2``, since the reference's "head" era; left-aligned, 0, in
    the "paper" era). ``widths`` (n,) -> int64 (n,)."""
    if era not in ERAS:
        raise TisfmError(f"era must be 'head' (motifs centred in the kernel) or 'paper' (left-aligned), not {era!r}")
    widths = np.asarray(widths, dtype=np.int64)
    return np.zeros_like(widths) if era == "paper" else (int(width) - widths) // 2


@dataclass(frozen=True, eq=False)
class MotifSet:
    """An ordered set of DNA motifs as position probability matrices.

    Parameters
    ----------
    ids : sequence of str
        Unique motif ids in file order; non-empty, without whitespace.
    names : sequence of str
        Display names, one per motif (e.g. the TF symbol).
    matrices : sequence of array-like, each shape (w, 4)
        Probabilities, columns A, C, G, T; every row must sum to 1 (within 1e-6). Stored as
        read-only float64 copies.
    source : str, default ""
        Where the motifs came from, e.g. ``"cisBP_mouse.meme"`` or ``"jaspar:2024 CORE vertebrates"``.

    Raises
    ------
    TisfmError
        When the three sequences differ in length, the set is empty, an id is empty, holds
        whitespace or repeats, or a matrix is not a (w, 4) probability matrix.
    """

    ids: tuple
    names: tuple
    matrices: tuple
    source: str = ""

    def __post_init__(self):
        ids = tuple(str(motif_id) for motif_id in self.ids)
        names = tuple(str(name) for name in self.names)
        raw = tuple(self.matrices)
        if not ids:
            raise TisfmError("a motif set needs at least one motif")
        if len(names) != len(ids) or len(raw) != len(ids):
            raise TisfmError(f"a motif set needs one name and one matrix per id; got {len(ids)} ids, "
                             f"{len(names)} names and {len(raw)} matrices")
        index = {}
        for k, motif_id in enumerate(ids):
            if not motif_id or any(c.isspace() or c == "\0" for c in motif_id):
                raise TisfmError(f"motif {k} has id {motif_id!r}; ids must be non-empty and contain no whitespace")
            if motif_id in index:
                raise TisfmError(f"motif id {motif_id!r} occurs twice (motifs {index[motif_id]} and {k})")
            index[motif_id] = k
            if not names[k] or names[k] != names[k].strip() or "\n" in names[k] or "\r" in names[k]:
                raise TisfmError(f"motif {motif_id!r} has name {names[k]!r}; names must be non-empty, one line, "
                                 f"without leading or trailing spaces")
        matrices = []
        for motif_id, matrix in zip(ids, raw):
            try:
                array = np.array(matrix, dtype=np.float64)
            except (TypeError, ValueError):
                raise TisfmError(f"the matrix of motif {motif_id!r} is not numeric") from None
            if array.ndim != 2 or array.shape[1] != 4 or array.shape[0] == 0:
                raise TisfmError(f"the matrix of motif {motif_id!r} has shape {array.shape}; expected (w, 4) with w >= 1")
            if not np.isfinite(array).all() or (array < 0).any():
                raise TisfmError(f"the matrix of motif {motif_id!r} has negative or non-finite entries")
            worst = np.abs(array.sum(axis=1) - 1.0).max()
            if worst > 1e-6:
                raise TisfmError(f"the rows of motif {motif_id!r} must sum to 1 (off by up to {worst:.3g})")
            array.setflags(write=False)
            matrices.append(array)
        object.__setattr__(self, "ids", ids)
        object.__setattr__(self, "names", names)
        object.__setattr__(self, "matrices", tuple(matrices))
        object.__setattr__(self, "source", str(self.source))
        object.__setattr__(self, "_index", index)

    def __len__(self):
        return len(self.ids)

    def __repr__(self):
        return (f"MotifSet({len(self)} motifs, widths {self.widths.min()}-{self.max_width}, "
                f"source={self.source!r})")

    @property
    def widths(self):
        """Motif widths w, int64 array of shape (n,)."""
        return np.array([m.shape[0] for m in self.matrices], dtype=np.int64)

    @property
    def max_width(self):
        """Width of the widest motif (the kernel width W the reference uses)."""
        return int(self.widths.max())

    @functools.cached_property
    def fingerprint(self):
        """Stable hash of ids and matrices (names and source are not part of it).

        Recipe: SHA-256 over, for each motif in order, ``id.encode("utf-8") + b"\\0" +
        struct.pack("<I", w) + np.round(matrix, 6).astype("<f8").tobytes()`` (the (w, 4) matrix
        in C order), returned as ``"sha256:" + hexdigest``. Rounding to 6 decimals makes it
        insensitive to the last bits of a text round trip; the explicit byte order and dtype make
        it identical across platforms.
        """
        digest = hashlib.sha256()
        for motif_id, matrix in zip(self.ids, self.matrices):
            digest.update(motif_id.encode("utf-8") + b"\0")
            digest.update(struct.pack("<I", matrix.shape[0]))
            digest.update(np.ascontiguousarray(np.round(matrix, 6), dtype="<f8").tobytes())
        return "sha256:" + digest.hexdigest()

    def information_content(self, background=None):
        """Information content of each motif in bits.

        Parameters
        ----------
        background : sequence of 4 floats or None, default None
            Base frequencies A, C, G, T (positive, summing to 1). None means uniform (0.25 each),
            where the value is ``sum_pos (2 + sum_b p log2 p)``; in general it is
            ``sum_pos sum_b p log2(p / bg_b)``, with 0 log 0 = 0.

        Returns
        -------
        numpy.ndarray, shape (n,), float64
        """
        bg = np.full(4, 0.25) if background is None else _check_background(background)
        out = np.empty(len(self))
        for k, matrix in enumerate(self.matrices):
            positive = matrix > 0
            out[k] = np.sum(matrix[positive] * np.log2(matrix[positive] / np.broadcast_to(bg, matrix.shape)[positive]))
        return out

    def kernels(self, era="head", n_pad_channels=4, width=None):
        """The fixed convolution kernels of tiSFM, built exactly as the reference code does.

        Motif k, transposed to (4, w), goes to channel 2k and its reverse complement (both the
        base axis, A<->T and C<->G in ACGT order, and the position axis flipped) to channel
        2k + 1. Both copies occupy the same columns [s, s + w) of the W-wide buffer; the rest is 0.

        Parameters
        ----------
        era : {"head", "paper"}, default "head"
            "head": centred, s = floor((W - w) / 2) (reference code since March 2023);
            "paper": left-aligned, s = 0 (the code the paper's models were trained with).
        n_pad_channels : int, default 4
            All-zero channels appended at the end (the reference's ``pad_motif``).
        width : int or None, default None
            Kernel width W; None means :attr:`max_width`.

        Returns
        -------
        numpy.ndarray, float32, shape (2 * n + n_pad_channels, 4, W)
            Raw probabilities, not log-odds.
        """
        n_pad = check_integer(n_pad_channels, "n_pad_channels", 0)
        full = self.max_width if width is None else check_integer(width, "width", 0)
        if full < self.max_width:
            k = int(np.argmax(self.widths > full))
            raise TisfmError(f"kernel width {full} is narrower than motif {self.ids[k]!r} (width {self.widths[k]})")
        out = np.zeros((2 * len(self) + n_pad, 4, full), dtype=np.float32)
        starts = kernel_slots(self.widths, full, era)
        for k, matrix in enumerate(self.matrices):
            w, start = matrix.shape[0], int(starts[k])
            forward = matrix.T
            out[2 * k, :, start:start + w] = forward
            out[2 * k + 1, :, start:start + w] = forward[::-1, ::-1]
        return out

    def subset(self, ids):
        """A new MotifSet with the given motifs, in the given order (same source).

        Raises
        ------
        TisfmError
            For an id not in the set or one requested twice.
        """
        ids = [ids] if isinstance(ids, str) else list(ids)
        positions = [self.index(motif_id) for motif_id in ids]
        if len(set(positions)) != len(positions):
            twice = next(m for m in ids if ids.count(m) > 1)
            raise TisfmError(f"motif id {twice!r} is requested more than once")
        return MotifSet(tuple(self.ids[k] for k in positions), tuple(self.names[k] for k in positions),
                        tuple(self.matrices[k] for k in positions), self.source)

    def index(self, motif_id):
        """Position of ``motif_id`` in the set (0-based); TisfmError if absent."""
        try:
            return self._index[motif_id]
        except (KeyError, TypeError):
            raise TisfmError(f"motif id {motif_id!r} is not in the motif set {self.source!r}") from None


def _check_background(values):
    try:
        bg = np.asarray(values, dtype=np.float64).reshape(-1)
    except (TypeError, ValueError):
        raise TisfmError(f"background must be 4 numbers (A, C, G, T), not {values!r}") from None
    if bg.shape != (4,) or not np.isfinite(bg).all() or (bg <= 0).any() or abs(bg.sum() - 1) > _ROW_SUM_TOLERANCE:
        raise TisfmError(f"background must be 4 positive frequencies (A, C, G, T) summing to 1, not {values!r}")
    return bg / bg.sum()


# ----------------------------------------------------------------------------------------------
# Shared reading helpers


def _read_lines(path, what):
    """Text lines of ``path`` (any line ending), with clear errors for missing, unreadable or empty files."""
    path = check_input_file(path, f"{what} file")
    text = read_text(path, f"{what} file")   # text mode: every line end is already "\n"
    if not text.strip():
        raise TisfmError(f"{what} file {path} is empty")
    return path, text.split("\n")


def _last_line(lines):
    """Number of the last non-blank line (where an unfinished motif ends)."""
    return max((i for i, line in enumerate(lines, 1) if line.strip()), default=1)


def _numbers(tokens):
    """Floats for all tokens, or None when any token is not a number."""
    try:
        return [float(t) for t in tokens]
    except ValueError:
        return None


def _starts_numeric(tokens):
    return bool(tokens) and _numbers(tokens[:1]) is not None


def _check_values(values, where):
    if not all(math.isfinite(v) for v in values):
        raise TisfmError(f"{where}: matrix values must be finite numbers")
    if any(v < 0 for v in values):
        raise TisfmError(f"{where}: matrix values must not be negative")


def _check_row(values, where):
    if values is None or len(values) != 4:
        found = "non-numeric text" if values is None else f"{len(values)} numbers"
        raise TisfmError(f"{where}: a matrix row needs exactly 4 numbers (A C G T), found {found}")
    _check_values(values, where)


def _probability_rows(rows, row_lines, path, motif_id):
    """Position-by-base matrix from probability rows (MEME, HOMER).

    Rows within 0.02 of 1 are renormalised exactly; a motif whose every row sums to more than 1.5
    holds counts and is normalised row by row. Returns (matrix, was_counts).
    """
    matrix = np.array(rows, dtype=np.float64)
    sums = matrix.sum(axis=1)
    if (sums > _COUNT_ROW_SUM).all():
        return matrix / sums[:, None], True
    bad = np.flatnonzero(np.abs(sums - 1.0) > _ROW_SUM_TOLERANCE)
    if bad.size:
        i = int(bad[0])
        raise TisfmError(f"{path}, line {row_lines[i]}: a row of motif {motif_id!r} sums to {sums[i]:.6g}; "
                         f"expected probabilities summing to 1 (or counts in every row)")
    return matrix / sums[:, None], False


def _count_columns(counts, position_lines, path, motif_id):
    """Position-by-base probabilities from a count (or frequency) matrix of shape (w, 4)."""
    matrix = np.array(counts, dtype=np.float64)
    sums = matrix.sum(axis=1)
    zero = np.flatnonzero(sums <= 0)
    if zero.size:
        i = int(zero[0])
        raise TisfmError(f"{path}, line {position_lines[i]}: position {i + 1} of motif {motif_id!r} has no counts "
                         f"(all four values are 0)")
    return matrix / sums[:, None]


def _warn_counts(path, n_counts):
    if n_counts:
        warnings.warn(f"{path}: {n_counts} motif(s) held counts instead of probabilities (every row summing "
                      f"to more than {_COUNT_ROW_SUM}); their rows were normalised to sum to 1",
                      UserWarning, stacklevel=4)


class _Collector:
    """Accumulates parsed motifs and rejects duplicate ids, naming both lines."""

    def __init__(self, path, what):
        self.path, self.what = path, what
        self.ids, self.names, self.matrices, self.lines = [], [], [], {}

    def add(self, motif_id, alt_name, matrix, line):
        if motif_id in self.lines:
            raise TisfmError(f"{self.path}, line {line}: duplicate motif id {motif_id!r} "
                             f"(first defined on line {self.lines[motif_id]})")
        self.lines[motif_id] = line
        self.ids.append(motif_id)
        self.names.append(_display_name(motif_id, alt_name))
        self.matrices.append(matrix)

    def motif_set(self, source):
        if not self.ids:
            raise TisfmError(f"{self.what} file {self.path} contains no motifs")
        return MotifSet(tuple(self.ids), tuple(self.names), tuple(self.matrices),
                        self.path.name if source is None else source)


def _key_value(line, key):
    """The value of ``key=`` in a MEME matrix header line, or None."""
    match = re.search(rf"\b{key}\s*=\s*(\S+)", line)
    return match.group(1) if match else None


# ----------------------------------------------------------------------------------------------
# MEME


class _MemeMotif:
    def __init__(self, motif_id, alt_name, line):
        self.id, self.alt_name, self.line = motif_id, alt_name, line
        self.header_line = None  # line of "letter-probability matrix"
        self.expected = None     # row count: w= of the header, or where the rows ended
        self.declared = False    # whether the header gave w=
        self.rows, self.row_lines = [], []

    @property
    def reading(self):
        """True while rows of the letter-probability matrix may still follow."""
        return self.header_line is not None and (self.expected is None or len(self.rows) < self.expected)


def read_meme(path, *, source=None):
    """Read a MEME minimal-format motif file.

    The parser is line based: ``MOTIF id [alternative name]`` starts a motif and
    ``letter-probability matrix: alength= 4 w= 8 ...`` its rows (blank lines may come between).
    CRLF or CR line endings, a missing final newline, ``URL`` lines, extra blank lines and header
    lines (``MEME version``, ``ALPHABET= ACGT``, ``strands``, ``Background letter frequencies`` and
    the line after it) are accepted; ``log-odds matrix`` sections are skipped.

    Parameters
    ----------
    path : str or Path
    source : str or None, default None
        Value of :attr:`MotifSet.source`; None means the file name.

    Returns
    -------
    MotifSet
        Rows within 0.02 of 1 are renormalised to sum to exactly 1. Motifs whose every row sums to
        more than 1.5 (counts) are normalised, with one UserWarning per file saying how many.

    Raises
    ------
    TisfmError
        Naming the file, line and motif, for: a missing or empty file, a file without motifs, an
        alphabet other than ACGT, rows without exactly 4 finite non-negative numbers, a row count
        different from ``w=``, a motif without rows, other row sums, and duplicate ids.
    """
    path, lines = _read_lines(path, "MEME")
    return _parse_meme(path, lines, source)


def _parse_meme(path, lines, source):
    found = _Collector(path, "MEME")
    n_counts = 0
    motif = None            # the motif being read
    skip_rows = None        # rows of a log-odds matrix still to skip (-1: until a non-numeric line)
    skip_background = False  # the line after "Background letter frequencies" holds the frequencies

    def finish(at_line):
        nonlocal n_counts
        if motif.header_line is None:
            raise TisfmError(f"{path}, line {motif.line}: motif {motif.id!r} has no letter-probability matrix")
        if not motif.rows:
            raise TisfmError(f"{path}, line {motif.header_line}: motif {motif.id!r} has no matrix rows")
        if motif.declared and len(motif.rows) < motif.expected:
            raise TisfmError(f"{path}, line {at_line}: motif {motif.id!r} has {len(motif.rows)} matrix rows "
                             f"but its header says w= {motif.expected}")
        matrix, was_counts = _probability_rows(motif.rows, motif.row_lines, path, motif.id)
        n_counts += was_counts
        found.add(motif.id, motif.alt_name, matrix, motif.line)

    for lineno, raw in enumerate(lines, 1):
        line = raw.strip()
        tokens = line.split()
        if not tokens:
            continue
        if skip_background:
            skip_background = False
            if not line.startswith(("MOTIF", "letter-probability", "ALPHABET")):
                continue
        if skip_rows is not None:
            if _starts_numeric(tokens):
                skip_rows -= 1
                if skip_rows == 0:
                    skip_rows = None
                continue
            skip_rows = None
        where = f"{path}, line {lineno}"
        if _starts_numeric(tokens):
            if motif is None or not motif.reading:
                if motif is not None and motif.declared:
                    raise TisfmError(f"{where}: motif {motif.id!r} has more matrix rows than its header's "
                                     f"w= {motif.expected}")
                raise TisfmError(f"{where}: a row of numbers outside a letter-probability matrix")
            values = _numbers(tokens)
            _check_row(values, f"{where} (motif {motif.id!r})")
            motif.rows.append(values)
            motif.row_lines.append(lineno)
            continue
        if motif is not None and motif.reading:
            if motif.declared:
                raise TisfmError(f"{where}: motif {motif.id!r} has {len(motif.rows)} matrix rows but its "
                                 f"header says w= {motif.expected}")
            if not motif.rows:
                raise TisfmError(f"{path}, line {motif.header_line}: motif {motif.id!r} has no matrix rows")
            motif.expected = len(motif.rows)  # w= absent: the rows ended at this line
        if tokens[0] == "MOTIF":
            if motif is not None:
                finish(lineno)
            if len(tokens) < 2:
                raise TisfmError(f"{where}: MOTIF line without a motif id")
            parts = line.split(None, 2)
            motif = _MemeMotif(parts[1], parts[2].strip() if len(parts) > 2 else None, lineno)
        elif line.startswith("letter-probability matrix"):
            if motif is None:
                raise TisfmError(f"{where}: letter-probability matrix before any MOTIF line")
            if motif.header_line is not None:
                raise TisfmError(f"{where}: motif {motif.id!r} has a second letter-probability matrix "
                                 f"(the first is on line {motif.header_line})")
            alength = _key_value(line, "alength")
            if alength is not None and alength != "4":
                raise TisfmError(f"{where}: motif {motif.id!r} has alength= {alength}; only DNA (alength= 4) is supported")
            width = _key_value(line, "w")
            if width is not None:
                if not width.isdigit() or int(width) == 0:
                    raise TisfmError(f"{where}: motif {motif.id!r} has w= {width}; expected a positive integer")
                motif.expected, motif.declared = int(width), True
            motif.header_line = lineno
        elif line.startswith("log-odds matrix"):
            width = _key_value(line, "w")
            skip_rows = int(width) if width is not None and width.isdigit() and int(width) > 0 else -1
        elif tokens[0].startswith("ALPHABET"):
            _check_meme_alphabet(line, where)
        elif line.startswith("Background letter frequencies"):
            skip_background = True
    if motif is not None:
        finish(_last_line(lines))
    _warn_counts(path, n_counts)
    return found.motif_set(source)


def _check_meme_alphabet(line, where):
    """Accept ``ALPHABET= ACGT`` and MEME 5 DNA-like custom alphabet headers; reject the rest."""
    if line.startswith("ALPHABET="):
        value = line.split("=", 1)[1].strip()
        if value.upper() == "ACGT":
            return
    elif "DNA-LIKE" in line.upper():
        return
    raise TisfmError(f"{where}: only the DNA alphabet ACGT is supported, found {line!r}")


def write_meme(motifs, path, *, background=(0.25,) * 4, nsites=20):
    """Write a MotifSet as MEME version 4 minimal format.

    Each motif becomes ``MOTIF id [name]`` (the name only when it is not the one
    :func:`read_meme` would derive from the id) and a ``letter-probability matrix`` with the
    probabilities written exactly (shortest round-trip repr), so :func:`read_meme` reads back the
    same ids, names and matrices, and the reference tiSFM parser reads it too. The file is written
    atomically.

    Parameters
    ----------
    motifs : MotifSet
    path : str or Path
    background : sequence of 4 floats, default (0.25, 0.25, 0.25, 0.25)
        Background letter frequencies A, C, G, T written in the header.
    nsites : int, default 20
        ``nsites=`` of every matrix header (MEME's default when absent). Biopython's "minimal"
        reader turns probabilities into counts round(p * nsites); pass e.g. 10**7 when the file
        is meant for it and must keep full precision.
    """
    if not isinstance(motifs, MotifSet):
        raise TisfmError(f"write_meme needs a MotifSet, not {type(motifs).__name__}")
    bg = _check_background(background)
    check_integer(nsites, "nsites")
    out = ["MEME version 4", "", "ALPHABET= ACGT", "", "strands: + -", "",
           "Background letter frequencies", " ".join(f"{b} {repr(float(f))}" for b, f in zip(BASES, bg)), ""]
    for motif_id, name, matrix in zip(motifs.ids, motifs.names, motifs.matrices):
        out.append(f"MOTIF {motif_id}" if name == _display_name(motif_id) else f"MOTIF {motif_id} {name}")
        out.append(f"letter-probability matrix: alength= 4 w= {matrix.shape[0]} nsites= {int(nsites)} E= 0")
        out.extend(" ".join(repr(float(v)) for v in row) for row in matrix)
        out.append("")
    # the file ends with a blank line: the reference code's blank-line splitter drops the last chunk
    write_text(path, "\n".join(out) + "\n")


# ----------------------------------------------------------------------------------------------
# JASPAR files


def read_jaspar_file(path):
    """Read a JASPAR matrix file: ``>MA0004.1 Arnt`` headers, each followed by 4 rows A, C, G, T.

    Rows are either ``A [ 4 19 0 ... ]`` (any base order, each base once) or plain numbers in
    A, C, G, T order (JASPAR ``.pfm``). A file without a ``>`` header (plain ``.pfm``) holds one
    motif whose id is the file stem. Counts are normalised per position.

    Returns
    -------
    MotifSet
        ids = the first word after ``>``, names = the rest of the header (or the id); source =
        the file name.

    Raises
    ------
    TisfmError
        Naming file, line and motif for a row that is not numbers, negative or non-finite
        values, a motif without exactly 4 rows, rows of different lengths, a position without
        counts, duplicate ids, or a file without motifs.
    """
    path, lines = _read_lines(path, "JASPAR")
    return _parse_jaspar(path, lines)


def _parse_jaspar(path, lines):
    found = _Collector(path, "JASPAR")
    motif = None  # [id, name, header line, rows: list of (letter or None, values, line)]

    def finish(at_line):
        motif_id, name, line, rows = motif
        if len(rows) != 4:
            raise TisfmError(f"{path}, line {at_line}: motif {motif_id!r} has {len(rows)} matrix rows; "
                             f"a JASPAR matrix has 4 (A, C, G, T)")
        letters = [letter for letter, _, _ in rows]
        if all(letter is None for letter in letters):
            letters = list(BASES)
        elif sorted(letters, key=str) != sorted(BASES):
            raise TisfmError(f"{path}, line {rows[0][2]}: motif {motif_id!r} must have one row for each of "
                             f"A, C, G and T, found {letters}")
        width = len(rows[0][1])
        for _, values, row_line in rows:
            if len(values) != width:
                raise TisfmError(f"{path}, line {row_line}: motif {motif_id!r} has rows of different lengths "
                                 f"({len(values)} values here, {width} on line {rows[0][2]})")
        if width == 0:
            raise TisfmError(f"{path}, line {rows[0][2]}: motif {motif_id!r} has no positions")
        counts = np.empty((width, 4))
        for letter, (_, values, _) in zip(letters, rows):
            counts[:, BASES.index(letter)] = values
        found.add(motif_id, name, _count_columns(counts, [line] * width, path, motif_id), line)

    for lineno, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith(">"):
            if motif is not None:
                finish(lineno)
            parts = line[1:].split(None, 1)
            if not parts:
                raise TisfmError(f"{path}, line {lineno}: '>' header without a motif id")
            motif = [parts[0], parts[1].strip() if len(parts) > 1 else None, lineno, []]
            continue
        match = _JASPAR_LETTER_ROW.fullmatch(line)
        letter, text = (match.group(1).upper(), match.group(2)) if match else (None, line)
        values = _numbers(text.split())
        if values is None:
            label = f" (motif {motif[0]!r})" if motif is not None else ""
            raise TisfmError(f"{path}, line {lineno}{label}: expected a matrix row such as 'A [ 4 19 0 ]' or "
                             f"plain numbers, found {line[:40]!r}")
        if motif is None:
            motif = [path.stem, None, lineno, []]
        if len(motif[3]) == 4:
            raise TisfmError(f"{path}, line {lineno}: motif {motif[0]!r} has more than 4 matrix rows "
                             f"(A, C, G, T); is a '>' header missing?")
        _check_values(values, f"{path}, line {lineno} (motif {motif[0]!r})")
        motif[3].append((letter, values, lineno))
    if motif is not None:
        finish(_last_line(lines))
    return found.motif_set(None)


# ----------------------------------------------------------------------------------------------
# TRANSFAC


def read_transfac(path):
    """Read TRANSFAC matrix records (also JASPAR's TRANSFAC export).

    A record runs up to ``//``; its matrix starts with ``P0`` (or ``PO``) followed by the four
    base letters (any order) and rows ``01 4 16 0 0 [consensus]`` numbered from 1. Counts are
    normalised per position.

    Returns
    -------
    MotifSet
        id = ``AC`` (else ``ID``, else ``NA``; first word), name = ``NA``, else ``ID`` when the
        id came from ``AC``, else derived from the id; source = the file name.

    Raises
    ------
    TisfmError
        Naming file, line and motif for a bad ``P0`` line, a row without 4 finite non-negative
        numbers, out-of-order position numbers, a record with an id but no matrix (or an empty
        one), a position without counts, duplicate ids, or a file without matrices.
    """
    path, lines = _read_lines(path, "TRANSFAC")
    return _parse_transfac(path, lines)


def _parse_transfac(path, lines):
    found = _Collector(path, "TRANSFAC")

    def new_record():
        return {"fields": {}, "line": None, "columns": None, "matrix_line": None, "rows": [], "row_lines": []}

    def label(rec):
        fields = rec["fields"]
        for key in ("AC", "ID", "NA"):
            if fields.get(key):
                return fields[key].split()[0]
        return f"motif_{len(found.ids) + 1}"

    def finish(rec):
        if rec["matrix_line"] is None:
            if rec["fields"].get("AC") or rec["fields"].get("ID"):
                raise TisfmError(f"{path}, line {rec['line']}: TRANSFAC record {label(rec)!r} has no P0 matrix")
            return
        motif_id = label(rec)
        if not rec["rows"]:
            raise TisfmError(f"{path}, line {rec['matrix_line']}: motif {motif_id!r} has no matrix rows")
        counts = np.array(rec["rows"])[:, [rec["columns"].index(b) for b in BASES]]
        fields = rec["fields"]
        name = fields.get("NA") or (fields.get("ID") if fields.get("AC") else None)
        found.add(motif_id, name, _count_columns(counts, rec["row_lines"], path, motif_id),
                  rec["line"] or rec["matrix_line"])

    rec = new_record()
    in_matrix = False
    for lineno, raw in enumerate(lines, 1):
        line = raw.strip()
        tokens = line.split()
        if not tokens:
            continue
        if in_matrix:
            if tokens[0].isdigit():
                where = f"{path}, line {lineno} (motif {label(rec)!r})"
                position = int(tokens[0])
                if position != len(rec["rows"]) + 1:
                    raise TisfmError(f"{where}: expected matrix position {len(rec['rows']) + 1}, found {tokens[0]!r}")
                values = _numbers(tokens[1:5])
                _check_row(values, where)
                rec["rows"].append(values)
                rec["row_lines"].append(lineno)
                continue
            in_matrix = False
        if line.startswith("//"):
            finish(rec)
            rec = new_record()
            continue
        key, value = tokens[0], line[len(tokens[0]):].strip()
        if key in ("P0", "PO"):
            if rec["matrix_line"] is not None:
                raise TisfmError(f"{path}, line {lineno}: record {label(rec)!r} has a second P0 matrix "
                                 f"(the first is on line {rec['matrix_line']}); is a '//' missing?")
            columns = [t.upper() for t in value.split()[:4]]
            if sorted(columns) != sorted(BASES):
                raise TisfmError(f"{path}, line {lineno}: a {key} line must name the columns A, C, G and T, "
                                 f"found {value!r}")
            rec["columns"], rec["matrix_line"] = columns, lineno
            in_matrix = True
        elif key in ("AC", "ID", "NA") and value and key not in rec["fields"]:
            rec["fields"][key] = value
            rec["line"] = rec["line"] or lineno
    finish(rec)
    return found.motif_set(None)


# ----------------------------------------------------------------------------------------------
# HOMER


def read_homer(path):
    """Read a HOMER motif file.

    Each motif is a header ``>consensus<TAB>name<TAB>log-odds threshold[<TAB>...]`` followed by
    one row of 4 probabilities (A, C, G, T) per position.

    Returns
    -------
    MotifSet
        id = the name column (whitespace replaced by "_"; the consensus when the name is
        missing), name = the name column; source = the file name. Rows within 0.02 of 1 are
        renormalised; motifs whose every row sums to more than 1.5 (counts) are normalised with
        one UserWarning per file.

    Raises
    ------
    TisfmError
        Naming file, line and motif for rows without exactly 4 finite non-negative numbers, rows
        before the first header, motifs without rows, other row sums, duplicate ids, or a file
        without motifs.
    """
    path, lines = _read_lines(path, "HOMER")
    return _parse_homer(path, lines)


def _parse_homer(path, lines):
    found = _Collector(path, "HOMER")
    n_counts = 0
    motif = None  # [id, name, header line, rows, row lines]

    def finish():
        nonlocal n_counts
        motif_id, name, line, rows, row_lines = motif
        if not rows:
            raise TisfmError(f"{path}, line {line}: motif {motif_id!r} has no matrix rows")
        matrix, was_counts = _probability_rows(rows, row_lines, path, motif_id)
        n_counts += was_counts
        found.add(motif_id, name, matrix, line)

    for lineno, raw in enumerate(lines, 1):
        line = raw.strip()
        if not line:
            continue
        if line.startswith(">"):
            if motif is not None:
                finish()
            fields = [f.strip() for f in line[1:].split("\t")]
            label = fields[1] if len(fields) > 1 and fields[1] else fields[0]
            if not label:
                raise TisfmError(f"{path}, line {lineno}: '>' header without a consensus or motif name")
            motif_id = re.sub(r"\s+", "_", label)
            motif = [motif_id, label if label != motif_id else None, lineno, [], []]
            continue
        if motif is None:
            raise TisfmError(f"{path}, line {lineno}: a matrix row before the first '>' header")
        values = _numbers(line.split())
        _check_row(values, f"{path}, line {lineno} (motif {motif[0]!r})")
        motif[3].append(values)
        motif[4].append(lineno)
    if motif is not None:
        finish()
    _warn_counts(path, n_counts)
    return found.motif_set(None)


# ----------------------------------------------------------------------------------------------
# JASPAR releases (pyjaspar, offline)


def _jaspar_releases():
    """Release names ("JASPAR2024", ...) whose SQLite database ships with pyjaspar."""
    import pyjaspar

    folder = Path(pyjaspar.__file__).resolve().parent / "data"
    return sorted(p.stem for p in folder.glob("JASPAR*.sqlite"))


def _as_str_tuple(value):
    if value is None:
        return ()
    if isinstance(value, (str, int, np.integer)):
        return (str(value),)
    return tuple(str(v) for v in value)


def read_jaspar_release(release="2024", *, collection="CORE", tax_group=("vertebrates",), species=None,
                        all_versions=False):
    """Motifs of a JASPAR release, read offline from the SQLite database shipped with pyjaspar.

    Parameters
    ----------
    release : str or int, default "2024"
        "2024", 2024 or "JASPAR2024"; any release pyjaspar ships (2014 ... 2026).
    collection : str or None, default "CORE"
        JASPAR collection; None means all collections.
    tax_group : str, sequence of str or None, default ("vertebrates",)
        Taxonomic groups; None means all.
    species : str, int, sequence or None, default None
        NCBI taxonomy ids, e.g. 10090 (mouse) or ["9606", "10090"]; None means all.
    all_versions : bool, default False
        Keep every version of a profile instead of only the latest.

    Returns
    -------
    MotifSet
        ids = matrix ids ("MA0004.1") sorted by base id and version, names = TF names, matrices =
        counts normalised per position, source like "jaspar:2024 CORE vertebrates". Results are
        cached per arguments (a fetch takes about a second); the set is immutable.

    Raises
    ------
    TisfmError
        For a release pyjaspar does not ship (the message lists the available ones) or a
        selection that matches no profile.
    """
    text = str(release).strip()
    name = text.upper() if text.upper().startswith("JASPAR") else f"JASPAR{text}"
    available = _jaspar_releases()
    if name not in available:
        years = ", ".join(r.removeprefix("JASPAR") for r in available)
        raise TisfmError(f"unknown JASPAR release {release!r}; available releases: {years}")
    return _fetch_jaspar(name, None if collection is None else str(collection), _as_str_tuple(tax_group),
                         _as_str_tuple(species), bool(all_versions))


@functools.lru_cache(maxsize=16)
def _fetch_jaspar(release, collection, tax_group, species, all_versions):
    from pyjaspar import jaspardb

    with warnings.catch_warnings():
        warnings.simplefilter("ignore")  # pyjaspar warns on an empty selection; we raise below
        profiles = jaspardb(release=release).fetch_motifs(
            collection=collection, tax_group=list(tax_group) or None, species=list(species) or None,
            all_versions=all_versions)
    parts = [f"jaspar:{release.removeprefix('JASPAR')}", collection or "all collections",
             " ".join(tax_group) or "all taxa"]
    if species:
        parts.append("species " + ",".join(species))
    if all_versions:
        parts.append("all versions")
    source = " ".join(parts)
    if not profiles:
        raise TisfmError(f"no JASPAR profiles match {source}")

    def order(profile):
        base, _, version = profile.matrix_id.partition(".")
        return base, int(version) if version.isdigit() else 0, profile.matrix_id

    profiles = sorted(profiles, key=order)
    matrices = []
    for profile in profiles:
        counts = np.array([profile.counts[b] for b in BASES], dtype=np.float64).T
        sums = counts.sum(axis=1, keepdims=True)
        if not (sums > 0).all():
            raise TisfmError(f"JASPAR profile {profile.matrix_id} in {release} has a position without counts")
        matrices.append(counts / sums)
    return MotifSet(tuple(p.matrix_id for p in profiles),
                    tuple(_display_name(p.matrix_id, p.name) for p in profiles), tuple(matrices), source)


# ----------------------------------------------------------------------------------------------
# Dispatch


def _sniff_format(lines):
    """'meme', 'transfac', 'homer', 'jaspar' or None, from the text of a motif file."""
    content = [line.strip() for line in lines if line.strip()]
    if not content:
        return None
    if (any(line.split()[0] == "MOTIF" for line in content)
            and any(line.startswith("letter-probability matrix") for line in content)):
        return "meme"
    keys = {line.split()[0] for line in content}
    if keys & {"P0", "PO"} and any(line.startswith(("XX", "//")) for line in content):
        return "transfac"
    first = content[0]
    second = content[1] if len(content) > 1 else ""
    if first.startswith(">"):
        fields = first[1:].split("\t")
        values = _numbers(second.split())
        if len(fields) >= 3 and _numbers([fields[2].strip()]) is not None and values is not None and len(values) == 4:
            return "homer"
        if _JASPAR_LETTER_ROW.fullmatch(second) or _numbers(second.split()):
            return "jaspar"
        return None
    if len(content) >= 4 and all(_numbers(line.split()) for line in content[:4]):
        return "jaspar"
    return None


def load_motifs(spec, *, species=None, tax_group=None):
    """Load a motif set from a JASPAR release spec or a motif file of any supported format.

    Parameters
    ----------
    spec : str or Path
        ``"jaspar:2024"`` (any release pyjaspar ships, e.g. "jaspar:2020", "jaspar:2026") for
        the CORE collection of that release, or the path of a MEME, JASPAR, TRANSFAC or HOMER
        file; the format is recognised from the content.
    species : str, int, sequence or None, default None
        JASPAR only: NCBI taxonomy ids to keep (e.g. 10090).
    tax_group : str, sequence or None, default None
        JASPAR only: taxonomic groups; None means ("vertebrates",).

    Returns
    -------
    MotifSet

    Raises
    ------
    TisfmError
        For a missing file, a file in none of the formats, an unknown release, or species /
        tax_group given with a file.
    """
    text = str(spec)
    if text.lower().startswith("jaspar:"):
        return read_jaspar_release(text.split(":", 1)[1],
                                   tax_group=("vertebrates",) if tax_group is None else tax_group,
                                   species=species)
    if species is not None or tax_group is not None:
        raise TisfmError(f"species and tax_group only apply to 'jaspar:<release>' motif specs, not to the file {text}")
    path, lines = _read_lines(spec, "motif")
    fmt = _sniff_format(lines)
    if fmt == "meme":
        return _parse_meme(path, lines, None)
    if fmt == "transfac":
        return _parse_transfac(path, lines)
    if fmt == "homer":
        return _parse_homer(path, lines)
    if fmt == "jaspar":
        return _parse_jaspar(path, lines)
    if any(line.strip().startswith("MEME version") for line in lines):
        raise TisfmError(f"motif file {path} has a MEME header but no motif (no 'MOTIF' line with a "
                         "'letter-probability matrix')")
    raise TisfmError(f"motif file {path} is in none of the supported formats (MEME minimal, JASPAR, "
                     f"TRANSFAC, HOMER)")
