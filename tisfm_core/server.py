"""The shared-server policy of the app: where each user's files live and which typed paths
may be read.

Streamlit-free, so that the CLI, the jobs and the tests apply the same rules as the pages.
"""

from __future__ import annotations

import os
import re
from contextlib import contextmanager
from pathlib import Path

from .errors import TisfmError


def home_dir():
    """The user's tiSFM folder: ``TISFM_HOME`` or ``~/.tisfm`` (runs, jobs, uploads, demo data)."""
    return Path(os.environ.get("TISFM_HOME") or Path.home() / ".tisfm").expanduser()


def user_runs_dir():
    return home_dir() / "runs"


def jobs_dir():
    return home_dir() / "jobs"


def data_dir():
    return home_dir() / "data"


def cache_dir():
    """Recomputable results kept between sessions (motif similarity of a motif set)."""
    return home_dir() / "cache"


def split_folders(text):
    """Folders from a list typed as ``a; b`` or separated by ``os.pathsep`` or new lines."""
    parts = []
    for chunk in str(text).replace(";", os.pathsep).replace("\n", os.pathsep).split(os.pathsep):
        chunk = chunk.strip()
        if chunk:
            parts.append(Path(chunk).expanduser())
    return parts


def server_roots():
    """Folders whose files may be named in the app's path fields (``TISFM_SERVER_ROOTS``,
    separated by ``os.pathsep``), or None when unset: then any path the server can read."""
    raw = os.environ.get("TISFM_SERVER_ROOTS", "").strip()
    if not raw:
        return None
    return [Path(p).expanduser().resolve() for p in raw.split(os.pathsep) if p.strip()]


def readable_here(path):
    """Whether ``path`` lies inside ``TISFM_SERVER_ROOTS`` (links resolved first), or no roots are
    set. A path with a NUL byte is never readable."""
    if "\x00" in str(path):
        return False
    roots = server_roots()
    if roots is None:
        return True
    try:
        real = Path(path).expanduser().resolve()
    except (OSError, RuntimeError, ValueError):
        return False
    return any(real == root or root in real.parents for root in roots)


def check_inside_roots(folder, names):
    """Refuse ``folder``'s files ``names`` that are links out of the folder to a file outside
    ``TISFM_SERVER_ROOTS``: a run or path folder in an allowed folder may hold a link to a file
    elsewhere. (The configured runs folders may lie outside the roots: their runs' own files
    are read.) Nothing is refused when no roots are set."""
    if server_roots() is None:
        return
    home = Path(folder).resolve()
    for name in names:
        file = Path(folder) / name
        if not (file.exists() or file.is_symlink()):
            continue
        if file.resolve().parent != home and not readable_here(file):
            raise TisfmError(f"{file} leads outside the folders this app may read (a link?); refused")


def server_path(text, what):
    """A path typed into the app, as a Path; refused outside ``TISFM_SERVER_ROOTS`` when that is set."""
    text = str(text).strip()
    if "\x00" in text:
        raise TisfmError(f"{what}: the path contains a NUL byte")
    path = Path(text).expanduser()
    if not readable_here(path):
        raise TisfmError(f"{what} {path} is outside the folders this app may read "
                         f"({os.pathsep.join(map(str, server_roots()))}; set by TISFM_SERVER_ROOTS)")
    return path


# A quoted fragment: '...' or "..." not inside a word (so "run's" is no quote), on one line.
_QUOTED = re.compile(r"""(?<![\w'"])(['"])[^\n]*?\1(?![\w'"])""")


def redact(message):
    """``message`` without the file contents it quotes: every ``'...'`` fragment (the readers
    quote ids, header cells, values and names taken from a file) becomes ``'…'``, except the
    user's own upload names (``'name' (uploaded)``)."""
    def replace(match):
        if message.startswith(" (uploaded)", match.end()):
            return match.group(0)
        return f"{match.group(1)}…{match.group(1)}"
    return _QUOTED.sub(replace, str(message))


@contextmanager
def contents_hidden(active=True):
    """Re-raise a TisfmError with :func:`redact` applied: around work that reads files the user
    did not upload (typed server paths, the data a run's config names), so that an error
    message cannot show what such a file holds."""
    try:
        yield
    except TisfmError as exc:
        if not active:
            raise
        raise TisfmError(redact(str(exc))) from None
