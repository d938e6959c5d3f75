"""SYNTHETIC held-out atlases for the recovery study (``bench/recovery.py``), each with its answer.

The demo atlas (:mod:`tisfm_core.demo`) is the one the defaults were first tuned on; these
atlases are made differently so that a model's interpretation can be checked on data nobody
tuned it to. They reuse the demo's background chain, site sampling and placement, and differ
from it and from each other in:

- the motif collection the planted PWMs come from and the one a model trains with (cisBP 862,
  JASPAR 2024 CORE vertebrates, or JASPAR profiles planted and cisBP used for training);
- the grammar (:data:`ROLES`): single sites with a saturating effect (activators and
  repressors), cooperative pairs that act only at an edge-to-edge spacing of
  ``PAIR_GAP`` bp, low-information motifs whose effect grows with the number of sites,
  position-preferring activators whose sites act only within ``POSITION_WINDOW`` bp of the
  centre, and a ubiquitous factor acting equally in every output;
- the noise fraction, the GC content of the background and the size (5,000 to 50,000 regions).

Generative model of region i and output o (every number is in ``truth.json``)::

    a[i, o] = 1 + sum_terms size[term, o] * x[i, term] + noise[i, o]

with x = g(k) (k planted sites, g(k) = 2k / (k + 1)) for activators, repressors and the
ubiquitous factor, x = k for counting motifs, x = g(k near the centre) for positional
activators, and x = 1 when a site of each partner lies within the spacing for a pair. The noise
is Gaussian with a shared part (``SHARED_NOISE`` of its variance, the same draw for every output
of a region) and an independent part; its variance is set per output so that it is ``noise`` of
the output's total variance: a model that knew the planted sites reaches R2 = 1 - noise.

Files written (:func:`make_atlas`): ``sequences.fa``, ``targets.tsv`` (id + outputs),
``motifs.meme`` (the collection to train with), ``planted.meme`` (the planted PWMs),
``sites.tsv`` (every planted site: region, term, motif, start, end), ``truth.json`` and
``README.md``.
"""

from __future__ import annotations

import time
from dataclasses import asdict, dataclass

import numpy as np
import pandas as pd

from .atomic import check_output_folder, write_json, write_text
from .demo import SITE_COUNT_P, _markov_sequences, _plant, _sample_sites, _saturating, _write_fasta
from .errors import TisfmError
from .motifs import MotifSet, load_motifs, write_meme

__all__ = ["AtlasRecipe", "RECIPES", "ROLES", "make_atlas", "get_recipe", "term_features", "PAIR_GAP", "POSITION_WINDOW"]

ROLES = ("activator", "repressor", "pair", "counter", "positional", "ubiquitous")
#: Edge-to-edge spacing (bp, inclusive) at which a cooperative pair acts.
PAIR_GAP = (2, 20)
#: Fraction of regions that get a pair planted at its spacing (on top of independent sites).
PAIR_JOINT_RATE = 0.12
#: A positional activator's site acts when its centre is within this many bp of the window centre.
POSITION_WINDOW = 25
#: P(0..3 sites) of positional activators (sites are placed uniformly, few land near the centre).
POSITIONAL_COUNT_P = (0.5, 0.3, 0.14, 0.06)
#: Mean and cap of the Poisson number of sites of a counting motif.
COUNTER_SITES = (1.5, 6)
#: Share of the noise variance drawn once per region for all outputs.
SHARED_NOISE = 0.3
#: Per-output jitter of an effect size: size x U(1 - j, 1 + j).
EFFECT_JITTER = 0.2
#: Planted motifs: information content (bits) and width ranges by role.
STRONG_MOTIFS = {"ic": (10.0, 40.0), "width": (6, 20)}
WEAK_MOTIFS = {"ic": (5.0, 9.5), "width": (5, 12)}
#: Planted motifs are mutually dissimilar: Tomtom p >= this between any two.
DISTINCT_PVALUE = 1e-3
SIZES = {"activator": (0.6, 1.0), "repressor": (-1.0, -0.6), "pair": (1.0, 1.4),
         "counter": (0.3, 0.45), "positional": (0.8, 1.2), "ubiquitous": (0.6, 0.6)}
#: Chance that an activator, repressor, pair, counting or positional term also acts in one more
#: output (a shared program).
SECOND_OUTPUT_P = 0.3


@dataclass(frozen=True)
class AtlasRecipe:
    """How one study atlas is made.

    Parameters
    ----------
    name : str
    description : str
    motifs : str
        The collection to train with: a motif spec (``jaspar:2024``) or a key of ``motif_files``
        passed to :func:`make_atlas` (``"cisbp"``).
    plant_from : str
        The collection the planted PWMs come from (same kinds of value). When it differs from
        ``motifs``, each planted PWM has a near-identical motif (Tomtom p < 1e-5) in ``motifs``.
    n_regions, n_outputs : int
    activators : int
        Single-site activators per output.
    repressors, pairs, counters, positional : int
        Numbers of repressors, cooperative pairs (two motifs each), counting motifs and
        positional activators, each acting in one or two random outputs.
    ubiquitous : bool
        One factor acting equally in every output.
    noise : float
        Fraction of every output's variance that is noise, in (0, 1).
    gc : float, default 0.42
    length : int, default 300
    random_state : int, default 0
    """

    name: str
    description: str
    motifs: str
    plant_from: str
    n_regions: int
    n_outputs: int
    activators: int = 1
    repressors: int = 0
    pairs: int = 0
    counters: int = 0
    positional: int = 0
    ubiquitous: bool = False
    noise: float = 0.5
    gc: float = 0.42
    length: int = 300
    random_state: int = 0

    def scaled(self, n_regions):
        """The same recipe with another number of regions (e.g. a small copy for tests)."""
        return AtlasRecipe(**{**asdict(self), "n_regions": int(n_regions)})


RECIPES = (
    AtlasRecipe("cisbp-singles-5k", "cisBP 862: two single-site activators per output and a "
                "ubiquitous factor (the setting of issue 16)", motifs="cisbp", plant_from="cisbp",
                n_regions=5000, n_outputs=6, activators=2, ubiquitous=True, noise=0.5, random_state=11),
    AtlasRecipe("cisbp-repressors-10k", "cisBP 862: one activator per output and six repressors, "
                "GC 0.40", motifs="cisbp", plant_from="cisbp", n_regions=10000, n_outputs=8,
                activators=1, repressors=6, noise=0.5, gc=0.40, random_state=12),
    AtlasRecipe("jaspar-pairs-8k", "JASPAR 2024: one activator per output and three cooperative "
                "pairs that act only at 2-20 bp spacing", motifs="jaspar:2024", plant_from="jaspar:2024",
                n_regions=8000, n_outputs=6, activators=1, pairs=3, noise=0.4, random_state=13),
    AtlasRecipe("jaspar-counts-12k", "JASPAR 2024: one activator per output and four "
                "low-information motifs acting by site count, GC 0.48", motifs="jaspar:2024",
                plant_from="jaspar:2024", n_regions=12000, n_outputs=6, activators=1, counters=4,
                noise=0.5, gc=0.48, random_state=14),
    AtlasRecipe("cisbp-position-20k", "cisBP 862: one activator per output, six activators "
                "that act only within 25 bp of the centre, two repressors, noise 0.6",
                motifs="cisbp", plant_from="cisbp", n_regions=20000, n_outputs=6, activators=1,
                positional=6, repressors=2, noise=0.6, random_state=15),
    AtlasRecipe("jaspar-in-cisbp-50k", "JASPAR 2024 PWMs planted, cisBP 862 to train with; every "
                "grammar, 10 outputs, noise 0.7", motifs="cisbp", plant_from="jaspar:2024",
                n_regions=50000, n_outputs=10, activators=1, repressors=3, pairs=2, counters=2,
                positional=2, ubiquitous=True, noise=0.7, random_state=16),
)


def get_recipe(name):
    """The study recipe called ``name``."""
    for item in RECIPES:
        if item.name == name:
            return item
    raise TisfmError(f"no atlas recipe {name!r}; choose one of {', '.join(r.name for r in RECIPES)}")


def _collection(spec, motif_files):
    if motif_files and spec in motif_files:
        return load_motifs(str(motif_files[spec]))
    if spec.startswith("jaspar:"):
        return load_motifs(spec)
    raise TisfmError(f"motif collection {spec!r} needs a file: pass motif_files={{{spec!r}: PATH}}")


# -- choosing the planted motifs ----------------------------------------------------------------

def _pool(motifs, limits):
    ic, widths = motifs.information_content(), motifs.widths
    return np.flatnonzero((ic >= limits["ic"][0]) & (ic <= limits["ic"][1])
                          & (widths >= limits["width"][0]) & (widths <= limits["width"][1]))


def _pick_motifs(recipe, plant, train, rng):
    """Planted motif indices into ``plant``: strong ones and weak (counting) ones, all mutually
    dissimilar, with distinct TF names and (across collections) disjoint near-identical motifs
    in ``train``."""
    from .analysis.groups import CLUSTER_PVALUE, motif_similarity

    n_strong = (recipe.activators * recipe.n_outputs + recipe.repressors + 2 * recipe.pairs
                + recipe.positional + int(recipe.ubiquitous))
    same = plant.fingerprint == train.fingerprint
    self_p = motif_similarity(plant)
    cross = None if same else motif_similarity(plant, train)
    chosen, names, hit_sets = [], set(), []

    def take(pool, n, what):
        got = []
        for k in rng.permutation(pool):
            name = plant.names[k].upper()
            if name in names or any(self_p[k, j] < DISTINCT_PVALUE for j in chosen):
                continue
            hits = {int(k)} if same else set(np.flatnonzero(cross[k] < CLUSTER_PVALUE).tolist())
            if not hits or any(hits & other for other in hit_sets):
                continue
            chosen.append(int(k))
            names.add(name)
            hit_sets.append(hits)
            got.append(int(k))
            if len(got) == n:
                return got
        raise TisfmError(f"atlas {recipe.name}: only {len(got)} of {n} {what} motifs of "
                         f"{plant.source!r} are distinct enough to plant")

    strong = take(_pool(plant, STRONG_MOTIFS), n_strong, "strong")
    weak = take(_pool(plant, WEAK_MOTIFS), recipe.counters, "low-information") if recipe.counters else []
    return strong, weak


def _terms(recipe, strong, weak, rng):
    """The grammar: a list of terms with their member motifs and per-output sizes."""
    outputs = recipe.n_outputs
    strong = list(strong)
    terms = []

    def sizes(role, where):
        low, high = SIZES[role]
        size = rng.uniform(low, high)
        out = np.zeros(outputs)
        jitter = rng.uniform(1 - EFFECT_JITTER, 1 + EFFECT_JITTER, outputs)
        out[list(where)] = size * (1.0 if role == "ubiquitous" else jitter[list(where)])
        return out

    def where(first):
        places = {first}
        if outputs > 1 and rng.random() < SECOND_OUTPUT_P:
            places.add(int(rng.choice([o for o in range(outputs) if o != first])))
        return sorted(places)

    for o in range(outputs):
        for _ in range(recipe.activators):
            terms.append({"role": "activator", "members": [strong.pop()], "size": sizes("activator", where(o))})
    for role, n in (("repressor", recipe.repressors), ("positional", recipe.positional)):
        for _ in range(n):
            terms.append({"role": role, "members": [strong.pop()],
                          "size": sizes(role, where(int(rng.integers(outputs))))})
    for _ in range(recipe.pairs):
        terms.append({"role": "pair", "members": [strong.pop(), strong.pop()],
                      "size": sizes("pair", where(int(rng.integers(outputs))))})
    for k in weak:
        terms.append({"role": "counter", "members": [k], "size": sizes("counter", where(int(rng.integers(outputs))))})
    if recipe.ubiquitous:
        terms.append({"role": "ubiquitous", "members": [strong.pop()], "size": sizes("ubiquitous", range(outputs))})
    return terms


# -- planting -----------------------------------------------------------------------------------

def _uniform(rng, length):
    return lambda pending, width: rng.integers(0, length - width + 1, size=pending.size)


def _plant_sites(recipe, terms, plant, rng):
    n, length = recipe.n_regions, recipe.length
    seq = _markov_sequences(n, length, rng, gc=recipe.gc)
    occupied = np.zeros(seq.shape, dtype=bool)
    records = []   # (region, term, member, start, end)

    def put(t, member, rows, propose=None):
        matrix = plant.matrices[terms[t]["members"][member]]
        sites = _sample_sites(matrix, len(rows), rng)
        placed, starts = _plant(seq, occupied, rows, sites, rng, propose)
        rows, starts = rows[placed], starts[placed]
        records.append(np.stack([rows, np.full(len(rows), t), np.full(len(rows), member),
                                 starts, starts + matrix.shape[0]], axis=1))
        return rows, starts

    # pairs at their spacing first, while the centre is free
    for t, term in enumerate(terms):
        if term["role"] != "pair":
            continue
        rows = np.flatnonzero(rng.random(n) < PAIR_JOINT_RATE)
        rows, first = put(t, 0, rows)
        w_first = plant.matrices[term["members"][0]].shape[0]

        def beside(pending, width, rows=rows, first=first, w_first=w_first):
            gap = rng.integers(PAIR_GAP[0], PAIR_GAP[1] + 1, size=pending.size)
            after = rng.random(pending.size) < 0.5
            start = first[pending]
            # outside the window: clipped by _plant into a spacing that may not count, which
            # the features (computed from the sites) then reflect
            return np.where(after, start + w_first + gap, start - gap - width)
        put(t, 1, rows, beside)
    # then every term's own sites, slot by slot (all first sites before any second one)
    wanted = []
    for term in terms:
        size = (n, len(term["members"]))
        if term["role"] == "counter":
            k = np.minimum(rng.poisson(COUNTER_SITES[0], size=size), COUNTER_SITES[1])
        else:
            p = POSITIONAL_COUNT_P if term["role"] == "positional" else SITE_COUNT_P
            k = rng.choice(len(p), size=size, p=p)
        wanted.append(k)
    for slot in range(max(int(k.max()) for k in wanted)):
        for t, term in enumerate(terms):
            uniform = term["role"] in ("counter", "positional")
            for member in range(len(term["members"])):
                rows = np.flatnonzero(wanted[t][:, member] > slot)
                if rows.size:
                    put(t, member, rows, _uniform(rng, length) if uniform else None)
    sites = pd.DataFrame(np.concatenate(records), columns=["region", "term", "member", "start", "end"])
    return seq, sites.sort_values(["region", "start"], kind="stable").reset_index(drop=True)


def term_features(terms, sites, n_regions, length):
    """The planted feature x[i, term] of every region (see the module docstring).

    Parameters
    ----------
    terms : list of dict
        ``role`` and ``members`` (as in ``truth.json["terms"]``).
    sites : pandas.DataFrame
        ``region``, ``term``, ``member``, ``start``, ``end`` (as in ``sites.tsv``).
    n_regions, length : int

    Returns
    -------
    numpy.ndarray, float64, shape (n_regions, n_terms)
    """
    x = np.zeros((n_regions, len(terms)))
    for t, term in enumerate(terms):
        own = sites[sites["term"] == t]
        role = term["role"]
        if role == "pair":
            a = own[own["member"] == 0][["region", "start", "end"]]
            b = own[own["member"] == 1][["region", "start", "end"]]
            both = a.merge(b, on="region", suffixes=("_a", "_b"))
            gap = np.maximum(both["start_b"] - both["end_a"], both["start_a"] - both["end_b"])
            ok = both["region"][(gap >= PAIR_GAP[0]) & (gap <= PAIR_GAP[1])].unique()
            x[ok, t] = 1.0
            continue
        if role == "positional":
            centre = (own["start"] + own["end"]) / 2
            own = own[np.abs(centre - length / 2) <= POSITION_WINDOW]
        k = np.bincount(own["region"].to_numpy(), minlength=n_regions).astype(np.float64)
        x[:, t] = k if role == "counter" else _saturating(k)
    return x


# -- writing ------------------------------------------------------------------------------------

def _readme(recipe, n_motifs, n_planted):
    return f"""# SYNTHETIC recovery-study atlas `{recipe.name}` (not real data)

Made by `tisfm_core.atlases.make_atlas` (random_state {recipe.random_state}): {recipe.description}.
{recipe.n_regions} regions of {recipe.length} bp (GC {recipe.gc}), {recipe.n_outputs} outputs,
{n_planted} planted motifs; noise is {recipe.noise:.0%} of each output's variance, so a model that
knew the planted sites reaches R2 = {1 - recipe.noise:.2f}.

| file | content |
| --- | --- |
| `sequences.fa` | the sequences |
| `targets.tsv` | id + one activity column per output |
| `motifs.meme` | the {n_motifs} motifs to train with |
| `planted.meme` | the planted PWMs |
| `sites.tsv` | every planted site (region, term, member, start, end; 0-based, end exclusive) |
| `truth.json` | recipe, terms (role, motifs, size per output), per-output answer, noise |
"""


def make_atlas(recipe, out, *, motif_files=None, verbose=False):
    """Write one SYNTHETIC study atlas into a folder.

    Parameters
    ----------
    recipe : AtlasRecipe or str
        A recipe or the name of one of :data:`RECIPES`.
    out : str or Path
        Folder to write into (created; files of the same names are replaced).
    motif_files : dict, optional
        Motif files for recipe collection keys that are not ``jaspar:`` specs, e.g.
        ``{"cisbp": "../shared/data/motifs/cisBP_mouse.meme"}``.
    verbose : bool, default False

    Returns
    -------
    dict
        ``out``, ``files`` ({key: path}), ``truth`` (the content of truth.json) and ``seconds``.
    """
    recipe = get_recipe(recipe) if isinstance(recipe, str) else recipe
    if not isinstance(recipe, AtlasRecipe):
        raise TisfmError(f"recipe must be an AtlasRecipe or a recipe name, got {type(recipe).__name__}")
    if not 0 < recipe.noise < 1:
        raise TisfmError(f"atlas {recipe.name}: noise must be a fraction in (0, 1), got {recipe.noise!r}")
    started = time.perf_counter()
    out = check_output_folder(out, force=True)
    out.mkdir(parents=True, exist_ok=True)
    rng = np.random.default_rng(recipe.random_state)
    train = _collection(recipe.motifs, motif_files)
    plant = train if recipe.plant_from == recipe.motifs else _collection(recipe.plant_from, motif_files)
    strong, weak = _pick_motifs(recipe, plant, train, rng)
    terms = _terms(recipe, strong, weak, rng)
    seq, sites = _plant_sites(recipe, terms, plant, rng)
    x = term_features(terms, sites, recipe.n_regions, recipe.length)
    size = np.stack([t["size"] for t in terms])                          # (terms, outputs)
    signal = x @ size
    variance = signal.var(axis=0)
    if (variance <= 0).any():
        raise TisfmError(f"atlas {recipe.name}: an output has no planted signal (too few regions)")
    noise_sd = np.sqrt(variance * recipe.noise / (1 - recipe.noise))
    shared = rng.normal(size=(recipe.n_regions, 1)) * np.sqrt(SHARED_NOISE)
    own = rng.normal(size=signal.shape) * np.sqrt(1 - SHARED_NOISE)
    activity = 1.0 + signal + (shared + own) * noise_sd[None, :]
    if verbose:
        print(f"[{time.perf_counter() - started:5.1f} s] {recipe.name}: {len(terms)} terms, "
              f"{len(sites)} sites", flush=True)

    outputs = [f"out{o}" for o in range(recipe.n_outputs)]
    width = max(5, len(str(recipe.n_regions - 1)))
    ids = [f"syn_{i:0{width}d}" for i in range(recipe.n_regions)]
    planted_idx = sorted({k for t in terms for k in t["members"]})
    planted = MotifSet(tuple(plant.ids[k] for k in planted_idx), tuple(plant.names[k] for k in planted_idx),
                       tuple(plant.matrices[k] for k in planted_idx), f"planted from {plant.source}")
    names = {"sequences": "sequences.fa", "targets": "targets.tsv", "motifs": "motifs.meme",
             "planted": "planted.meme", "sites": "sites.tsv", "truth": "truth.json", "readme": "README.md"}
    paths = {key: out / name for key, name in names.items()}
    _write_fasta(paths["sequences"], ids, seq)
    write_text(paths["targets"], pd.DataFrame(activity, index=ids, columns=outputs).to_csv(
        sep="\t", float_format="%.4f", index_label="id"))
    write_meme(train, paths["motifs"])
    write_meme(planted, paths["planted"])
    table = sites.assign(motif=[plant.ids[terms[t]["members"][m]] for t, m in
                                zip(sites["term"], sites["member"])])
    write_text(paths["sites"], table[["region", "term", "member", "motif", "start", "end"]]
               .to_csv(sep="\t", index=False))

    per_output = {o: [] for o in outputs}
    for term in terms:
        for k in term["members"]:
            for o, value in zip(outputs, term["size"]):
                if value:
                    per_output[o].append({"motif": plant.ids[k], "name": plant.names[k],
                                          "sign": int(np.sign(value)), "role": term["role"]})
    truth = {
        "synthetic": True,
        "description": f"SYNTHETIC recovery-study atlas made by tisfm_core.atlases.make_atlas; {recipe.description}",
        "recipe": asdict(recipe),
        "outputs": outputs,
        "train_motifs": {"source": train.source, "fingerprint": train.fingerprint, "n": len(train)},
        "plant_motifs": {"source": plant.source, "fingerprint": plant.fingerprint},
        "terms": [{"role": t["role"], "motifs": [plant.ids[k] for k in t["members"]],
                   "names": [plant.names[k] for k in t["members"]],
                   "size": {o: round(float(v), 4) for o, v in zip(outputs, t["size"]) if v}}
                  for t in terms],
        "per_output": per_output,
        "noise": {"fraction": recipe.noise, "shared_fraction": SHARED_NOISE,
                  "sd": {o: round(float(v), 6) for o, v in zip(outputs, noise_sd)}},
        "r2_ceiling": round(1 - recipe.noise, 6),
        "signal_variance": {o: round(float(v), 6) for o, v in zip(outputs, variance)},
        "model": ("a[i,o] = 1 + sum_terms size[term,o] * x[i,term] + noise; x = g(k) = 2k/(k+1) for "
                  "activator, repressor, ubiquitous; k for counter; g(k within "
                  f"{POSITION_WINDOW} bp of the centre) for positional; 1 if sites of both partners "
                  f"lie {PAIR_GAP[0]}-{PAIR_GAP[1]} bp apart (edge to edge) for pair"),
        "sites": {"count_probabilities": list(SITE_COUNT_P), "positional_count_probabilities":
                  list(POSITIONAL_COUNT_P), "counter_poisson_mean_and_cap": list(COUNTER_SITES),
                  "pair_joint_rate": PAIR_JOINT_RATE, "pair_gap": list(PAIR_GAP),
                  "position_window": POSITION_WINDOW,
                  "placement": "activator, repressor, pair, ubiquitous: around the centre "
                               "(sd = length/6); counter, positional: uniform; no overlaps"},
    }
    write_json(paths["truth"], truth)
    write_text(paths["readme"], _readme(recipe, len(train), len(planted)))
    seconds = time.perf_counter() - started
    if verbose:
        print(f"[{seconds:5.1f} s] {recipe.name} written to {out}", flush=True)
    return {"out": str(out), "files": {k: str(v) for k, v in paths.items()}, "truth": truth,
            "seconds": seconds}
