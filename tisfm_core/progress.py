"""Progress reporting for long work: log lines for the CLI, a status file for background jobs."""

from __future__ import annotations

import time
from contextlib import contextmanager

from .atomic import write_json


def status_file(path):
    """A :class:`StatusFile` callback for ``--status-file PATH``, or None when no path is given."""
    return StatusFile(path) if path else None


class StatusFile:
    """Callback that keeps a JSON status file up to date (atomically, at most every ``interval`` s).

    The file holds ``state`` ("running" | "done" | "failed"), the ``phase`` of the work
    ("preparing", "compiling", "training", "evaluating", from ``{"event": "phase", ...}`` events;
    batch and epoch events mean "training"), the current ``stage``, ``epoch`` / ``epochs``,
    ``batch`` / ``batches``, a ``fraction`` in [0, 1] for a progress bar, ``history`` (one row per
    finished epoch: the loss curve), ``updated`` (Unix time) and ``message``. Fold events
    (cross-validation) and path events update ``fold`` / ``folds`` and ``step`` / ``steps``.
    """

    def __init__(self, path, *, interval=1.0):
        self.path = path
        self.interval = interval
        self.status = {"state": "running", "started": time.time(), "history": [], "fraction": 0.0}
        self._last = 0.0
        self._write(force=True)

    def _write(self, force=False):
        now = time.time()
        if force or now - self._last >= self.interval:
            self.status["updated"] = now
            write_json(self.path, self.status)
            self._last = now

    def _fraction(self):
        s = self.status
        parts = []
        for done_key, total_key in (("fold", "folds"), ("step", "steps")):
            if s.get(total_key):
                parts.append(((s.get(done_key) or 1) - 1, s[total_key]))
        inner = 0.0
        if s.get("epochs"):
            batch_part = (s.get("batch", 0) / s["batches"]) if s.get("batches") else 0.0
            inner = min(1.0, ((s.get("epoch") or 1) - 1 + batch_part) / s["epochs"])
        frac = inner
        for done, total in reversed(parts):
            frac = (done + frac) / total
        return max(0.0, min(1.0, frac))

    def __call__(self, event):
        kind = event.get("event")
        s = self.status
        if kind == "phase":
            s["phase"], s["message"] = event.get("phase"), event.get("message") or ""
            self._write(force=True)
            return
        if kind in ("epoch", "batch"):
            s["phase"] = "training"
        if kind == "epoch":
            row = {k: event[k] for k in ("stage", "epoch", "train_loss", "val_loss", "lr", "seconds")
                   if k in event}
            if s.get("fold"):
                row["fold"] = s["fold"]
            s["history"].append(row)
            # the next epoch starts at batch 0: the bar shows the finished epochs
            s.update(stage=event.get("stage"), epoch=(event.get("epoch") or 0) + 1, batch=0)
            s["message"] = (f"{event.get('stage')} epoch {event.get('epoch')}: "
                            f"val loss {event.get('val_loss', float('nan')):.4f}")
            s["fraction"] = self._fraction()
            self._write(force=True)
            return
        for key in ("stage", "epoch", "epochs", "batch", "batches", "fold", "folds", "step", "steps",
                    "message"):
            if key in event:
                s[key] = event[key]
        if kind in ("fold", "step"):
            s["epoch"], s["batch"] = 1, 0
        s["fraction"] = self._fraction()
        self._write(force=kind in ("fold", "step"))

    def finish(self, state="done", message=""):
        self.status.update(state=state, message=message, fraction=1.0 if state == "done" else
                           self.status.get("fraction", 0.0))
        self._write(force=True)


@contextmanager
def reporting(status, done_message=""):
    """Mark ``status`` (a :class:`StatusFile` or None) failed if the block raises, done if not.

    ``done_message`` may be a callable evaluated at the end (the result is only known then).
    """
    try:
        yield status
    except BaseException as exc:
        if status is not None:
            status.finish("failed", str(exc) or type(exc).__name__)
        raise
    if status is not None:
        status.finish("done", done_message() if callable(done_message) else done_message)
