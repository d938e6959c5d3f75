"""Fine-tuning: continue any run on new data or new outputs, never touching the run itself.

The parent is any run directory: a tiSFM of every variant, an imported reference model
(``tisfm import-reference``) or an AI-TAC baseline. The child starts from the parent's weights
and trains what :attr:`FinetuneTask.train <tisfm_core.specs.FinetuneTask>` names for one stage
of ``epochs`` epochs (checkpoints every epoch, ``--resume`` gives the uninterrupted result).

Outputs are matched by name: a target column the parent has keeps its final-layer row, a new
column gets a row fitted by ridge regression (:func:`tisfm_core.training.ridge_fit`) on the
parent's features of the training split, and parent outputs absent from the targets are dropped.

The child's config.json adds two fields to those of a trained run::

    "finetune": {"parent": ANCESTOR, "train": "final", "parameters": [names],
                 "n_parameters": int, "outputs": {"kept": [...], "new": [...], "dropped": [...]}}
    "lineage":  [ANCESTOR, ...]      every ancestor, the oldest first and the parent last

where an ANCESTOR is ``{"path": stored path, "name", "created", "weights_sha256", "variant",
"made", "n_outputs"}`` ("made": "trained", "imported" or "fine-tuned (train X)").
"""

from __future__ import annotations

import hashlib
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch

from .aitac import AITAC
from .atomic import check_output_folder, read_json, write_json
from .claims import claim_output
from .devices import resolve_device
from .errors import TisfmError
from .model import TISFMConfig
from .motifs import load_motifs
from .runs import MOTIFS, WEIGHTS, build_model, load_run, model_spec
from .sequences import one_hot_torch
from .specs import FINETUNE_FORMAT, TRAIN_CHOICES, FinetuneTask, store_path, stored_path
from .training import Stage, evaluation, fit, ridge_fit, sample_rows
from .workflows import REQUEST, _phase, load_split, prepare_output_folder, save_trained

#: Sequences the ridge fit of new outputs looks at (as the data-driven start of a training).
RIDGE_SAMPLES = 2048


# -- lineage ------------------------------------------------------------------------------------

def weights_fingerprint(run_dir):
    """``sha256:<hex>`` of a run's model.safetensors (the identity of its weights)."""
    path = Path(run_dir) / WEIGHTS
    digest = hashlib.sha256()
    try:
        with open(path, "rb") as handle:
            for chunk in iter(lambda: handle.read(1 << 20), b""):
                digest.update(chunk)
    except OSError as exc:
        raise TisfmError(f"cannot read {path}: {exc.strerror or exc}") from None
    return f"sha256:{digest.hexdigest()}"


def _variant(config):
    model = config["model"]
    return "aitac" if model["kind"] == "aitac" else TISFMConfig.from_dict(model["config"]).variant


def how_made(config):
    """How the run with this config.json came about: "trained", "imported" or "fine-tuned
    (train CHOICE)"."""
    record = config.get("finetune")
    if isinstance(record, dict):
        return f"fine-tuned (train {record.get('train')})"
    return "imported" if config.get("imported") else "trained"


def ancestor_record(run_dir, config, base, *, fingerprint=None):
    """What a child records about one ancestor (its path stored relative to ``base``)."""
    return {"path": store_path(run_dir, base), "name": Path(run_dir).name,
            "created": config.get("created"),
            "weights_sha256": fingerprint or weights_fingerprint(run_dir),
            "variant": _variant(config), "made": how_made(config),
            "n_outputs": len(config["outputs"])}


def _ancestors(run_dir, config, base):
    """The ``lineage`` entries of a run's config.json, their paths re-stored relative to ``base``."""
    chain = []
    for entry in config.get("lineage") or []:
        if isinstance(entry, dict):
            here = stored_path(entry.get("path"), run_dir)
            chain.append({**entry, "path": store_path(here, base) if here else None})
    return chain


def parent_path(run):
    """The parent run folder a fine-tuned run records (as it resolves now), or None.

    Parameters
    ----------
    run : Run, or str or Path of a run directory
    """
    from .runs import read_run_config

    root, config = (Path(run), read_run_config(run)) if isinstance(run, (str, Path)) else \
        (Path(run.path), run.config)
    record = config.get("finetune")
    if not isinstance(record, dict) or not isinstance(record.get("parent"), dict):
        return None
    path = stored_path(record["parent"].get("path"), root)
    return Path(path) if path else None


def load_parent_of(run):
    """The loaded parent of a fine-tuned run, checked to hold the weights the child started from.

    Raises
    ------
    TisfmError
        When the run records no parent, the parent is gone, or its weights changed since.
    """
    from .analysis.final_layer import as_run

    run = as_run(run)
    path = parent_path(run)
    if path is None:
        raise TisfmError(f"run {run.name} is not a fine-tune: it records no parent")
    if not (path / WEIGHTS).is_file():
        raise TisfmError(f"the parent of {run.name} ({path}) is no longer there")
    want = run.config["finetune"]["parent"].get("weights_sha256")
    if want and weights_fingerprint(path) != want:
        raise TisfmError(f"the parent of {run.name} ({path}) has other weights than the ones it was "
                         "fine-tuned from (it was retrained or replaced)")
    return as_run(path)


def lineage(run):
    """The chain of a run, the oldest ancestor first and the run itself last.

    Parameters
    ----------
    run : Run, or str or Path of a run directory

    Returns
    -------
    list of dict
        ``name``, ``path`` (as it resolves now), ``made`` (how it came about, e.g. "imported"
        or "fine-tuned (train all)"), ``variant``, ``n_outputs``, ``present`` (the folder
        still holds weights) and ``unchanged`` (its weights are the recorded ones; None for
        the run itself or an ancestor that is gone).
    """
    from .runs import read_run_config

    root, config = (Path(run), read_run_config(run)) if isinstance(run, (str, Path)) else \
        (Path(run.path), run.config)
    rows = []
    for entry in config.get("lineage") or []:
        if not isinstance(entry, dict):
            continue
        path = stored_path(entry.get("path"), root)
        present = bool(path) and (Path(path) / WEIGHTS).is_file()
        rows.append({"name": str(entry.get("name", "?")), "path": path, "made": entry.get("made", "?"),
                     "variant": entry.get("variant"), "n_outputs": entry.get("n_outputs"),
                     "present": present,
                     "unchanged": weights_fingerprint(path) == entry.get("weights_sha256")
                     if present else None})
    rows.append({"name": root.name, "path": str(root), "made": how_made(config),
                 "variant": _variant(config), "n_outputs": len(config["outputs"]), "present": True,
                 "unchanged": None})
    return rows


def recorded_data(run_dir):
    """The training data a run records, to fine-tune it on the same data and split.

    Returns
    -------
    tuple (DataSpec, int) or None
        The data (paths as they resolve now, the transform, the split's folds and fold) and
        the split's seed (the ``random_state`` that deals the same folds); None for a run
        that records no data (an imported model).
    """
    from .runs import read_run_config, resolve_run_data
    from .specs import DataSpec

    config = read_run_config(run_dir)
    data = resolve_run_data(run_dir, config, allowed_only=False)   # callers check the roots
    if not data["targets"] or not (data["sequences"] or data["bed"]):
        return None
    split = config.get("split") if isinstance(config.get("split"), dict) else {}
    spec = DataSpec(sequences=data["sequences"], targets=data["targets"], bed=data["bed"],
                    genome=data["genome"], transform=data["transform"],
                    folds=int(split.get("n_folds", 10)), fold=int(split.get("fold", 0)))
    return spec, int(split.get("random_state", 0))


# -- what trains --------------------------------------------------------------------------------

def _head(model):
    """Name of the output layer whose rows belong to the outputs."""
    return "fc3" if isinstance(model, AITAC) else "final"


def trainable_parameters(model, train):
    """Names of the parameters a ``train`` choice trains (see
    :class:`~tisfm_core.specs.FinetuneTask`), in the model's order.

    Raises
    ------
    TisfmError
        For a choice the model has no parameters for (AI-TAC has neither PWM kernels nor motif
        calibration).
    """
    if train not in TRAIN_CHOICES:
        raise TisfmError(f"train must be one of {', '.join(TRAIN_CHOICES)}, got {train!r}")
    names = [name for name, _ in model.named_parameters()]
    if isinstance(model, AITAC):
        if train in ("calibration", "all"):
            what = "PWM kernels to unfreeze" if train == "all" else "motif calibration (scale, bias)"
            raise TisfmError(f"--train {train}: the AI-TAC baseline has no {what}; choose final (its "
                             "output layer) or all-but-kernels (every AI-TAC parameter)")
        return [n for n in names if n.startswith("fc3.")] if train == "final" else names
    groups = {"final": {"final.weight", "final.bias"},
              "calibration": {"final.weight", "final.bias", "scale", "bias"}}
    if train in groups:
        return [n for n in names if n in groups[train]]
    return [n for n in names if n != "kernels"] if train == "all-but-kernels" else names


# -- the child model ----------------------------------------------------------------------------

def output_report(parent_outputs, outputs):
    """Which outputs a child keeps from its parent, which are new, and which it drops.

    Returns
    -------
    dict
        ``kept`` and ``new`` in the child's order, ``dropped`` in the parent's.
    """
    have, want = set(parent_outputs), set(outputs)
    return {"kept": [o for o in outputs if o in have], "new": [o for o in outputs if o not in have],
            "dropped": [o for o in parent_outputs if o not in want]}


@torch.no_grad()
def model_features(model, indices, *, batch_size=256, device=None):
    """Features a model feeds its output layer (tiSFM: gated pooled motif activations;
    AI-TAC: its last hidden layer), in eval mode.

    Parameters
    ----------
    model : TISFM or AITAC
    indices : np.ndarray, uint8, shape (N, L)
    batch_size : int, default 256
    device : str, optional
        None uses CUDA when present.

    Returns
    -------
    torch.Tensor, float64, shape (N, M), on the CPU
    """
    out = []
    idx = torch.as_tensor(np.ascontiguousarray(indices))
    with evaluation(model, device) as dev:
        for start in range(0, idx.shape[0], batch_size):
            out.append(model.features(one_hot_torch(idx[start:start + batch_size].to(dev))).double().cpu())
    return torch.cat(out)


def child_model(parent_run, outputs, train_indices=None, train_targets=None, *, random_state=0,
                device=None):
    """The starting model of a fine-tune: the parent's weights with one output row per output.

    Parameters
    ----------
    parent_run : Run
    outputs : list of str
        The child's outputs (matched to the parent's by name).
    train_indices : np.ndarray, uint8, shape (N, L), optional
    train_targets : np.ndarray, float32, shape (N, len(outputs)), optional
        The training split; needed when there are new outputs, whose rows are a ridge fit on
        the parent's features of up to :data:`RIDGE_SAMPLES` seeded training sequences.
    random_state : int, default 0
        Seeds the choice of those sequences.
    device : str, optional
        Where the features are computed (None: CUDA when present).

    Returns
    -------
    model : TISFM or AITAC
        Every parameter equal to the parent's except the output layer, whose kept rows are the
        parent's and whose new rows are the ridge fit.
    report : dict
        :func:`output_report`.
    """
    parent = parent_run.model
    report = output_report(parent_run.outputs, outputs)
    spec = model_spec(parent)
    spec = {**spec, "config": {**spec["config"], "n_outputs": len(outputs)}}
    with torch.random.fork_rng(devices=[]):   # building initialises weights that are replaced
        child = build_model(spec)
    head = _head(parent)
    state = {k: v.detach().clone() for k, v in parent.state_dict().items()}
    w_old, b_old = state[f"{head}.weight"].float(), state[f"{head}.bias"].float()
    weight = torch.zeros(len(outputs), w_old.shape[1])
    bias = torch.zeros(len(outputs))
    row = {o: i for i, o in enumerate(parent_run.outputs)}
    for i, name in enumerate(outputs):
        if name in row:
            weight[i], bias[i] = w_old[row[name]], b_old[row[name]]
    if report["new"]:
        if train_indices is None or train_targets is None:
            raise TisfmError("new outputs need the training sequences and targets for their ridge fit")
        pick = sample_rows(len(train_indices), RIDGE_SAMPLES, random_state)
        feats = model_features(parent, np.asarray(train_indices)[pick], device=device)
        cols = [outputs.index(o) for o in report["new"]]
        y = torch.as_tensor(np.asarray(train_targets)[pick][:, cols], dtype=torch.float64)
        w_new, b_new = ridge_fit(feats, y)
        weight[cols], bias[cols] = w_new.float(), b_new.float()
    state[f"{head}.weight"], state[f"{head}.bias"] = weight, bias
    child.load_state_dict(state)
    return child.eval(), report


# -- the fine-tune ------------------------------------------------------------------------------

def _load_parent(parent, motifs):
    """The parent run and the motif set its child records (None for AI-TAC)."""
    parent = Path(parent)
    if parent.exists() and not parent.is_dir():
        raise TisfmError(f"the parent {parent} is a file, not a run folder")
    if not parent.is_dir():
        raise TisfmError(f"the parent run {parent} does not exist")
    run = load_run(parent)
    if run.kind == "linear":   # fitted in closed form: there is no gradient training to continue
        raise TisfmError(f"{run.name} is a linear baseline (ridge fitted in closed form): it cannot be "
                         "fine-tuned; train a new one with tisfm train --variant linear")
    if run.kind == "aitac":
        if motifs:
            raise TisfmError(f"{run.name} is an AI-TAC baseline: it uses no motifs; drop --motifs")
        return run, None
    if run.motifs is not None:
        if motifs:
            raise TisfmError(f"run {run.name} has its own motifs ({MOTIFS}): drop --motifs")
        return run, run.motifs
    if not motifs:
        raise TisfmError(f"run {run.name} has no {MOTIFS}: give the motif file it was built from "
                         "(--motifs)")
    motif_set = load_motifs(motifs)
    if list(motif_set.ids) != run.motif_ids:
        raise TisfmError(f"the motif file {motifs} does not list the {len(run.motif_ids)} motifs of "
                         f"run {run.name} in its order")
    want = run.config["motifs"].get("fingerprint")
    if want and motif_set.fingerprint != want:
        raise TisfmError(f"the motif file {motifs} has other matrices than the ones run {run.name} "
                         "was built with (its fingerprint differs)")
    return run, motif_set


def _check_out(parent, out):
    parent, out = Path(parent).resolve(), Path(out).resolve()
    if out == parent or parent in out.parents:
        raise TisfmError(f"the child {out} would be written into its parent {parent}; a fine-tune "
                         "never writes into the parent: choose another --out")


@dataclass
class _Prepared:
    parent: object
    motifs: object
    data: object
    split: dict
    parameters: list
    fingerprint: str


def _prepare(parent, task, *, verbose=False):
    """Read and check everything a fine-tune uses (nothing is written)."""
    settings = task.training
    resolve_device(settings.device)
    run, motif_set = _load_parent(parent, task.motifs)
    parameters = trainable_parameters(run.model, task.train)
    if settings.penalty != "none" and settings.lam and run.kind == "aitac":
        raise TisfmError("the final-layer penalty acts on tiSFM's motif x output layer; the AI-TAC "
                         "baseline has none (use --penalty none)")
    length = int(run.config["model"]["config"]["length"])
    try:
        data, split = load_split(task.data, settings, length=length, verbose=verbose)
    except TisfmError as exc:
        raise TisfmError(f"{exc} (the data for run {run.name}, which takes {length}-bp "
                         "sequences)") from None
    return _Prepared(parent=run, motifs=motif_set, data=data, split=split, parameters=parameters,
                     fingerprint=weights_fingerprint(run.path))


def check_finetune_inputs(task, parent):
    """Read, match and check everything a fine-tune of ``parent`` would use, without training.

    The app calls this before it starts a background job, so that a fine-tune that cannot work
    (targets whose ids match no sequence, a choice the model has no parameters for, sequences
    of another length) is refused at once, with the reason.

    Parameters
    ----------
    task : FinetuneTask
    parent : str or Path
        The parent run folder.

    Returns
    -------
    dict
        ``n_regions``, ``length``, ``outputs`` (:func:`output_report`), ``n_parameters`` (how
        many train) and ``id_match`` (the id-matching summary line).

    Raises
    ------
    TisfmError
        Naming the file or setting and the problem.
    """
    prep = _prepare(parent, task)
    return {"n_regions": len(prep.data), "length": prep.data.length,
            "outputs": output_report(prep.parent.outputs, prep.data.outputs),
            "n_parameters": _count(prep.parent.model, prep.parameters, len(prep.data.outputs)),
            "id_match": prep.data.report["summary"]}


def _count(model, names, n_outputs):
    """How many values the parameters ``names`` hold in a child of ``model`` with ``n_outputs``
    outputs (the output layer has one row per output)."""
    params, head = dict(model.named_parameters()), _head(model) + "."
    return int(sum(params[n].numel() // (params[n].shape[0] if n.startswith(head) else 1)
                   * (n_outputs if n.startswith(head) else 1) for n in names))


def finetune_run(parent, out, task, *, force=False, verbose=True, callback=None):
    """Fine-tune a copy of the run ``parent`` into the new run directory ``out``.

    Parameters
    ----------
    parent : str or Path
        Any run folder; read only, never written to.
    out : str or Path
        The child's run directory (refused if it exists and is not empty, unless ``force``; never
        the parent or a folder inside it).
    task : FinetuneTask
        Data, what trains and how; recorded in the child as ``request.json``.
    force : bool, default False
        Replace the run files of an existing folder (only once the inputs proved readable).
    verbose : bool, default True
        Print the data and outputs summary and one line per epoch.
    callback : callable, optional
        Progress events (see :func:`tisfm_core.training.fit`).

    Returns
    -------
    pathlib.Path
        The child's run directory.
    """
    if not isinstance(task, FinetuneTask):
        raise TisfmError("finetune_run needs a FinetuneTask")
    out = Path(out)
    _check_out(parent, out)
    check_output_folder(out, force=force, hint="overwrite it or --resume to continue an "
                                               "interrupted fine-tune")
    with claim_output(out, kind="finetune", force=force):
        return _finetune(Path(parent), out, task, resume=False, force=force, verbose=verbose,
                         callback=callback)


def resume_finetune(out, *, verbose=True, callback=None):
    """Continue the interrupted fine-tune in ``out`` from its last completed epoch (the task and
    the parent are read from its ``request.json``); gives the uninterrupted result.

    Raises
    ------
    TisfmError
        When ``out`` holds no interrupted fine-tune, or the parent's weights changed since.
    """
    out = Path(out)
    request = read_json(out / REQUEST, what="fine-tune request")
    if request.get("format") != FINETUNE_FORMAT:
        raise TisfmError(f"{out} holds no interrupted fine-tune (continue a training with "
                         f"tisfm train --resume {out})")
    record = request.pop("parent", None)
    if not isinstance(record, dict):
        raise TisfmError(f"{out / REQUEST} names no parent run")
    task = FinetuneTask.from_dict(request, base=out)
    parent = Path(stored_path(record.get("path"), out))
    if not (parent / WEIGHTS).is_file() or weights_fingerprint(parent) != record.get("weights_sha256"):
        raise TisfmError(f"the parent run {parent} is gone or has other weights than when this "
                         "fine-tune started; start the fine-tune again")
    with claim_output(out, kind="finetune", stale_ok=True, keep_unfinished=True):
        return _finetune(parent, out, task, resume=True, force=False, verbose=verbose,
                         callback=callback)


def _finetune(parent, out, task, *, resume, force, verbose, callback):
    settings = task.training
    _phase(callback, "preparing", "reading the parent run and the data")
    prep = _prepare(parent, task, verbose=verbose)
    run, data, split = prep.parent, prep.data, prep.split
    tr, va = (data.subset(split[k]) for k in ("train", "val"))
    report = output_report(run.outputs, data.outputs)
    if report["new"]:
        _phase(callback, "refitting", f"fitting the final-layer rows of {len(report['new'])} new "
                                      "output(s) by ridge regression")
    model, _ = child_model(run, data.outputs, tr.indices, tr.targets,
                           random_state=settings.random_state, device=settings.device)
    n_train = _count(model, prep.parameters, len(data.outputs))
    if verbose:
        total = sum(p.numel() for p in model.parameters())
        print(f"parent: {run.name} ({_variant(run.config)}, {total:,} parameters); "
              f"training {task.train}: {n_train:,} parameters", flush=True)
        print(describe_outputs(report), flush=True)
    if not resume:
        # an old run's files go only now that the new inputs proved readable
        prepare_output_folder(out, force=force)
        write_json(out / REQUEST, {**task.to_dict(base=out),
                                   "parent": {"path": store_path(run.path, out),
                                              "weights_sha256": prep.fingerprint}})
    stage = Stage("finetune", settings.epochs, settings.lr, frozenset(prep.parameters))
    result = fit(model, (tr.indices, tr.targets), (va.indices, va.targets), settings,
                 checkpoint_dir=out, resume=resume, callback=callback, verbose=verbose,
                 stages=[stage])
    record = {"parent": ancestor_record(run.path, run.config, out, fingerprint=prep.fingerprint),
              "train": task.train, "parameters": prep.parameters, "n_parameters": n_train,
              "outputs": report}
    extra = {"finetune": record,
             "lineage": _ancestors(run.path, run.config, out) + [record["parent"]]}
    return save_trained(out, model, data=data, data_spec=task.data, split=split, settings=settings,
                        result=result, variant=_variant(run.config), motifs=prep.motifs,
                        half=task.half, extra=extra, verbose=verbose, callback=callback)


def describe_outputs(report, limit=8):
    """One line naming the kept, new and dropped outputs of a fine-tune."""
    def names(items):
        return (": " + ", ".join(items[:limit]) + (" ..." if len(items) > limit else "")) if items else ""
    return (f"outputs: {len(report['kept'])} kept{names(report['kept'])}; {len(report['new'])} new"
            f"{names(report['new'])}; {len(report['dropped'])} dropped{names(report['dropped'])}")
