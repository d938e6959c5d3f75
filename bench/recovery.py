"""Recovery study: do tiSFM's interpretations name the planted regulators of atlases nobody tuned to?

For each SYNTHETIC atlas of :data:`tisfm_core.atlases.RECIPES` (different motif collections,
grammars, noise levels and sizes; see that module) this trains, on the same 10-fold split:

- tiSFM (``full`` variant) with the default :class:`~tisfm_core.training.TrainSettings` on the
  first ``--folds`` folds (fewer on atlases above ``--big`` regions);
- the linear baseline (ridge on per-motif max score and site count, :mod:`tisfm_core.linear`)
  on fold 0;
- an MCP regularization path of tiSFM's fold-0 final layer;

and reports recall@5 and recall@10 of the planted activators and repressors
(:mod:`tisfm_core.recovery`; near-identical motifs, Tomtom p < 1e-5, count as hits) from the
final layer, from the inclusion ratio over the folds and at each output's best lambda of the
path, with the fold-0 test R2. Every artifact is kept under ``--workdir``: a second call reuses
finished atlases, runs and paths, so an interrupted study continues where it stopped.

Usage::

    nice -n 10 python bench/recovery.py --workdir /tmp/recovery --readme bench/README.md

The last line is ``recovery: <ratio>x ...``: the smallest ratio over atlases of tiSFM's final-layer
recall@5 (activators and repressors pooled; weights ranked as the app ranks them by default, per
standard deviation of each motif's feature) to the linear baseline's.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import sys
import time
from pathlib import Path

import numpy as np
import pandas as pd
import torch

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))

from tisfm_core.analysis import final_layer  # noqa: E402
from tisfm_core.analysis.final_layer import DEFAULT_SCALE  # noqa: E402
from tisfm_core.analysis.groups import motif_groups  # noqa: E402
from tisfm_core.atlases import RECIPES, get_recipe, make_atlas  # noqa: E402
from tisfm_core.motifs import read_meme  # noqa: E402
from tisfm_core.path import load_path, parse_lambdas, regularization_path  # noqa: E402
from tisfm_core.recovery import inclusion_scores, path_scores, planted_hits, recall  # noqa: E402
from tisfm_core.runs import is_run, load_run, read_run_config  # noqa: E402
from tisfm_core.specs import DataSpec, ModelSpec, PathSpec, TrainTask  # noqa: E402
from tisfm_core.training import CHECKPOINT, TrainSettings  # noqa: E402
from tisfm_core.workflows import resume_run, train_run  # noqa: E402

CISBP = ROOT.parent / "shared" / "data" / "motifs" / "cisBP_mouse.meme"
PATH_LAMBDAS = "1e-5:1e-1:16"
PATH_EPOCHS = 8
README_START = "<!-- recovery-study:start -->"
README_END = "<!-- recovery-study:end -->"


def cpu_model():
    """The CPU's model name and torch's CPU capability, for every printed number."""
    name = platform.processor() or "unknown CPU"
    try:
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.startswith("model name"):
                name = line.split(":", 1)[1].strip()
                break
    except OSError:
        pass
    return f"{name}, torch CPU capability {torch.backends.cpu.get_cpu_capability()}"


def say(message):
    print(f"[{time.strftime('%H:%M:%S')}] {message}", flush=True)


def atlas_folder(work, recipe):
    folder = work / "atlases" / recipe.name
    if not (folder / "truth.json").exists():
        say(f"{recipe.name}: generating {recipe.n_regions} regions")
        make_atlas(recipe, folder, motif_files={"cisbp": CISBP})
    return folder


def _owner(lock):
    """The live process that holds ``lock`` (another invocation training the same run), or None."""
    try:
        pid = int(lock.read_text())
        os.kill(pid, 0)
    except (OSError, ValueError):
        return None
    return pid if pid != os.getpid() else None


def train(folder, atlas, variant, fold, settings, group=None):
    lock = folder.parent / f".{folder.name}.lock"
    while not is_run(folder) and _owner(lock):
        time.sleep(60)   # another invocation (--only-fold) trains this run: wait for it
    if is_run(folder):
        return folder
    folder.parent.mkdir(parents=True, exist_ok=True)
    lock.write_text(str(os.getpid()))
    try:
        return _train(folder, atlas, variant, fold, settings, group)
    finally:
        lock.unlink(missing_ok=True)


def _train(folder, atlas, variant, fold, settings, group):
    if (folder / CHECKPOINT / "state.json").exists() and (folder / "request.json").exists():
        say(f"resuming {folder}")
        return resume_run(folder, verbose=False)
    say(f"training {variant} fold {fold} -> {folder}")
    task = TrainTask(data=DataSpec(sequences=str(atlas / "sequences.fa"), targets=str(atlas / "targets.tsv"),
                                   folds=10, fold=fold),
                     model=ModelSpec(variant=variant, motifs=str(atlas / "motifs.meme")),
                     training=settings, group=group)
    return train_run(folder, task, force=True, verbose=False)


def mcp_path(folder, run):
    if (folder / "path.json").exists():
        return load_path(folder)
    say(f"MCP path of {run}")
    spec = PathSpec(lambdas=tuple(parse_lambdas(PATH_LAMBDAS, log=True)), penalty="mcp",
                    epochs=PATH_EPOCHS, device="cpu")
    result = regularization_path(run, spec)
    result.save(folder)
    return result


def initial_layer(run):
    """The final layer of tiSFM's data-driven initialisation (calibrated sigmoids and a ridge fit,
    no training epoch) on the run's own training split: what training starts from."""
    from tisfm_core.path import load_run_data
    from tisfm_core.training import initialize_from_data
    from tisfm_core.workflows import build_untrained

    run = load_run(run, device="cpu")
    idx, y = load_run_data(run)["train"]
    model = build_untrained("full", motifs=run.motifs, n_outputs=len(run.outputs),
                            length=run.model.config.length)
    initialize_from_data(model, idx, y)
    return pd.DataFrame(model.final_weights.numpy().T, index=run.motif_ids, columns=run.outputs)


def scores_row(W, truth, hits, groups=None):
    row = {}
    for label, sign in (("act", 1), ("rep", -1)):
        for k in (5, 10):
            row[f"{label}@{k}"] = recall(W, truth, hits, k, sign=sign, groups=groups)
    return row


def study_atlas(work, recipe, *, folds, big, settings, tag):
    atlas = atlas_folder(work, recipe)
    truth = json.loads((atlas / "truth.json").read_text())
    train_motifs = read_meme(atlas / "motifs.meme")
    hits = planted_hits(read_meme(atlas / "planted.meme"), train_motifs)
    clusters = motif_groups(train_motifs, by="cluster", cache_dir=work / "similarity")
    runs = work / "runs" / tag / recipe.name
    n_folds = folds if recipe.n_regions <= big else max(2, folds - 1)
    t0 = time.perf_counter()
    linear = train(runs / "linear", atlas, "linear", 0, TrainSettings(device="cpu"))
    tisfm = [train(runs / "tisfm" / f"fold_{f}", atlas, "full", f, settings, group="tisfm")
             for f in range(n_folds)]
    path = mcp_path(runs / "path_mcp_fold0", tisfm[0])
    seconds = time.perf_counter() - t0
    weights = [final_layer(load_run(r, device="cpu")) for r in tisfm]
    lin_w = final_layer(load_run(linear, device="cpu"))
    inclusion = {sign: inclusion_scores(weights, k=10, sign=sign) for sign in (1, -1)}
    rows = []

    def add(model, source, tables, config, trained=True):
        ranked = {}
        for grouping, groups in (("motif", None), ("cluster", clusters)):
            if isinstance(tables, dict):   # signed inclusion: one table per sign
                act = scores_row(tables[1], truth, hits, groups)
                rep = scores_row(tables[-1], truth, hits, groups)
                ranked[grouping] = {k: (act if k.startswith("act") else rep)[k] for k in act}
            else:
                ranked[grouping] = scores_row(tables, truth, hits, groups)
        metrics = config["metrics"]["test"]
        rows.append({"atlas": recipe.name, "model": model, "source": source, "recall": ranked,
                     "test_r2": metrics["mean_r2"] if trained else None,
                     "best_epoch": config["training"]["best"].get("epoch") if trained else 0,
                     "epochs": len(config.get("history", [])) if trained else 0})

    add("tisfm", "final layer", weights[0], read_run_config(tisfm[0]))
    add("tisfm", "final layer x feature sd", final_layer(load_run(tisfm[0], device="cpu"), scale="sd"),
        read_run_config(tisfm[0]))
    add("tisfm", "data initialisation (epoch 0)", initial_layer(tisfm[0]), read_run_config(tisfm[0]),
        trained=False)
    add("tisfm", f"inclusion ({n_folds} folds)", inclusion, read_run_config(tisfm[0]))
    add("tisfm", "MCP path, best lambda", path_scores(path), read_run_config(tisfm[0]))
    add("linear", "final layer", lin_w, read_run_config(linear))
    return {"atlas": recipe.name, "description": recipe.description, "n_regions": recipe.n_regions,
            "n_outputs": recipe.n_outputs, "n_motifs": len(train_motifs), "noise": recipe.noise,
            "r2_ceiling": truth["r2_ceiling"], "folds": n_folds, "seconds": round(seconds, 1),
            "rows": rows}


def fraction(pair):
    found, total = pair
    return None if total == 0 else found / total


def pooled(recall_row, k):
    a, r = recall_row[f"act@{k}"], recall_row[f"rep@{k}"]
    return fraction((a[0] + r[0], a[1] + r[1]))


def fmt(value):
    return "-" if value is None else f"{value:.2f}"


def fmt3(value):
    return "-" if value is None else f"{value:.3f}"


def table(results, grouping):
    lines = ["| atlas | model | ranking | act R@5 | act R@10 | rep R@5 | rep R@10 | all R@5 | test R2 | best epoch |",
             "|---|---|---|---|---|---|---|---|---|---|"]
    for res in results:
        for row in res["rows"]:
            rec = row["recall"][grouping]
            epoch = "-" if row["model"] == "linear" else f"{row['best_epoch']}/{row['epochs']}"
            lines.append(f"| {res['atlas']} | {row['model']} | {row['source']} | "
                         f"{fmt(fraction(rec['act@5']))} | {fmt(fraction(rec['act@10']))} | "
                         f"{fmt(fraction(rec['rep@5']))} | {fmt(fraction(rec['rep@10']))} | "
                         f"{fmt(pooled(rec, 5))} | {fmt3(row['test_r2'])} | {epoch} |")
    return "\n".join(lines)


def verdict(results, grouping):
    """Per atlas: recall@5 (pooled) of tiSFM's final layer as the app ranks it by default
    (``DEFAULT_SCALE``) vs the linear baseline's, and test R2 vs linear."""
    source = "final layer x feature sd" if DEFAULT_SCALE == "sd" else "final layer"
    out = []
    for res in results:
        rows = {(r["model"], r["source"]): r for r in res["rows"]}
        ours, lin = rows[("tisfm", source)], rows[("linear", "final layer")]
        out.append((res["atlas"], pooled(ours["recall"][grouping], 5), pooled(lin["recall"][grouping], 5),
                    ours["test_r2"], lin["test_r2"]))
    return out


def write_readme(path, text):
    path = Path(path)
    old = path.read_text() if path.exists() else ""
    block = f"{README_START}\n{text}\n{README_END}"
    if README_START in old and README_END in old:
        new = old[:old.index(README_START)] + block + old[old.index(README_END) + len(README_END):]
    else:
        new = old.rstrip("\n") + "\n\n" + block + "\n"
    path.write_text(new)


def main(argv=None):
    parser = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    parser.add_argument("--workdir", required=True, help="folder for atlases, runs and results")
    parser.add_argument("--atlases", default=",".join(r.name for r in RECIPES),
                        help="comma-separated recipe names (default: all)")
    parser.add_argument("--folds", type=int, default=3, help="tiSFM folds for inclusion (default 3)")
    parser.add_argument("--big", type=int, default=20000,
                        help="atlases above this many regions get one fold fewer (default 20000)")
    parser.add_argument("--settings", default="{}",
                        help="JSON of TrainSettings fields to change from the defaults (a variant)")
    parser.add_argument("--tag", default="defaults", help="name of the settings variant (run folder)")
    parser.add_argument("--threads", type=int, default=1,
                        help="torch threads (default 1: on a shared, oversubscribed machine two "
                             "threads spend most of their time waiting for each other)")
    parser.add_argument("--readme", help="write the table into this markdown file (between markers)")
    parser.add_argument("--table-only", action="store_true",
                        help="train nothing: write the table of the atlases whose results are in "
                             "--workdir (an unfinished study; the missing atlases are named)")
    parser.add_argument("--only-fold", type=int, default=None,
                        help="only train this tiSFM fold of the atlases (a parallel helper "
                             "process; no table)")
    args = parser.parse_args(argv)
    torch.set_num_threads(args.threads)
    work = Path(args.workdir)
    settings = TrainSettings(**{"device": "cpu", **json.loads(args.settings)})
    cpu = cpu_model()
    say(f"CPU: {cpu}; settings {args.tag}: {json.dumps(settings.to_dict())}")
    names = [a.strip() for a in args.atlases.split(",") if a.strip()]
    if args.only_fold is not None:
        for name in names:
            atlas = atlas_folder(work, get_recipe(name))
            train(work / "runs" / args.tag / name / "tisfm" / f"fold_{args.only_fold}", atlas, "full",
                  args.only_fold, settings, group="tisfm")
        return
    results, missing = [], []
    for name in names:
        saved = work / "results" / f"{args.tag}-{name}.json"
        if args.table_only:
            if saved.is_file():
                results.append(json.loads(saved.read_text()))
            else:
                missing.append(name)
            continue
        res = study_atlas(work, get_recipe(name), folds=args.folds, big=args.big, settings=settings,
                          tag=args.tag)
        saved.parent.mkdir(parents=True, exist_ok=True)
        saved.write_text(json.dumps(res, indent=1))
        results.append(res)
        say(f"{name}: done ({res['seconds']:.0f} s of training this call)")
    if not results:
        raise SystemExit(f"no finished atlas in {work / 'results'} for settings {args.tag}")
    motif_table, cluster_table = table(results, "motif"), table(results, "cluster")
    checks = verdict(results, "motif")
    lines = [f"Recovery study, settings `{args.tag}` ({cpu}); recall of planted regulators "
             "(near-identical motifs count), tiSFM `full` with default training settings vs the "
             "linear baseline, same split (fold 0; inclusion over the folds shown).", "",
             "Ranking by motif:", "", motif_table, "",
             "Ranking by motif-similarity cluster (coefficients summed per cluster):", "", cluster_table]
    if missing:
        lines += ["", f"Not finished yet (the study resumes where it stopped): {', '.join(missing)}."]
    text = "\n".join(lines)
    print(text)
    if args.readme:
        write_readme(args.readme, text)
    ratios = [o / lin if lin else (1.0 if o is not None else np.nan) for _, o, lin, _, _ in checks]
    ok = sum(o >= lin and r2 > lr2 for _, o, lin, r2, lr2 in checks)
    print(f"recovery: {np.nanmin(ratios):.2f}x smallest tiSFM/linear final-layer recall@5 (tiSFM weights "
          f"{'per feature s.d.' if DEFAULT_SCALE == 'sd' else 'raw'}) over "
          f"{len(checks)} atlases; tiSFM recall@5 >= linear with higher test R2 on {ok} of "
          f"{len(checks)} ({cpu})")


if __name__ == "__main__":
    main()
