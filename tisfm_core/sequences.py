"""DNA sequences: encoding, one-hot tensors and the FASTA / TSV / BED+genome readers.

Sequences live in memory as ``uint8`` index arrays of shape (N, L) with A=0, C=1, G=2, T=3 and
4 for N or any other IUPAC ambiguity code (1/16 of the memory of a float32 one-hot tensor). One-hot tensors are built per batch: shape (N, 4, L) in A, C, G, T order,
with an all-zero column at index-4 positions.
"""

from __future__ import annotations

import re
from dataclasses import dataclass

import numpy as np
import pandas as pd
import torch

from .errors import TisfmError, check_indices
from .textfiles import check_input_file, iter_lines, read_text

ALPHABET = "ACGT"
_IUPAC_OTHER = "NRYSWKMBDHV"
_INVALID = 255
# Sequences encoded per block in `encode`: bounds the temporary joined string and bytes copies.
_ENCODE_BLOCK = 8192
# Genome bases read per pyfaidx call: bounds the temporary str copies pyfaidx makes.
_GENOME_CHUNK = 1 << 24
# BED lines converted to NumPy arrays at a time.
_BED_BLOCK = 65536


def _lookup_table(default):
    table = np.full(256, default, dtype=np.uint8)
    for code, letter in enumerate(ALPHABET):
        table[ord(letter)] = table[ord(letter.lower())] = code
    for letter in _IUPAC_OTHER:
        table[ord(letter)] = table[ord(letter.lower())] = 4
    return table


# User sequences: anything outside ACGT/IUPAC is an error. Genomes: anything else becomes N.
# Applied with bytes.translate, which is about 3x faster than NumPy fancy indexing.
_LUT = _lookup_table(_INVALID).tobytes()
GENOME_LUT = _lookup_table(4).tobytes()
_DECODE = np.frombuffer(b"ACGTN", dtype=np.uint8)


def _label(ids, i):
    return f"'{ids[i]}'" if ids is not None else f"#{i + 1}"


def _encode(sequences, ids=None, length=None, source=None):
    """Encode, prefixing every error message with ``source`` (a file name) when given."""
    prefix = f"{source}: " if source else ""
    if isinstance(sequences, (str, bytes)):
        sequences = [sequences]
    sequences = [s.decode("ascii", "replace") if isinstance(s, bytes) else s for s in sequences]
    if not sequences:
        raise TisfmError(f"{prefix}no sequences were given")
    if ids is not None:
        ids = [str(i) for i in ids]
        if len(ids) != len(sequences):
            raise TisfmError(f"{prefix}{len(ids)} ids were given for {len(sequences)} sequences")
    for i, seq in enumerate(sequences):
        if not isinstance(seq, str):
            raise TisfmError(f"{prefix}sequence {_label(ids, i)} is a {type(seq).__name__}, "
                             "expected a string")
    lengths = np.fromiter(map(len, sequences), dtype=np.int64, count=len(sequences))
    empty = np.flatnonzero(lengths == 0)
    if empty.size:
        raise TisfmError(f"{prefix}sequence {_label(ids, empty[0])} is empty")
    if length is not None:
        if int(length) < 1:
            raise TisfmError(f"length must be a positive number of bases, got {length}")
        expected, why = int(length), f"length={int(length)}"
    else:
        expected, why = int(lengths[0]), f"the length of the first sequence {_label(ids, 0)}"
    wrong = np.flatnonzero(lengths != expected)
    if wrong.size:
        i = wrong[0]
        raise TisfmError(f"{prefix}sequence {_label(ids, i)} is {lengths[i]} bp long; expected "
                         f"{expected} bp ({why}); all sequences must have the same length")

    out = np.empty((len(sequences), expected), dtype=np.uint8)
    for lo in range(0, len(sequences), _ENCODE_BLOCK):
        block = "".join(sequences[lo:lo + _ENCODE_BLOCK])
        try:
            codes = np.frombuffer(block.encode("ascii").translate(_LUT), dtype=np.uint8)
        except UnicodeEncodeError as exc:
            bad = [exc.start]
        else:
            bad = np.flatnonzero(codes == _INVALID)
            if not len(bad):
                out[lo:lo + _ENCODE_BLOCK] = codes.reshape(-1, expected)
                continue
        row, col = divmod(int(bad[0]), expected)
        raise TisfmError(f"{prefix}sequence {_label(ids, lo + row)} has invalid character "
                         f"{block[bad[0]]!r} at position {col + 1} (1-based); expected A, C, G, T "
                         "or an IUPAC code")
    return out


def encode(sequences, ids=None, *, length: int | None = None) -> np.ndarray:
    """Encode equal-length DNA strings as base indices.

    Parameters
    ----------
    sequences : list of str
        DNA strings, any case. A single string is treated as one sequence.
    ids : list of str, optional
        Names used in error messages (default: 1-based positions such as ``#3``).
    length : int, optional
        Required length; default: the length of the first sequence.

    Returns
    -------
    numpy.ndarray
        ``uint8`` array of shape (N, L): A=0, C=1, G=2, T=3, and 4 for N and every other IUPAC
        code (R Y S W K M B D H V).

    Raises
    ------
    TisfmError
        For an empty list, an empty sequence, unequal lengths, or a character that is neither
        A, C, G, T nor an IUPAC code (naming the sequence and the 1-based position).
    """
    return _encode(sequences, ids, length)


def decode(indices: np.ndarray) -> list[str]:
    """Turn base indices back into strings.

    Parameters
    ----------
    indices : numpy.ndarray
        Integer array of shape (N, L) (or (L,) for one sequence) with values 0..4.

    Returns
    -------
    list of str
        N upper-case strings; index 4 becomes ``N``.
    """
    indices = check_indices(np.atleast_2d(np.asarray(indices)))
    letters = _DECODE[indices]
    return [row.tobytes().decode("ascii") for row in letters]


def one_hot(indices: np.ndarray) -> np.ndarray:
    """One-hot encode base indices.

    Parameters
    ----------
    indices : numpy.ndarray
        Integer array of shape (..., L) with values 0..4, typically (N, L) from :func:`encode`.

    Returns
    -------
    numpy.ndarray
        ``float32`` array of shape (..., 4, L) in A, C, G, T order; index 4 gives an all-zero
        column.
    """
    indices = check_indices(indices, ndim=None)
    out = np.zeros(indices.shape[:-1] + (4, indices.shape[-1]), dtype=np.float32)
    for base in range(4):
        out[..., base, :] = indices == base
    return out


def one_hot_torch(indices, dtype=torch.float32):
    """One-hot encode base indices on any torch device.

    Parameters
    ----------
    indices : torch.Tensor
        Integer tensor of shape (..., L) with values 0..4 (checked on CPU only: on an
        accelerator the check would force a device sync every batch, and the indices come
        from validated :class:`SequenceSet` arrays).
    dtype : torch.dtype, default torch.float32
        Output dtype.

    Returns
    -------
    torch.Tensor
        Shape (..., 4, L) on the device of ``indices``; index 4 gives an all-zero column.
    """
    if not isinstance(indices, torch.Tensor):
        raise TisfmError(f"one_hot_torch expects a torch.Tensor, got {type(indices).__name__}")
    if indices.dtype.is_floating_point or indices.dtype.is_complex or indices.dtype == torch.bool:
        raise TisfmError(f"base indices must be integers, got dtype {indices.dtype}")
    if indices.dim() < 1:
        raise TisfmError("base indices must have at least one dimension")
    if indices.device.type == "cpu" and indices.numel() and (
            int(indices.min()) < 0 or int(indices.max()) > 4):
        raise TisfmError("base indices must lie in 0..4 (A, C, G, T, N)")
    # Row 4 of this 5x4 table is all zeros, so N (and other IUPAC codes) give empty columns.
    table = torch.eye(5, 4, dtype=dtype, device=indices.device)
    return table[indices.long()].movedim(-1, -2)


@dataclass
class SequenceSet:
    """Equal-length sequences with their ids.

    Attributes
    ----------
    ids : numpy.ndarray
        Unicode string array of shape (N,).
    indices : numpy.ndarray
        ``uint8`` array of shape (N, L) of base indices (see :func:`encode`).
    """

    ids: np.ndarray
    indices: np.ndarray

    def __post_init__(self):
        self.ids = np.asarray(self.ids, dtype=str)
        indices = np.asarray(self.indices)
        if self.ids.ndim != 1 or indices.ndim != 2 or len(self.ids) != len(indices):
            raise TisfmError(f"a SequenceSet needs ids of shape (N,) and indices of shape (N, L), "
                             f"got {self.ids.shape} and {indices.shape}")
        self.indices = check_indices(indices)

    def __len__(self):
        return len(self.ids)

    @property
    def length(self):
        """Sequence length L in bases."""
        return self.indices.shape[1]

    def one_hot(self):
        """``float32`` one-hot array of shape (N, 4, L)."""
        return one_hot(self.indices)

    def subset(self, index):
        """A new SequenceSet with the rows selected by an integer index array or boolean mask."""
        index = np.asarray(index)
        if index.size == 0:
            index = index.astype(np.int64)
        if index.dtype == bool:
            if index.shape != (len(self),):
                raise TisfmError(f"a boolean mask must have shape ({len(self)},), got "
                                 f"{index.shape}")
        elif index.dtype.kind in "iu":
            if index.size and (index.min() < -len(self) or index.max() >= len(self)):
                raise TisfmError(f"row indices must lie in 0..{len(self) - 1}, found "
                                 f"{index.min()}..{index.max()}")
        else:
            raise TisfmError(f"subset expects integer indices or a boolean mask, got {index.dtype}")
        return SequenceSet(self.ids[index], self.indices[index])


def _read_lines(path, what):
    return read_text(path, what).split("\n")


def read_fasta(path, *, length=None):
    """Read a FASTA file of equal-length sequences.

    Parameters
    ----------
    path : str or Path
        FASTA file: ``>`` header lines (the id is the first word), sequence lines of any width;
        blank lines and CRLF line ends are accepted.
    length : int, optional
        Required sequence length; default: the length of the first record.

    Returns
    -------
    SequenceSet

    Raises
    ------
    TisfmError
        For a missing file, no records, text before the first ``>``, an empty header, an empty
        record, a duplicate id (naming both lines) or a bad sequence (naming the record id).
    """
    lines = _read_lines(path, "FASTA file")
    ids, chunks, first_line = [], [], {}
    current = None
    for lineno, line in enumerate(lines, 1):
        line = line.strip()
        if not line:
            continue
        if line.startswith(">"):
            words = line[1:].split(maxsplit=1)
            if not words:
                raise TisfmError(f"{path} line {lineno}: the header '>' has no sequence id")
            name = words[0]
            if name in first_line:
                raise TisfmError(f"{path}: sequence id '{name}' appears twice (lines "
                                 f"{first_line[name]} and {lineno}); ids must be unique")
            if current is not None and not current:
                raise TisfmError(f"{path}: record '{ids[-1]}' (line {first_line[ids[-1]]}) has "
                                 "an empty sequence")
            first_line[name] = lineno
            ids.append(name)
            current = []
            chunks.append(current)
        elif current is None:
            raise TisfmError(f"{path} line {lineno}: text before the first '>' header; "
                             "expected a FASTA file starting with '>id'")
        else:
            current.append(line)
    if not ids:
        raise TisfmError(f"{path} holds no FASTA records (no line starts with '>')")
    if not current:
        raise TisfmError(f"{path}: record '{ids[-1]}' (line {first_line[ids[-1]]}) has an empty "
                         "sequence")
    sequences = ["".join(parts) for parts in chunks]
    del chunks
    return SequenceSet(np.asarray(ids, dtype=str), _encode(sequences, ids, length, path))


def _sequence_like(text):
    return bool(text) and max(text.encode("ascii", "replace").translate(_LUT)) < 5


def read_sequence_tsv(path, *, length=None):
    """Read a two-column ``id<TAB>sequence`` file (the reference's ``--sequences`` format).

    Parameters
    ----------
    path : str or Path
        Tab-separated file without header; a first line whose second field is not a DNA string
        (e.g. ``id<TAB>sequence``) is taken as a header and skipped. Blank lines are ignored.
    length : int, optional
        Required sequence length; default: the length of the first sequence.

    Returns
    -------
    SequenceSet

    Raises
    ------
    TisfmError
        For a missing or empty file, a line without exactly two fields, an empty id, a duplicate
        id or a bad sequence.
    """
    lines = _read_lines(path, "sequence file")
    ids, sequences, first_line = [], [], {}
    first = True
    for lineno, line in enumerate(lines, 1):
        if not line.strip():
            continue
        fields = line.split("\t")
        if len(fields) != 2:
            raise TisfmError(f"{path} line {lineno}: found {len(fields)} tab-separated fields; "
                             "expected 2 (id, sequence)")
        name, seq = fields[0].strip(), fields[1].strip()
        if first and not _sequence_like(seq):
            first = False  # a header line such as "id<TAB>sequence"
            continue
        first = False
        if not name:
            raise TisfmError(f"{path} line {lineno}: the id (first field) is empty")
        if name in first_line:
            raise TisfmError(f"{path}: sequence id '{name}' appears twice (lines "
                             f"{first_line[name]} and {lineno}); ids must be unique")
        first_line[name] = lineno
        ids.append(name)
        sequences.append(seq)
    if not ids:
        raise TisfmError(f"{path} holds no sequences")
    return SequenceSet(np.asarray(ids, dtype=str), _encode(sequences, ids, length, path))


_INTEGER = re.compile(r"\s*[+-]?[0-9]{1,19}\s*")


def _is_int(text):
    return _INTEGER.fullmatch(text) is not None and abs(int(text)) < 2 ** 62


class _BedColumns:
    """BED columns accumulated in blocks of NumPy arrays (Python strings per field would cost
    ~50 bytes each: several hundred MB for a genome-wide peak set)."""

    def __init__(self, bed_path):
        self.bed_path = bed_path
        self.blocks = []
        self._clear()

    def _clear(self):
        self.chroms, self.starts, self.ends, self.names, self.summits, self.linenos = (
            [], [], [], [], [], [])

    def add(self, fields, lineno):
        self.chroms.append(fields[0].strip())
        self.starts.append(fields[1])
        self.ends.append(fields[2])
        self.names.append(fields[3].strip() if len(fields) > 3 else "")
        self.summits.append(fields[9] if len(fields) > 9 else "-1")
        self.linenos.append(lineno)
        if len(self.linenos) >= _BED_BLOCK:
            self.flush()

    def _integers(self, column, what):
        try:
            return np.asarray(column).astype(np.int64)
        except (ValueError, OverflowError):
            i = next(k for k, v in enumerate(column) if not _is_int(v))
            raise TisfmError(f"{self.bed_path} line {self.linenos[i]} (contig '{self.chroms[i]}'): "
                             f"{what} {column[i]!r} is not an integer") from None

    def flush(self):
        if not self.linenos:
            return
        starts = self._integers(self.starts, "start")
        ends = self._integers(self.ends, "end")
        summits = self._integers(self.summits, "summit offset (column 10)")
        ids = [f"{c}:{s}-{e}" if n in ("", ".") else n
               for c, s, e, n in zip(self.chroms, starts.tolist(), ends.tolist(), self.names)]
        self.blocks.append((np.asarray(self.chroms, dtype=str), starts, ends, summits,
                            np.asarray(ids, dtype=str), np.asarray(self.linenos, dtype=np.int64)))
        self._clear()

    def arrays(self):
        self.flush()
        if not self.blocks:
            raise TisfmError(f"BED file {self.bed_path} holds no regions")
        return [np.concatenate(parts) for parts in zip(*self.blocks)]


def _parse_bed(bed_path):
    """Read a BED file; returns arrays (chroms, starts, ends, summits, ids, line numbers)."""
    bed_path = check_input_file(bed_path, "BED file")
    columns = _BedColumns(bed_path)
    header_allowed = True
    for lineno, line in enumerate(iter_lines(bed_path, "BED file"), 1):
        line = line.rstrip("\n")
        if not line.strip() or line.startswith(("#", "track", "browser")):
            continue
        fields = line.split("\t") if "\t" in line else line.split()
        if len(fields) < 3:
            raise TisfmError(f"{bed_path} line {lineno}: found {len(fields)} column(s); a "
                             "BED line needs at least 3 (chrom, start, end)")
        if header_allowed and not (_is_int(fields[1]) or _is_int(fields[2])):
            header_allowed = False  # a column-name line such as "chrom<TAB>start<TAB>end"
            continue
        header_allowed = False
        columns.add(fields, lineno)
    return columns.arrays()


def _gather_windows(genome, contig, size, window_starts, length, out, rows):
    """Write the windows of one contig into ``out[rows]``, reading the contig once, in chunks.

    Window starts may hang over either contig end. Chunk ``c`` holds the windows starting in
    ``[c * CHUNK, (c + 1) * CHUNK)``; it reads those bases plus ``length - 1`` more, N-padded
    outside the contig, so every window is one row of a sliding-window view (no per-base index
    arrays) and only one chunk of the contig is in memory at a time.
    """
    chunk_of = window_starts // _GENOME_CHUNK
    for chunk in np.unique(chunk_of).tolist():
        selected = np.flatnonzero(chunk_of == chunk)
        a = chunk * _GENOME_CHUNK
        b = a + _GENOME_CHUNK + length - 1
        buffer = np.full(b - a, 4, dtype=np.uint8)
        ra, rb = max(a, 0), min(b, size)
        if rb > ra:
            buffer[ra - a:rb - a] = genome.fetch(contig, ra, rb)
        view = np.lib.stride_tricks.sliding_window_view(buffer, length)
        out[rows[selected]] = view[window_starts[selected] - a]


def read_bed_windows(bed_path, genome_path, *, length: int = 300) -> SequenceSet:
    """Summit-centred windows from a BED / narrowPeak file and a genome FASTA.

    The centre is ``start + summit`` when a narrowPeak summit offset (column 10) is present and
    >= 0, else ``(start + end) // 2``; the window is ``[centre - length // 2, centre - length // 2
    + length)``. Window parts outside the contig are padded with N (index 4), as are genome
    characters outside ACGT/IUPAC. Each contig is read once, in chunks of 16 Mb, and its windows
    are gathered from a sliding-window view, so memory stays near the (N, L) output plus one
    chunk (512,596 mouse peaks: about 20 s and 0.5 GB including the imports).

    Parameters
    ----------
    bed_path : str or Path
        BED3+ or narrowPeak file; ``track``, ``browser``, ``#`` lines and a column-name header are
        skipped. The id of a region is column 4 (name) when present and not ``.``, else
        ``chrom:start-end``.
    genome_path : str or Path
        Plain (or bgzip) FASTA; its ``.fai`` index is used when it is next to it and fresh,
        otherwise built in the user's index cache (:func:`tisfm_core.genome.open_genome`), so
        nothing is written next to the genome.
    length : int, default 300
        Window length in bases.

    Returns
    -------
    SequenceSet
        Windows in the order of the BED file.

    Raises
    ------
    TisfmError
        Naming the BED file, line and contig, for: fewer than 3 columns, non-integer coordinates,
        an unknown contig, start < 0, start >= end, end past the contig end, a summit outside its
        interval, or duplicate ids.
    """
    from .genome import open_genome

    length = int(length)
    if length < 1:
        raise TisfmError(f"length must be a positive number of bases, got {length}")
    check_input_file(genome_path, "genome FASTA")
    chroms, starts, ends, summits, ids, linenos = _parse_bed(bed_path)
    with open_genome(genome_path) as genome:
        contig_length = genome.contigs
        unique, inverse = np.unique(chroms, return_inverse=True)
        known = np.array([name in contig_length for name in unique.tolist()])
        sizes = np.array([contig_length.get(name, 0) for name in unique.tolist()], dtype=np.int64)
        region_size = sizes[inverse]
        has_summit = summits >= 0
        # One problem code per line; the more basic checks overwrite the later ones.
        checks = [~known[inverse], starts < 0, starts >= ends, ends > region_size,
                  has_summit & (summits >= ends - starts)]
        problem = np.zeros(len(chroms), dtype=np.int8)
        for code in range(len(checks), 0, -1):
            problem[checks[code - 1]] = code
        if problem.any():
            i = int(np.flatnonzero(problem)[0])
            c, s, e = chroms[i], starts[i], ends[i]
            where = f"{bed_path} line {linenos[i]}"
            if problem[i] == 1:
                shown = ", ".join(f"'{n}'" for n in list(contig_length)[:5]) + (", ..." if len(contig_length) > 5
                                                             else "")
                raise TisfmError(f"{where}: contig '{c}' is not in {genome.path} (its contigs: "
                                 f"{shown})")
            reason = {2: f"interval '{c}:{s}-{e}' starts before 0",
                      3: f"interval '{c}:{s}-{e}' has start >= end",
                      4: f"interval '{c}:{s}-{e}' runs past the end of '{c}' ({region_size[i]} bp)",
                      5: f"summit offset {summits[i]} lies outside the interval '{c}:{s}-{e}' "
                         f"({e - s} bp)"}[int(problem[i])]
            raise TisfmError(f"{where}: {reason}")
        repeated = pd.Index(ids).duplicated()
        if repeated.any():
            b = int(np.argmax(repeated))
            a = int(np.flatnonzero(ids == ids[b])[0])
            raise TisfmError(f"{bed_path}: region id '{ids[a]}' appears twice (lines {linenos[a]} "
                             f"and {linenos[b]}); ids must be unique")

        window_starts = np.where(has_summit, starts + summits, (starts + ends) // 2) - length // 2
        out = np.empty((len(chroms), length), dtype=np.uint8)
        for k, contig in enumerate(unique.tolist()):
            rows = np.flatnonzero(inverse == k)
            _gather_windows(genome, contig, int(sizes[k]), window_starts[rows], length, out, rows)
    return SequenceSet(ids, out)


def read_sequences(path=None, *, bed=None, genome=None, length: int | None = None) -> SequenceSet:
    """Read sequences from FASTA, a two-column TSV, or BED + genome.

    Parameters
    ----------
    path : str or Path, optional
        FASTA (first non-blank character ``>``) or ``id<TAB>sequence`` file.
    bed, genome : str or Path, optional
        BED / narrowPeak file and genome FASTA, given together instead of ``path``.
    length : int, optional
        Required length (default: the first sequence's; 300 for BED windows).

    Returns
    -------
    SequenceSet
    """
    if bed is not None or genome is not None:
        if path is not None:
            raise TisfmError("give either a sequence file or bed= and genome=, not both")
        if bed is None or genome is None:
            raise TisfmError("BED windows need both bed= (regions) and genome= (FASTA)")
        return read_bed_windows(bed, genome, length=300 if length is None else length)
    if path is None:
        raise TisfmError("no sequence input: give a FASTA/TSV path, or bed= and genome=")
    head = next((line for line in iter_lines(path, "sequence file") if line.strip()), "")
    if head.lstrip().startswith(">"):
        return read_fasta(path, length=length)
    return read_sequence_tsv(path, length=length)


def parse_sequence_text(text: str, *, length: int | None = None, what: str = "pasted text") -> SequenceSet:
    """Sequences typed or pasted as FASTA or raw DNA, encoded for the model (linear in the size).

    Raw DNA: one sequence per line when every line has the model's length, otherwise blocks
    separated by blank lines, each block one sequence (wrapped lines are joined). Ids are the
    FASTA ids or ``seq1``, ``seq2``, ...

    Returns
    -------
    SequenceSet
        ``ids`` (N,) and uint8 ``indices`` (N, L).

    Raises
    ------
    TisfmError
        Naming the sequence and the 1-based position of a bad letter, or a wrong length.
    """
    lines = [line.strip() for line in str(text).replace("\r", "").split("\n")]
    if not any(lines):
        raise TisfmError(f"{what}: no sequence given")
    ids, parts = [], []
    if any(line.startswith(">") for line in lines):
        seen = set()
        for lineno, line in enumerate(lines, 1):
            if not line:
                continue
            if line.startswith(">"):
                name = line[1:].split(maxsplit=1)
                if not name:
                    raise TisfmError(f"{what} line {lineno}: the header '>' has no sequence id")
                if name[0] in seen:
                    raise TisfmError(f"{what}: sequence id '{name[0]}' appears twice")
                seen.add(name[0])
                ids.append(name[0])
                parts.append([])
            elif not parts:
                raise TisfmError(f"{what} line {lineno}: text before the first '>' header")
            else:
                parts[-1].append(line.replace(" ", ""))
        seqs = ["".join(p) for p in parts]
        for i, seq in enumerate(seqs):
            if not seq:
                raise TisfmError(f"{what}: sequence '{ids[i]}' is empty")
    else:
        blocks, block = [], []
        for line in lines + [""]:
            if line:
                block.append(line.replace(" ", ""))
            elif block:
                blocks.append(block)
                block = []
        seqs = []
        for block in blocks:
            if length is not None and len(block) > 1 and all(len(b) == length for b in block):
                seqs.extend(block)
            else:
                seqs.append("".join(block))
        ids = [f"seq{i + 1}" for i in range(len(seqs))]
    return SequenceSet(ids=ids, indices=_encode(seqs, ids, length))
