"""Response compression from fephp's side: which content coding a client gets, and the encoders that stream it.

:class:`Compression` holds the site's policy (the codings in order of
preference, the minimum size, the levels, the content types worth
compressing) and makes the decision for one response when its first body
bytes are written (:meth:`Compression.begin`, called by every Exchange's
write path: :class:`fephp.web.adapt.RequestExchange` and fephp's own
protocols).  A body whose whole length is known and which comes
in one write (a small PHP page, a small static file) is compressed in one
call and keeps a Content-Length, so it still goes out in one send; any other
body is compressed as it is written, each write flushed through the encoder
so that PHP's ``flush()`` reaches the browser at once.

gzip comes from zlib; brotli from ``brotli`` (CPython) or ``brotlicffi``
(PyPy, where a CFFI module is the fast path); zstd from ``zstandard``, which
has no build for PyPy 3.9: there zstd is simply not offered
(:data:`AVAILABLE` says what this interpreter has).
"""

from __future__ import annotations

import zlib
from typing import Any, Callable, Mapping, Optional

try:
    import brotli as _brotli
except ImportError:  # PyPy: brotlicffi has the same API, as a CFFI module
    try:
        import brotlicffi as _brotli  # type: ignore[no-redef]
    except ImportError:
        _brotli = None  # type: ignore[assignment]
try:
    import zstandard as _zstd
except ImportError:  # no zstandard for PyPy 3.9 (setup.cfg)
    _zstd = None  # type: ignore[assignment]

from .exchange import HeaderList

__all__ = [
    "AVAILABLE",
    "CODINGS",
    "DEFAULT_TYPES",
    "Compression",
    "Encoder",
    "accepted_codings",
    "add_vary",
    "compressible",
    "weak_etag",
]

#: Every coding fephp knows, in its default order of preference.
CODINGS = ("zstd", "br", "gzip")
#: The codings this interpreter can produce.
AVAILABLE = tuple(
    name for name, present in (("zstd", _zstd is not None), ("br", _brotli is not None), ("gzip", True)) if present
)

#: Content types worth compressing: text and the text-like formats, never
#: images (other than SVG and icons), audio, video, fonts already compressed
#: (woff, woff2) or archives.  ``type/*`` matches every subtype.
DEFAULT_TYPES = (
    "text/*",
    "application/javascript",
    "application/x-javascript",
    "application/json",
    "application/ld+json",
    "application/manifest+json",
    "application/problem+json",
    "application/geo+json",
    "application/xml",
    "application/xhtml+xml",
    "application/rss+xml",
    "application/atom+xml",
    "application/wasm",
    "image/svg+xml",
    "image/x-icon",
    "image/vnd.microsoft.icon",
    "font/ttf",
    "font/otf",
)

#: Most distinct Accept-Encoding values and Content-Type values remembered
#: (each decided once, then a dict lookup); both are the client's or the
#: application's to vary, so past this the cache stops growing.
DECISION_CACHE_SIZE = 512
#: Window of the streaming brotli and zstd encoders, as a power of two
#: (256 KiB): each streamed response holds one, so it bounds their memory.
#: gzip's is zlib's 32 KiB.
WINDOW_BITS = 18

_GZIP_WBITS = 16 + zlib.MAX_WBITS  # a gzip header and trailer, not zlib's (RFC 1952)


class Encoder:
    """One response's streaming encoder: ``compress`` returns what can be sent now, ``finish`` the tail."""

    __slots__ = ("_compress", "_flush", "_finish")

    def __init__(self, compress: Callable[[bytes], bytes], flush: Callable[[], bytes], finish: Callable[[], bytes]) -> None:
        self._compress = compress
        self._flush = flush
        self._finish = finish

    def compress(self, data: bytes) -> bytes:
        """*data* compressed and flushed: everything written so far can be decoded from what was returned."""
        return self._compress(data) + self._flush() if data else b""

    def finish(self) -> bytes:
        return self._finish()


def _parse_accept(value: bytes) -> dict[str, float]:
    """Accept-Encoding (RFC 9110 12.5.3) as coding -> q; a q that is no number counts as 0."""
    out: dict[str, float] = {}
    for item in value.split(b","):
        name, _, params = item.partition(b";")
        coding = name.strip().lower().decode("latin-1")
        if not coding:
            continue
        q = 1.0
        for param in params.split(b";"):
            key, eq, number = param.partition(b"=")
            if eq and key.strip().lower() == b"q":
                try:
                    q = float(number.strip())
                except ValueError:
                    q = 0.0
                if not 0.0 <= q <= 1.0:  # nan, inf, out of range
                    q = 0.0
        if coding == "x-gzip":  # RFC 9110 8.4.1.3: the same as gzip
            coding = "gzip"
        out[coding] = max(q, out.get(coding, 0.0))
    return out


def accepted_codings(value: Optional[bytes], preference: tuple[str, ...]) -> tuple[str, ...]:
    """The codings of *preference* that an Accept-Encoding *value* accepts, best first.

    Higher q first; at equal q the order of *preference*.  A coding the
    client does not name is accepted only through ``*``; ``q=0`` refuses it.
    """
    if not value:
        return ()
    accept = _parse_accept(value)
    star = accept.get("*", 0.0)
    ranked = []
    for rank, coding in enumerate(preference):
        q = accept.get(coding, star)
        if q > 0.0:
            ranked.append((-q, rank, coding))
    ranked.sort()
    return tuple(coding for _, _, coding in ranked)


def compressible(content_type: bytes, types: tuple[str, ...]) -> bool:
    """Whether a Content-Type value names one of *types* (``type/*`` matching every subtype)."""
    media = content_type.split(b";", 1)[0].strip().lower().decode("latin-1")
    if not media or "/" not in media:
        return False
    major = media.split("/", 1)[0]
    return media in types or f"{major}/*" in types


def weak_etag(etag: bytes) -> bytes:
    """*etag* made weak (RFC 9110 8.8.1): a compressed body is not the bytes the strong tag named."""
    return etag if etag.startswith(b"W/") else b"W/" + etag


def _has_token(values: list[bytes], token: bytes) -> bool:
    """Whether a comma-separated header (all its lines) holds *token*, case-insensitively."""
    for value in values:
        for item in value.split(b","):
            if item.strip().lower() == token:
                return True
    return False


class Compression:
    """A site's compression policy and the per-response decision.

    *algorithms* are the codings offered, best first at equal q (those this
    interpreter lacks are left out); *min_size* the smallest known body
    length compressed; *levels* maps a coding to its level (gzip 1-9, br
    0-11, zstd 1-19); *types* the content types compressed; *precompressed*
    whether a static file's ``x.zst``, ``x.br`` or ``x.gz`` is sent instead.
    """

    def __init__(
        self,
        *,
        algorithms: tuple[str, ...] = CODINGS,
        min_size: int = 512,
        levels: Optional[Mapping[str, int]] = None,
        types: tuple[str, ...] = DEFAULT_TYPES,
        precompressed: bool = True,
    ) -> None:
        unknown = [a for a in algorithms if a not in CODINGS]
        if unknown:
            raise ValueError(f"unknown content codings: {unknown}")
        self.algorithms = tuple(a for a in algorithms if a in AVAILABLE)
        self.min_size = min_size
        self.levels = {"gzip": 5, "br": 4, "zstd": 3, **(levels or {})}
        self.types = tuple(t.lower() for t in types)
        #: Whether static files' precompressed siblings (x.br, x.zst, x.gz) are served.
        self.precompressed = precompressed
        self._accept_cache: dict[bytes, tuple[str, ...]] = {}
        self._type_cache: dict[bytes, bool] = {}
        self._zstd_one_shot: Any = None
        self._zstd_params: Any = None
        if "zstd" in self.algorithms:
            self._zstd_params = _zstd.ZstdCompressionParameters.from_level(
                self.levels["zstd"], window_log=WINDOW_BITS
            )
            self._zstd_one_shot = _zstd.ZstdCompressor(compression_params=self._zstd_params)

    # -- the decision ---------------------------------------------------------

    def codings_for(self, accept_encoding: Optional[bytes]) -> tuple[str, ...]:
        """The offered codings an Accept-Encoding value accepts, best first (cached)."""
        if not accept_encoding:
            return ()
        cache = self._accept_cache
        found = cache.get(accept_encoding)
        if found is None:
            found = accepted_codings(accept_encoding, self.algorithms)
            if len(cache) < DECISION_CACHE_SIZE:
                cache[accept_encoding] = found
        return found

    def type_compressible(self, content_type: Optional[bytes]) -> bool:
        """Whether a response of this Content-Type is compressed (cached)."""
        if content_type is None:
            return False
        cache = self._type_cache
        found = cache.get(content_type)
        if found is None:
            found = compressible(content_type, self.types)
            if len(cache) < DECISION_CACHE_SIZE:
                cache[content_type] = found
        return found

    def varies(self, code: int, headers: HeaderList, length: Optional[int]) -> bool:
        """Whether this response's body would be compressed for some client: then it carries Vary.

        Never for 1xx, 204, 304 or 206, a body PHP encoded itself or marked
        ``Cache-Control: no-transform`` (RFC 9110 7.7), a type outside the
        list, or a known length under ``min_size``.  *headers* are the
        response's (lowercase names).
        """
        if code < 200 or code == 204 or code == 304 or code == 206:
            return False
        if length is not None and length < self.min_size:
            return False
        content_type = None
        control = []
        for name, value in headers:
            if name == b"content-type":
                if content_type is None:
                    content_type = value
            elif name == b"content-encoding" or name == b"content-range":
                return False
            elif name == b"cache-control":
                control.append(value)
        if not self.type_compressible(content_type):
            return False
        return not control or not _has_token(control, b"no-transform")

    def begin(self, exchange: Any, data: bytes) -> "tuple[bytes, Optional[Encoder]]":
        """Decide for *exchange* (an :class:`fephp.web.exchange.Exchange`), whose head is about to go out with *data*.

        *data* are its first body bytes (empty at a ``finish`` with nothing
        written).  Returns the bytes to write instead of *data* and the
        encoder for the rest of the body (None when the body is not
        compressed, or was compressed whole).  Sets Content-Encoding, Vary,
        the weakened ETag and the new Content-Length in the exchange's
        ``response_headers`` as needed.  Every implementation of the
        Exchange calls this at its first write, so the rule is one.
        """
        headers = exchange.response_headers
        length: Optional[int] = None
        known = None
        for name, value in headers:
            if name == b"content-length":
                known = value
                break
        if known is not None:
            try:
                length = int(known)
            except ValueError:
                return data, None  # not ours to mend
        if not self.varies(exchange.status, headers, length):
            return data, None
        add_vary(headers)
        if exchange.method == b"HEAD":
            return data, None
        codings = self.codings_for(exchange.header(b"accept-encoding"))
        if not codings:
            return data, None
        coding = codings[0]
        _set(headers, b"content-encoding", coding.encode())
        _remove(headers, b"accept-ranges")  # ranges would be of the compressed bytes
        for i, (name, value) in enumerate(headers):
            if name == b"etag":
                headers[i] = (name, weak_etag(value))
        if length is not None and length == len(data):
            # The whole body, in one write: compressed in one call, sent with its length in one send.
            body = self.compress_whole(coding, data)
            _set(headers, b"content-length", b"%d" % len(body))
            return body, None
        if known is not None:
            _remove(headers, b"content-length")  # the compressed length is not known yet
        encoder = self.encoder(coding)
        return encoder.compress(data), encoder

    # -- the encoders ---------------------------------------------------------

    def compress_whole(self, coding: str, data: bytes) -> bytes:
        """*data*, a whole body, in *coding*."""
        if coding == "gzip":
            c = zlib.compressobj(self.levels["gzip"], zlib.DEFLATED, _GZIP_WBITS)
            return c.compress(data) + c.flush()
        if coding == "br":
            return _brotli.compress(data, quality=self.levels["br"], lgwin=WINDOW_BITS)  # type: ignore[no-any-return]
        return self._zstd_one_shot.compress(data)  # type: ignore[no-any-return]

    def encoder(self, coding: str) -> Encoder:
        """A streaming encoder for one response in *coding*."""
        if coding == "gzip":
            z = zlib.compressobj(self.levels["gzip"], zlib.DEFLATED, _GZIP_WBITS)
            return Encoder(z.compress, lambda: z.flush(zlib.Z_SYNC_FLUSH), z.flush)
        if coding == "br":
            b = _brotli.Compressor(quality=self.levels["br"], lgwin=WINDOW_BITS)
            return Encoder(b.process, b.flush, b.finish)
        # One compressor per stream: a ZstdCompressor runs one operation at a time.
        s = _zstd.ZstdCompressor(compression_params=self._zstd_params).compressobj()
        return Encoder(s.compress, lambda: s.flush(_zstd.COMPRESSOBJ_FLUSH_BLOCK), s.flush)


def _set(headers: HeaderList, name: bytes, value: bytes) -> None:
    """*name* set to *value* alone: in the place of its first line, or at the end."""
    for i, (key, _) in enumerate(headers):
        if key == name:
            headers[i] = (name, value)
            headers[i + 1:] = [pair for pair in headers[i + 1:] if pair[0] != name]
            return
    headers.append((name, value))


def _remove(headers: HeaderList, name: bytes) -> None:
    headers[:] = [pair for pair in headers if pair[0] != name]


def add_vary(headers: HeaderList) -> None:
    """Add ``Accept-Encoding`` to Vary in *headers* (lowercase names), unless it is there already or Vary is ``*``."""
    vary = [value for name, value in headers if name == b"vary"]
    if not vary:
        headers.append((b"vary", b"Accept-Encoding"))
    elif not _has_token(vary, b"accept-encoding") and not _has_token(vary, b"*"):
        headers.append((b"vary", b"Accept-Encoding"))
