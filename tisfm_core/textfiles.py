"""Reading users' text inputs (FASTA, TSV, BED, motif files) with one set of checks and messages.

Every reader goes through here, so a folder, a device, a missing file, a binary file or a damaged
gzip file gets the same clear message whatever the format. Gzip-compressed inputs (``.fa.gz``,
``.tsv.gz``, ...) are read transparently, recognised by their magic bytes, not their names.
"""

from __future__ import annotations

import gzip
import zlib
from pathlib import Path

from .errors import TisfmError

_GZIP_MAGIC = b"\x1f\x8b"


def check_input_file(path, what):
    """The path of an existing regular file, else a TisfmError saying what ``path`` is instead."""
    path = Path(path).expanduser()
    if not path.exists():
        raise TisfmError(f"{what} {path} does not exist")
    if path.is_dir():
        raise TisfmError(f"{what} {path} is a folder, not a file")
    if not path.is_file():
        raise TisfmError(f"{what} {path} is not a regular file")
    return path


def is_gzip(path):
    with open(path, "rb") as handle:
        return handle.read(2) == _GZIP_MAGIC


def _open(path):
    if is_gzip(path):
        return gzip.open(path, "rt", encoding="utf-8-sig")
    # utf-8-sig drops a byte-order mark; text mode turns CRLF and CR into LF
    return open(path, encoding="utf-8-sig")


def _refuse(path, what, exc):
    if isinstance(exc, UnicodeDecodeError):
        return TisfmError(f"{what} {path} is not UTF-8 text (bad byte at offset {exc.start}); is it "
                          "a binary or a compressed file other than gzip?")
    if isinstance(exc, (EOFError, gzip.BadGzipFile, zlib.error)):
        return TisfmError(f"{what} {path} is a damaged or truncated gzip file")
    return TisfmError(f"cannot read {what} {path}: {getattr(exc, 'strerror', None) or exc}")


def iter_lines(path, what):
    """Yield the lines of a text input (with their line ends), gzip or not.

    Raises
    ------
    TisfmError
        For a missing path, a folder or device, non-UTF-8 bytes, a damaged gzip file or a read
        error, naming the file.
    """
    path = check_input_file(path, what)
    try:
        with _open(path) as handle:
            yield from handle
    except (UnicodeDecodeError, EOFError, OSError, zlib.error) as exc:
        raise _refuse(path, what, exc) from None


def read_text(path, what):
    """The whole text of an input file (see :func:`iter_lines`)."""
    path = check_input_file(path, what)
    try:
        with _open(path) as handle:
            return handle.read()
    except (UnicodeDecodeError, EOFError, OSError, zlib.error) as exc:
        raise _refuse(path, what, exc) from None


#: Largest text an upload may decompress to (a gzip bomb is refused, never inflated whole).
MAX_UPLOAD_TEXT = 256 * 2**20


def decode_text(data, what, *, max_bytes=MAX_UPLOAD_TEXT):
    """The UTF-8 text of an uploaded file's bytes, gunzipped as a stream when they are gzip.

    Decompression stops as soon as the output passes ``max_bytes``, so a small file that
    expands to gigabytes costs at most ``max_bytes`` of memory and the time to produce them.

    Raises
    ------
    TisfmError
        For a damaged gzip stream, text above ``max_bytes`` or bytes that are not UTF-8.
    """
    data = bytes(data)
    if data[:2] == _GZIP_MAGIC:
        inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
        out, size, rest = [], 0, data
        try:
            while rest:
                chunk = inflate.decompress(rest, max_bytes + 1 - size)
                out.append(chunk)
                size += len(chunk)
                if size > max_bytes:
                    raise TisfmError(f"{what} decompresses to more than {max_bytes / 2**20:.0f} MiB; "
                                     "refused")
                rest = inflate.unconsumed_tail
                if inflate.eof:
                    # concatenated gzip members (bgzip): start the next one on the leftover bytes
                    rest = inflate.unused_data
                    if rest:
                        inflate = zlib.decompressobj(16 + zlib.MAX_WBITS)
                elif not rest and not chunk:
                    break
            if not inflate.eof:
                raise zlib.error("truncated")
        except zlib.error:
            raise TisfmError(f"{what} is a damaged or truncated gzip file") from None
        data = b"".join(out)
    elif len(data) > max_bytes:
        raise TisfmError(f"{what} is larger than {max_bytes / 2**20:.0f} MiB; refused")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise TisfmError(f"{what} is not a text (UTF-8) file (bad byte at offset {exc.start})") from None
