"""The jobs panel: every job of the user's jobs folder with its state, progress, loss curve and
log, and a cancel button; it polls while something runs."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import streamlit as st

from tisfm_app import ui
from tisfm_core import jobs
from tisfm_core.errors import TisfmError
from tisfm_core.plots import history_table, loss_curve
from tisfm_core.server import jobs_dir

ACTIVE_STATES = ("starting", "running")


def _cancel(path):
    try:
        jobs.cancel(jobs.load_job(path))
        st.session_state["_job_notice"] = ("success", f"Cancelled job {Path(path).name}.")
    except TisfmError as exc:
        st.session_state["_job_notice"] = ("error", str(exc))


def job_details(row):
    job = row["job"]
    state = row["state"]
    icon = {"done": ":material/check_circle:", "failed": ":material/error:", "died": ":material/error:",
            "cancelled": ":material/cancel:"}.get(state, ":material/hourglass_top:")
    title = f"{ui.md_escape(row['label'] or row['id'])} · {state}"
    with st.expander(title, expanded=state in ACTIVE_STATES, icon=icon):
        st.progress(min(max(row["fraction"], 0.0), 1.0),
                    text=f"{row['fraction'] * 100:.0f}% · {ui.md_escape(row['message'] or state)}")
        if state in ("died", "failed"):
            st.error(f"Job {ui.md_escape(row['id'])} {'died' if state == 'died' else 'failed'}: "
                     f"{ui.md_escape(row['message'])}")
        history = row.get("history") or []
        if history:
            ui.show_plotly(loss_curve(history, title="Loss per epoch"), key=f"loss_{row['id']}",
                           name=f"loss_{row['id']}", data=history_table(history),
                           caption="Training and validation loss (MSE) after every epoch of this job.")
        if job is not None:
            st.code(jobs.log_tail(job, 40) or "(no output yet)", language=None)
            if state in ACTIVE_STATES:
                st.button("Cancel job", key=f"cancel_{row['id']}", on_click=_cancel, args=(str(job.path),))
        if row.get("out"):
            st.caption(f"Output: {ui.md_escape(row['out'])}")


def jobs_panel():
    rows = jobs.list_jobs(jobs_dir())
    notice = st.session_state.pop("_job_notice", None)
    if notice:
        getattr(st, notice[0])(ui.md_escape(notice[1]))
    if not rows:
        st.info("No jobs yet.")
        return
    previous = st.session_state.get("_job_states", {})
    st.session_state["_job_states"] = {r["id"]: r["state"] for r in rows}
    table = pd.DataFrame([{"job": r["id"], "kind": r["kind"], "what": r["label"], "state": r["state"],
                           "progress": round(100 * r["fraction"]), "message": r["message"],
                           "started": time.strftime("%Y-%m-%d %H:%M", time.localtime(r["created"]))}
                          for r in rows])
    st.dataframe(table, hide_index=True, width="stretch",
                 column_config={"progress": st.column_config.ProgressColumn("progress", min_value=0,
                                                                            max_value=100, format="%d%%")})
    for row in rows[:8]:
        job_details(row)
    finished = [i for i, s in previous.items() if s in ACTIVE_STATES and
                st.session_state["_job_states"].get(i) not in ACTIVE_STATES]
    if finished:
        st.rerun()  # a job ended: refresh the whole page so its run shows up in the lists


def jobs_fragment():
    ui.guarded(jobs_panel)




def show():
    """The jobs panel (polls every 2 s while a job runs; the panel reruns alone, not the page)."""
    active = any(r["state"] in ACTIVE_STATES for r in jobs.list_jobs(jobs_dir()))
    st.fragment(run_every=2 if active else None)(jobs_fragment)()
    if not active:
        st.button("Refresh jobs", key="refresh_jobs")
