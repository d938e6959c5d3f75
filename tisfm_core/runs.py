"""The run directory: everything a trained model needs, in open formats.

::

    RUN/
      model.safetensors   weights (our parameter names; fp32, or fp16 for shipped demo runs)
      config.json         format version, model config, motif ids/source/fingerprint, output
                          names, data and transform, split summary, training settings, per-epoch
                          history, metrics, package versions, device and time; a fine-tune's
                          parent and lineage (:mod:`tisfm_core.finetune`)
      motifs.meme         the original PWMs (logos, kernel drift), absent for the AI-TAC baseline
      split.json          train/val/test indices into the dataset the run was trained on
      request.json        the task that made the run (training or fine-tune), for --resume
      checkpoint/         the last completed epoch (for --resume), removed when training ends

No pickles anywhere: weights are safetensors, everything else JSON or MEME text. Every file is
written atomically (:mod:`tisfm_core.atomic`).
"""

from __future__ import annotations

import datetime as _dt
import os
import platform
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import torch
from safetensors import SafetensorError, safe_open
from safetensors.torch import load_file, save_file

from . import __version__
from .aitac import AITAC
from .atomic import atomic_write, check_format, read_json, write_json
from .errors import TisfmError
from .linear import LinearBaseline, LinearConfig
from .model import TISFM, TISFMConfig
from .motifs import MotifSet, read_meme, write_meme
from .server import check_inside_roots, readable_here, redact, server_path
from .specs import store_path, stored_path
from .splits import save_split

FORMAT = "tisfm-run"
FORMAT_VERSION = 1
WEIGHTS = "model.safetensors"
CONFIG = "config.json"
MOTIFS = "motifs.meme"
SPLIT = "split.json"
#: Model kinds with one final-layer weight per motif and output (the motif views read them).
MOTIF_KINDS = ("tisfm", "linear")


def package_versions():
    import numpy
    import pandas
    return {"tisfm": __version__, "torch": torch.__version__, "numpy": numpy.__version__,
            "pandas": pandas.__version__, "python": platform.python_version()}


def now_iso():
    return _dt.datetime.now(_dt.timezone.utc).isoformat(timespec="seconds")


# -- model <-> config ---------------------------------------------------------------------------

def model_spec(model):
    """JSON description from which :func:`build_model` rebuilds an untrained twin of ``model``."""
    if isinstance(model, TISFM):
        return {"kind": "tisfm", "config": model.config.to_dict()}
    if isinstance(model, LinearBaseline):
        return {"kind": "linear", "config": model.config.to_dict()}
    if isinstance(model, AITAC):
        return {"kind": "aitac", "config": model.init_args()}
    raise TypeError(f"cannot save a {type(model).__name__}")


def build_model(spec):
    """Rebuild a model (weights uninitialised in meaning, to be loaded) from :func:`model_spec`."""
    if not isinstance(spec, dict) or "kind" not in spec or not isinstance(spec.get("config"), dict):
        raise TisfmError("config.json field 'model' must be an object with 'kind' and 'config'")
    kind, cfg = spec["kind"], spec["config"]
    if kind == "tisfm":
        config = TISFMConfig.from_dict(cfg)
        kernels = torch.zeros(config.n_channels, 4, config.kernel_width)
        return TISFM(config, kernels)
    if kind == "linear":
        return LinearBaseline(LinearConfig.from_dict(cfg))
    if kind == "aitac":
        try:
            return AITAC(**cfg)
        except TypeError as exc:
            raise TisfmError(f"config.json AI-TAC settings are invalid: {exc}") from None
    raise TisfmError(f"config.json names an unknown model kind {kind!r} (expected 'tisfm', "
                     "'linear' or 'aitac')")


# -- saving -------------------------------------------------------------------------------------

def save_weights(path, model, *, half=False):
    """Atomically write the model's state dict as safetensors (fp16 when ``half``)."""
    state = {}
    for name, tensor in model.state_dict().items():
        tensor = tensor.detach().cpu()
        if half and tensor.is_floating_point():
            tensor = tensor.half()
        state[name] = tensor.contiguous()
    meta = {"format": FORMAT, "format_version": str(FORMAT_VERSION),
            "dtype": "float16" if half else "float32"}
    atomic_write(path, lambda tmp: save_file(state, tmp, metadata=meta))


def save_run(path: str | Path, model: torch.nn.Module, *, outputs: list, motifs: MotifSet | None = None,
             meta: dict | None = None, split: dict | None = None, half: bool = False) -> Path:
    """Write a complete run directory.

    Parameters
    ----------
    path : str or Path
        The run folder (created if needed; files in it are replaced atomically).
    model : TISFM, LinearBaseline or AITAC
    outputs : list of str, length n_outputs
    motifs : MotifSet, optional
        Required for tiSFM and linear models: ids, names, source and fingerprint go to config.json and the
        PWMs to motifs.meme.
    meta : dict, optional
        Extra JSON fields (data, transform, training, history, metrics, ...).
    split : dict of arrays, optional
        Written to split.json.
    half : bool, default False
        Store weights in float16 (halves the size; reload error about 1e-3).
    """
    path = Path(path)
    path.mkdir(parents=True, exist_ok=True)
    outputs = [str(o) for o in outputs]
    spec = model_spec(model)
    n_out = spec["config"]["n_outputs"]
    if len(outputs) != n_out:
        raise TisfmError(f"{len(outputs)} output names for a model with {n_out} outputs")
    config = {"format": FORMAT, "format_version": FORMAT_VERSION, "created": now_iso(),
              "model": spec, "outputs": outputs, "versions": package_versions()}
    if spec["kind"] in MOTIF_KINDS:
        if motifs is None:
            raise TisfmError(f"a {spec['kind']} run needs its motif set")
        if len(motifs) != model.config.n_motifs:
            raise TisfmError(f"{len(motifs)} motifs for a model built with {model.config.n_motifs}")
        config["motifs"] = {"ids": list(motifs.ids), "names": list(motifs.names),
                            "source": motifs.source, "fingerprint": motifs.fingerprint}
        write_meme(motifs, path / MOTIFS)
    config.update(meta or {})
    save_weights(path / WEIGHTS, model, half=half)
    if split is not None:
        save_split(split, path / SPLIT)
    write_json(path / CONFIG, config)
    return path


def read_run_config(path: str | Path) -> dict:
    """Read and validate a run's config.json (without loading weights)."""
    path = Path(path)
    if not path.is_dir():
        raise TisfmError(f"run directory {path} does not exist")
    check_inside_roots(path, (CONFIG, WEIGHTS, MOTIFS, SPLIT))   # every file load_run reads
    config = read_json(path / CONFIG, what="run config")
    check_format(config, fmt=FORMAT, version=FORMAT_VERSION, where=path / CONFIG,
                 what="tiSFM run config")
    outputs = config.get("outputs")
    if not isinstance(outputs, list) or not outputs or not all(isinstance(o, str) for o in outputs):
        raise TisfmError(f"{path / CONFIG}: 'outputs' must be a non-empty list of names")
    if "model" not in config:
        raise TisfmError(f"{path / CONFIG}: missing field 'model'")
    spec = config["model"]
    if not isinstance(spec, dict) or not isinstance(spec.get("config"), dict):
        raise TisfmError(f"{path / CONFIG}: 'model' must be an object with 'kind' and 'config'")
    if spec.get("kind") in MOTIF_KINDS:
        motifs = config.get("motifs")
        if not isinstance(motifs, dict) or not isinstance(motifs.get("ids"), list):
            raise TisfmError(f"{path / CONFIG}: a {spec['kind']} run needs 'motifs' with a list of 'ids'")
    _check_field_types(config, path / CONFIG)
    for part in ("val", "test"):
        metrics = config.get("metrics", {}).get(part) or {}
        for key in ("outputs", "r2", "pearson", "mse"):
            if key in metrics and (not isinstance(metrics[key], list) or len(metrics[key]) != len(outputs)):
                raise TisfmError(f"{path / CONFIG}: field 'metrics.{part}.{key}' must list one value per "
                                 f"output ({len(outputs)})")
    return config


_NUMBER = (int, float, type(None))   # null: an undefined metric (constant output)
#: Types of the optional fields that loaders and pages read ("a.b": nested key; "[]" suffix: a
#: list whose items have the type). Anything else in config.json is kept but never interpreted.
_FIELD_TYPES = {
    "created": str, "group": (str, type(None)), "versions": dict,
    "motifs": dict, "motifs.ids[]": str, "motifs.names[]": str, "motifs.fingerprint": str,
    "motifs.source": str, "data": dict, "data.n_regions": int, "data.length": int,
    "data.id_match": dict, "transform": dict, "transform.kind": str, "split": dict,
    "training": dict, "training.epochs": int, "training.finetune_epochs": int, "history": list,
    "history[]": dict, "metrics": dict, "metrics.val": dict, "metrics.test": dict,
    "metrics.val.r2[]": _NUMBER, "metrics.test.r2[]": _NUMBER, "metrics.val.pearson[]": _NUMBER,
    "metrics.test.pearson[]": _NUMBER, "metrics.val.mean_r2": _NUMBER, "metrics.test.mean_r2": _NUMBER,
    "metrics.val.mse[]": _NUMBER, "metrics.test.mse[]": _NUMBER, "metrics.test.outputs[]": str,
    "metrics.val.outputs[]": str, "metrics.test.n": int, "metrics.test.mean_pearson": _NUMBER,
    "training.device": (str, type(None)), "training.seconds": _NUMBER, "training.penalty": str,
    "imported": dict, "split.fold": int, "split.n_folds": int, "split.random_state": int,
    "finetune": dict, "finetune.parent": dict, "finetune.train": str, "lineage": list,
    "lineage[]": dict,
}


def _check_field_types(config, where):
    """Refuse a config.json whose known fields have the wrong JSON type, naming the field."""
    for key, want in _FIELD_TYPES.items():
        items = key.endswith("[]")
        node = config
        for part in key.removesuffix("[]").split("."):
            if not isinstance(node, dict) or part not in node:
                node = None
                break
            node = node[part]
        if node is None:   # absent or null: nothing to interpret
            continue
        values = (node if isinstance(node, list) else [node]) if items else [node]
        if items and not isinstance(node, list):
            raise TisfmError(f"{where}: field '{key[:-2]}' should be a list, got {type(node).__name__}")
        for value in values:
            bad = isinstance(value, bool) and bool not in (want if isinstance(want, tuple) else (want,))
            if bad or not isinstance(value, want):
                names = "/".join(t.__name__ for t in (want if isinstance(want, tuple) else (want,)))
                raise TisfmError(f"{where}: field '{key.removesuffix('[]')}' should hold {names}, got "
                                 f"{type(value).__name__}")


@dataclass
class Run:
    """A loaded run: its folder, config, model (eval mode) and motif set."""

    path: Path
    config: dict
    model: torch.nn.Module
    motifs: MotifSet | None

    @property
    def name(self):
        return self.path.name

    @property
    def outputs(self):
        return list(self.config["outputs"])

    @property
    def kind(self):
        return self.config["model"]["kind"]

    @property
    def has_motif_layer(self):
        """True for runs with one final-layer weight per motif (tiSFM and the linear baseline)."""
        return self.kind in MOTIF_KINDS

    @property
    def motif_ids(self):
        return list(self.config["motifs"]["ids"]) if self.has_motif_layer else []

    @property
    def motif_names(self):
        if not self.has_motif_layer:
            return []
        return list(self.config["motifs"].get("names") or self.config["motifs"]["ids"])

    @property
    def metrics(self):
        return self.config.get("metrics", {})


#: safetensors dtypes a weight may be stored in: floats for float parameters, integers for
#: integer buffers (batch-norm counters).
_FLOAT_DTYPES = ("F16", "BF16", "F32", "F64")
_INT_DTYPES = ("I8", "I16", "I32", "I64", "U8")


def _unreadable(path, exc):
    return TisfmError(f"{path} is not a readable safetensors file (truncated or corrupt): "
                      f"{str(exc).splitlines()[0] if str(exc) else type(exc).__name__}")


def _check_weight_header(path, ours):
    """Names, shapes and dtypes of the stored tensors against ``ours`` (the model's state dict),
    read from the file's header before any tensor is loaded."""
    try:
        with safe_open(path, framework="pt", device="cpu") as handle:
            header = {k: (tuple(handle.get_slice(k).get_shape()), handle.get_slice(k).get_dtype())
                      for k in handle.keys()}
    except (SafetensorError, OSError, ValueError) as exc:
        raise _unreadable(path, exc) from None
    missing = sorted(set(ours) - set(header))
    extra = sorted(set(header) - set(ours))
    if missing or extra:
        detail = []
        if missing:
            detail.append(f"missing {', '.join(missing[:4])}")
        if extra:
            detail.append(f"unexpected {', '.join(extra[:4])}")
        raise TisfmError(f"{path} does not fit the model in config.json ({'; '.join(detail)})")
    for name, (shape, dtype) in header.items():
        if shape != tuple(ours[name].shape):
            raise TisfmError(f"{path}: {name} has shape {shape} but config.json implies "
                             f"{tuple(ours[name].shape)} (the weights belong to another model)")
        allowed = _FLOAT_DTYPES if ours[name].is_floating_point() else _INT_DTYPES
        if dtype not in allowed:
            raise TisfmError(f"{path}: {name} is stored as {dtype}; expected one of "
                             f"{', '.join(allowed)}")


def load_weights(path, model):
    """Load ``model.safetensors`` into ``model``: names, shapes and dtypes are checked from the
    file's header before the tensors are read, and float tensors must be finite."""
    path = Path(path)
    if not path.is_file():
        raise TisfmError(f"{path} is missing: the run has no weights")
    ours = model.state_dict()
    _check_weight_header(path, ours)
    try:
        state = load_file(path, device="cpu")
    except (SafetensorError, OSError, ValueError) as exc:
        raise _unreadable(path, exc) from None
    for name, tensor in state.items():
        if tensor.is_floating_point() and not torch.isfinite(tensor).all():
            raise TisfmError(f"{path}: {name} contains NaN or infinite values")
    model.load_state_dict({k: v.to(ours[k].dtype) for k, v in state.items()})
    return model


def load_run(path: str | Path, *, device: str | None = None) -> Run:
    """Load a run directory.

    Parameters
    ----------
    path : str or Path
    device : str, optional
        Where to put the model: None (or "auto") picks CUDA when present. Runs trained on CUDA
        load on CPU-only machines.

    Returns
    -------
    Run
    """
    from .devices import resolve_device

    path = Path(path)
    config = read_run_config(path)
    model = build_model(config["model"])
    n_out = config["model"]["config"].get("n_outputs")
    if n_out != len(config["outputs"]):
        raise TisfmError(f"{path / CONFIG}: {len(config['outputs'])} output names for a model with "
                         f"{n_out} outputs")
    motifs = None
    if config["model"]["kind"] in MOTIF_KINDS:
        ids = config["motifs"]["ids"]
        if len(ids) != model.config.n_motifs:
            raise TisfmError(f"{path / CONFIG}: {len(ids)} motif ids for a model built with "
                             f"{model.config.n_motifs} motifs (the motif set does not match the weights)")
        if (path / MOTIFS).exists():
            motifs = read_meme(path / MOTIFS)
            want = config["motifs"].get("fingerprint")
            if want and motifs.fingerprint != want:
                raise TisfmError(f"{path / MOTIFS} does not match the fingerprint in config.json "
                                 "(the motif file was changed after training)")
            if list(motifs.ids) != list(ids):
                raise TisfmError(f"{path / MOTIFS} lists other motif ids than config.json")
    load_weights(path / WEIGHTS, model)
    model.kernels_trained = bool(config.get("training", {}).get("finetune_epochs", 0))
    return Run(path=path, config=config, model=model.to(resolve_device(device)).eval(), motifs=motifs)


DATA_KEYS = ("sequences", "targets", "bed", "genome")


def data_record(data_spec, run_dir):
    """The ``data`` field of a run's config.json: each data path stored relative to the run
    (and absolute as the fallback), see :func:`tisfm_core.specs.store_path`."""
    return {key: store_path(getattr(data_spec, key), run_dir) for key in DATA_KEYS} | {
        "transform_table": store_path(data_spec.transform_table, run_dir)}


def _run_data_record(run, config):
    """(run folder, config.json content, its "data" field) of a Run or a run folder."""
    if isinstance(run, (str, Path)):
        root = Path(run)
        config = read_run_config(root) if config is None else config
    else:
        root, config = Path(run.path), run.config
    return root, config, config.get("data") if isinstance(config.get("data"), dict) else {}


def resolve_run_data(run, config: dict | None = None, *, allowed_only: bool = True) -> dict:
    """The training data of a run: its paths as they are now (run-relative first, then absolute).

    Parameters
    ----------
    run : Run, or str or Path of a run directory
    config : dict, optional
        The run's config.json content when ``run`` is a path (read when not given).
    allowed_only : bool, default True
        Refuse a path outside ``TISFM_SERVER_ROOTS`` (:func:`tisfm_core.server.server_path`): a
        run's config may come from an upload and name any file. False only where the paths are
        looked at, never read.

    Returns
    -------
    dict
        ``sequences``, ``targets``, ``bed``, ``genome`` (paths or None) and ``transform`` (spec,
        with its table path resolved the same way).
    """
    root, config, data = _run_data_record(run, config)
    out = {key: stored_path(data.get(key), root) for key in DATA_KEYS}
    transform = config.get("transform") if isinstance(config.get("transform"), dict) else {}
    spec = transform.get("spec") if isinstance(transform.get("spec"), str) else "none"
    table = stored_path(data.get("transform_table"), root)
    if allowed_only:
        for key, value in {**out, "transform_table": table}.items():
            if value is not None:
                server_path(value, f"the {key.replace('_', ' ')} file of run {root.name}")
    kind = spec.partition(":")[0]
    out["transform"] = f"{kind}:{table}" if table else spec
    return out


def data_paths(run, config=None):
    """The training data files of a run as they are found now, each relative to the run folder.

    Parameters
    ----------
    run : Run, or str or Path of a run directory
    config : dict, optional
        The run's config.json content when ``run`` is a path.

    Returns
    -------
    dict
        For each of ``sequences``, ``targets``, ``bed``, ``genome`` and ``transform_table``
        that the run records: ``(path relative to the run folder, exists)``; ``exists`` is None
        for a path outside ``TISFM_SERVER_ROOTS`` (not even looked up: the config may be an
        upload probing the server).
    """
    root, config, data = _run_data_record(run, config)
    out = {}
    for key in (*DATA_KEYS, "transform_table"):
        found = stored_path(data.get(key), root)
        if found:
            exists = Path(found).exists() if readable_here(found) else None
            out[key] = (os.path.relpath(Path(found).resolve(), root.resolve()), exists)
    return out


def run_origin(config):
    """One line saying where a run's weights come from, in words.

    Imported reference checkpoints read "imported reference checkpoint (state_dict.pt),
    8 outputs, trained elsewhere"; trained runs "trained on cpu in 3.4 min, finished ...".
    """
    outputs = len(config.get("outputs") or [])
    imported = config.get("imported")
    if isinstance(imported, dict):
        source = imported.get("state_dict")
        name = Path(source.get("path") if isinstance(source, dict) else source or "").name
        return (f"imported reference checkpoint{f' ({name})' if name else ''}, {outputs} output"
                f"{'s' if outputs != 1 else ''}, trained elsewhere")
    training = config.get("training") if isinstance(config.get("training"), dict) else {}
    where = training.get("device") or "an unrecorded device"
    seconds = training.get("seconds")
    took = f" in {format_seconds(seconds)}" if isinstance(seconds, (int, float)) else ""
    finished = training.get("finished") or config.get("created") or ""
    return f"trained on {where}{took}{f', finished {finished}' if finished else ''}"


def format_seconds(seconds):
    """A duration in words: "42 s", "3.4 min" or "1.5 h"."""
    seconds = float(seconds)
    if seconds < 90:
        return f"{seconds:.0f} s"
    if seconds < 5400:
        return f"{seconds / 60:.1f} min"
    return f"{seconds / 3600:.1f} h"


def is_run(path):
    path = Path(path)
    return (path / CONFIG).is_file() and (path / WEIGHTS).is_file()


def find_folders(folder, marker, *, max_depth=4):
    """Folders under ``folder`` (itself included) that hold a file named ``marker``, at most
    ``max_depth`` levels down, sorted by path.

    Hidden folders and links to folders are not entered, and the search stops at the depth
    limit, so that a broad folder (a home directory, ``/``) is listed in bounded time.
    """
    folder = Path(folder).expanduser()
    if not folder.is_dir():
        return []
    found = []
    for root, dirs, files in os.walk(folder, onerror=lambda exc: None):
        if marker in files:
            found.append(Path(root))
        depth = len(Path(root).relative_to(folder).parts)
        dirs[:] = [] if depth >= max_depth else sorted(d for d in dirs if not d.startswith("."))
    return sorted(found)


def find_runs(folder: str | Path, *, max_depth: int = 4) -> list[Path]:
    """Run directories under ``folder`` (see :func:`find_folders`), sorted by path."""
    return [p for p in find_folders(folder, CONFIG, max_depth=max_depth) if is_run(p)]


def run_summary(path):
    """One JSON-friendly row describing a run, without loading its weights.

    Broken runs are reported with an ``error`` field instead of raising, so that one bad folder
    does not hide the others.
    """
    path = Path(path)
    row = {"name": path.name, "path": str(path)}
    try:
        config = read_run_config(path)
        spec = config["model"]
        variant = TISFMConfig.from_dict(spec["config"]).variant if spec["kind"] == "tisfm" else spec["kind"]
    except TisfmError as exc:
        return {**row, "error": str(exc)}
    cfg = spec["config"]
    test = config.get("metrics", {}).get("test", {})
    # null: an undefined R2 (a constant output); no defined value at all gives None ("n/a")
    r2 = [v for v in test.get("r2") or [] if v is not None and np.isfinite(v)]
    row.update({
        "kind": spec["kind"],
        "variant": variant,
        "outputs": len(config["outputs"]),
        "motifs": len(config.get("motifs", {}).get("ids", [])),
        "motif_source": config.get("motifs", {}).get("source", ""),
        "length": cfg.get("length"),
        "mean_test_r2": float(np.mean(r2)) if r2 else None,
        "created": config.get("created", ""),
        "group": config.get("group", ""),
        "transform": (config.get("transform") or {}).get("kind") or "none",
    })
    return row


def list_runs(folders) -> list[dict]:
    """One row per run directory found in ``folders`` (:func:`run_summary` plus ``display``, the
    path relative to its folder, ``folder`` and ``synthetic``); usable runs first, broken ones
    (with an ``error``, without the file contents it may quote: :func:`server.redact`) last,
    each run once however many folders hold it."""
    from .demo import run_truth

    rows, seen = [], set()
    for folder in folders:
        for path in find_runs(folder):
            key = str(path.resolve())
            if key in seen:
                continue
            seen.add(key)
            row = run_summary(path)
            if "error" in row:
                row["error"] = redact(row["error"])
            try:
                row["display"] = str(path.relative_to(folder))
            except ValueError:
                row["display"] = path.name
            row["folder"] = str(folder)
            if "error" not in row:
                try:
                    row["synthetic"] = run_truth(path, read_run_config(path))[0]
                except TisfmError:
                    row["synthetic"] = False
            rows.append(row)
    return sorted(rows, key=lambda r: "error" in r)
