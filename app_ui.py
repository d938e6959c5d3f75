"""Shared pieces of the Streamlit pages: folders, the run picker, cached loading, figure blocks.

Kept outside ``pages/`` (Streamlit lists every file there as a page) and free of model math:
everything computed comes from :mod:`tisfm_core`.
"""

from __future__ import annotations

import io
import json
import logging
import os
import re
import shutil
import stat
import traceback
import zipfile
from pathlib import Path

import pandas as pd
import streamlit as st

from tisfm_core import jobs
from tisfm_core.atomic import write_bytes
from tisfm_core.errors import TisfmError
from tisfm_core.plots import figure_image
from tisfm_core.runs import (CONFIG, WEIGHTS, find_runs, load_run, read_run_config, resolve_run_data,
                             run_summary)
from tisfm_core.sequences import encode
from tisfm_core.workflows import RUN_FILES

REPO = Path(__file__).resolve().parent
LOG = logging.getLogger("tisfm_app")

#: (script, label, icon) of every page, in menu order.
PAGES = (
    ("app.py", "Home", ":material/home:"),
    ("pages/1_Models_and_training.py", "Models and training", ":material/model_training:"),
    ("pages/2_Final_layer.py", "Final layer", ":material/grid_on:"),
    ("pages/3_Pooling_vs_information.py", "Pooling vs information", ":material/scatter_plot:"),
    ("pages/4_Regularization_path.py", "Regularization path", ":material/timeline:"),
    ("pages/5_Lineage_tree.py", "Lineage tree", ":material/account_tree:"),
    ("pages/6_TISM_logos.py", "TISM logos", ":material/insights:"),
)
SYNTHETIC = "synthetic demo"
ACTIVE_RUN = "active_run"     # session key of the chosen run (a path string), kept across pages
_FOLDERS = "runs_folders"     # session key of the runs folders text


# -- folders ------------------------------------------------------------------------------------

def home_dir():
    """The user's tiSFM folder: ``TISFM_HOME`` or ``~/.tisfm`` (runs, jobs, uploads, demo data)."""
    return Path(os.environ.get("TISFM_HOME") or Path.home() / ".tisfm").expanduser()


def user_runs_dir():
    return home_dir() / "runs"


def jobs_dir():
    return home_dir() / "jobs"


def data_dir():
    return home_dir() / "data"


def _split_folders(text):
    parts = []
    for chunk in str(text).replace(";", os.pathsep).replace("\n", os.pathsep).split(os.pathsep):
        chunk = chunk.strip()
        if chunk:
            parts.append(Path(chunk).expanduser())
    return parts


def default_folders_text():
    """``TISFM_RUNS`` (folders separated by ``os.pathsep``) or the shipped ``trained_models/``."""
    env = os.environ.get("TISFM_RUNS")
    folders = _split_folders(env) if env else [REPO / "trained_models"]
    return "; ".join(str(f) for f in folders)


def server_roots():
    """Folders whose files may be named in the app's path fields (``TISFM_SERVER_ROOTS``,
    separated by ``os.pathsep``), or None when unset: then any path the server can read."""
    raw = os.environ.get("TISFM_SERVER_ROOTS", "").strip()
    if not raw:
        return None
    return [Path(p).expanduser().resolve() for p in raw.split(os.pathsep) if p.strip()]


def _readable_here(path):
    """Whether ``path`` lies inside ``TISFM_SERVER_ROOTS`` (links resolved first), or no roots are set."""
    roots = server_roots()
    if roots is None:
        return True
    real = Path(path).expanduser().resolve()
    return any(real == root or root in real.parents for root in roots)


def server_path(text, what):
    """A path typed into the app, as a Path; refused outside ``TISFM_SERVER_ROOTS`` when that is set."""
    path = Path(str(text).strip()).expanduser()
    if not _readable_here(path):
        raise TisfmError(f"{what} {path} is outside the folders this app may read "
                         f"({os.pathsep.join(map(str, server_roots()))}; set by TISFM_SERVER_ROOTS)")
    return path


def runs_folders():
    """The folders searched for runs: the sidebar's (or default) list plus the user's runs folder.
    Typed folders outside ``TISFM_SERVER_ROOTS`` are left out (the configured defaults never are)."""
    defaults = _split_folders(default_folders_text())
    folders = [f for f in _split_folders(st.session_state.get(_FOLDERS) or default_folders_text())
               if f in defaults or _readable_here(f)]
    mine = user_runs_dir()
    if all(f.resolve() != mine.resolve() for f in folders):
        folders.append(mine)
    return folders


# -- synthetic demo data ------------------------------------------------------------------------

def demo_truth(path, config):
    """(is_synthetic, truth) for the run at ``path`` with this config: synthetic when a data file
    lies in a folder named demo* or next to a ``truth.json``; truth is that file's content (None
    when absent). Data paths are resolved as the run's loaders do (run-relative when moved)."""
    data = resolve_run_data(path, config)
    synthetic, truth = False, None
    for key in ("sequences", "targets", "bed", "genome"):
        value = data.get(key)
        if not value:
            continue
        path = Path(value)
        if any(part.lower().startswith("demo") for part in path.parent.parts):
            synthetic = True
        candidate = path.parent / "truth.json"
        if truth is None and candidate.is_file():
            try:
                truth = json.loads(candidate.read_text(encoding="utf-8"))
            except (OSError, ValueError):
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


# -- runs ---------------------------------------------------------------------------------------

def run_stamp(path):
    """Modification times of a run's config and weights: part of every cache key."""
    path = Path(path)
    return tuple((path / name).stat().st_mtime_ns if (path / name).exists() else 0
                 for name in (CONFIG, WEIGHTS))


@st.cache_resource(max_entries=8, show_spinner="Loading the model ...")
def _cached_run(path, stamp):
    return load_run(path)


def get_run(path):
    """The loaded run (cached per path and file modification times)."""
    return _cached_run(str(path), run_stamp(path))


def list_runs(folders=None):
    """One row per run directory found in the folders (broken runs carry an ``error``; they come
    last)."""
    rows, seen = [], set()
    for folder in folders or runs_folders():
        for path in find_runs(folder):
            key = str(path.resolve())
            if key in seen:
                continue
            seen.add(key)
            row = run_summary(path)
            try:
                row["display"] = str(path.relative_to(folder))
            except ValueError:
                row["display"] = path.name
            row["folder"] = str(folder)
            if "error" not in row:
                try:
                    row["synthetic"] = demo_truth(path, read_run_config(path))[0]
                except TisfmError:
                    row["synthetic"] = False
            rows.append(row)
    # usable runs first, broken ones last (they are listed so their problem can be read)
    return sorted(rows, key=lambda r: "error" in r)


def run_label(row):
    if "error" in row:
        return f"⚠ {row['display']} (broken)"
    r2 = row.get("mean_test_r2")
    bits = [row.get("variant", "?"), f"{row.get('outputs', '?')} outputs"]
    if r2 is not None:
        bits.append(f"test R² {r2:.2f}")
    label = f"{row['display']} · {', '.join(bits)}"
    return label + (f" · {SYNTHETIC}" if row.get("synthetic") else "")


def _remember_run():
    st.session_state[ACTIVE_RUN] = st.session_state.get("_run_picker")


def _remember_folders():
    st.session_state[_FOLDERS] = st.session_state.get("_folders_input")


def default_run(rows):
    """The run a new session starts on: a full tiSFM of a CV set (fold 0 first) shows every page;
    then any tiSFM run; then any readable run."""
    good = [r for r in rows if "error" not in r]
    ranked = sorted(good, key=lambda r: (r.get("kind") != "tisfm", not r.get("group"),
                                         r.get("variant") != "full", r["path"]))
    return ranked[0]["path"] if ranked else rows[0]["path"]


def sidebar():
    """Runs folders and the active run, in the sidebar. Returns the active run's row (or None)."""
    with st.sidebar:
        st.session_state.setdefault(_FOLDERS, default_folders_text())
        st.session_state["_folders_input"] = st.session_state[_FOLDERS]
        st.text_input("Runs folders (separate with ;)", key="_folders_input", on_change=_remember_folders,
                      help="Folders searched for run directories. Your own runs and jobs always live in "
                           f"{user_runs_dir()}.")
        rows = list_runs()
        if not rows:
            st.info("No runs found in these folders. Train or upload one on *Models and training*.")
            st.session_state[ACTIVE_RUN] = None
            return None
        paths = [r["path"] for r in rows]
        by_path = {r["path"]: r for r in rows}
        current = st.session_state.get(ACTIVE_RUN)
        if current not in by_path:
            current = default_run(rows)
            st.session_state[ACTIVE_RUN] = current
        st.session_state["_run_picker"] = current
        st.selectbox("Active run", paths, key="_run_picker", on_change=_remember_run,
                     format_func=lambda p: run_label(by_path[p]))
        row = by_path[st.session_state[ACTIVE_RUN]]
        if "error" in row:
            st.error(f"This run cannot be used: {row['error']}")
        elif row.get("synthetic"):
            st.caption(f":material/science: Trained on **{SYNTHETIC}** data (not a measurement).")
        return row


def setup(title, intro=None):
    """Page config, sidebar and title; returns the active run's row (or None)."""
    st.set_page_config(page_title=f"{title} · tiSFM Explorer", layout="wide")
    row = sidebar()
    st.title(title)
    if intro:
        st.markdown(intro)
    return row


def require_run(row, *, tisfm=True):
    """The active run's path, or stop the page with a message saying what is missing."""
    if row is None:
        st.info("Choose a run in the sidebar first (or make one on *Models and training*).")
        st.stop()
    if "error" in row:
        st.error(f"The active run {row['display']} is broken: {row['error']}. Pick another run in the sidebar.")
        st.stop()
    if tisfm and row.get("kind") != "tisfm":
        st.info(f"{row['display']} is an AI-TAC baseline: it has no motif layer, so this page has "
                "nothing to show. Pick a tiSFM run in the sidebar.")
        st.stop()
    return Path(row["path"])


def synthetic_note(path):
    """A visible label on pages that show a run trained on synthetic demo data; returns truth."""
    synthetic, truth = demo_truth(path, read_run_config(path))
    if synthetic:
        st.warning(f"**{SYNTHETIC.capitalize()}**: this run was trained on generated data with "
                   "planted motifs, not on measurements." +
                   (" The planted regulators are marked where shown." if truth else ""))
    return truth


def guarded(body, *args, **kwargs):
    """Run a page body; user problems appear as st.error with their message, never a traceback."""
    try:
        return body(*args, **kwargs)
    except TisfmError as exc:
        st.error(str(exc))
    except MemoryError:
        st.error("Out of memory: try fewer sequences or outputs.")
    except Exception as exc:  # an internal bug: one line here, the traceback in the server log
        LOG.error("page error: %s", traceback.format_exc())
        st.error(f"Something went wrong ({type(exc).__name__}: {exc}). The details are in the "
                 "server log.")
    return None


# -- figures ------------------------------------------------------------------------------------

def _slug(text):
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in str(text)).strip("_") or "figure"


def downloads(fig, data, name, key):
    """CSV of the figure's data and SVG/PNG of the image (made only when clicked)."""
    cols = st.columns([1, 1, 1, 5])
    csv = data.to_csv(index=not isinstance(data.index, pd.RangeIndex)) if data is not None else ""
    cols[0].download_button("CSV", csv, file_name=f"{_slug(name)}.csv", mime="text/csv",
                            key=f"{key}_csv", on_click="ignore", disabled=data is None,
                            help="The numbers plotted")
    cols[1].download_button("SVG", lambda: figure_image(fig, "svg"), file_name=f"{_slug(name)}.svg",
                            mime="image/svg+xml", key=f"{key}_svg", on_click="ignore")
    cols[2].download_button("PNG", lambda: figure_image(fig, "png"), file_name=f"{_slug(name)}.png",
                            mime="image/png", key=f"{key}_png", on_click="ignore")


def show_plotly(fig, *, caption, data, name, key, select=False):
    """A Plotly chart with its one-line caption and downloads; returns the selection event."""
    event = st.plotly_chart(fig, key=key, on_select="rerun" if select else "ignore",
                            selection_mode="points", config={"displaylogo": False})
    st.caption(caption)
    downloads(fig, data, name, key)
    return event


def show_matplotlib(fig, *, caption, data, name, key):
    """A matplotlib figure (logos) with its caption and downloads."""
    st.pyplot(fig, clear_figure=False)
    st.caption(caption)
    downloads(fig, data, name, key)


def selected_points(event):
    """The points of a plotly selection event ([] when nothing is selected)."""
    try:
        return list(event.selection.points)
    except AttributeError:
        try:
            return list(event["selection"]["points"])
        except (KeyError, TypeError):
            return []


# -- sequences ----------------------------------------------------------------------------------

def parse_sequences(text, *, length=None, what="pasted text"):
    """Sequences typed or pasted as FASTA or raw DNA, encoded for the model.

    Raw DNA: one sequence per line when every line has the model's length, otherwise blocks
    separated by blank lines, each block one sequence (wrapped lines are joined). Ids are the
    FASTA ids or ``seq1``, ``seq2``, ...

    Returns
    -------
    ids : list of str
    indices : numpy.ndarray, uint8 (N, L)

    Raises
    ------
    TisfmError
        Naming the sequence and the 1-based position of a bad letter, or a wrong length.
    """
    lines = [line.strip() for line in str(text).replace("\r", "").split("\n")]
    if not any(lines):
        raise TisfmError(f"{what}: no sequence given")
    ids, seqs = [], []
    if any(line.startswith(">") for line in lines):
        current = None
        for lineno, line in enumerate(lines, 1):
            if not line:
                continue
            if line.startswith(">"):
                name = line[1:].split(maxsplit=1)
                if not name:
                    raise TisfmError(f"{what} line {lineno}: the header '>' has no sequence id")
                if name[0] in ids:
                    raise TisfmError(f"{what}: sequence id '{name[0]}' appears twice")
                ids.append(name[0])
                seqs.append("")
                current = len(seqs) - 1
            elif current is None:
                raise TisfmError(f"{what} line {lineno}: text before the first '>' header")
            else:
                seqs[current] += line.replace(" ", "")
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
        for block in blocks:
            if length is not None and len(block) > 1 and all(len(b) == length for b in block):
                seqs.extend(block)
            else:
                seqs.append("".join(block))
        ids = [f"seq{i + 1}" for i in range(len(seqs))]
    return ids, encode(seqs, ids=ids, length=length)


# -- uploads ------------------------------------------------------------------------------------

#: Largest total uncompressed size of an uploaded run (the paper's model is about 4 MB).
MAX_RUN_BYTES = 512 * 1024 * 1024


def new_folder(parent, prefix):
    """A fresh folder named by the app (time + random suffix), created exclusively."""
    return jobs.unique_folder(parent, prefix)


class UploadBatch:
    """Uploads saved by one button click, as a context manager.

    Files are written under names and folders of the app's choosing (an uploaded file name never
    chooses a path). If the work they were saved for is refused, the folders made here are removed
    again and the error message names the user's files instead of the storage paths.
    """

    def __init__(self):
        self.folders, self.names = [], {}

    def folder(self, parent, prefix):
        path = new_folder(parent, prefix)
        self.folders.append(path)
        return path

    def save(self, upload, folder, name):
        """Write ``upload`` (a Streamlit UploadedFile) to ``folder / name``; returns the path."""
        path = Path(folder) / name
        write_bytes(path, upload.getvalue())
        self.names[str(path)] = upload.name
        return str(path)

    def __enter__(self):
        return self

    def __exit__(self, exc_type, exc, tb):
        if exc is None:
            return False
        for folder in self.folders:
            shutil.rmtree(folder, ignore_errors=True)
        if isinstance(exc, TisfmError):
            # full storage paths, and bare storage names in messages that give only the name
            shown = {**{Path(p).name: o for p, o in self.names.items()}, **self.names}
            pattern = "|".join(re.escape(k) for k in sorted(shown, key=len, reverse=True))
            message = re.sub(pattern, lambda m: f"'{shown[m.group(0)]}' (uploaded)", str(exc)) \
                if shown else str(exc)
            raise TisfmError(message) from None
        return False


def check_run_zip(archive, *, max_bytes=MAX_RUN_BYTES, what="the uploaded zip"):
    """Validate a zip of a run directory before anything is extracted.

    Accepted: the run files (:data:`RUN_FILES`) at the top level or inside one top-level folder.
    Refused: absolute paths, ``..``, links and other special files, unexpected names, duplicates,
    and a total uncompressed size above ``max_bytes``.

    Returns
    -------
    dict
        Run file name -> the ``ZipInfo`` to extract.
    """
    members, prefixes, total = {}, set(), 0
    for info in archive.infolist():
        name = info.filename
        if "\\" in name or name.startswith("/") or (len(name) > 1 and name[1] == ":"):
            raise TisfmError(f"{what} holds the absolute or Windows path {name!r}; refused")
        parts = [p for p in name.split("/") if p]
        if ".." in parts or "." in parts:
            raise TisfmError(f"{what} holds the path {name!r}, which leaves its folder; refused")
        kind = stat.S_IFMT(info.external_attr >> 16)  # 0 when the zip tool records no file type
        if kind and kind not in (stat.S_IFREG, stat.S_IFDIR):
            raise TisfmError(f"{what} holds {name!r}, a link or special file; refused")
        if info.is_dir():
            if len(parts) > 1:
                raise TisfmError(f"{what} holds the nested folder {name!r}; a run zip holds one folder at most")
            prefixes.add(parts[0])
            continue
        if len(parts) > 2:
            raise TisfmError(f"{what} holds {name!r} in a nested folder; expected the run files at the "
                             "top level or in one folder")
        if parts[-1] not in RUN_FILES:
            raise TisfmError(f"{what} holds {name!r}; a run zip may only contain {', '.join(RUN_FILES)}")
        if len(parts) == 2:
            prefixes.add(parts[0])
        if parts[-1] in members:
            raise TisfmError(f"{what} holds {parts[-1]} twice")
        total += info.file_size
        if total > max_bytes:
            raise TisfmError(f"{what} unpacks to more than {max_bytes / 2**20:.0f} MiB; refused")
        members[parts[-1]] = info
    if len(prefixes) > 1:
        raise TisfmError(f"{what} holds several folders ({', '.join(sorted(prefixes))}); expected one run")
    for required in ("config.json", "model.safetensors"):
        if required not in members:
            raise TisfmError(f"{what} has no {required}; it is not a run directory")
    return members


def extract_run_zip(data, dest_parent, *, max_bytes=MAX_RUN_BYTES):
    """Check, extract and validate an uploaded run zip.

    The run goes to a fresh folder named by the app under ``dest_parent`` (never a name taken
    from the upload); it is loaded with :func:`tisfm_core.runs.load_run` and removed again when
    that fails.

    Parameters
    ----------
    data : bytes
        The zip file.
    dest_parent : str or Path
        Where the new run folder is created (the user's runs folder).

    Returns
    -------
    pathlib.Path
        The new run folder.
    """
    try:
        archive = zipfile.ZipFile(io.BytesIO(data))
    except zipfile.BadZipFile:
        raise TisfmError("the uploaded file is not a zip archive") from None
    with archive:
        members = check_run_zip(archive, max_bytes=max_bytes)
        dest = new_folder(dest_parent, "uploaded")
        try:
            for name, info in members.items():
                with archive.open(info) as source:
                    # read at most the declared size + 1: a lying header cannot inflate past it
                    content = source.read(info.file_size + 1)
                if len(content) != info.file_size:
                    raise TisfmError(f"{name} in the uploaded zip is larger than its header says; refused")
                write_bytes(dest / name, content)
            load_run(dest)
        except (TisfmError, zipfile.BadZipFile, OSError, RuntimeError) as exc:
            shutil.rmtree(dest, ignore_errors=True)
            if isinstance(exc, TisfmError):
                raise TisfmError(f"the uploaded run is not valid: {exc}") from None
            raise TisfmError(f"the uploaded zip could not be read: {exc}") from None
    return dest
