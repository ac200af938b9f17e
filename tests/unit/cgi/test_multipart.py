"""multipart/form-data parsed as PHP parses it: fields, uploads in temp files, PHP's name nesting, bounds (fephp.cgi.multipart)."""

from __future__ import annotations

import io
import os
import stat
from email.message import EmailMessage
from email.policy import HTTP
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from fephp.cgi.multipart import (
    FilePart,
    MultipartError,
    MultipartLimits,
    PHPArray,
    boundary_of,
    parse_multipart,
    register,
)

B = b"XyZ123"


def part(name: str, value: bytes, filename: str | None = None, mime: str | None = None) -> bytes:
    head = f'Content-Disposition: form-data; name="{name}"'
    if filename is not None:
        head += f'; filename="{filename}"'
    if mime is not None:
        head += f"\r\nContent-Type: {mime}"
    return head.encode() + b"\r\n\r\n" + value


def body(*parts: bytes, boundary: bytes = B) -> bytes:
    out = b""
    for p in parts:
        out += b"--" + boundary + b"\r\n" + p + b"\r\n"
    return out + b"--" + boundary + b"--\r\n"


def test_fields_and_one_file(tmp_path: Path) -> None:
    """Two fields and a file give the form map, one FilePart, and a 0600 temp file holding the file's exact bytes."""
    data = body(part("a", b"1"), part("b", b"two\r\nlines"), part("f", b"\x00file\r\n--XyZ12", "x.bin", "image/png"))
    parsed = parse_multipart(data, B, str(tmp_path))
    assert parsed.form.to_plain() == {"a": "1", "b": "two\r\nlines"}
    (path,) = parsed.paths
    assert parsed.uploads.to_plain() == {"f": FilePart("x.bin", "image/png", 14, path)}
    assert Path(path).read_bytes() == b"\x00file\r\n--XyZ12"
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert Path(path).parent == tmp_path
    parsed.remove_files()
    assert list(tmp_path.iterdir()) == []


def _nested(depth: int, value: object) -> object:
    out = value
    for _ in range(depth):
        out = {"x": out}
    return out


#: (id, names given in order, expected tree of their values 0, 1, 2...)
NESTING: list[tuple[str, list[str], object]] = [
    ("plain", ["a"], {"a": "0"}),
    ("list", ["a[]", "a[]"], {"a": ["0", "1"]}),
    ("map", ["a[x]", "a[y]"], {"a": {"x": "0", "y": "1"}}),
    ("deep", ["a[b][]", "a[b][]", "a[c][d]"], {"a": {"b": ["0", "1"], "c": {"d": "2"}}}),
    ("dots-and-spaces-in-base", [" a.b c"], {"a_b_c": "0"}),
    ("dots-kept-in-index", ["a[x.y]"], {"a": {"x.y": "0"}}),
    ("unclosed-bracket", ["a[b.c"], {"a_b_c": "0"}),
    ("after-index-dropped", ["a[b]junk"], {"a": {"b": "0"}}),
    ("numeric-keys-continue", ["a[5]", "a[]"], {"a": {"5": "0", "6": "1"}}),
    ("zero-one-is-a-list", ["a[0]", "a[1]"], {"a": ["0", "1"]}),
    ("leading-zero-is-a-string", ["a[01]"], {"a": {"01": "0"}}),
    ("later-wins", ["a", "a"], {"a": "1"}),
    ("scalar-replaced-by-array", ["a", "a[]"], {"a": ["1"]}),
    ("empty-name-dropped", ["", "[x]"], []),
    ("too-deep-dropped", ["a" + "[x]" * 64, "b" + "[x]" * 63], {"b": _nested(63, "1")}),
]


@pytest.mark.parametrize(("names", "expected"), [c[1:] for c in NESTING], ids=[c[0] for c in NESTING])
def test_php_nesting(names: list[str], expected: object) -> None:
    """Form names nest as PHP's php_register_variable_ex nests them into $_POST."""
    root = PHPArray()
    for i, name in enumerate(names):
        register(root, name, str(i))
    assert root.to_plain() == expected


def test_nested_uploads(tmp_path: Path) -> None:
    """Files named f[] and g[a][b] become a list and a map in the uploads tree; an empty file input is UPLOAD_ERR_NO_FILE."""
    data = body(
        part("f[]", b"1", "one.txt", "text/plain"),
        part("f[]", b"22", "C:\\Users\\me\\two.txt", "text/plain"),
        part("g[a][b]", b"333", "dir/three.txt"),
        part("h", b"", ""),
    )
    parsed = parse_multipart(data, B, str(tmp_path))
    p1, p2, p3 = parsed.paths
    assert parsed.uploads.to_plain() == {
        "f": [FilePart("one.txt", "text/plain", 1, p1), FilePart("two.txt", "text/plain", 2, p2)],
        "g": {"a": {"b": FilePart("three.txt", "", 3, p3)}},
        "h": FilePart("", "", 0, "", 4),
    }
    assert parsed.form.to_plain() == []


def test_preamble_epilogue_padding_and_quoting(tmp_path: Path) -> None:
    """A preamble, blanks after a delimiter, an epilogue and a quoted-pair in a name are taken as RFC 2046 and 9110 say."""
    data = (
        b"preamble\r\n--XyZ123  \r\n"
        b'content-disposition: form-data; name="q\\"x"\r\n\r\nv\r\n'
        b"--XyZ123--\r\nepilogue --XyZ123\r\n"
    )
    assert parse_multipart(data, B, str(tmp_path)).form.to_plain() == {'q"x': "v"}


def test_part_without_name_is_skipped(tmp_path: Path) -> None:
    """A part with no name is dropped, and so is a file part's data without a name (no temp file is made)."""
    data = body(b"Content-Disposition: form-data\r\n\r\nx", b'Content-Disposition: form-data; filename="a"\r\n\r\ny')
    parsed = parse_multipart(data, B, str(tmp_path))
    assert (parsed.form.to_plain(), parsed.uploads.to_plain(), parsed.paths) == ([], [], [])


#: (id, body, limits, the error's message)
MALFORMED: list[tuple[str, bytes, MultipartLimits, str]] = [
    ("empty", b"", MultipartLimits(), "multipart body ends before its closing delimiter"),
    ("no-delimiter", b"hello", MultipartLimits(), "multipart body ends before its closing delimiter"),
    ("no-closing", body(part("a", b"1"))[:-12], MultipartLimits(), "multipart body ends before its closing delimiter"),
    ("headers-cut", b"--XyZ123\r\nContent-Disposition: form-data", MultipartLimits(),
     "multipart body ends before its closing delimiter"),
    ("junk-after-delimiter", b"--XyZ123junk\r\n\r\n--XyZ123--", MultipartLimits(),
     "a delimiter is followed by neither CRLF nor --"),
    ("header-without-colon", body(b"Content-Disposition form-data\r\n\r\nx"), MultipartLimits(),
     "a part's header line has no colon"),
    ("too-many-parts", body(part("a", b"1"), part("b", b"2"), part("c", b"3")), MultipartLimits(max_parts=2),
     "more parts than max_parts"),
    ("header-too-large", body(part("a" * 200, b"1")), MultipartLimits(max_header_size=100),
     "a part's header block is larger than max_header_size"),
    ("header-too-large-unfinished", b"--XyZ123\r\n" + b"X" * 300, MultipartLimits(max_header_size=100, chunk_size=7),
     "a part's header block is larger than max_header_size"),
    ("field-too-large", body(part("a", b"x" * 101)), MultipartLimits(max_field_size=100),
     "a form field is larger than max_field_size"),
]


@pytest.mark.parametrize(("data", "limits", "message"), [c[1:] for c in MALFORMED], ids=[c[0] for c in MALFORMED])
def test_malformed(tmp_path: Path, data: bytes, limits: MultipartLimits, message: str) -> None:
    """A malformed or oversized body raises MultipartError (status 400) with its reason."""
    with pytest.raises(MultipartError) as caught:
        parse_multipart(data, B, str(tmp_path), limits)
    assert (str(caught.value), caught.value.status) == (message, 400)


def test_failure_removes_the_files_made(tmp_path: Path) -> None:
    """When the body turns out malformed after a file part, that file's temp file is removed."""
    data = body(part("f", b"abc", "a.txt"), part("g", b"x" * 50))
    with pytest.raises(MultipartError):
        parse_multipart(data, B, str(tmp_path), MultipartLimits(max_field_size=10))
    assert list(tmp_path.iterdir()) == []


def test_a_file_is_read_from_its_start_in_bounded_chunks(tmp_path: Path) -> None:
    """A seekable file is read from offset 0 in reads of at most chunk_size bytes, never whole."""
    payload = os.urandom(100_000)
    sizes: list[int] = []

    class Recording(io.BytesIO):
        def read(self, size: int | None = -1) -> bytes:
            assert size is not None
            sizes.append(size)
            return super().read(size)

    stream = Recording(body(part("f", payload, "p.bin")))
    stream.seek(0, io.SEEK_END)
    parsed = parse_multipart(stream, B, str(tmp_path), MultipartLimits(chunk_size=4096))
    assert set(sizes) == {4096}
    assert Path(parsed.paths[0]).read_bytes() == payload


#: (id, Content-Type, boundary)
BOUNDARIES: list[tuple[str, str, bytes | None]] = [
    ("plain", "multipart/form-data; boundary=abc", b"abc"),
    ("quoted", 'multipart/form-data; charset=utf-8; boundary="a b:c"', b"a b:c"),
    ("case", "Multipart/Form-Data; BOUNDARY=abc", b"abc"),
    ("other-type", "multipart/mixed; boundary=abc", None),
    ("none", "multipart/form-data", None),
    ("too-long", "multipart/form-data; boundary=" + "a" * 71, None),
    ("trailing-space", 'multipart/form-data; boundary="abc "', None),
]


@pytest.mark.parametrize(("content_type", "expected"), [c[1:] for c in BOUNDARIES], ids=[c[0] for c in BOUNDARIES])
def test_boundary_of(content_type: str, expected: bytes | None) -> None:
    """The boundary comes from a multipart/form-data Content-Type only, and only a valid one (RFC 2046 5.1.1)."""
    assert boundary_of(content_type) == expected
    assert boundary_of(content_type.encode()) == expected


def test_a_body_the_email_package_wrote(tmp_path: Path) -> None:
    """A form-data message written by the standard library's email package (HTTP policy) parses to its fields and file."""
    message = EmailMessage(policy=HTTP)
    message.make_mixed()
    message.set_type("multipart/form-data")
    field = EmailMessage(policy=HTTP)
    field.set_content("välue".encode(), maintype="text", subtype="plain", cte="8bit", disposition="form-data")
    field.set_param("name", "t", header="Content-Disposition")
    upload = EmailMessage(policy=HTTP)
    upload.set_content(b"\x00\x01bin\r\n", maintype="application", subtype="octet-stream", cte="8bit",
                       disposition="form-data", filename="b.bin")
    upload.set_param("name", "u", header="Content-Disposition")
    message.attach(field)
    message.attach(upload)
    raw = message.as_bytes()
    boundary = message.get_boundary()
    assert boundary is not None
    data = raw[raw.index(b"\r\n\r\n") + 4:]
    parsed = parse_multipart(data, boundary.encode(), str(tmp_path))
    assert parsed.form.to_plain() == {"t": "välue"}
    assert parsed.uploads.to_plain() == {"u": FilePart("b.bin", "application/octet-stream", 7, parsed.paths[0])}
    assert Path(parsed.paths[0]).read_bytes() == b"\x00\x01bin\r\n"


_names = st.text(alphabet="abcdefghij_", min_size=1, max_size=8)


@settings(max_examples=200, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(
    fields=st.dictionaries(_names, st.binary(max_size=300), max_size=5),
    files=st.dictionaries(_names.map(lambda n: "F" + n), st.binary(max_size=3000), max_size=4),
    chunk=st.integers(min_value=1, max_value=5000),
    boundary=st.text(alphabet="abcXYZ0189'()+_,-./:=?", min_size=1, max_size=70),
)
def test_round_trip(tmp_path: Path, fields: dict[str, bytes], files: dict[str, bytes], chunk: int, boundary: str) -> None:
    """Any fields and files written as a body come back as the same map and the same bytes, whatever the chunk size."""
    raw_boundary = boundary.encode()
    delimiter = b"\r\n--" + raw_boundary
    contents = [v for v in fields.values()] + list(files.values())
    if any(delimiter in b"\r\n" + c + b"\r\n--" for c in contents):
        return  # a body cannot hold its own delimiter (RFC 2046 5.1.1: the writer picks a boundary that is not in it)
    parts = [part(n, v) for n, v in fields.items()] + [part(n, v, n + ".bin", "a/b") for n, v in files.items()]
    parsed = parse_multipart(body(*parts, boundary=raw_boundary), raw_boundary, str(tmp_path), MultipartLimits(chunk_size=chunk))
    try:
        assert parsed.form.to_plain() == ({n: v.decode("utf-8", "replace") for n, v in fields.items()} or [])
        uploads = parsed.uploads.to_plain()
        assert isinstance(uploads, (dict, list))
        got = {} if uploads == [] else uploads
        assert {n: (f.name, f.mime, f.size, Path(f.tmp_name).read_bytes()) for n, f in got.items()} == {  # type: ignore[union-attr]
            n: (n + ".bin", "a/b", len(v), v) for n, v in files.items()
        }
    finally:
        parsed.remove_files()
