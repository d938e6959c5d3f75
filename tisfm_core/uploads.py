"""Uploads to the shared server: saved under names the app chooses, removed again when refused,
and run zips checked before anything is unpacked.

Streamlit-free: an upload is any object with ``name`` and ``getvalue()`` (Streamlit's
``UploadedFile``, or a test double).
"""

from __future__ import annotations

import re
import shutil
import stat
import zipfile
import zlib
from pathlib import Path

from .atomic import atomic_write, write_bytes
from .errors import TisfmError
from .jobs import unique_folder
from .runs import load_run
from .textfiles import check_zip_sizes, open_zip
from .workflows import RUN_FILES

#: Largest total uncompressed size of an uploaded run (the paper's model is about 4 MB), and
#: most entries its zip may list (a run has six files).
MAX_RUN_BYTES = 512 * 1024 * 1024
MAX_RUN_MEMBERS = 64


def new_folder(parent, prefix):
    """A fresh folder named by the app (time + random suffix), created exclusively."""
    return unique_folder(parent, prefix)


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
        """Write ``upload`` (``name`` + ``getvalue()``) to ``folder / name``; returns the path."""
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
    a total uncompressed size above ``max_bytes`` and members that expand like a decompression
    bomb (:func:`tisfm_core.textfiles.check_zip_sizes`).

    Returns
    -------
    dict
        Run file name -> the ``ZipInfo`` to extract.
    """
    check_zip_sizes(archive, what, max_bytes=max_bytes)
    members, prefixes = {}, set()
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
        members[parts[-1]] = info
    if len(prefixes) > 1:
        raise TisfmError(f"{what} holds several folders ({', '.join(sorted(prefixes))}); expected one run")
    for required in ("config.json", "model.safetensors"):
        if required not in members:
            raise TisfmError(f"{what} has no {required}; it is not a run directory")
    return members


def _extract(archive, info, target):
    """Copy one member to ``target`` in chunks. zipfile stops at the declared size, so a header
    that lies about it ends in a CRC error (BadZipFile), never in more bytes."""
    try:
        with archive.open(info) as source, open(target, "wb") as out:
            shutil.copyfileobj(source, out, 1 << 20)
    except (zipfile.BadZipFile, NotImplementedError, EOFError, zlib.error) as exc:
        raise TisfmError(f"{info.filename} in the uploaded zip is damaged or larger than its header "
                         f"says ({exc})") from None


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
    with open_zip(bytes(data), "the uploaded file", max_members=MAX_RUN_MEMBERS) as archive:
        members = check_run_zip(archive, max_bytes=max_bytes)
        dest = new_folder(dest_parent, "uploaded")
        try:
            for name, info in members.items():
                atomic_write(dest / name, lambda tmp, info=info: _extract(archive, info, tmp))
            load_run(dest, device="cpu")
        except (TisfmError, zipfile.BadZipFile, OSError, RuntimeError) as exc:
            shutil.rmtree(dest, ignore_errors=True)
            if isinstance(exc, TisfmError):
                raise TisfmError(f"the uploaded run is not valid: {exc}") from None
            raise TisfmError(f"the uploaded zip could not be read: {exc}") from None
    return dest
