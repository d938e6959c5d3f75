"""Shared pieces of the Streamlit pages: the run picker, cached loading, error boxes, figure blocks.

Kept outside ``pages/`` (Streamlit lists every file there as a page) and free of logic: folders,
uploads, parsing and everything computed come from :mod:`tisfm_core`.
"""

from __future__ import annotations

import logging
import os
import re
import traceback
from pathlib import Path

import pandas as pd
import streamlit as st

from tisfm_core.atomic import sweep_stale_temps
from tisfm_core.demo import run_truth
from tisfm_core.errors import TisfmError
from tisfm_core.motifs import motif_url
from tisfm_core.plots import figure_image
from tisfm_core.runs import CONFIG, WEIGHTS, list_runs, load_run, read_run_config
from tisfm_core.server import home_dir, readable_here, split_folders, user_runs_dir

#: The checkout: the shipped demo runs are in its trained_models/.
REPO = Path(__file__).resolve().parents[1]
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
_ROWS = "_listed_runs"        # session key of this script run's run list (the sidebar's)
TFS = "searched_tfs"          # session key of the TFs typed into the search box, kept across pages
_URL_READ = "_url_read"       # session key: the URL parameters already read in this session
RUN_PARAM = "run"
TF_PARAM = "tf"
# Markdown (and Streamlit's extensions: :icon:, :color[...], $math$) special characters; every
# one of them may be backslash-escaped (CommonMark escapes any ASCII punctuation).
_MD_SPECIAL = re.compile(r"([\\`*_{}\[\]()#+\-.!|<>~$:=@&])")


def md_escape(text):
    """``text`` on one line with every Markdown (and Streamlit shortcode, LaTeX) character
    escaped: for user text (file, run, output and job names, messages quoting an upload)
    wherever Streamlit renders Markdown (markdown, captions, titles, error boxes, expander and
    progress labels), so that it shows as typed, never as a link, an image, formatting or LaTeX."""
    return _MD_SPECIAL.sub(r"\\\1", " ".join(str(text).split()))


# -- shareable views: the URL's query parameters ------------------------------------------------

def url_key(key, param, default, **kwargs):
    """``key``, after :func:`from_url` has set its state: ``st.slider(..., key=url_key(...))``."""
    from_url(key, param, default, **kwargs)
    return key


def _encode(value):
    if isinstance(value, (list, tuple)):
        return [str(v) for v in value] or [""]
    if isinstance(value, bool):
        return ["1" if value else "0"]
    return [str(value)]


def to_url(param, value):
    """Write a page choice into the URL (``?param=value``; lists as repeated parameters), so a
    reload, a new tab or a shared link opens the same view."""
    encoded = _encode(value)
    if st.query_params.get_all(param) != encoded:
        st.query_params[param] = encoded if len(encoded) > 1 else encoded[0]


def _parse(text, kind):
    if kind is bool:
        if text not in ("0", "1", "true", "false"):
            raise ValueError(text)
        return text in ("1", "true")
    return kind(text)


def from_url(key, param, default, *, valid=None, many=False, kind=str):
    """Set the state of widget ``key`` before it is drawn (draw it without a default).

    The first time this session meets ``param`` in the URL, its value is used when it parses
    as ``kind`` and passes ``valid`` (a container of allowed values or a predicate); a URL is
    never trusted beyond that. Otherwise the widget keeps its state, or gets ``default`` when
    it has none or its state is no longer valid (e.g. an output of another run).
    """
    def ok(v):
        return valid is None or (valid(v) if callable(valid) else v in valid)

    read = st.session_state.setdefault(_URL_READ, set())
    if param not in read:
        read.add(param)
        if param in st.query_params:
            values = []
            for text in st.query_params.get_all(param):
                try:
                    value = _parse(text, kind)
                except (TypeError, ValueError):
                    continue
                if text != "" and ok(value) and value not in values:
                    values.append(value)
            if many:
                st.session_state[key] = values
            elif values:
                st.session_state[key] = values[0]
    current = st.session_state.get(key)
    if current is None or (many and not all(ok(v) for v in current)) or (not many and not ok(current)):
        st.session_state[key] = [v for v in current if ok(v)] if many and current else default
    return st.session_state[key]

def default_folders_text():
    """``TISFM_RUNS`` (folders separated by ``os.pathsep``) or the shipped ``trained_models/``."""
    env = os.environ.get("TISFM_RUNS")
    folders = split_folders(env) if env else [REPO / "trained_models"]
    return "; ".join(str(f) for f in folders)


def runs_folders():
    """The folders searched for runs: the sidebar's (or default) list plus the user's runs folder.
    Typed folders outside ``TISFM_SERVER_ROOTS`` are left out (the configured defaults never are)."""
    defaults = split_folders(default_folders_text())
    folders = [f for f in split_folders(st.session_state.get(_FOLDERS) or default_folders_text())
               if f in defaults or readable_here(f)]
    mine = user_runs_dir()
    if all(f.resolve() != mine.resolve() for f in folders):
        folders.append(mine)
    return folders


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
        rows = list_runs(runs_folders())
        if not rows:
            st.info("No runs found in these folders. Train or upload one on *Models and training*.")
            st.session_state[ACTIVE_RUN] = None
            return None
        st.session_state[_ROWS] = rows
        paths = [r["path"] for r in rows]
        by_path = {r["path"]: r for r in rows}
        read = st.session_state.setdefault(_URL_READ, set())
        if RUN_PARAM not in read:
            # a run named in the URL must be one of the listed runs (by name or path)
            read.add(RUN_PARAM)
            wanted = st.query_params.get(RUN_PARAM)
            match = [r["path"] for r in rows if wanted in (r["display"], r["path"])]
            if match:
                st.session_state[ACTIVE_RUN] = match[0]
        current = st.session_state.get(ACTIVE_RUN)
        if current not in by_path:
            current = default_run(rows)
            st.session_state[ACTIVE_RUN] = current
        st.session_state["_run_picker"] = current
        st.selectbox("Active run", paths, key="_run_picker", on_change=_remember_run,
                     format_func=lambda p: run_label(by_path[p]))
        row = by_path[st.session_state[ACTIVE_RUN]]
        to_url(RUN_PARAM, run_param(row))
        if "error" in row:
            st.error(f"This run cannot be used: {md_escape(row['error'])}")
        elif row.get("synthetic"):
            st.caption(f":material/science: Trained on **{SYNTHETIC}** data (not a measurement).")
        return row


@st.cache_resource(show_spinner=False)
def _swept(home):
    """Once per server process and home folder: remove temporary files that writes interrupted
    by a crash left behind (tisfm_core.atomic.sweep_stale_temps)."""
    return len(sweep_stale_temps(home))


def run_param(row):
    """The URL value naming a run: its name in its runs folder."""
    return row["display"]


def listed_runs():
    """The rows of the runs the sidebar lists (this script run's)."""
    return list(st.session_state.get(_ROWS) or [])


def set_active_run(path):
    """Make the run at ``path`` (one of the listed runs) the active run."""
    st.session_state[ACTIVE_RUN] = str(path)


def setup(title, intro=None):
    """Page config, sidebar and title; returns the active run's row (or None)."""
    st.set_page_config(page_title=f"{title} · tiSFM Explorer", layout="wide")
    _swept(str(home_dir()))
    row = sidebar()
    st.title(title)
    if intro:
        st.markdown(intro)
    return row


_KIND_WORDS = {"aitac": "an AI-TAC baseline: it has no motif layer",
               "linear": "a linear baseline: it has no motif layer, pooling or attention"}


def require_run(row, *, tisfm=True, kinds=("tisfm",)):
    """The active run's path, or stop the page with a message saying what is missing.
    ``tisfm=False`` takes a run of any kind, else only one of ``kinds``."""
    if row is None:
        st.info("Choose a run in the sidebar first (or make one on *Models and training*).")
        st.stop()
    if "error" in row:
        st.error(f"The active run {md_escape(row['display'])} is broken: {md_escape(row['error'])}. Pick "
                 "another run in the sidebar.")
        st.stop()
    if tisfm and row.get("kind") not in kinds:
        what = _KIND_WORDS.get(row.get("kind"), f"a {row.get('kind')} run")
        st.info(f"{md_escape(row['display'])} is {what}, so this page has nothing to show. Pick a tiSFM run "
                "in the sidebar.")
        st.stop()
    return Path(row["path"])


def synthetic_note(path):
    """A visible label on pages that show a run trained on synthetic demo data; returns truth."""
    synthetic, truth = run_truth(path, read_run_config(path))
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
        st.error(md_escape(exc))
    except MemoryError:
        st.error("Out of memory: try fewer sequences or outputs.")
    except Exception as exc:  # an internal bug: one line here, the traceback in the server log
        LOG.error("page error: %s", traceback.format_exc())
        st.error(f"Something went wrong ({type(exc).__name__}: {md_escape(exc)}). The details are "
                 "in the server log.")
    return None


# -- TFs ----------------------------------------------------------------------------------------

def tf_label(motif, names):
    name = names.get(motif, "")
    return f"{name} ({motif})" if name and name != motif else str(motif)


def _remember_tfs(widget):
    st.session_state[TFS] = list(st.session_state.get(widget) or [])


def tf_search(motif_ids, names, *, key):
    """The TF search box of a page: type a TF name or a motif id to add or highlight TFs.

    The choice is kept across pages and in the URL (``?tf=``); only motifs of this run are
    offered. Returns the chosen motif ids.
    """
    ids = [str(m) for m in motif_ids]
    widget = f"_tf_search_{key}"
    chosen = from_url(TFS, TF_PARAM, [], many=True)
    st.session_state[widget] = [m for m in chosen if m in set(ids)]
    st.multiselect("Find TFs (type a TF name or a motif id)", ids, key=widget, on_change=_remember_tfs,
                   args=(widget,), format_func=lambda m: tf_label(m, names),
                   placeholder="e.g. Pax5 or MA0014", help="The chosen TFs are added to the figures of "
                   "every page and highlighted there (▶ in heatmaps, black rings in scatter plots).")
    if st.session_state[TFS]:
        to_url(TF_PARAM, st.session_state[TFS])
    elif TF_PARAM in st.query_params:
        del st.query_params[TF_PARAM]
    return list(st.session_state[widget])


def motif_table(table, *, motif="motif", key=None):
    """``st.dataframe`` of a table with a motif id column, with a link to each motif's database
    entry (JASPAR or CIS-BP, see :func:`tisfm_core.motifs.motif_url`) next to it."""
    table = table.copy()
    at = list(table.columns).index(motif) + 1
    table.insert(at, "database", [motif_url(m) for m in table[motif]])
    st.dataframe(table, hide_index=True, width="stretch", key=key,
                 column_config={"database": st.column_config.LinkColumn(
                     "database", help="The motif's entry in JASPAR or CIS-BP",
                     display_text=r"(?:matrix/|searchField=)([^/&]+)")})


# -- figures ------------------------------------------------------------------------------------

def _slug(text):
    return "".join(c if c.isalnum() or c in "-_." else "_" for c in str(text)).strip("_") or "figure"


def downloads(fig, data, name, key):
    """CSV of the figure's data and SVG/PNG of the image (made only when clicked)."""
    csv = data.to_csv(index=not isinstance(data.index, pd.RangeIndex)) if data is not None else ""
    with st.container(horizontal=True):
        st.download_button("CSV", csv, file_name=f"{_slug(name)}.csv", mime="text/csv",
                           key=f"{key}_csv", on_click="ignore", disabled=data is None,
                           help="The numbers plotted")
        st.download_button("SVG", lambda: figure_image(fig, "svg"), file_name=f"{_slug(name)}.svg",
                           mime="image/svg+xml", key=f"{key}_svg", on_click="ignore")
        st.download_button("PNG", lambda: figure_image(fig, "png"), file_name=f"{_slug(name)}.png",
                           mime="image/png", key=f"{key}_png", on_click="ignore")


def show_plotly(fig, *, caption, data, name, key, select=False, width="stretch"):
    """A Plotly chart with its one-line caption and downloads; returns the selection event.
    ``width="content"`` draws a figure at its own width (one laid out in pixels)."""
    event = st.plotly_chart(fig, key=key, on_select="rerun" if select else "ignore",
                            selection_mode="points", config={"displaylogo": False}, width=width)
    st.caption(md_escape(caption))   # captions name outputs and sequences: user text
    downloads(fig, data, name, key)
    return event


def show_matplotlib(fig, *, caption, data, name, key):
    """A matplotlib figure (logos) with its caption and downloads."""
    st.pyplot(fig, clear_figure=False)
    st.caption(md_escape(caption))
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
