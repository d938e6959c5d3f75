"""End-to-end tasks behind the CLI and the app's jobs: train, evaluate, predict, export, import.

Each function takes paths and options, does one task and returns plain data; the CLI only parses
arguments and prints.
"""

from __future__ import annotations

import shutil
import time
from contextlib import nullcontext
from dataclasses import replace
from pathlib import Path

import numpy as np
import pandas as pd

from .analysis.final_layer import FEATURE_SD_SAMPLES, compute_feature_sd
from .atomic import check_output_folder, read_json, write_json, write_text
from .claims import claim_output
from .dataset import load_dataset, load_sequences
from .devices import resolve_device
from .errors import TisfmError
from .linear import fit_linear
from .metrics import format_metric
from .model import TISFM
from .motifs import MotifSet, kernel_slots, load_motifs
from .runs import (
    CONFIG,
    MOTIFS,
    SPLIT,
    WEIGHTS,
    data_record,
    is_run,
    load_run,
    resolve_run_data,
    save_run,
)
from .specs import ModelSpec, TrainTask, store_path
from .splits import kfold_split
from .training import CHECKPOINT, evaluate_arrays, fit, predict_batches

REQUEST = "request.json"
#: Files a run directory may hold: what --force replaces, and all an uploaded run zip may contain.
RUN_FILES = (WEIGHTS, CONFIG, MOTIFS, SPLIT, REQUEST, "train.log")


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
    """A fresh model of a variant (:meth:`ModelSpec.build` for code that has no spec)."""
    spec = ModelSpec(variant=variant, motifs=None, era=era, attention_softmax=attention_softmax)
    return spec.build(motifs=motifs, n_outputs=n_outputs, length=length, random_state=random_state)


def check_training_inputs(task: TrainTask) -> dict:
    """Read, match and size-check everything a training task would use, without training.

    The app calls this before it starts a background job, so that a bad file is refused at once,
    with the reason, instead of as a failed job minutes later.

    Parameters
    ----------
    task : TrainTask

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
    resolve_device(task.training.device)
    motif_set = task.model.load_motifs()
    data = task.data.load()
    kfold_split(len(data), n_folds=task.data.folds)
    # building the model checks the shapes (e.g. motifs wider than the sequences)
    task.model.build(motifs=motif_set, n_outputs=len(data.outputs), length=data.length)
    return {"n_regions": len(data), "n_outputs": len(data.outputs), "length": data.length,
            "n_motifs": 0 if motif_set is None else len(motif_set),
            "id_match": data.report["summary"]}


def train_run(out: str | Path, task: TrainTask, *, force: bool = False, verbose: bool = True,
              callback=None, distributed: tuple | None = None, motif_set: MotifSet | None = None) -> Path:
    """Train one model and write its run directory.

    Parameters
    ----------
    out : str or Path
        Run directory to create (refused if it exists and is not empty, unless ``force``).
    task : TrainTask
        Data, model and training settings; recorded in the run as ``request.json``.
    force : bool, default False
        Replace the run files of an existing run folder (only once the inputs proved readable).
    verbose : bool, default True
        Print the data summary and one line per epoch.
    callback : callable, optional
        Progress events (see :func:`tisfm_core.training.fit`).
    distributed : tuple (rank, world_size), optional
        Under torchrun; only rank 0 writes files.
    motif_set : MotifSet, optional
        The motifs already read (instead of reading ``task.model.motifs``).

    Returns
    -------
    pathlib.Path
        The run directory.
    """
    out = Path(out)
    rank = distributed[0] if distributed else 0
    # rank 0 writes the folder, so it alone holds the claim
    with claim_output(out, kind="train", force=force) if rank == 0 else nullcontext():
        if rank == 0:
            check_output_folder(out, force=force, hint="overwrite it or --resume to continue an "
                                                       "interrupted training")
        return _train(out, task, resume=False, force=force, verbose=verbose, callback=callback,
                      distributed=distributed, motif_set=motif_set)


def resume_run(out: str | Path, *, force: bool = False, verbose: bool = True, callback=None,
               distributed: tuple | None = None) -> Path:
    """Continue the interrupted training in ``out`` from its last completed epoch (the task is
    read from the run's ``request.json``); gives the same result as an uninterrupted run.

    The claim of the process that died is taken over (``force`` also takes over one that cannot
    be checked from this host); the checkpoint is kept if this one fails too."""
    from .specs import FINETUNE_FORMAT

    out = Path(out)
    rank = distributed[0] if distributed else 0
    request = read_json(out / REQUEST, what="training request")
    if request.get("format") == FINETUNE_FORMAT:
        raise TisfmError(f"{out} holds an interrupted fine-tune: continue it with "
                         f"tisfm finetune --resume {out}")
    with (claim_output(out, kind="train", force=force, stale_ok=True, keep_unfinished=True)
          if rank == 0 else nullcontext()):
        task = TrainTask.from_dict(request, base=out)
        return _train(out, task, resume=True, force=False, verbose=verbose, callback=callback,
                      distributed=distributed)


def _phase(callback, phase, message):
    if callback is not None:
        callback({"event": "phase", "phase": phase, "message": message})


def load_split(data_spec, settings, *, length=None, verbose=False):
    """Read a task's data and deal its k-fold split (seeded by the training ``random_state``).

    Returns
    -------
    data : Dataset
    split : dict of str to numpy.ndarray
        ``train``, ``val`` and ``test`` row indices.
    """
    t_load = time.perf_counter()
    data = data_spec.load(length=length, verbose=verbose)
    split = kfold_split(len(data), n_folds=data_spec.folds, fold=data_spec.fold,
                        random_state=settings.random_state)
    if verbose:
        print(f"data: {len(data)} regions x {len(data.outputs)} outputs, {data.length} bp; split "
              f"train {len(split['train'])} / val {len(split['val'])} / test {len(split['test'])} "
              f"(fold {data_spec.fold} of {data_spec.folds}); loaded in "
              f"{time.perf_counter() - t_load:.1f} s", flush=True)
    return data, split


def _train(out, task, *, resume, force, verbose, callback, distributed, motif_set=None):
    rank = distributed[0] if distributed else 0
    settings = task.training
    variant = task.model.variant
    resolve_device(settings.device)   # an absent GPU is refused before any file is replaced
    _phase(callback, "preparing", "reading the motifs and the data")
    if motif_set is None:
        motif_set = task.model.load_motifs()
    data, split = load_split(task.data, settings, verbose=verbose and rank == 0)
    model = task.model.build(motifs=motif_set, n_outputs=len(data.outputs), length=data.length,
                             random_state=settings.random_state)
    if verbose and rank == 0:
        total = sum(p.numel() for p in model.parameters())
        print(f"model: {variant} ({total:,} parameters) on {resolve_device(settings.device)}", flush=True)
    tr, va = (data.subset(split[k]) for k in ("train", "val"))
    if rank == 0 and not resume:
        # the old run's files go only now that the new inputs proved readable
        prepare_output_folder(out, force=force)
        write_json(out / REQUEST, task.to_dict(base=out))
    if variant == "linear":
        result = _fit_linear_run(model, tr, va, settings, verbose=verbose and rank == 0)
    else:
        result = fit(model, (tr.indices, tr.targets), (va.indices, va.targets), settings,
                     checkpoint_dir=out, resume=resume, callback=callback, verbose=verbose,
                     distributed=distributed)
    if rank != 0:
        return out
    return save_trained(out, model, data=data, data_spec=task.data, split=split, settings=settings,
                        result=result, variant=variant, motifs=motif_set, half=task.half,
                        extra={"group": task.group} if task.group else None, verbose=verbose,
                        callback=callback)


def save_trained(out, model, *, data, data_spec, split, settings, result, variant, motifs,
                 half=False, extra=None, verbose=True, callback=None):
    """The last step of a training or fine-tune: evaluate the best weights on the validation and
    test splits, write the run (data, transform, split, settings, history, metrics and
    ``extra`` fields in config.json) and remove the checkpoint.

    Parameters
    ----------
    out : Path
    model : TISFM or AITAC
        With its best weights (as :func:`~tisfm_core.training.fit` leaves it).
    data : Dataset
    data_spec : DataSpec
    split : dict of arrays
    settings : TrainSettings
    result : dict
        What :func:`~tisfm_core.training.fit` returned.
    variant : str
    motifs : MotifSet or None
    half : bool, default False
    extra : dict, optional
        More config.json fields.

    Returns
    -------
    pathlib.Path
        ``out``.
    """
    _phase(callback, "evaluating", "evaluating the best weights on the test split")
    model.cpu()
    parts = {name: data.subset(split[name]) for name in ("val", "test")}
    metrics = {name: metrics_dict(evaluate_arrays(model, part.indices, part.targets,
                                                  batch_size=max(settings.batch_size, 256)),
                                  data.outputs)
               for name, part in parts.items()}
    if verbose:
        print("test R2: " + ", ".join(f"{o} {format_metric(r)}" for o, r in zip(data.outputs, metrics["test"]["r2"]))
              + f"  (mean {format_metric(metrics['test']['mean_r2'])})", flush=True)
    meta = {
        "data": {**data_record(data_spec, out), "n_regions": len(data), "length": data.length,
                 "id_match": data.report},
        "transform": {"spec": data_spec.transform, **data.transform},
        "split": {"kind": "kfold", "n_folds": data_spec.folds, "fold": data_spec.fold,
                  "random_state": settings.random_state,
                  **{f"n_{k}": int(len(v)) for k, v in split.items()}},
        "training": {**settings.to_dict(), "variant": variant, **{k: result[k] for k in
                     ("best", "seconds", "device", "precision", "world_size")},
                     **({"ridge": result["ridge"]} if "ridge" in result else {}),
                     "finished": time.strftime("%Y-%m-%dT%H:%M:%S%z")},
        "history": result["history"],
        "metrics": metrics,
        **(extra or {}),
    }
    if isinstance(model, TISFM):   # for the final layer per standard deviation of each motif
        sd = compute_feature_sd(model, data.subset(split["train"]).indices, random_state=settings.random_state)
        meta["feature_sd"] = {"n_samples": int(min(FEATURE_SD_SAMPLES, len(split["train"]))),
                              "values": [float(v) for v in sd]}
    save_run(out, model, outputs=data.outputs, motifs=motifs, meta=meta, split=split, half=half)
    shutil.rmtree(out / CHECKPOINT, ignore_errors=True)
    return out


def _fit_linear_run(model, train, val, settings, *, verbose):
    """Closed-form fit of the linear baseline, reported like :func:`fit`'s result (no epochs)."""
    device = resolve_device(settings.device)
    ridge = fit_linear(model, (train.indices, train.targets), (val.indices, val.targets),
                       batch_size=min(settings.batch_size, 64), device=device, verbose=verbose)
    return {"history": [], "best": {"stage": "ridge", "epoch": 0, **ridge["best"]},
            "seconds": ridge["seconds"], "device": str(device), "precision": "fp32", "world_size": 1,
            "ridge": {k: ridge[k] for k in ("alphas", "val_mse", "train_mse", "feature_seconds")}}


def cv_runs(out: str | Path, task: TrainTask, *, verbose: bool = True, callback=None,
            force: bool = False) -> list[Path]:
    """Train one run per fold into ``out/fold_<i>`` (the task's other settings for all), grouped
    for the inclusion-ratio analysis. Folds already finished are kept (re-running continues)."""
    out = Path(out)
    with claim_output(out, kind="cv", force=force):
        return _cv_runs(out, task, verbose=verbose, callback=callback, force=force)


def _cv_runs(out, task, *, verbose, callback, force):
    if out.exists() and not out.is_dir():
        raise TisfmError(f"{out} exists and is a file")
    folds = task.data.folds
    if force:
        check_training_inputs(task)   # --force replaces nothing before the new inputs are read
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
        if callback is not None:
            callback({"event": "fold", "fold": fold + 1, "folds": folds})
        if (run_dir / CHECKPOINT / "state.json").exists() and (run_dir / REQUEST).exists() and not force:
            runs.append(resume_run(run_dir, verbose=verbose, callback=callback))
            continue
        fold_task = task.replace(data=replace(task.data, fold=fold), group=out.name)
        runs.append(train_run(run_dir, fold_task, force=True, verbose=verbose, callback=callback))
    return runs


def evaluate_run(run, *, targets, sequences=None, bed=None, genome=None, batch_size: int = 512,
                 device: str | None = None) -> dict:
    """Metrics of a run on new data, transformed the way the run's training data was."""
    run = load_run(run, device=device) if not hasattr(run, "model") else run
    spec = resolve_run_data(run)["transform"]
    data = load_dataset(sequences, targets, bed=bed, genome=genome, length=_run_length(run),
                        transform=spec, outputs=run.outputs)
    return metrics_dict(evaluate_arrays(run.model, data.indices, data.targets, batch_size=batch_size),
                        run.outputs) | {"id_match": data.report}


def _run_length(run):
    return int(run.config["model"]["config"]["length"])


def predict_table(run, *, sequences=None, bed=None, genome=None, batch_size: int = 512,
                  device: str | None = None) -> pd.DataFrame:
    """Predictions as a DataFrame: index = sequence ids (input order), columns = outputs."""
    run = load_run(run, device=device) if not hasattr(run, "model") else run
    seqs = load_sequences(sequences, bed=bed, genome=genome, length=_run_length(run))
    pred = predict_batches(run.model, seqs.indices, batch_size=batch_size)
    return pd.DataFrame(pred, index=pd.Index(seqs.ids, name="id"), columns=run.outputs)


def write_table(df, path, *, index=True):
    """Atomically write a TSV."""
    write_text(path, df.to_csv(sep="\t", index=index, float_format="%.6g"))


def kernel_motifs(run) -> MotifSet:
    """The model's (possibly fine-tuned) forward-strand kernels as a MotifSet of probabilities.

    Each kernel is cut to its motif's slot in the kernel buffer, negative values are clipped to 0
    and every row renormalised, so the result is a valid PWM file (fine-tuning can leave values
    outside [0, 1]).
    """
    if run.kind != "tisfm":
        what = "a linear baseline (its log-odds kernels are never trained)" if run.kind == "linear" \
            else "an AI-TAC baseline"
        raise TisfmError(f"{run.name} is {what}: it has no tiSFM motif kernels")
    if run.motifs is None:
        raise TisfmError(f"{run.name} has no {MOTIFS}; the motif widths are unknown")
    cfg = run.model.config
    k = run.model.kernels.detach().cpu().numpy()
    mats = []
    starts = kernel_slots(run.motifs.widths, cfg.kernel_width, cfg.era)
    for i, w in enumerate(run.motifs.widths):
        s = int(starts[i])
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
    meta = {"imported": {"state_dict": store_path(state_dict, out), "variant": variant, "era": era},
            "training": {"variant": variant, "device": "imported"}}
    save_run(out, model, outputs=outputs, motifs=motif_set, meta=meta)
    return out


def summary(run) -> dict:
    """Plain-data summary of a run: variant, motifs, outputs, parameter counts, metrics."""
    run = load_run(run) if not hasattr(run, "model") else run
    model = run.model
    total = sum(p.numel() for p in model.parameters())
    trainable = sum(p.numel() for p in model.parameters() if p.requires_grad)
    info = {"run": str(run.path), "kind": run.kind,
            "variant": model.config.variant if run.has_motif_layer else "aitac",
            "outputs": run.outputs, "parameters_total": total, "parameters_trainable": trainable,
            "length": _run_length(run)}
    if run.kind == "tisfm":
        cfg = model.config
        info.update({"motifs": len(run.motif_ids), "motif_source": run.config["motifs"].get("source"),
                     "motif_fingerprint": run.config["motifs"].get("fingerprint"), "era": cfg.era,
                     "attention": cfg.attention, "interaction": cfg.interaction, "pooling": cfg.pooling,
                     "attention_softmax": cfg.attention_softmax})
    if run.kind == "linear":
        cfg = model.config
        info.update({"motifs": len(run.motif_ids), "motif_source": run.config["motifs"].get("source"),
                     "motif_fingerprint": run.config["motifs"].get("fingerprint"),
                     "ridge": cfg.ridge, "count_pvalue": cfg.count_pvalue})
    training = run.config.get("training", {})
    info["device"] = training.get("device")
    info["seconds"] = training.get("seconds")
    info["metrics"] = run.config.get("metrics", {})
    record = run.config.get("finetune")
    if isinstance(record, dict):
        info["finetune"] = {"train": record.get("train"), "outputs": record.get("outputs"),
                            "lineage": [f"{e.get('name')} ({e.get('made')})"
                                        for e in run.config.get("lineage") or [] if isinstance(e, dict)]}
    return info
