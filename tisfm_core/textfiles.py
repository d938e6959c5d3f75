"""Reading users' inputs (FASTA, TSV, BED, motif files, zip archives) with one set of checks and
messages, and with bounded decompression.

Every reader goes through here, so a folder, a device, a missing file, a binary file or a damaged
gzip file gets the same clear message whatever the format. Gzip-compressed inputs (``.fa.gz``,
``.tsv.gz``, ...) are read transparently, recognised by their magic bytes, not their names.

Compressed inputs are inflated as streams and stopped at a cap: a decompressed size above
:data:`MAX_TEXT_BYTES` (uploads: :data:`MAX_UPLOAD_TEXT`), or an expansion above
:data:`MAX_EXPANSION`-fold once past :data:`EXPANSION_FLOOR` (real text compresses about 4-fold;
deflate cannot exceed about 1000-fold, which is what a "zip bomb" uses). A small file that would
expand to gigabytes is refused after a few megabytes of work. Zip archives (run zips, ``.pt``
state dicts, ``.npz``) are checked from their directory before any member is read.
"""

from __future__ import annotations

import gzip
import io
import itertools
import struct
import zipfile
import zlib
from pathlib import Path

from .errors import TisfmError

_GZIP_MAGIC = b"\x1f\x8b"
#: Largest text (decompressed) of one input file read from disk.
MAX_TEXT_BYTES = 2 * 2**30
#: Largest text an upload may decompress to.
MAX_UPLOAD_TEXT = 256 * 2**20
#: Longest line of a text input (a file without line ends is not text).
MAX_LINE_CHARS = 64 * 2**20
#: Largest expansion of compressed data past EXPANSION_FLOOR bytes of output.
MAX_EXPANSION = 200
EXPANSION_FLOOR = 16 * 2**20


def _mib(n):
    return f"{n / 2**20:.0f} MiB" if n >= 2**20 else f"{n} bytes"


def check_expansion(produced, consumed, what, max_bytes=None):
    """Refuse decompressed output of ``produced`` bytes from ``consumed`` compressed bytes when it
    passes ``max_bytes`` (if given) or expands more than :data:`MAX_EXPANSION`-fold (past the
    floor)."""
    if max_bytes is not None and produced > max_bytes:
        raise TisfmError(f"{what} decompresses to more than {_mib(max_bytes)} (the cap on one "
                         "input); refused")
    if produced > EXPANSION_FLOOR and produced > MAX_EXPANSION * max(consumed, 1):
        raise TisfmError(f"{what} expands more than {MAX_EXPANSION}-fold when decompressed (a "
                         f"decompression bomb; decompression is capped); refused after "
                         f"{_mib(produced)}")


class _BoundedGzip(io.RawIOBase):
    """The decompressed bytes of a gzip stream (members concatenated, as bgzip writes them),
    refused by :func:`check_expansion` while they are produced."""

    def __init__(self, raw, what, max_bytes):
        self._raw, self._what, self._max = raw, what, max_bytes
        self._gzip = gzip.GzipFile(fileobj=raw, mode="rb")
        self.produced = 0

    def readable(self):
        return True

    def readinto(self, buffer):
        data = self._gzip.read1(len(buffer))
        buffer[:len(data)] = data
        self.produced += len(data)
        check_expansion(self.produced, self._raw.tell(), self._what, self._max)
        return len(data)

    def close(self):
        try:
            self._gzip.close()
            self._raw.close()
        finally:
            super().close()


def check_input_file(path, what):
    """The path of an existing regular file, else a TisfmError saying what ``path`` is instead."""
    path = Path(path).expanduser()
    if "\x00" in str(path):
        raise TisfmError(f"{what}: the path contains a NUL byte")
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


def _open(path, what, max_bytes):
    # utf-8-sig drops a byte-order mark; text mode turns CRLF and CR into LF
    if is_gzip(path):
        stream = io.BufferedReader(_BoundedGzip(open(path, "rb"), f"{what} {path}", max_bytes), 1 << 20)
        return io.TextIOWrapper(stream, encoding="utf-8-sig")
    if path.stat().st_size > max_bytes:
        raise TisfmError(f"{what} {path} is larger than {_mib(max_bytes)} (the cap on one input); "
                         "refused")
    return open(path, encoding="utf-8-sig")


def _refuse(path, what, exc):
    if isinstance(exc, UnicodeDecodeError):
        return TisfmError(f"{what} {path} is not UTF-8 text (bad byte at offset {exc.start}); is it "
                          "a binary or a compressed file other than gzip?")
    if isinstance(exc, (EOFError, gzip.BadGzipFile, zlib.error)):
        return TisfmError(f"{what} {path} is a damaged or truncated gzip file")
    return TisfmError(f"cannot read {what} {path}: {getattr(exc, 'strerror', None) or exc}")


def iter_lines(path, what, *, max_bytes=MAX_TEXT_BYTES):
    """Yield the lines of a text input (with their line ends), gzip or not.

    At most ``max_bytes`` of text (decompressed) and lines of at most :data:`MAX_LINE_CHARS`.

    Raises
    ------
    TisfmError
        For a missing path, a folder or device, non-UTF-8 bytes, a damaged gzip file, text past
        the caps (or a decompression bomb) or a read error, naming the file.
    """
    path = check_input_file(path, what)
    try:
        with _open(path, what, max_bytes) as handle:
            for lineno in itertools.count(1):
                line = handle.readline(MAX_LINE_CHARS + 1)
                if not line:
                    return
                if len(line) > MAX_LINE_CHARS:
                    raise TisfmError(f"{what} {path} line {lineno} is longer than "
                                     f"{_mib(MAX_LINE_CHARS)} characters; is it a text file?")
                yield line
    except (UnicodeDecodeError, EOFError, OSError, zlib.error) as exc:
        raise _refuse(path, what, exc) from None


def read_text(path, what, *, max_bytes=MAX_TEXT_BYTES):
    """The whole text of an input file (at most ``max_bytes``, decompressed; see :func:`iter_lines`)."""
    path = check_input_file(path, what)
    try:
        with _open(path, what, max_bytes) as handle:
            return handle.read()
    except (UnicodeDecodeError, EOFError, OSError, zlib.error) as exc:
        raise _refuse(path, what, exc) from None


def decode_text(data, what, *, max_bytes=MAX_UPLOAD_TEXT):
    """The UTF-8 text of an uploaded file's bytes, gunzipped as a stream when they are gzip.

    Decompression stops as soon as the output passes ``max_bytes`` or expands like a bomb (see
    :func:`check_expansion`), so a small file that would expand to gigabytes costs a few
    megabytes of memory and a fraction of a second.

    Raises
    ------
    TisfmError
        For a damaged gzip stream, text above ``max_bytes``, a decompression bomb or bytes that
        are not UTF-8.
    """
    data = bytes(data)
    if data[:2] == _GZIP_MAGIC:
        try:
            with io.BufferedReader(_BoundedGzip(io.BytesIO(data), what, max_bytes)) as stream:
                data = stream.read()
        except (EOFError, gzip.BadGzipFile, zlib.error):
            raise TisfmError(f"{what} is a damaged or truncated gzip file") from None
    elif len(data) > max_bytes:
        raise TisfmError(f"{what} is larger than {_mib(max_bytes)} (the cap on one input); refused")
    try:
        return data.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise TisfmError(f"{what} is not a text (UTF-8) file (bad byte at offset {exc.start})") from None


# -- zip archives -------------------------------------------------------------------------------

_EOCD = b"PK\x05\x06"


def open_zip(source, what, *, max_members=1000):
    """A ``zipfile.ZipFile`` of ``source`` (bytes or a path), refused before its directory is
    parsed when the directory lists more than ``max_members`` entries (each costs memory).

    Raises
    ------
    TisfmError
        For a file that is not a zip archive, or one with too many entries.
    """
    if isinstance(source, (bytes, bytearray)):
        tail, handle = bytes(source[-(65536 + 22):]), io.BytesIO(source)
    else:
        with open(source, "rb") as f:
            f.seek(0, io.SEEK_END)
            f.seek(max(0, f.tell() - 65536 - 22))
            tail = f.read()
        handle = source
    at = tail.rfind(_EOCD)
    if at < 0 or len(tail) < at + 22:
        raise TisfmError(f"{what} is not a zip archive")
    entries = int.from_bytes(tail[at + 10:at + 12], "little")
    if entries > max_members:   # 0xFFFF: a zip64 directory, far more than any of ours holds
        raise TisfmError(f"{what} lists {entries if entries < 0xFFFF else 'more than 65534'} "
                         f"entries; at most {max_members} are read; refused")
    try:
        return zipfile.ZipFile(handle)
    except (zipfile.BadZipFile, zipfile.LargeZipFile, NotImplementedError, OSError, ValueError,
            EOFError, struct.error):   # what zipfile raises for damaged or unusual directories
        raise TisfmError(f"{what} is not a readable zip archive") from None


def check_zip_sizes(archive, what, *, max_bytes):
    """Refuse a zip whose members (declared sizes) unpack to more than ``max_bytes`` in all, or
    whose compressed members expand like a bomb (see :func:`check_expansion`)."""
    total = 0
    for info in archive.infolist():
        if info.compress_type != zipfile.ZIP_STORED:
            check_expansion(info.file_size, info.compress_size, f"{what}: {info.filename!r}")
        total += info.file_size
        if total > max_bytes:
            raise TisfmError(f"{what} unpacks to more than {_mib(max_bytes)} (the cap on one "
                             "archive); refused")
    return total
