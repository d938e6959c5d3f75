"""A SYNTHETIC demo atlas: ImmGen-like accessibility of random mouse-like DNA with planted motifs.

:func:`make_demo_atlas` writes a folder that every part of tiSFM Explorer can use without real
data: 300-bp sequences, targets for the 81 AI-TAC/ImmGen cell types (plus the paper's lineage and
tree-diff transforms of them), the motif collection to train with and ``truth.json``, the known
answer (which motif drives which lineage and which tree edge, with which sign).

Generative model (every number is also written to ``truth.json``):

- Background: a first-order Markov chain over A, C, G, T whose stationary base frequencies are
  (0.29, 0.21, 0.21, 0.29) (GC 0.42, as the mouse genome) and whose dinucleotide frequencies are
  those of independent bases with CpG down-weighted 4x, rebalanced (Sinkhorn) so both marginals
  stay the base frequencies. The chain is its own reverse complement, so both strands look alike.
- Planted motifs: real JASPAR 2024 profiles looked up by TF name. Per region and motif, 0-3 sites
  with probabilities :data:`SITE_COUNT_P`; each site sampled base by base from the PWM, reverse
  complemented with probability 1/2, placed at a normal position around the centre (sd = length/6,
  clipped to the window) that does not overlap an earlier site (up to 8 draws, else dropped).
- Activity of region i in cell type c::

      a[i, c] = baseline[i] + sum_tf effect[tf, c] * f(k[i, tf])
                + coop[c] * [k[i, Ets1] > 0 and k[i, Runx1] > 0] + ctcf * f(k[i, CTCF]) + noise

  with f(k) = 2k / (k + 1) (1 site 1, 2 sites 4/3, 3 sites 3/2: saturating), ``baseline`` =
  1.2 + Gamma(1.5, 0.6) (ImmGen-like peak heights), ``effect[tf, c]`` = the regulator's size times
  U(0.8, 1.2) in the cell types where it acts and 0 elsewhere, and iid Gaussian noise. CTCF adds
  the same amount in every cell type, so it vanishes from every target after row z-scoring.
"""

from __future__ import annotations

import json
import time
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pandas as pd

from . import immgen
from .atomic import check_output_folder, write_json, write_text
from .errors import TisfmError, check_integer
from .motifs import MotifSet, read_jaspar_release, write_meme
from .sequences import decode
from .targets import (
    aggregate_lineages,
    read_lineage_map,
    read_parent_table,
    read_targets,
    tree_diff,
)

__all__ = ["make_demo_atlas", "run_truth", "planted_marks", "REGULATORS", "SITE_COUNT_P", "NOISE_SD"]

JASPAR_RELEASE = "2024"
MOUSE_TAXON = 10090
GC_CONTENT = 0.42
CPG_DEPLETION = 4.0
#: P(0), P(1), P(2), P(3) sites of one motif in one region.
SITE_COUNT_P = (0.80, 0.14, 0.045, 0.015)
#: Fraction of regions that get the cooperative pair planted together (on top of chance).
COOP_JOINT_RATE = 0.06
POSITION_SD = 1 / 6
MAX_PLACEMENT_TRIES = 8
EFFECT_JITTER = 0.2
BASELINE = {"offset": 1.2, "gamma_shape": 1.5, "gamma_scale": 0.6}
#: Standard deviation of the Gaussian noise added to every cell type (see the README for the R2
#: this gives).
NOISE_SD = 0.5
MIN_LENGTH = 60
#: Largest demo atlas: twice the real atlas's regions, and windows up to 10 kb (a bigger number
#: is a typo that would fill the memory).
MAX_REGIONS = 1_000_000
MAX_LENGTH = 10_000

FILES = {
    "sequences": "sequences.fa",
    "celltypes": "targets_celltypes.tsv",
    "lineages": "targets_lineages.tsv",
    "treediff": "targets_treediff.tsv",
    "lineage_map": "lineage_map.tsv",
    "parents": "parents.tsv",
    "motifs": "motifs.meme",
    "truth": "truth.json",
    "readme": "README.md",
}


def _b_committed(cell_type, lineage):
    return lineage == "B" and cell_type not in ("proB.CLP.BM", "proB.FrA.BM")


def _myeloid(cell_type, lineage):
    # MF.102+480+.PC has no lineage in the source but is a (peritoneal) macrophage.
    return lineage == "myeloid" or cell_type.startswith("MF.")


def _ilc3(cell_type, lineage):
    return cell_type.startswith("ILC3.")


def _nk(cell_type, lineage):
    return cell_type.startswith("NK.")


def _stem(cell_type, lineage):
    return lineage == "stem"


def _t_cell(cell_type, lineage):
    return lineage in ("abT", "gdT", "T.act")


def _cd4(cell_type, lineage):
    return cell_type.startswith(("T.4.", "Treg.4."))


def _every(cell_type, lineage):
    return True


@dataclass(frozen=True)
class Regulator:
    """One planted regulator.

    Attributes
    ----------
    name : str
        Mouse gene symbol (the key in ``truth.json``).
    jaspar_name : str
        TF name looked up (case-insensitively) in JASPAR 2024 CORE vertebrates.
    role : str
        "activator", "repressor", "cooperative" (acts only together with its partner) or
        "constant" (same effect in every cell type).
    size : float
        Effect of one site on the activity of a cell type where it acts (negative: repressor).
    acts_in : callable
        ``acts_in(cell_type, lineage) -> bool``.
    where : str
        The cell types where it acts, in words.
    """

    name: str
    jaspar_name: str
    role: str
    size: float
    acts_in: object
    where: str


REGULATORS = (
    Regulator("Pax5", "PAX5", "activator", 0.8, _b_committed,
              "B cells from proB.FrBC.BM on (not proB.CLP.BM, proB.FrA.BM)"),
    Regulator("Ebf1", "EBF1", "activator", 0.7, _b_committed,
              "B cells from proB.FrBC.BM on (not proB.CLP.BM, proB.FrA.BM)"),
    Regulator("Spi1", "SPI1", "activator", 0.8, _myeloid, "myeloid cells and MF.102+480+.PC"),
    Regulator("Cebpb", "CEBPB", "activator", 0.7, _myeloid, "myeloid cells and MF.102+480+.PC"),
    Regulator("Rorc", "RORC", "activator", 1.2, _ilc3, "ILC3 (3 cell types)"),
    Regulator("Eomes", "EOMES", "activator", 0.8, _nk, "NK cells (6 cell types)"),
    Regulator("Hoxa9", "HOXA9", "activator", 0.7, _stem, "stem and progenitor cells (LTHSC, STHSC, MMP)"),
    Regulator("Meis1", "MEIS1", "activator", 0.7, _stem, "stem and progenitor cells (LTHSC, STHSC, MMP)"),
    Regulator("Lef1", "LEF1", "activator", 0.9, _t_cell, "T cells: abT (incl. thymocytes), gdT, T.act"),
    Regulator("Gata3", "GATA3", "activator", 0.8, _t_cell, "T cells: abT (incl. thymocytes), gdT, T.act"),
    Regulator("Zbtb7b", "ZBTB7B", "repressor", -0.7, _cd4,
              "CD4-lineage T cells after the CD4/CD8 split: T.4.*, Treg.4.* (ThPOK)"),
    Regulator("Ets1", "ETS1", "cooperative", 0.5, _t_cell,
              "T cells (abT, gdT, T.act), only together with a Runx1 site in the same region"),
    Regulator("Runx1", "RUNX1", "cooperative", 0.5, _t_cell,
              "T cells (abT, gdT, T.act), only together with an Ets1 site in the same region"),
    Regulator("CTCF", "CTCF", "constant", 0.5, _every, "every cell type equally"),
)

ZBTB7B_DESIGN = (
    "Zbtb7b (ThPOK) is the CD4-lineage repressor of the CD4/CD8 choice: its sites lower "
    "accessibility in CD4-lineage cells (T.4.Th, T.4.Nve.Sp, T.4.Nve.Fem.Sp, "
    "T.4.Sp.aCD3+CD40.18hr, Treg.4.*) and nowhere else. So the tree-diff target of the CD4 edge "
    "'T.4.Th-T.DP.Th' (child minus parent) has a negative Zbtb7b weight, the CD8 edge "
    "'T.8.Th-T.DP.Th' none, and the abT lineage target a negative one.")


# ----------------------------------------------------------------------------------------------
# Motifs


def _pick_profiles():
    """JASPAR 2024 profiles of the planted regulators and the demo motif collection.

    For each regulator: the CORE vertebrate profiles (latest version of each matrix) whose TF
    name equals ``jaspar_name`` ignoring case; mouse profiles first, then profiles no wider than
    the widest mouse profile (so the kernel width stays that of the mouse collection), then the
    highest information content.
    """
    vertebrates = read_jaspar_release(JASPAR_RELEASE)
    mouse = read_jaspar_release(JASPAR_RELEASE, species=MOUSE_TAXON)
    mouse_ids = set(mouse.ids)
    widths = vertebrates.widths
    information = vertebrates.information_content()
    upper = [name.upper() for name in vertebrates.names]
    chosen = {}
    for regulator in REGULATORS:
        hits = [k for k, name in enumerate(upper) if name == regulator.jaspar_name.upper()]
        if not hits:
            raise TisfmError(f"JASPAR {JASPAR_RELEASE} CORE vertebrates has no profile named "
                             f"{regulator.jaspar_name!r} (needed for the planted regulator "
                             f"{regulator.name}); is the pyjaspar installation complete?")
        hits = [k for k in hits if vertebrates.ids[k] in mouse_ids] or hits
        hits = [k for k in hits if widths[k] <= mouse.max_width] or hits
        chosen[regulator.name] = max(hits, key=lambda k: information[k])
    extra = sorted({k for k in chosen.values() if vertebrates.ids[k] not in mouse_ids},
                   key=lambda k: vertebrates.ids[k])
    ids = list(mouse.ids) + [vertebrates.ids[k] for k in extra]
    names = list(mouse.names) + [vertebrates.names[k] for k in extra]
    matrices = list(mouse.matrices) + [vertebrates.matrices[k] for k in extra]

    def order(k):
        base, _, version = ids[k].partition(".")
        return base, int(version) if version.isdigit() else 0

    ranked = sorted(range(len(ids)), key=order)
    collection = MotifSet(tuple(ids[k] for k in ranked), tuple(names[k] for k in ranked),
                          tuple(matrices[k] for k in ranked),
                          f"{mouse.source} + demo regulators from jaspar:{JASPAR_RELEASE} CORE vertebrates")
    profiles = {name: (vertebrates.ids[k], vertebrates.names[k], vertebrates.matrices[k])
                for name, k in chosen.items()}
    return profiles, collection


# ----------------------------------------------------------------------------------------------
# Sequences


def background_chain(gc=GC_CONTENT, cpg_depletion=CPG_DEPLETION):
    """The background Markov chain.

    Returns
    -------
    base : numpy.ndarray, shape (4,)
        Stationary base frequencies A, C, G, T.
    pairs : numpy.ndarray, shape (4, 4)
        Dinucleotide frequencies (row = first base), marginals equal to ``base``.
    transition : numpy.ndarray, shape (4, 4)
        P(next base | base), rows summing to 1.
    """
    base = np.array([(1 - gc) / 2, gc / 2, gc / 2, (1 - gc) / 2])
    weight = 1.0 / cpg_depletion
    for _ in range(100):
        pairs = np.outer(base, base)
        pairs[1, 2] *= weight
        for _ in range(200):  # Sinkhorn: both marginals back to the base frequencies
            pairs *= (base / pairs.sum(axis=1))[:, None]
            pairs *= (base / pairs.sum(axis=0))[None, :]
        # rebalancing lifts CpG again: re-weight until observed/expected is 1 / cpg_depletion
        ratio = pairs[1, 2] / (base[1] * base[2])
        if abs(ratio * cpg_depletion - 1) < 1e-12:
            break
        weight /= ratio * cpg_depletion
    transition = pairs / pairs.sum(axis=1, keepdims=True)
    return base, pairs, transition


def _markov_sequences(n, length, rng, gc=GC_CONTENT, cpg_depletion=CPG_DEPLETION):
    base, _, transition = background_chain(gc, cpg_depletion)
    start = np.cumsum(base)
    step = np.cumsum(transition, axis=1)
    start[-1] = step[:, -1] = 1.0
    u = rng.random((n, length))
    seq = np.empty((n, length), dtype=np.uint8)
    seq[:, 0] = (u[:, 0, None] >= start[None, :]).sum(axis=1)
    # one vectorised step per position (over all regions)
    for i in range(1, length):
        seq[:, i] = (u[:, i, None] >= step[seq[:, i - 1]]).sum(axis=1)
    return seq


def _sample_sites(matrix, n, rng):
    """n sites drawn from a (w, 4) PWM, half of them reverse complemented: uint8 (n, w)."""
    cumulative = np.cumsum(matrix, axis=1)
    cumulative[:, -1] = 1.0
    u = rng.random((n, matrix.shape[0]))
    sites = (u[:, :, None] >= cumulative[None, :, :]).sum(axis=2).astype(np.uint8)
    flip = rng.random(n) < 0.5
    sites[flip] = 3 - sites[flip, ::-1]
    return sites


def _plant(seq, occupied, rows, sites, rng, propose=None):
    """Write ``sites`` into ``seq[rows]`` at free positions; True where placed.

    Start positions are drawn around the centre, or by ``propose(pending, width)`` (pending:
    positions in ``rows`` still to place; returns one start per entry), up to
    MAX_PLACEMENT_TRIES draws per site. Returns the placed mask and the start of every placed
    site (-1 where dropped).
    """
    length = seq.shape[1]
    width = sites.shape[1]
    placed = np.zeros(len(rows), dtype=bool)
    starts = np.full(len(rows), -1, dtype=np.int64)
    pending = np.arange(len(rows))
    offsets = np.arange(width)
    for _ in range(MAX_PLACEMENT_TRIES):
        if not pending.size:
            break
        if propose is None:
            start = np.rint(rng.normal((length - width) / 2, length * POSITION_SD, size=pending.size))
        else:
            start = propose(pending, width)
        start = np.clip(start, 0, length - width).astype(np.int64)
        region = rows[pending][:, None]
        window = start[:, None] + offsets
        free = ~occupied[region, window].any(axis=1)
        seq[region[free], window[free]] = sites[pending[free]]
        occupied[region[free], window[free]] = True
        placed[pending[free]] = True
        starts[pending[free]] = start[free]
        pending = pending[~free]
    return placed, starts


def _saturating(counts):
    return 2.0 * counts / (counts + 1.0)


# ----------------------------------------------------------------------------------------------
# Truth


def _entry(regulator, motif_id, sign, **extra):
    return {"motif": motif_id, "name": regulator.name, "sign": int(sign), "role": regulator.role,
            **extra}


def _per_lineage(effects, lineages, motif_ids):
    """Regulators acting in each lineage, with the sign of their expected lineage-target weight.

    A lineage target is the mean over the lineage's cell types of row z-scores, so a site shifts it
    by about (mean effect over the lineage - mean effect over all cell types) / row sd: that
    "contrast" gives the sign. Listed when the regulator acts in one of the lineage's cell types
    and |contrast| >= 0.1 x its largest |effect| (which drops the one activated CD4 sample of T.act).
    """
    out = {}
    for lineage in immgen.LINEAGES:
        members = lineages == lineage
        if not members.any():
            continue
        rows = []
        for regulator in REGULATORS:
            effect = effects[regulator.name]
            if regulator.role == "constant" or not effect[members].any():
                continue
            contrast = effect[members].mean() - effect.mean()
            if abs(contrast) >= 0.1 * np.abs(effect).max():
                rows.append(_entry(regulator, motif_ids[regulator.name], np.sign(contrast),
                                   contrast=round(float(contrast), 4)))
        out[lineage] = rows
    return out


def _per_edge(effects, cell_types, edges, motif_ids):
    """Edges where a regulator switches on or off: sign of (child - parent) of its effect."""
    column = {c: k for k, c in enumerate(cell_types)}
    out = {}
    for child, parent in edges:
        rows = []
        for regulator in REGULATORS:
            effect = effects[regulator.name]
            on_child, on_parent = effect[column[child]] != 0, effect[column[parent]] != 0
            if on_child != on_parent:
                rows.append(_entry(regulator, motif_ids[regulator.name],
                                   np.sign(regulator.size) * (1 if on_child else -1)))
        if rows:
            out[f"{child}-{parent}"] = rows
    return out


# ----------------------------------------------------------------------------------------------
# Writing


def _write_fasta(path, ids, seq):
    write_text(path, "".join(f">{i}\n{s}\n" for i, s in zip(ids, decode(seq))))


def _write_table(path, frame, float_format):
    write_text(path, frame.to_csv(sep="\t", float_format=float_format, index_label="id"))


def _readme(n_regions, length, random_state, n_motifs, noise_sd):
    return f"""# SYNTHETIC demo atlas (not real data)

Every sequence and every value here is SYNTHETIC: made by `tisfm demo-data` /
`tisfm_core.demo.make_demo_atlas` (random_state {random_state}) to exercise tiSFM Explorer
with a known answer. Nothing here is a measurement; do not use it for biology.

- {n_regions} regions of {length} bp, mouse-like background (GC 0.42, CpG 4x depleted,
  first-order Markov chain), with real JASPAR 2024 motifs planted around the centre.
- Targets for the 81 AI-TAC/ImmGen cell types (ImmGen-like peak heights): each planted regulator
  raises (or, for Zbtb7b, lowers) accessibility in the cell types where it acts; CTCF acts equally
  everywhere; Ets1 + Runx1 act only together; Gaussian noise sd {noise_sd}.
- `truth.json` holds the answer: which motif drives which lineage and which tree edge, with sign,
  every effect size and the noise level.

| file | content |
| --- | --- |
| `sequences.fa` | the sequences |
| `targets_celltypes.tsv` | id + 81 cell-type activities |
| `targets_lineages.tsv` | the paper's lineage targets: mean per lineage of row z-scores (= `--transform lineage:lineage_map.tsv` of the cell-type table) |
| `targets_treediff.tsv` | z(child) - z(parent) per edge of the ImmGen tree (= `--transform tree-diff:parents.tsv`) |
| `lineage_map.tsv` | cell type -> lineage (MF.102+480+.PC has none) |
| `parents.tsv` | the hand-curated ImmGen lineage tree (child -> parent) |
| `motifs.meme` | the {n_motifs} motifs to train with: JASPAR 2024 CORE mouse + the planted profiles |
| `truth.json` | the generative model and the expected answer |

Example: `tisfm train --sequences sequences.fa --targets targets_lineages.tsv --motifs motifs.meme
--out runs/lineages`
"""


def check_regions(n_regions):
    """The number of demo regions as an int in 1..:data:`MAX_REGIONS`, else a TisfmError."""
    n_regions = check_integer(n_regions, "n_regions", 1)
    if n_regions > MAX_REGIONS:
        raise TisfmError(f"the demo atlas has at most {MAX_REGIONS:,} regions (the real ImmGen atlas "
                         f"has 512,595), got {n_regions:,}")
    return n_regions


def make_demo_atlas(out, *, n_regions=20000, length=300, random_state=0, verbose=False):
    """Write the SYNTHETIC demo atlas into a folder.

    Parameters
    ----------
    out : str or Path
        Folder to write into (created if needed; files of the same names are replaced).
    n_regions : int, default 20000
        Number of regions N.
    length : int, default 300
        Sequence length L (at least 60).
    random_state : int or None, default 0
        Seed; the same seed gives byte-identical files.
    verbose : bool, default False
        Print one line per stage.

    Returns
    -------
    dict
        ``out`` (str), ``files`` ({key: path}: sequences, celltypes, lineages, treediff,
        lineage_map, parents, motifs, truth, readme), ``n_regions``, ``length``, ``n_motifs``,
        ``seconds`` and ``truth`` (the content of ``truth.json``).

    Raises
    ------
    TisfmError
        For a bad argument, a planted regulator missing from JASPAR 2024, or an unwritable folder.
    """
    n_regions = check_regions(n_regions)
    length = check_integer(length, "length", MIN_LENGTH)
    if length > MAX_LENGTH:
        raise TisfmError(f"length must be at most {MAX_LENGTH} bp for the demo atlas, got {length}")
    if random_state is not None:
        random_state = check_integer(random_state, "random_state", 0)
    out = check_output_folder(out, force=True)
    started = time.perf_counter()

    def say(message):
        if verbose:
            print(f"[{time.perf_counter() - started:5.1f} s] {message}", flush=True)

    rng = np.random.default_rng(random_state)
    types = immgen.cell_types()
    cell_types = types["cell_type"].tolist()
    lineages = types["lineage"].to_numpy(dtype=str)
    edges = immgen.tree_edges()
    profiles, collection = _pick_profiles()
    motif_ids = {name: profile[0] for name, profile in profiles.items()}
    say(f"motifs: {len(collection)} ({', '.join(f'{k} {v}' for k, v in motif_ids.items())})")

    # Background, then sites slot by slot (all motifs' first sites before any second site, so
    # no motif systematically loses the free space).
    seq = _markov_sequences(n_regions, length, rng)
    occupied = np.zeros(seq.shape, dtype=bool)
    wanted = {r.name: rng.choice(len(SITE_COUNT_P), size=n_regions, p=SITE_COUNT_P) for r in REGULATORS}
    pair = [r.name for r in REGULATORS if r.role == "cooperative"]
    joint = rng.random(n_regions) < COOP_JOINT_RATE
    for name in pair:
        wanted[name] = np.maximum(wanted[name], joint)
    counts = {r.name: np.zeros(n_regions, dtype=np.int64) for r in REGULATORS}
    for slot in range(len(SITE_COUNT_P) - 1):
        for regulator in REGULATORS:
            rows = np.flatnonzero(wanted[regulator.name] > slot)
            sites = _sample_sites(profiles[regulator.name][2], len(rows), rng)
            counts[regulator.name][rows[_plant(seq, occupied, rows, sites, rng)[0]]] += 1
    say(f"sequences: {n_regions} x {length} bp")

    # Effects per cell type (the cooperative pair shares one vector) and the activity table.
    effects = {}
    for regulator in REGULATORS:
        if regulator.role == "cooperative" and pair[0] in effects:
            effects[regulator.name] = effects[pair[0]]
            continue
        acts = np.array([regulator.acts_in(c, lin) for c, lin in zip(cell_types, lineages)])
        jitter = 1.0 if regulator.role == "constant" else rng.uniform(1 - EFFECT_JITTER,
                                                                      1 + EFFECT_JITTER, len(cell_types))
        effects[regulator.name] = np.where(acts, regulator.size * jitter, 0.0)
    baseline = BASELINE["offset"] + rng.gamma(BASELINE["gamma_shape"], BASELINE["gamma_scale"], n_regions)
    activity = np.repeat(baseline[:, None], len(cell_types), axis=1)
    for regulator in REGULATORS:
        if regulator.role != "cooperative":
            activity += _saturating(counts[regulator.name])[:, None] * effects[regulator.name][None, :]
    both = np.logical_and.reduce([counts[name] > 0 for name in pair])
    activity += both[:, None] * effects[pair[0]][None, :]
    activity += rng.normal(0.0, NOISE_SD, activity.shape)

    out.mkdir(parents=True, exist_ok=True)
    paths = {key: out / name for key, name in FILES.items()}
    width = max(5, len(str(n_regions - 1)))
    ids = [f"syn_{i:0{width}d}" for i in range(n_regions)]
    _write_fasta(paths["sequences"], ids, seq)
    _write_table(paths["celltypes"], pd.DataFrame(activity, index=ids, columns=cell_types), "%.2f")
    write_text(paths["lineage_map"], immgen.CELL_TYPES_TSV.read_text(encoding="utf-8"))
    write_text(paths["parents"], immgen.PARENTS_TSV.read_text(encoding="utf-8"))
    write_meme(collection, paths["motifs"])
    say("sequences, cell-type targets and motifs written")

    # The derived targets come from the file as written, so they equal what
    # `--transform lineage:` / `tree-diff:` compute from it.
    table = read_targets(paths["celltypes"])
    _write_table(paths["lineages"], aggregate_lineages(table, read_lineage_map(paths["lineage_map"])),
                 "%.4f")
    _write_table(paths["treediff"], tree_diff(table, read_parent_table(paths["parents"]))[0], "%.3f")
    say("lineage and tree-diff targets written")

    base, pairs, transition = background_chain()
    truth = {
        "synthetic": True,
        "description": "SYNTHETIC demo atlas made by tisfm_core.demo.make_demo_atlas; not real data",
        "random_state": random_state,
        "n_regions": n_regions,
        "length": length,
        "jaspar_release": JASPAR_RELEASE,
        "motifs": motif_ids,
        "jaspar_names": {name: profile[1] for name, profile in profiles.items()},
        "per_lineage": _per_lineage(effects, lineages, motif_ids),
        "per_edge": _per_edge(effects, cell_types, edges, motif_ids),
        "cooperative": {
            "names": pair,
            "motifs": [motif_ids[name] for name in pair],
            "lineages": sorted({str(lin) for lin, v in zip(lineages, effects[pair[0]]) if v}),
            "rule": "adds effect[c] to cell type c once when the region holds >= 1 site of each",
            "joint_planting_rate": COOP_JOINT_RATE,
            "n_regions_with_both": int(both.sum()),
            "effect": {c: round(float(v), 4) for c, v in zip(cell_types, effects[pair[0]]) if v},
        },
        "constant": [motif_ids[r.name] for r in REGULATORS if r.role == "constant"],
        "effects": {
            r.name: {"motif": motif_ids[r.name], "role": r.role, "size": r.size, "acts_in": r.where,
                     "cell_types": {c: round(float(v), 4) for c, v in zip(cell_types, effects[r.name]) if v}}
            for r in REGULATORS
        },
        "model": ("a[i,c] = baseline[i] + sum_tf effect[tf][c] * f(k[i,tf]) + coop[c] * "
                  "[k[i,Ets1] > 0 and k[i,Runx1] > 0] + N(0, noise_sd^2), f(k) = 2k/(k+1), "
                  "k = planted sites; CTCF's effect is the same in every cell type"),
        "noise_sd": NOISE_SD,
        "effect_jitter": f"size x U({1 - EFFECT_JITTER}, {1 + EFFECT_JITTER}) per cell type",
        "baseline": {**BASELINE, "formula": "offset + Gamma(gamma_shape, scale=gamma_scale)"},
        "sites": {
            "count_probabilities": list(SITE_COUNT_P),
            "position": f"normal around the centre, sd = length x {POSITION_SD:.4f}, clipped, no overlap "
                        f"(up to {MAX_PLACEMENT_TRIES} draws, else dropped)",
            "strand": "reverse complement with probability 0.5",
            "fraction_of_regions": {name: round(float((c > 0).mean()), 4) for name, c in counts.items()},
            "mean_per_region": {name: round(float(c.mean()), 4) for name, c in counts.items()},
        },
        "background": {
            "model": "first-order Markov chain, strand-symmetric",
            "gc": GC_CONTENT,
            "cpg_depletion": CPG_DEPLETION,
            "base_frequencies": dict(zip("ACGT", np.round(base, 6).tolist())),
            "cpg_observed_expected": round(float(pairs[1, 2] / (base[1] * base[2])), 4),
            "transition": np.round(transition, 6).tolist(),
        },
        "design": {"Zbtb7b": ZBTB7B_DESIGN,
                   "lineages": "per_lineage lists regulators acting in a lineage; sign = sign of "
                               "(mean effect over the lineage - mean over all 81 cell types)",
                   "edges": "per_edge lists, for each tree edge child-parent, the regulators that "
                            "switch on (sign of their effect) or off (opposite sign) along it",
                   "stroma": "the paper's 8th lineage has no cell type among the 81"},
    }
    write_json(paths["truth"], truth)
    write_text(paths["readme"], _readme(n_regions, length, random_state, len(collection), NOISE_SD))
    seconds = time.perf_counter() - started
    say(f"done: {out}")
    return {"out": str(out), "files": {key: str(path) for key, path in paths.items()},
            "n_regions": n_regions, "length": length, "n_motifs": len(collection),
            "seconds": seconds, "truth": truth}


#: Largest truth.json read next to a run's data (the demo's is a few kB).
MAX_TRUTH_BYTES = 1 << 20


def run_truth(path, config):
    """(is_synthetic, truth) for the run at ``path`` with this config: synthetic when a data file
    lies in a folder named demo* or next to a ``truth.json``; truth is that file's content (None
    when absent). Data paths are resolved as the run's loaders do (run-relative when moved)."""
    from .runs import resolve_run_data
    from .server import readable_here

    data = resolve_run_data(path, config, allowed_only=False)   # names only; truth.json is checked
    synthetic, truth = False, None
    for key in ("sequences", "targets", "bed", "genome"):
        value = data.get(key)
        if not value:
            continue
        path = Path(value)
        if any(part.lower().startswith("demo") for part in path.parent.parts):
            synthetic = True
        candidate = path.parent / "truth.json"
        # a run's config may come from an upload: its paths are read only inside the allowed roots
        if truth is None and readable_here(candidate) and candidate.is_file() \
                and candidate.stat().st_size <= MAX_TRUTH_BYTES:
            try:
                truth = json.loads(candidate.read_text(encoding="utf-8"))
            except (OSError, ValueError, RecursionError):
                truth = None
            synthetic = True
    if isinstance(truth, dict) and truth.get("synthetic"):
        synthetic = True
    return synthetic, truth if isinstance(truth, dict) else None


def planted_marks(truth, outputs):
    """(motif id, output) pairs the demo's truth names for the given outputs (lineages or
    tree edges), with their sign: list of (motif, output, sign, TF name)."""
    if not truth:
        return []
    marks = []
    outputs = set(map(str, outputs))
    for table in ("per_lineage", "per_edge"):
        for output, rows in (truth.get(table) or {}).items():
            if output in outputs:
                marks.extend((r["motif"], output, int(r.get("sign", 0)), r.get("name", "")) for r in rows
                             if isinstance(r, dict) and "motif" in r)
    return marks
