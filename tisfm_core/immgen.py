"""ImmGen cell types, their lineages and a haematopoietic lineage tree, shipped as package data.

The 81 cell types are those of AI-TAC (Maslova et al. 2020) / ImmGen ATAC-seq (Yoshida et al.
2019), in AI-TAC's column order, with AI-TAC's lineage labels. The tiSFM reference repository
ships neither a cell type -> lineage table nor a tree, so the tree here is our own, hand-curated
from the ImmGen differentiation diagram; ``tisfm_core/data/README.md`` lists every choice.

Files (TSV, header row), usable directly as ``--transform lineage:PATH`` and
``--transform tree-diff:PATH``:

- :data:`CELL_TYPES_TSV` -- columns ``cell_type``, ``lineage`` (``""`` for ``MF.102+480+.PC``,
  which has no lineage in the source);
- :data:`PARENTS_TSV` -- columns ``child``, ``parent``: one row per cell type, the root
  (``LTHSC.34-.BM``) with an empty parent.
"""

from __future__ import annotations

from importlib import resources

import pandas as pd

from .errors import TisfmError
from .targets import read_lineage_map, read_parent_table

__all__ = ["CELL_TYPES_TSV", "PARENTS_TSV", "LINEAGES", "ROOT", "cell_types", "cell_type_lineages",
           "lineage_map", "parent_table", "tree_edges"]

_DATA = resources.files(__package__) / "data"
#: Path of the cell type -> lineage table (a ``pathlib.Path`` for an installed package).
CELL_TYPES_TSV = _DATA / "immgen_cell_types.tsv"
#: Path of the child -> parent table of the lineage tree.
PARENTS_TSV = _DATA / "immgen_parents.tsv"

#: The lineages of the 81 cell types, in the paper's (alphabetical) order. The paper's 8th
#: lineage, "stroma", has no cell type among these 81.
LINEAGES = ("abT", "B", "gdT", "innate.lym", "myeloid", "stem", "T.act")
#: The root of the lineage tree (CD34- long-term HSC).
ROOT = "LTHSC.34-.BM"


def cell_types():
    """The 81 ImmGen cell types and their lineages.

    Returns
    -------
    pandas.DataFrame
        Shape (81, 2), columns ``cell_type`` and ``lineage`` (str; ``""`` for
        ``MF.102+480+.PC``), in AI-TAC's column order.
    """
    table = pd.read_csv(CELL_TYPES_TSV, sep="\t", dtype=str, keep_default_na=False)
    if list(table.columns) != ["cell_type", "lineage"]:
        raise TisfmError(f"{CELL_TYPES_TSV} must have the columns cell_type and lineage, found "
                         f"{', '.join(table.columns)}")
    unknown = sorted(set(table["lineage"]) - set(LINEAGES) - {""})
    if unknown:
        raise TisfmError(f"{CELL_TYPES_TSV} names unknown lineage(s) {', '.join(unknown)}; "
                         f"expected one of {', '.join(LINEAGES)}")
    return table


def cell_type_lineages():
    """``{cell_type: lineage}`` for the 81 cell types (``""`` = no lineage), in column order."""
    table = cell_types()
    return dict(zip(table["cell_type"], table["lineage"]))


def lineage_map():
    """The lineage of every cell type as read by :func:`tisfm_core.targets.read_lineage_map`.

    Returns
    -------
    pandas.Series
        Shape (81,), lineage (str) indexed by cell type; pass it to
        :func:`tisfm_core.targets.aggregate_lineages`.
    """
    return read_lineage_map(CELL_TYPES_TSV)


def parent_table():
    """The lineage tree as a child -> parent table.

    Returns
    -------
    pandas.DataFrame
        Shape (81, 2), columns ``child`` and ``parent``; the root row has ``parent == ""``.
        Validated: every name is one of :func:`cell_types`, no cycles.
    """
    return read_parent_table(PARENTS_TSV, cell_types=cell_types()["cell_type"])


def tree_edges():
    """The 80 tree edges as ``(child, parent)`` tuples, in file order (root excluded)."""
    table = parent_table()
    return [(c, p) for c, p in zip(table["child"], table["parent"]) if p]
