"""End-to-end tasks behind the CLI and the app's jobs: train, evaluate, predict, export, import.

Each function takes paths and options, does one task and returns plain data; the CLI only parses
arguments and prints.
"""

from __future__ import annotations

import shutil
import time
from pathlib import Path

import numpy as np
import pandas as pd

from .aitac import AITAC
from .atomic import check_output_folder, read_json, write_json, write_text
from .dataset import load_dataset, load_sequences
from .devices import resolve_device
from .errors import TisfmError
from .model import TISFM, TISFMConfig, VARIANTS
from .motifs import MotifSet, load_motifs
from .runs import (CONFIG, MOTIFS, SPLIT, WEIGHTS, is_run, load_run, portable_data, resolve_run_data,
                   save_run)
from .splits import kfold_split
from .training import CHECKPOINT, TrainSettings, evaluate_arrays, fit, predict_batches

REQUEST = "request.json"
MODEL_VARIANTS = tuple(VARIANTS) + ("aitac",)
#: Files a run directory may hold: what --force replaces, and all an uploaded run zip may contain.
RUN_FILES = (WEIGHTS, CONFIG, MOTIFS, SPLIT, REQUEST, "train.log")


def _abs(path):
    return None if path is None else str(Path(path).expanduser().resolve())


def prepare_output_folder(out, *, force=False):
    """Refuse to overwrite an existing run unless ``force``; with ``force`` remove only our files."""
    out = check_output_folder(out, force=force, hint="overwrite it or --resume to continue an "
                                                    "interrupted training")
    if out.is_dir() and any(out.iterdir()):
        for name in RUN_FILES:
            (out / name).unlink(missing_ok=True)
        shutil.rmtree(out / CHECKPOINT, ignore_errors=True)
    out.mkdir(parents=True, exist_ok=True)
    return out


def metrics_dict(metrics, outputs):
    """RegressionMetrics.compute() output -> JSON-friendly dict with the output names."""
    return {"outputs": list(outputs), "n": int(metrics["n"]),
            **{k: [float(v) for v in metrics[k]] for k in ("mse", "r2", "pearson")},
            "mean_r2": float(np.nanmean(metrics["r2"])), "mean_pearson": float(np.nanmean(metrics["pearson"])),
            "mean_mse": float(np.nanmean(metrics["mse"]))}


def build_untrained(variant, *, motifs, n_outputs, length, era="head", attention_softmax="query",
                    random_state=0):
    """A fresh tiSFM of a paper variant (kernels from ``motifs``), or the AI-TAC baseline."""
    if variant == "aitac":
        import torch
        torch.manual_seed(random_state)
        return AITAC(n_outputs=n_outputs, length=length)
    config = TISFMConfig.for_variant(variant, n_motifs=len(motifs), n_outputs=n_outputs,
                                     length=length, kernel_width=max(motifs.max_width, 1), era=era,
                                     attention_softmax=attention_softmax)
    return TISFM(config, motifs.kernels(era=era), random_state=random_state)


def check_training_inputs(*, targets, sequences=None, bed=None, genome=None, motifs="jaspar:2024",
                          variant="full", era="head", transform="none", folds=10, device="auto"):
    """Read, match and size-check everything a training job would use, without training.

    The app calls this before it starts a background job, so that a bad file is refused at once,
    with the reason, instead of as a failed job minutes later. Arguments as :func:`train_run`.

    Returns
    -------
    dict
        ``n_regions``, ``n_outputs``, ``length``, ``n_motifs`` (0 for AI-TAC) and ``id_match``
        (the id-matching summary line).

    Raises
    ------
    TisfmError
        Naming the file and the problem.
    """
    if variant not in MODEL_VARIANTS:
        raise TisfmError(f"unknown variant {variant!r}; choose one of {', '.join(MODEL_VARIANTS)}")
    resolve_device(device)
    motif_set = None if variant == "aitac" else load_motifs(motifs)
    data = load_dataset(sequences, targets, bed=bed, genome=genome, transform=transform)
    kfold_split(len(data), n_folds=folds)
    # building the model checks the shapes (e.g. motifs wider than the sequences)
    build_untrained(variant, motifs=motif_set, n_outputs=len(data.outputs), length=data.length, era=era)
    return {"n_regions": len(data), "n_outputs": len(data.outputs), "length": data.length,
            "n_motifs": 0 if motif_set is None else len(motif_set),
            "id_match": data.report["summary"]}


def train_run(out, *, targets, sequences=None, bed=None, genome=None, motifs="jaspar:2024",
              variant="full", era="head", attention_softmax="query", transform="none",
              outputs=None, folds=10, fold=0, settings=None, force=False, resume=False,
              group=None, half=False, verbose=True, callback=None, distributed=None):
    """Train one model and write its run directory.

    Parameters
    ----------
    out : str or Path
        Run directory to create (refused if it exists and is not empty, unless ``force``).
    targets, sequences, bed, genome, transform, outputs
        The data (see :func:`tisfm_core.dataset.load_dataset`).
    motifs : str or MotifSet, default "jaspar:2024"
        A motif file or ``jaspar:RELEASE`` (ignored for ``variant="aitac"``).
    variant : {"full", "base", "attention", "interaction", "maxpool", "aitac"}, default "full"
    era : {"paper", "head"}, default "head"
    folds, fold : int, default 10, 0
        Seeded k-fold split (8 train / 1 validation / 1 test folds for 10), saved with the run.
    settings : TrainSettings, optional
    resume : bool, default False
        Continue the interrupted training in ``out`` (all other arguments are read from it).
    group : str, optional
        Name of the set of runs this one belongs to (cross-validation), stored in config.json.
    half : bool, default False
        Store weights in float16.
    distributed : tuple (rank, world_size), optional
        Under torchrun; only rank 0 writes files.

    Returns
    -------
    pathlib.Path
        The run directory.
    """
    out = Path(out)
    rank = distributed[0] if distributed else 0
    if resume:
        request = read_json(out / REQUEST, what="training request")
        return _train_from_request(out, request, resume=True, verbose=verbose, callback=callback,
                                   distributed=distributed)
    if variant not in MODEL_VARIANTS:
        raise TisfmError(f"unknown variant {variant!r}; choose one of {', '.join(MODEL_VARIANTS)}")
    settings = settings or TrainSettings()
    request = {"targets": _abs(targets), "sequences": _abs(sequences),
               "bed": _abs(bed), "genome": _abs(genome),
               "motifs": motifs if isinstance(motifs, str) and motifs.startswith("jaspar:") else
               (_abs(motifs) if isinstance(motifs, (str, Path)) else None),
               "variant": variant, "era": era, "attention_softmax": attention_softmax,
               "transform": transform, "outputs": outputs, "folds": folds, "fold": fold,
               "settings": settings.to_dict(), "group": group, "half": half}
    if rank == 0:
        prepare_output_folder(out, force=force)
    return _train_from_request(out, request, resume=False, verbose=verbose, callback=callback,
                               distributed=distributed, motif_set=motifs if isinstance(motifs, MotifSet) else None)


def _train_from_request(out, request, *, resume, verbose, callback, distributed, motif_set=None):
    rank = distributed[0] if distributed else 0
    settings = TrainSettings.from_dict(request["settings"])
    variant = request["variant"]
    t_load = time.perf_counter()
    if variant != "aitac" and motif_set is None:
        if not request.get("motifs"):
            raise TisfmError("no motif collection given (--motifs FILE or jaspar:RELEASE)")
        motif_set = load_motifs(request["motifs"])
    data = load_dataset(request["sequences"], request["targets"], bed=request["bed"],
                        genome=request["genome"], transform=request["transform"],
                        outputs=request.get("outputs"), verbose=verbose and rank == 0)
    split = kfold_split(len(data), n_folds=request["folds"], fold=request["fold"],
                        random_state=settings.random_state)
    if verbose and rank == 0:
        print(f"data: {len(data)} regions x {len(data.outputs)} outputs, {data.length} bp; split "
              f"train {len(split['train'])} / val {len(split['val'])} / test {len(split['test'])} "
              f"(fold {request['fold']} of {request['folds']}); loaded in "
              f"{time.perf_counter() - t_load:.1f} s", flush=True)
    model = build_untrained(variant, motifs=motif_set, n_outputs=len(data.outputs), length=data.length,
                            era=request["era"], attention_softmax=request["attention_softmax"],
                            random_state=settings.random_state)
    if verbose and rank == 0:
        total = sum(p.numel() for p in model.parameters())
        print(f"model: {variant} ({total:,} parameters) on {resolve_device(settings.device)}", flush=True)
    tr, va, te = (data.subset(split[k]) for k in ("train", "val", "test"))
    if rank == 0 and not resume:
        # written once the inputs proved readable: a failed start leaves the folder empty
        write_json(out / REQUEST, request)
    result = fit(model, (tr.indices, tr.targets), (va.indices, va.targets), settings,
                 checkpoint_dir=out, resume=resume, callback=callback, verbose=verbose,
                 distributed=distributed)
    if rank != 0:
        return out
    model.cpu()
    metrics = {name: metrics_dict(evaluate_arrays(model, part.indices, part.targets,
                                                  batch_size=max(settings.batch_size, 256)),
                                  data.outputs)
               for name, part in (("val", va), ("test", te))}
    if verbose:
        print("test R2: " + ", ".join(f"{o} {r:.3f}" for o, r in zip(data.outputs, metrics["test"]["r2"]))
              + f"  (mean {metrics['test']['mean_r2']:.3f})", flush=True)
    data_meta, spec_rel = portable_data(
        {"sequences": request["sequences"], "bed": request["bed"], "genome": request["genome"],
         "targets": request["targets"]}, request["transform"], out)
    meta = {
        "data": {**data_meta, "n_regions": len(data), "length": data.length, "id_match": data.report},
        "transform": {"spec": request["transform"], "spec_rel": spec_rel, **data.transform},
        "split": {"kind": "kfold", "n_folds": request["folds"], "fold": request["fold"],
                  "random_state": settings.random_state,
                  **{f"n_{k}": int(len(v)) for k, v in split.items()}},
        "training": {**settings.to_dict(), "variant": variant, **{k: result[k] for k in
                     ("best", "seconds", "device", "precision", "world_size")},
                     "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")},
        "history": result["history"],
        "metrics": metrics,
    }
    if request.get("group"):
        meta["group"] = request["group"]
    save_run(out, model, outputs=data.outputs, motifs=motif_set, meta=meta, split=split,
             half=request.get("half", False))
    shutil.rmtree(out / CHECKPOINT, ignore_errors=True)
    return out


def cv_runs(out, *, folds=10, verbose=True, callback=None, force=False, **kwargs):
    """Train one run per fold into ``out/fold_<i>`` (same options for all), grouped for the
    inclusion-ratio analysis. Folds already finished are kept (re-running continues the set)."""
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise TisfmError(f"{out} exists and is a file")
    out.mkdir(parents=True, exist_ok=True)
    runs = []
    for fold in range(folds):
        run_dir = out / f"fold_{fold}"
        if is_run(run_dir) and not force:
            if verbose:
                print(f"fold {fold}: already trained, kept", flush=True)
            runs.append(run_dir)
            continue
        if verbose:
            print(f"=== fold {fold + 1}/{folds} ===", flush=True)
        resume = (run_dir / CHECKPOINT / "state.json").exists() and (run_dir / REQUEST).exists() and not force
        if callback is not None:
            callback({"event": "fold", "fold": fold + 1, "folds": folds})
        runs.append(train_run(run_dir, folds=folds, fold=fold, group=out.name, resume=resume,
                              force=True, verbose=verbose, callback=callback, **kwargs))
    return runs


def evaluate_run(run, *, targets, sequences=None, bed=None, genome=None, batch_size=512, device="cpu"):
    """Metrics of a run on new data, transformed the way the run's training data was."""
    run = load_run(run, device=device) if not hasattr(run, "model") else run
    spec = resolve_run_data(run)["transform"]
    data = load_dataset(sequences, targets, bed=bed, genome=genome, length=_run_length(run),
                        transform=spec, outputs=run.outputs)
    return metrics_dict(evaluate_arrays(run.model, data.indices, data.targets, batch_size=batch_size),
                        run.outputs) | {"id_match": data.report}


def _run_length(run):
    return int(run.config["model"]["config"]["length"])


def predict_table(run, *, sequences=None, bed=None, genome=None, batch_size=512, device="cpu"):
    """Predictions as a DataFrame: index = sequence ids (input order), columns = outputs."""
    run = load_run(run, device=device) if not hasattr(run, "model") else run
    seqs = load_sequences(sequences, bed=bed, genome=genome, length=_run_length(run))
    pred = predict_batches(run.model, seqs.indices, batch_size=batch_size)
    return pd.DataFrame(pred, index=pd.Index(seqs.ids, name="id"), columns=run.outputs)


def write_table(df, path, *, index=True):
    """Atomically write a TSV."""
    write_text(path, df.to_csv(sep="\t", index=index, float_format="%.6g"))


def final_layer_table(run):
    """Final-layer weights: rows = motifs in motif-file order (padding dropped), columns = outputs."""
    if run.kind != "tisfm":
        raise TisfmError(f"{run.name} is an AI-TAC baseline: it has no motif final layer")
    w = run.model.final_weights.cpu().numpy().T
    return pd.DataFrame(w, index=pd.Index(run.motif_ids, name="motif"), columns=run.outputs)


def kernel_motifs(run):
    """The model's (possibly fine-tuned) forward-strand kernels as a MotifSet of probabilities.

    Each kernel is cut to its motif's slot in the kernel buffer, negative values are clipped to 0
    and every row renormalised, so the result is a valid PWM file (fine-tuning can leave values
    outside [0, 1]).
    """
    if run.kind != "tisfm":
        raise TisfmError(f"{run.name} is an AI-TAC baseline: it has no motif kernels")
    if run.motifs is None:
        raise TisfmError(f"{run.name} has no {MOTIFS}; the motif widths are unknown")
    cfg = run.model.config
    k = run.model.kernels.detach().cpu().numpy()
    mats = []
    for i, w in enumerate(run.motifs.widths):
        s = 0 if cfg.era == "paper" else (cfg.kernel_width - int(w)) // 2
        m = np.clip(k[2 * i, :, s:s + int(w)].T.astype(np.float64), 0, None)
        sums = m.sum(axis=1, keepdims=True)
        m = np.where(sums > 0, m / np.where(sums > 0, sums, 1), 0.25)
        mats.append(m)
    return MotifSet(ids=tuple(run.motifs.ids), names=tuple(run.motifs.names), matrices=tuple(mats),
                    source=f"kernels of run {run.name}")


def import_reference_run(state_dict, *, motifs, variant, era, outputs, out, length=300, force=False,
                         attention_softmax="query"):
    """Import a reference tiSFM state dict as a run directory."""
    from .reference import import_reference

    motif_set = motifs if isinstance(motifs, MotifSet) else load_motifs(motifs)
    model = import_reference(state_dict, motif_set, variant=variant, era=era, outputs=outputs,
                             length=length, attention_softmax=attention_softmax)
    out = prepare_output_folder(out, force=force)
    outputs = outputs or [f"output_{i}" for i in range(model.config.n_outputs)]
    meta = {"imported": {"state_dict": _abs(state_dict), "variant": variant, "era": era},
            "training": {"variant": variant, "device": "imported"}}
    save_run(out, model, outputs=outputs, motifs=motif_set, meta=meta)
    return out


def summary(run):
    """Plain-data summary of a run: variant, motifs, outputs, parameter counts, metrics."""
    run = load_run(run) if not hasattr(run, "model") else run
    model = run.model
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    info = {"run": str(run.path), "kind": run.kind,
            "variant": model.config.variant if run.kind == "tisfm" else "aitac",
            "outputs": run.outputs, "parameters_total": total, "parameters_trainable": trainable,
            "length": _run_length(run)}
    if run.kind == "tisfm":
        cfg = model.config
        info.update({"motifs": len(run.motif_ids), "motif_source": run.config["motifs"].get("source"),
                     "motif_fingerprint": run.config["motifs"].get("fingerprint"), "era": cfg.era,
                     "attention": cfg.attention, "interaction": cfg.interaction, "pooling": cfg.pooling,
                     "attention_softmax": cfg.attention_softmax})
    training = run.config.get("training", {})
    info["device"] = training.get("device")
    info["seconds"] = training.get("seconds")
    info["metrics"] = run.config.get("metrics", {})
    return info
