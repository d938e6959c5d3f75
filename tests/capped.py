"""Run ``tisfm`` commands under a memory cap, each in its own process, and measure them.

Importing torch takes seconds on a busy machine, so one server process imports the package once
and forks a child per command (nothing multi-threaded has run in it before the fork). The child
limits its address space (``RLIMIT_AS``: what it has mapped at the fork plus ``cap_mb``), so a
regression that inflates a bomb or allocates an absurd model fails with an out-of-memory exit
instead of taking the machine down. The server reports the exit status, stdout, stderr, wall
time, the child's peak resident memory (``ru_maxrss`` from ``wait4``) and what the command added
to the memory it inherited (its peak, reset at the start, minus its resident memory then).

Used by tests/test_bad_inputs.py as ``CappedCLI``; run as a script it is the server.
"""

from __future__ import annotations

import json
import os
import subprocess
import sys
import tempfile
import time
from pathlib import Path


def _status(key):
    for line in open("/proc/self/status"):
        if line.startswith(key + ":"):
            return int(line.split()[1]) * 1024
    return 0


def _child(request, out_path, err_path, stats_path):
    import resource

    from tisfm_core.cli import main

    # the peak resident memory restarts at what the child has now (Linux >= 4.0), so that what
    # the command adds can be told from what the fork inherited
    with open("/proc/self/clear_refs", "w") as handle:
        handle.write("5")
    start = _status("VmRSS")
    os.environ.update(request.get("env") or {})
    soft = _status("VmSize") + request["cap_mb"] * 2**20
    resource.setrlimit(resource.RLIMIT_AS, (soft, resource.getrlimit(resource.RLIMIT_AS)[1]))
    for fd, path in ((1, out_path), (2, err_path)):
        target = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC)
        os.dup2(target, fd)
        os.close(target)
    code = 99
    try:
        code = main(request["args"])
    except SystemExit as exc:   # argparse
        code = exc.code if isinstance(exc.code, int) else 2
    except BaseException:       # main catches everything; this would be a bug worth seeing
        import traceback
        traceback.print_exc()
    finally:
        sys.stdout.flush()
        sys.stderr.flush()
        Path(stats_path).write_text(json.dumps({"start": start, "peak": _status("VmHWM")}))
        os._exit(code)


def serve():
    # everything the commands import, loaded once before any fork
    import tisfm_core.analysis  # noqa: F401
    import tisfm_core.cli  # noqa: F401
    import tisfm_core.demo_models  # noqa: F401
    import tisfm_core.finetune  # noqa: F401
    import tisfm_core.path  # noqa: F401
    import tisfm_core.reference  # noqa: F401
    import tisfm_core.workflows  # noqa: F401

    print(json.dumps({"ready": True}), flush=True)
    for line in sys.stdin:
        request = json.loads(line)
        with tempfile.TemporaryDirectory() as tmp:
            out_path, err_path, stats_path = (os.path.join(tmp, name) for name in ("out", "err", "stats"))
            started = time.perf_counter()
            pid = os.fork()
            if pid == 0:
                _child(request, out_path, err_path, stats_path)
            _, status, usage = os.wait4(pid, 0)
            seconds = time.perf_counter() - started
            stats = json.loads(Path(stats_path).read_text()) if os.path.exists(stats_path) else {}
            reply = {"code": os.waitstatus_to_exitcode(status), "seconds": seconds,
                     "maxrss_mb": usage.ru_maxrss / 2**10,
                     "added_mb": (stats["peak"] - stats["start"]) / 2**20 if stats else float("inf"),
                     "stdout": Path(out_path).read_text(errors="replace"),
                     "stderr": Path(err_path).read_text(errors="replace")}
        print(json.dumps(reply), flush=True)


class CappedCLI:
    """Client of the server: ``run(args, cap_mb=..., env=...)`` -> the reply dict."""

    def __init__(self):
        env = {**os.environ, "PYTHONPATH": os.pathsep.join(
            [str(Path(__file__).resolve().parents[1])] + [p for p in os.environ.get("PYTHONPATH", "").split(os.pathsep) if p])}
        self.proc = subprocess.Popen([sys.executable, __file__], stdin=subprocess.PIPE,
                                     stdout=subprocess.PIPE, text=True, env=env)
        ready = self.proc.stdout.readline()
        if not ready:
            raise RuntimeError("the capped CLI server did not start")

    def run(self, args, *, cap_mb=1536, env=None):
        self.proc.stdin.write(json.dumps({"args": [str(a) for a in args], "cap_mb": cap_mb,
                                          "env": env or {}}) + "\n")
        self.proc.stdin.flush()
        line = self.proc.stdout.readline()
        if not line:
            raise RuntimeError("the capped CLI server died")
        return json.loads(line)

    def close(self):
        self.proc.stdin.close()
        self.proc.wait(timeout=30)


if __name__ == "__main__":
    serve()
