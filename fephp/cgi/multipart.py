"""A multipart/form-data body parsed from the front's side, as PHP parses one: form fields, uploads into temp files.

PHP's command-line mode does not parse a POST body, so for a worker the
front does it (issue 21), and hands the worker RoadRunner's ``uploads``
tree and the form as JSON.  The body is read in bounded chunks from bytes
or a seekable file (Twisted keeps a large one in a temp file), never whole;
a file part goes straight to a temp file (0600, ``mkstemp``) in a given
folder.  Names nest as PHP's ``php_register_variable_ex`` nests them:
``a[b][]`` is ``a -> b -> next index``, a base name's spaces and dots become
``_``, ``a[b`` (no ``]``) is the plain name ``a_b``, text after a ``]`` that
is not ``[`` is dropped, and a name nested deeper than 64 levels
(``max_input_nesting_level``) is dropped, as PHP drops it.

Bounds, each a field of :class:`MultipartLimits`: the number of parts, the
size of one part's header block and of one field's value.  A body that
breaks one, or is not multipart (no opening delimiter, no closing one,
a header line without a colon) raises :class:`MultipartError`, whose
``status`` is 400.
"""

from __future__ import annotations

import io
import os
import re
import tempfile
from dataclasses import dataclass, field
from typing import IO

from .._compat import SLOTS

__all__ = [
    "FilePart",
    "MultipartError",
    "MultipartLimits",
    "PHPArray",
    "ParsedBody",
    "boundary_of",
    "parse_multipart",
    "register",
]

#: PHP's max_input_nesting_level default: a name nested deeper is dropped.
MAX_NESTING = 64
#: PHP's UPLOAD_ERR_NO_FILE: a file input left empty (filename="").
UPLOAD_ERR_NO_FILE = 4

#: RFC 2046 5.1.1: a boundary is 1 to 70 characters.
_BOUNDARY = re.compile(rb"[0-9A-Za-z'()+_,\-./:=? ]{0,69}[0-9A-Za-z'()+_,\-./:=?]")
#: zend_symtable's numeric keys: a canonical decimal integer ("0", "-3"; not "01", "+1", "-0").
_INT_KEY = re.compile(r"(?:0|-?[1-9][0-9]{0,18})")


class MultipartError(ValueError):
    """The body is not a multipart/form-data body within the bounds: the request gets 400."""

    status = 400


@dataclass(frozen=True, **SLOTS)
class MultipartLimits:
    """The bounds a body is parsed within."""

    #: Parts in one body (PHP's max_file_uploads + max_input_vars, as one count).
    max_parts: int = 1000
    #: Bytes of one part's header block, up to its blank line.
    max_header_size: int = 8 * 1024
    #: Bytes of one form field's value (a file's size is bounded by the body's size).
    max_field_size: int = 1024 * 1024
    #: Bytes read from the body at a time.
    chunk_size: int = 64 * 1024


@dataclass(frozen=True, **SLOTS)
class FilePart:
    """One uploaded file: RoadRunner's FileUpload (``error`` is PHP's ``UPLOAD_ERR_*``, 0 when received whole)."""

    name: str
    mime: str
    size: int
    tmp_name: str
    error: int = 0


class PHPArray:
    """An ordered PHP array: string and integer keys, ``[]`` appending at the next integer index."""

    __slots__ = ("items", "next_index")

    def __init__(self) -> None:
        self.items: dict[int | str, object] = {}
        self.next_index = 0

    def append(self, value: object) -> None:
        self.items[self.next_index] = value
        self.next_index += 1

    def key(self, text: str) -> int | str:
        """The key PHP stores ``text`` under: an integer for a canonical decimal within 64 bits."""
        if _INT_KEY.fullmatch(text) and -(2**63) <= int(text) < 2**63:
            return int(text)
        return text

    def set(self, text: str, value: object) -> None:
        key = self.key(text)
        self.items[key] = value
        if isinstance(key, int) and key >= self.next_index:
            self.next_index = key + 1

    def child(self, text: str | None) -> PHPArray:
        """The array under ``text`` (``None``: a new one appended), replacing a scalar there, as PHP does."""
        if text is None:
            sub = PHPArray()
            self.append(sub)
            return sub
        found = self.items.get(self.key(text))
        if isinstance(found, PHPArray):
            return found
        sub = PHPArray()
        self.set(text, sub)
        return sub

    def to_plain(self) -> object:
        """Lists for arrays keyed 0..n-1 in order, dicts with string keys otherwise (json_decode gives PHP the same)."""
        values = [v.to_plain() if isinstance(v, PHPArray) else v for v in self.items.values()]
        if list(self.items) == list(range(len(self.items))):
            return values
        return {str(k): v for k, v in zip(self.items, values)}


def register(root: PHPArray, name: str, value: object) -> None:
    """Store ``value`` under the form name ``name`` as PHP's php_register_variable_ex does."""
    name = name.lstrip(" ")
    bracket = name.find("[")
    base = name if bracket < 0 else name[:bracket]
    base = base.replace(" ", "_").replace(".", "_")
    if not base:
        return  # PHP drops a variable with an empty name
    if bracket < 0:
        root.set(base, value)
        return
    indices: list[str | None] = []
    rest = name[bracket:]
    while rest.startswith("["):
        close = rest.find("]")
        if close < 0:
            if not indices:
                # "a[b" is not an index: the name is "a_b" with ' ', '.', '[' made '_'.
                plain = base + "_" + re.sub(r"[ .\[]", "_", rest[1:])
                root.set(plain, value)
                return
            break  # text after the last "]" is dropped
        indices.append(rest[1:close] or None)
        rest = rest[close + 1:]
        if len(indices) >= MAX_NESTING:
            return
    target = root.child(base)
    for index in indices[:-1]:
        target = target.child(index)
    last = indices[-1]
    if last is None:
        target.append(value)
    else:
        target.set(last, value)


@dataclass(**SLOTS)
class ParsedBody:
    """The form fields and uploads of one body, and the temp files that hold the uploads' bytes."""

    form: PHPArray = field(default_factory=PHPArray)
    uploads: PHPArray = field(default_factory=PHPArray)
    #: Every temp file made for this body: remove them with :meth:`remove_files` once the request is over.
    paths: list[str] = field(default_factory=list)

    def remove_files(self) -> None:
        """Remove the temp files (those already gone, e.g. moved away by the app, are skipped)."""
        for path in self.paths:
            try:
                os.unlink(path)
            except FileNotFoundError:
                pass
        self.paths.clear()


def boundary_of(content_type: str | bytes) -> bytes | None:
    """The boundary of a ``multipart/form-data`` Content-Type, or None for another type or a bad boundary."""
    text = content_type.decode("latin-1") if isinstance(content_type, bytes) else content_type
    kind, _, params = text.partition(";")
    if kind.strip().lower() != "multipart/form-data":
        return None
    for name, value in _params(params):
        if name == "boundary":
            raw = value.encode("latin-1", "replace")
            return raw if _BOUNDARY.fullmatch(raw) else None
    return None


def _params(text: str) -> list[tuple[str, str]]:
    """``; a=b; c="d \\" e"`` as [(a, b), (c, 'd " e')]: names lowercased, quoted strings unescaped."""
    out: list[tuple[str, str]] = []
    i, n = 0, len(text)
    while i < n:
        while i < n and text[i] in " \t;":
            i += 1
        start = i
        while i < n and text[i] not in "=;":
            i += 1
        name = text[start:i].strip().lower()
        value = ""
        if i < n and text[i] == "=":
            i += 1
            while i < n and text[i] in " \t":
                i += 1
            if i < n and text[i] == '"':
                i += 1
                chars = []
                while i < n and text[i] != '"':
                    # PHP's rfc1867 substring_conf: a backslash escapes only a backslash or a quote
                    # (browsers send C:\path\name unescaped).
                    if text[i] == "\\" and i + 1 < n and text[i + 1] in "\\\"":
                        i += 1
                    chars.append(text[i])
                    i += 1
                i += 1
                value = "".join(chars)
            else:
                start = i
                while i < n and text[i] != ";":
                    i += 1
                value = text[start:i].strip()
        if name:
            out.append((name, value))
    return out


def _basename(filename: str) -> str:
    # PHP keeps what follows the last "/" or "\" (old browsers sent the client's full path).
    return filename[max(filename.rfind("/"), filename.rfind("\\")) + 1:]


class _Part:
    """The part being read: a field's bytes in memory or a file's in its temp file."""

    __slots__ = ("chunks", "fd", "filename", "mime", "name", "path", "size")

    def __init__(self, name: str | None, filename: str | None, mime: str) -> None:
        self.name = name
        self.filename = filename
        self.mime = mime
        self.size = 0
        self.chunks: list[bytes] = []
        self.fd = -1
        self.path = ""


class _Parser:
    """The state of one parse; ``state`` is one of HEADERS, BODY, DONE."""

    def __init__(self, boundary: bytes, directory: str, limits: MultipartLimits) -> None:
        self.delimiter = b"\r\n--" + boundary
        self.directory = directory
        self.limits = limits
        self.result = ParsedBody()
        self.parts = 0
        self.part: _Part | None = None
        self.state = "PREAMBLE"

    def run(self, read: io.RawIOBase | IO[bytes]) -> ParsedBody:
        # The opening delimiter may start the body with no CRLF before it (RFC 2046 5.1.1): one is put in front.
        buffer = b"\r\n"
        eof = False
        while True:
            progressed = True
            while progressed and self.state != "DONE":
                buffer, progressed = self.step(buffer, eof)
            if self.state == "DONE" or eof:
                break
            chunk = read.read(self.limits.chunk_size)
            if not chunk:
                eof = True
            else:
                buffer += chunk
        if self.state != "DONE":
            raise MultipartError("multipart body ends before its closing delimiter")
        return self.result

    def step(self, buffer: bytes, eof: bool) -> tuple[bytes, bool]:
        """Consume what ``buffer`` allows in the current state: (the rest, whether anything was consumed)."""
        if self.state == "PREAMBLE":
            at = buffer.find(self.delimiter)
            if at < 0:
                # Keep only what could begin a delimiter; a preamble is ignored (RFC 2046 5.1.1).
                keep = len(self.delimiter) - 1
                return buffer[-keep:] if len(buffer) > keep else buffer, False
            return self.after_delimiter(buffer[at + len(self.delimiter):], eof)
        if self.state == "AFTER":
            return self.after_delimiter(buffer, eof)
        if self.state == "HEADERS":
            end = buffer.find(b"\r\n\r\n")
            if end < 0:
                if len(buffer) > self.limits.max_header_size:
                    raise MultipartError("a part's header block is larger than max_header_size")
                return buffer, False
            if end > self.limits.max_header_size:
                raise MultipartError("a part's header block is larger than max_header_size")
            self.begin_part(buffer[:end])
            self.state = "BODY"
            return buffer[end + 4:], True
        # BODY
        at = buffer.find(self.delimiter)
        if at < 0:
            keep = len(self.delimiter) - 1
            if len(buffer) > keep:
                self.write(buffer[:-keep])
                return buffer[-keep:], False
            return buffer, False
        self.write(buffer[:at])
        self.end_part()
        return self.after_delimiter(buffer[at + len(self.delimiter):], eof)

    def after_delimiter(self, buffer: bytes, eof: bool) -> tuple[bytes, bool]:
        """After a delimiter: ``--`` closes the body; else optional blanks then CRLF open the next part."""
        self.state = "AFTER"
        if buffer.startswith(b"--"):
            self.state = "DONE"
            return b"", True
        line_end = buffer.find(b"\r\n")
        if line_end < 0:
            if len(buffer) > 1024 or eof:
                raise MultipartError("a delimiter is followed by neither CRLF nor --")
            return buffer, False
        if buffer[:line_end].strip(b" \t"):
            raise MultipartError("a delimiter is followed by neither CRLF nor --")
        self.parts += 1
        if self.parts > self.limits.max_parts:
            raise MultipartError("more parts than max_parts")
        self.state = "HEADERS"
        return buffer[line_end + 2:], True

    def begin_part(self, block: bytes) -> None:
        name: str | None = None
        filename: str | None = None
        mime = ""
        for line in block.split(b"\r\n") if block else []:
            key, colon, value = line.partition(b":")
            if not colon:
                raise MultipartError("a part's header line has no colon")
            key_text = key.strip().lower()
            text = value.strip().decode("utf-8", "replace")
            if key_text == b"content-disposition":
                for param, param_value in _params(text.partition(";")[2]):
                    if param == "name":
                        name = param_value
                    elif param == "filename":
                        filename = param_value
            elif key_text == b"content-type":
                mime = text
        part = _Part(name, filename, mime)
        if filename is not None and filename != "" and name is not None:
            part.fd, part.path = tempfile.mkstemp(prefix="fephp-upload-", dir=self.directory)
            self.result.paths.append(part.path)
        self.part = part

    def write(self, data: bytes) -> None:
        part = self.part
        if part is None or not data:
            return
        part.size += len(data)
        if part.fd >= 0:
            view = memoryview(data)
            while view:
                view = view[os.write(part.fd, view):]
        elif part.filename is None:
            if part.size > self.limits.max_field_size:
                raise MultipartError("a form field is larger than max_field_size")
            part.chunks.append(data)

    def end_part(self) -> None:
        part, self.part = self.part, None
        if part is None:
            return
        if part.fd >= 0:
            os.close(part.fd)
            part.fd = -1
        if part.name is None:
            return  # PHP skips a part without a name
        if part.filename is None:
            register(self.result.form, part.name, b"".join(part.chunks).decode("utf-8", "replace"))
        elif part.filename == "":
            register(self.result.uploads, part.name, FilePart("", part.mime, 0, "", UPLOAD_ERR_NO_FILE))
        else:
            register(self.result.uploads, part.name, FilePart(_basename(part.filename), part.mime, part.size, part.path))

    def abandon(self) -> None:
        if self.part is not None and self.part.fd >= 0:
            os.close(self.part.fd)
            self.part.fd = -1
        self.result.remove_files()


def parse_multipart(
    body: bytes | IO[bytes],
    boundary: bytes,
    directory: str,
    limits: MultipartLimits = MultipartLimits(),
) -> ParsedBody:
    """The fields and uploads of a multipart/form-data body, read from its start in chunks.

    Uploads go to temp files in ``directory``; on :class:`MultipartError`
    (or any other failure) the files made so far are removed.
    """
    stream: io.BytesIO | IO[bytes] = io.BytesIO(body) if isinstance(body, bytes) else body
    if not isinstance(body, bytes):
        stream.seek(0)
    parser = _Parser(boundary, directory, limits)
    try:
        return parser.run(stream)
    except BaseException:
        parser.abandon()
        raise
