"""Crash-safe writes: every file of a run or job goes through a temporary file and a rename.

A reader (or a process killed mid-write) sees either the old file or the new one, never a
half-written file.
"""

from __future__ import annotations

import json
import os
import re
import tempfile
import time
import zipfile
from pathlib import Path

import numpy as np

from .errors import TisfmError
from .textfiles import MAX_TEXT_BYTES, check_input_file, check_zip_sizes, open_zip, read_text


def _fsync_dir(folder):
    try:
        fd = os.open(folder, os.O_RDONLY)
    except OSError:
        return
    try:
        os.fsync(fd)
    except OSError:
        pass
    finally:
        os.close(fd)


def check_output_folder(out, *, force, hint="overwrite it"):
    """Refuse ``out`` when it is a file, or a non-empty folder without ``force``; returns a Path.

    ``hint`` completes "use --force to ..." in the message.
    """
    out = Path(out)
    if out.exists() and not out.is_dir():
        raise TisfmError(f"{out} exists and is a file, not a folder")
    if out.is_dir() and any(out.iterdir()) and not force:
        raise TisfmError(f"{out} already exists and is not empty; use --force to {hint}")
    return out


#: Names of atomic_write's temporary files (mkstemp: 8 random characters).
_TEMP_NAME = re.compile(r"\..+\.[a-z0-9_]{8}\.tmp")
#: A temporary file older than this is left over from an interrupted write (a write takes
#: seconds, and every chunk written updates the modification time).
STALE_TEMP_SECONDS = 3600
_swept = set()


def remove_stale_temps(folder, *, max_age=STALE_TEMP_SECONDS):
    """Remove the temporary files an interrupted :func:`atomic_write` left in ``folder`` (only
    names of its pattern, only files older than ``max_age`` seconds); returns their paths."""
    removed, now = [], time.time()
    try:
        entries = list(os.scandir(folder))
    except OSError:
        return removed
    for entry in entries:
        if not _TEMP_NAME.fullmatch(entry.name):
            continue
        try:
            if entry.is_file(follow_symlinks=False) and \
                    now - entry.stat(follow_symlinks=False).st_mtime > max_age:
                os.unlink(entry.path)
                removed.append(Path(entry.path))
        except OSError:
            pass
    return removed


def sweep_stale_temps(root, *, max_depth=4, max_age=STALE_TEMP_SECONDS):
    """:func:`remove_stale_temps` in ``root`` and its folders down to ``max_depth`` levels (the
    app does this for the user's folders when it starts); returns the removed paths."""
    root = Path(root)
    removed = []
    for folder, dirs, _ in os.walk(root, onerror=lambda exc: None):
        removed += remove_stale_temps(folder, max_age=max_age)
        if len(Path(folder).relative_to(root).parts) >= max_depth:
            dirs[:] = []
    return removed


def atomic_write(path, write):
    """Call ``write(tmp_path)`` then rename the temporary file onto ``path``.

    The first write into a folder (per process) also removes temporary files that an earlier,
    interrupted write left there (:func:`remove_stale_temps`).

    Raises
    ------
    TisfmError
        When the folder is not writable or the disk is full (the old file is left untouched).
    """
    path = Path(path)
    if path.parent not in _swept:   # the first write into a folder clears orphans of a crash
        _swept.add(path.parent)
        remove_stale_temps(path.parent)
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(prefix=f".{path.name}.", suffix=".tmp", dir=path.parent)
        os.close(fd)
    except OSError as exc:
        raise TisfmError(f"cannot write in {path.parent}: {exc.strerror or exc}") from None
    try:
        write(tmp)
        with open(tmp, "rb+") as handle:
            os.fsync(handle.fileno())
        os.chmod(tmp, 0o644)  # mkstemp creates 0600; runs are meant to be shared
        os.replace(tmp, path)
    except TisfmError:   # the writer refused its input: its message says why
        Path(tmp).unlink(missing_ok=True)
        raise
    except Exception as exc:  # OSError, or a writer library's own error for a full disk
        Path(tmp).unlink(missing_ok=True)
        reason = exc.strerror if isinstance(exc, OSError) and exc.strerror else str(exc) or type(exc).__name__
        raise TisfmError(f"could not write {path}: {reason} (the previous file, if any, is unchanged)") from None
    except BaseException:
        Path(tmp).unlink(missing_ok=True)
        raise
    _fsync_dir(path.parent)


def write_bytes(path, data):
    def write(tmp):
        with open(tmp, "wb") as handle:
            handle.write(data)
    atomic_write(path, write)


def write_text(path, text):
    write_bytes(path, text.encode("utf-8"))


def _json_default(value):
    if isinstance(value, np.generic):
        return value.item()
    if isinstance(value, np.ndarray):
        return value.tolist()
    if isinstance(value, Path):
        return str(value)
    raise TypeError(f"{type(value).__name__} is not JSON serialisable")


def write_json(path, data):
    """Atomically write ``data`` as indented JSON (NumPy scalars and arrays converted; NaN as null)."""
    text = json.dumps(_nan_to_none(data), indent=1, default=_json_default, allow_nan=False)
    write_text(path, text + "\n")


def _nan_to_none(value):
    if isinstance(value, float) and not np.isfinite(value):
        return None
    if isinstance(value, np.floating) and not np.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _nan_to_none(v) for k, v in value.items()}
    if isinstance(value, (list, tuple)):
        return [_nan_to_none(v) for v in value]
    if isinstance(value, np.ndarray) and value.dtype.kind == "f":
        return [_nan_to_none(v) for v in value.tolist()]
    return value


#: Largest JSON file read (run configs, splits, task files; the largest real one is a few MB).
MAX_JSON_BYTES = 256 * 2**20


def read_json(path, *, what="file"):
    """Read a JSON object, with a clear error for a missing, empty, malformed, oversized or too
    deeply nested file."""
    try:
        data = json.loads(read_text(path, what, max_bytes=MAX_JSON_BYTES))
    except json.JSONDecodeError as exc:
        raise TisfmError(f"{what} {path} is not valid JSON (line {exc.lineno}: {exc.msg})") from None
    except RecursionError:
        raise TisfmError(f"{what} {path} is nested too deeply to read") from None
    if not isinstance(data, dict):
        raise TisfmError(f"{what} {path} must hold a JSON object")
    return data


def write_npz(path, **arrays):
    """Atomically write an uncompressed ``.npz`` (no object arrays: readable without pickle)."""
    for name, value in arrays.items():
        if np.asarray(value).dtype == object:
            raise TypeError(f"array {name!r} has dtype object; convert it to str or numbers")

    def write(tmp):
        with open(tmp, "wb") as handle:
            np.savez(handle, **arrays)
    atomic_write(path, write)


def read_arrays(path, *, what="file"):
    """Read a ``.npy`` (-> array) or ``.npz`` (-> dict of arrays) without unpickling anything.

    Raises
    ------
    TisfmError
        For object (pickled) arrays, which are refused for safety, and for truncated or corrupt
        files.
    """
    path = check_input_file(path, what)
    with open(path, "rb") as handle:
        magic = handle.read(6)
    if magic != b"\x93NUMPY" and not magic.startswith(b"PK"):
        # np.load would call anything else "pickled data"; it is just not a NumPy file
        raise TisfmError(f"{what} {path} is not a readable {path.suffix or 'NumPy'} file (truncated "
                         "or corrupt): no NumPy or zip header")
    if magic.startswith(b"PK") and zipfile.is_zipfile(path):   # np.load inflates an .npz's members
        with open_zip(path, f"{what} {path}") as archive:
            check_zip_sizes(archive, f"{what} {path}", max_bytes=MAX_TEXT_BYTES)
    try:
        data = np.load(path, allow_pickle=False)
        if isinstance(data, np.lib.npyio.NpzFile):
            with data:
                return {k: data[k] for k in data.files}
        return data
    except ValueError as exc:
        if "pickle" in str(exc):
            raise TisfmError(f"{what} {path} holds object arrays (pickled data); pickled arrays are "
                             "refused for safety: save numbers or unicode strings") from None
        reason = exc
    except Exception as exc:  # zipfile, OSError, EOFError: truncated or not NumPy at all
        reason = exc
    detail = str(reason).splitlines()[0] if str(reason) else type(reason).__name__
    raise TisfmError(f"{what} {path} is not a readable {path.suffix or 'NumPy'} file (truncated or "
                     f"corrupt): {detail}")


def check_format(meta, *, fmt, version, where, what):
    """Check the ``format`` / ``format_version`` header of one of our JSON files."""
    if meta.get("format") != fmt:
        raise TisfmError(f"{where} is not a {what} (field 'format' should be {fmt!r}, got "
                         f"{meta.get('format')!r})")
    found = meta.get("format_version")
    if not isinstance(found, int) or isinstance(found, bool):
        raise TisfmError(f"{where}: 'format_version' must be an integer")
    if found > version:
        raise TisfmError(f"{where} was written by a newer tisfm (format {found}; this version reads "
                         f"up to {version}); upgrade tisfm")
