"""Assemble a training dataset: sequences + targets -> matched, transformed, compact arrays."""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path

import numpy as np

from .errors import TisfmError, check_outputs
from .sequences import SequenceSet, read_sequences
from .targets import apply_transform, match_ids, read_aitac_targets, read_targets


@dataclass
class Dataset:
    """Sequences and targets of the same regions, in the same order.

    Attributes
    ----------
    ids : np.ndarray of str, shape (N,)
    indices : np.ndarray of uint8, shape (N, L)
        A=0, C=1, G=2, T=3, 4 for N (one byte a base, not a float one-hot).
    targets : np.ndarray of float32, shape (N, R)
    outputs : list of str, length R
    transform : dict
        How the targets were transformed (``apply_transform``), stored with the run.
    report : dict
        Id matching summary (counts and examples of what did not match).
    """

    ids: np.ndarray
    indices: np.ndarray
    targets: np.ndarray
    outputs: list
    transform: dict = field(default_factory=lambda: {"kind": "none"})
    report: dict = field(default_factory=dict)

    def __len__(self):
        return len(self.ids)

    @property
    def length(self):
        return int(self.indices.shape[1])

    def subset(self, index):
        index = np.asarray(index, dtype=np.int64)
        return Dataset(self.ids[index], self.indices[index], self.targets[index], list(self.outputs),
                       self.transform, self.report)


def load_target_table(path):
    """Targets from a TSV, or from an AI-TAC sample folder (cell_type_array.npy + peak_names.npy)."""
    path = Path(path)
    if path.is_dir():
        values, ids = path / "cell_type_array.npy", path / "peak_names.npy"
        if not (values.is_file() and ids.is_file()):
            raise TisfmError(f"{path} is a folder but not an AI-TAC sample (needs cell_type_array.npy "
                             "and peak_names.npy)")
        names_tsv = path / "cell_types.tsv"
        return read_aitac_targets(values, ids, names_tsv if names_tsv.is_file() else None)
    return read_targets(path)


def load_sequences(sequences=None, *, bed=None, genome=None, length=None):
    """A :class:`SequenceSet` from FASTA/TSV or BED + genome (exactly one source)."""
    if isinstance(sequences, SequenceSet):
        return sequences
    return read_sequences(sequences, bed=bed, genome=genome, length=length)


def load_dataset(sequences=None, targets=None, *, bed=None, genome=None, length: int | None = None,
                 transform="none", outputs=None, verbose=False):
    """Read, match and transform a dataset.

    Parameters
    ----------
    sequences : str, Path or SequenceSet, optional
        FASTA or two-column TSV.
    targets : str or Path
        Target TSV (header; first column ids) or an AI-TAC sample folder.
    bed, genome : str or Path, optional
        Summit-centred windows of ``length`` bp instead of a sequence file.
    length : int, optional
        Required sequence length (default: whatever the sequences have, all equal).
    transform : str, default "none"
        "none" | "zscore" | "lineage:MAP.tsv" | "tree-diff:PARENTS.tsv".
    outputs : list of str or int, optional
        Keep only these outputs (names or positions of the transformed target columns), in this
        order. Unknown names are an error.
    verbose : bool, default False

    Returns
    -------
    Dataset
    """
    if targets is None:
        raise TisfmError("no targets given (--targets)")
    seqs = load_sequences(sequences, bed=bed, genome=genome, length=length)
    table = load_target_table(targets)
    table, transform_info = apply_transform(table, transform)
    if outputs is not None:
        names = [str(c) for c in table.columns]
        table = table.iloc[:, check_outputs(outputs, len(names), names, owner="the targets")]
    match = match_ids(seqs.ids, table.index.to_numpy())
    report = {"n_sequences": len(seqs), "n_targets": len(table), "n_matched": match.n_matched,
              "missing_in_targets": match.missing_in_targets[:20],
              "missing_in_sequences": match.missing_in_sequences[:20],
              "n_missing_in_targets": len(match.missing_in_targets),
              "n_missing_in_sequences": len(match.missing_in_sequences), "summary": match.summary()}
    if verbose:
        print(match.summary(), flush=True)
    values = table.to_numpy(dtype=np.float32)[match.target_index]
    return Dataset(ids=seqs.ids[match.sequence_index], indices=seqs.indices[match.sequence_index],
                   targets=values, outputs=[str(c) for c in table.columns],
                   transform=transform_info, report=report)
