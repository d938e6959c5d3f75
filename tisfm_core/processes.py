"""Is a process still the one we started? (/proc where it exists, signal 0 elsewhere.)

A pid alone is not enough: pids are reused, so a process is identified by its pid and its start
time (clock ticks since boot, field 22 of /proc/PID/stat).
"""

from __future__ import annotations

import os
from pathlib import Path


def proc_stat(pid):
    """Fields 3... of /proc/PID/stat (state first), or None when there is no such process."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return None
    # the command name (field 2) may contain spaces and parentheses: split after the last ')'
    return stat[stat.rfind(")") + 2:].split()


def start_ticks(pid):
    """Process start time in clock ticks since boot (/proc), or None where /proc is absent."""
    fields = proc_stat(pid)
    return int(fields[19]) if fields else None


def alive(pid, ticks=None):
    """True when ``pid`` runs (not a zombie) and, if known, started at ``ticks``."""
    if not pid:
        return False
    if proc_stat("self") is not None:
        fields = proc_stat(pid)
        if fields is None or fields[0] in ("Z", "X"):
            return False
        # a different start time means the pid was reused by an unrelated process
        return ticks is None or int(fields[19]) == ticks
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


def group_alive(pgid):
    """True while any process of the group exists (zombies excluded where /proc tells)."""
    try:
        os.killpg(pgid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    if proc_stat("self") is None:
        return True
    for entry in Path("/proc").iterdir():
        fields = proc_stat(entry.name) if entry.name.isdigit() else None
        if fields and int(fields[2]) == pgid and fields[0] not in ("Z", "X"):
            return True
    return False
