"""Regularization path of the final layer: accuracy and sparsity as the L1/MCP penalty grows."""

from __future__ import annotations

import time
from pathlib import Path

import numpy as np
import pandas as pd
import streamlit as st

from tisfm_app import ui
from tisfm_core import jobs
from tisfm_core.path import (
    PATH_NPZ,
    check_path_inputs,
    coefficients_at,
    find_paths,
    load_path,
    parse_lambdas,
    top_coefficients,
)
from tisfm_core.plots import path_coefficients, path_mse, weight_heatmap
from tisfm_core.server import contents_hidden, jobs_dir, user_runs_dir
from tisfm_core.specs import PathSpec

INTRO = ("A regularization path retrains only the final layer at a series of penalty strengths λ "
         "(each warm-started from the previous one). Larger λ zeroes more TF weights; the best λ of "
         "an output is the one with the lowest validation error.")


@st.cache_resource(max_entries=8, show_spinner="Reading the path ...")
def cached_path(path_dir, stamp):
    """The path folder's result, read once per folder and file stamp (not on every rerun)."""
    return load_path(path_dir)


def launch_form(run_path, expanded):
    with st.expander("Compute a regularization path (background job)", expanded=expanded):
        c1, c2, c3, c4 = st.columns(4)
        penalty = c1.selectbox("Penalty", ("mcp", "l1"), key="path_penalty")
        grid = c2.text_input("λ grid START:STOP:NUM", "1e-4:1e-1:12", key="path_grid",
                             help="0 (no penalty) is always added first")
        log = c3.checkbox("log-spaced", True, key="path_log")
        epochs = c4.number_input("Epochs per λ", 1, 200, 20, key="path_epochs")
        if st.button("Start path job", key="start_path"):
            # a bad grid is refused here, not in the job
            spec = PathSpec(lambdas=tuple(parse_lambdas(grid, log=log)), penalty=penalty, epochs=int(epochs))
            # the run's data paths come from its config (maybe an upload): allowed folders only,
            # and their contents never in a message
            with st.spinner("Checking the run's data ..."), contents_hidden():
                check_path_inputs(ui.get_run(run_path))
            out = user_runs_dir() / "paths" / f"{Path(run_path).name}_{penalty}_{time.strftime('%Y%m%d-%H%M%S')}"
            job = jobs.launch("path", [str(run_path), "--out", str(out)], jobs_dir(), spec=spec, hide_contents=True,
                              label=f"{penalty} path of {Path(run_path).name}")
            st.success(f"Started job {job.id}. Follow it on *Models and training*; the path appears here "
                       "when it is done.")


def path_views(path_dir):
    stamp = (path_dir / PATH_NPZ).stat().st_mtime_ns
    result = cached_path(str(path_dir), stamp)
    outputs = list(result.outputs)
    names = dict(zip(result.motif_ids, result.motif_names))
    best = result.best_table().drop(columns="index").reset_index().rename(columns={
        "lambda": "best λ", "val_mse": "validation MSE", "test_mse": "test MSE", "n_nonzero": "non-zero TFs"})
    st.markdown(f"**{ui.md_escape(result.penalty.upper())}** path with {len(result.lambdas)} λ values "
                f"({result.lambdas.min():.3g} to {result.lambdas.max():.3g}"
                f"{', log-spaced' if result.log_grid else ''}), {len(result.motif_ids)} TFs.")
    c1, c2, c3 = st.columns([3, 2, 2])
    shown = c1.multiselect("Outputs in the MSE chart", outputs,
                           key=ui.url_key("path_outputs", "outputs", outputs[:8], valid=outputs, many=True))
    output = c2.selectbox("Output of the coefficient paths", outputs,
                          key=ui.url_key("path_output", "output", outputs[0], valid=outputs))
    log = c3.toggle("Log-scaled λ axis", key=ui.url_key("path_log_axis", "log", result.log_grid, kind=bool),
                    help="On for log-spaced grids; λ = 0 (no penalty) is drawn one grid step left of "
                         "the smallest λ.")
    r = outputs.index(output)
    labels = [f"{i}: λ = {lam:.3g}" for i, lam in enumerate(result.lambdas)]
    index = ui.from_url("_path_lambda_index", "lambda", int(result.best_index[r]), kind=int,
                        valid=range(len(labels)))
    st.session_state.setdefault("path_lambda", labels[index])
    if st.session_state["path_lambda"] not in labels:
        st.session_state["path_lambda"] = labels[index]
    index = labels.index(st.session_state["path_lambda"])
    for param, value in (("outputs", shown), ("output", output), ("log", log), ("lambda", index)):
        ui.to_url(param, value)
    searched = ui.tf_search(result.motif_ids, names, key="path")
    if shown:
        cols = [outputs.index(o) for o in shown]
        fig = path_mse(result.lambdas, result.val_mse[:, cols], shown, result.best_index[cols], log=log,
                       shown=index)
        data = pd.DataFrame(result.val_mse[:, cols], columns=shown)
        data.insert(0, "lambda", result.lambdas)
        ui.show_plotly(fig, key="path_mse", name=f"{path_dir.name}_val_mse", data=data,
                       caption="Validation MSE of each output against λ; stars: each output's best λ (lowest "
                               "validation MSE); dotted: the λ whose final layer is shown below.")
    st.dataframe(best, hide_index=True, width="stretch")

    st.subheader("Coefficient paths")
    top = top_coefficients(result, output, k=9)
    highlight = list(top.index) + [m for m in searched if m not in set(top.index)]
    fig = path_coefficients(result.lambdas, result.coefs[:, r, :], result.motif_ids, result.motif_names,
                            highlight, result.best_lambdas[r], log=log, shown=index,
                            title=f"Coefficient paths of {output}")
    data = pd.DataFrame(result.coefs[:, r, :].T, columns=[f"λ = {lam:.4g}" for lam in result.lambdas])
    data.insert(0, "motif", result.motif_ids)
    data.insert(1, "tf", result.motif_names)
    ui.show_plotly(fig, key="path_coefs", name=f"{path_dir.name}_coefs_{output}", data=data,
                   caption=f"Final-layer weight of every TF for {output} against λ; coloured: the 9 largest "
                           f"|weights| at its best λ ({result.best_lambdas[r]:.3g}, dashed)"
                           + (" and the TFs you searched for" if searched else "") + ", grey: the others.")

    st.subheader("The final layer at one λ")
    st.select_slider("λ", options=labels, key="path_lambda",
                     help="The sparse final layer the path found at this penalty strength.")
    coefs = coefficients_at(result, index)
    nonzero = coefs.loc[(coefs != 0).any(axis=1)]
    st.markdown(f"{len(nonzero)} of {len(coefs)} TFs have a non-zero weight for some output at λ = "
                f"{result.lambdas[index]:.3g}.")
    if nonzero.empty and not searched:
        st.info("Every weight is zero at this λ.")
        return
    strongest = list(nonzero.abs().max(axis=1).sort_values(ascending=False).index[:40])
    values = coefs.loc[strongest + [m for m in searched if m not in strongest]]
    bound = float(np.abs(values.to_numpy()).max()) or 1.0
    fig = weight_heatmap(values, names=names, colorbar="weight", zmin=-bound, zmax=bound, highlight=searched,
                         title=f"Final layer at λ = {result.lambdas[index]:.3g}")
    data = values.copy()
    data.insert(0, "tf", [names.get(m, "") for m in data.index])
    ui.show_plotly(fig, key="path_layer", name=f"{path_dir.name}_layer_{index}", data=data,
                   caption="Final-layer weights at the chosen λ (TFs with a non-zero weight, at most the 40 "
                           "largest" + (", and the TFs you searched for" if searched else "")
                           + "); white cells are exact zeros.")


def path_name(path_dir):
    """A path folder as shown and in the URL: its last two folder names."""
    path_dir = Path(path_dir)
    return str(path_dir.relative_to(path_dir.parents[1])) if len(path_dir.parents) > 1 else str(path_dir)


def main():
    row = ui.setup("Regularization path", INTRO)
    path = ui.require_run(row)
    ui.synthetic_note(path)
    paths = find_paths(path, ui.runs_folders())
    if not paths:
        st.info("No regularization path of this run was found in the runs folders. Start one below "
                "(or on the command line: `tisfm path RUN --penalty mcp --lambdas 1e-4:1e-1:12 --log "
                "--out PATH_DIR`, with PATH_DIR inside a runs folder).")
        ui.guarded(launch_form, path, True)
        return
    chosen = st.selectbox("Path", paths, format_func=path_name,
                          key=ui.url_key("path_dir", "path", paths[0], valid=paths,
                                         kind=lambda text: next((p for p in paths if path_name(p) == text), None)))
    ui.to_url("path", path_name(chosen))
    ui.guarded(path_views, chosen)
    ui.guarded(launch_form, path, False)


ui.guarded(main)
