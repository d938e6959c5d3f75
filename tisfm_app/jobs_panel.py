"""The jobs panel: every job of the user's jobs folder (local queue or SLURM) with its backend,
state, phase, queue position or SLURM job id, progress, loss curve and log; a cancel button while
it is queued or running and an *Open this run* button once it is done. It polls while something
is queued or running (each poll also starts queued jobs whose turn has come)."""

from __future__ import annotations

import time
from pathlib import Path

import pandas as pd
import streamlit as st

from tisfm_app import ui
from tisfm_core import jobs
from tisfm_core.errors import TisfmError
from tisfm_core.plots import history_table, loss_curve
from tisfm_core.runs import list_runs
from tisfm_core.server import jobs_dir

ACTIVE_STATES = jobs.ACTIVE_STATES
_ICONS = {"done": ":material/check_circle:", "cancelled": ":material/cancel:",
          "queued": ":material/schedule:"}


def _cancel(path):
    try:
        jobs.cancel(jobs.load_job(path))
        st.session_state["_job_notice"] = ("success", f"Cancelled job {Path(path).name}.")
    except TisfmError as exc:
        st.session_state["_job_notice"] = ("error", str(exc))


def _open(run):
    """Make ``run`` the active run (as the run picker names it) and redraw the whole page."""
    target = Path(run).resolve()
    listed = next((r["path"] for r in list_runs(ui.runs_folders()) if Path(r["path"]).resolve() == target),
                  str(run))
    st.session_state[ui.ACTIVE_RUN] = listed
    st.session_state["_page_notice"] = f"Opened {Path(run).name}: it is now the active run."
    st.rerun()


def _where(row):
    """Backend, with the SLURM job id or the local queue position."""
    if row.get("slurm_id"):
        return f"slurm {row['slurm_id']}"
    if row.get("position"):
        return f"local, #{row['position']} in queue"
    return row.get("backend") or "local"


def job_details(row):
    job = row["job"]
    state = row["state"]
    icon = _ICONS.get(state, ":material/error:" if state in jobs.UNFINISHED_STATES else
                      ":material/hourglass_top:")
    title = f"{ui.md_escape(row['label'] or row['id'])} · {state}"
    with st.expander(title, expanded=state in ACTIVE_STATES, icon=icon):
        text = jobs.progress_text(row)
        st.progress(min(max(row["fraction"], 0.0), 1.0), text=ui.md_escape(text))
        bits = [f"backend **{row.get('backend', 'local')}**"]
        if row.get("slurm_id"):
            bits.append(f"SLURM job **{row['slurm_id']}**"
                        + (f" ({row['scheduler_state']})" if row.get("scheduler_state") else ""))
        if state == "queued" and row.get("reason"):
            bits.append(f"waits: {ui.md_escape(row['reason'])}")
        st.caption(" · ".join(bits))
        if state in ("died", "failed", "timeout", "node_fail"):
            st.error(f"Job {ui.md_escape(row['id'])} {state.replace('_', ' ')}: {ui.md_escape(row['message'])}")
        elif state == "unknown":
            st.warning(f"The state of job {ui.md_escape(row['id'])} cannot be read now: "
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
            run = jobs.result_run(job) if state == "done" else None
            if run is not None and st.button("Open this run", key=f"open_{row['id']}", type="primary",
                                             icon=":material/open_in_new:"):
                _open(run)
        if row.get("out"):
            st.caption(f"Output: {ui.md_escape(row['out'])}")


def jobs_panel():
    rows = jobs.list_jobs(jobs_dir())
    previous = st.session_state.get("_job_states", {})
    st.session_state["_job_states"] = {r["id"]: r["state"] for r in rows}
    if any(s in ACTIVE_STATES and st.session_state["_job_states"].get(i) not in ACTIVE_STATES
           for i, s in previous.items()):
        st.rerun()  # a job ended: refresh the whole page so its run shows up in the lists
    notice = st.session_state.pop("_job_notice", None)
    if notice:
        getattr(st, notice[0])(ui.md_escape(notice[1]))
    if not rows:
        st.info("No jobs yet.")
        return
    table = pd.DataFrame([{"job": r["id"], "kind": r["kind"], "state": r["state"],
                           "status": jobs.progress_text(r), "progress": round(100 * r["fraction"]),
                           "backend": _where(r), "what": r["label"],
                           "started": time.strftime("%Y-%m-%d %H:%M", time.localtime(r["created"]))}
                          for r in rows])
    st.dataframe(table, hide_index=True, width="stretch",
                 column_config={"progress": st.column_config.ProgressColumn("progress", min_value=0,
                                                                            max_value=100, format="%d%%")})
    for row in rows[:8]:
        job_details(row)


def jobs_fragment():
    ui.guarded(jobs_panel)


def show():
    """The jobs panel (polls every 2 s while a job is queued or runs; the panel reruns alone)."""
    active = any(r["state"] in ACTIVE_STATES for r in jobs.list_jobs(jobs_dir()))
    st.fragment(run_every=2 if active else None)(jobs_fragment)()
    if not active:
        st.button("Refresh jobs", key="refresh_jobs")
