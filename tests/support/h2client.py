"""A small blocking HTTP/2 client over TLS for tests, on the h2 library, with control over its flow-control window."""

from __future__ import annotations

import socket
import ssl
import time
from dataclasses import dataclass, field
from typing import Optional

import h2.config
import h2.connection
import h2.events
import h2.settings


@dataclass
class H2Response:
    """What came back on one stream."""

    stream_id: int
    status: int = 0
    headers: list[tuple[str, str]] = field(default_factory=list)
    body: bytes = b""
    ended: bool = False
    reset: Optional[int] = None  # the RST_STREAM error code, if the stream was reset
    #: Seconds since the request was sent at which each DATA frame arrived.
    data_times: list[float] = field(default_factory=list)
    #: 1xx responses before the final one: (status, headers, seconds since the request was sent).
    informational: list[tuple[int, list[tuple[str, str]], float]] = field(default_factory=list)
    #: Seconds since the request was sent at which the final response's head arrived.
    head_time: float = 0.0

    def header(self, name: str) -> list[str]:
        return [v for k, v in self.headers if k == name]


class H2Client:
    """One HTTP/2 connection to 127.0.0.1:*port* (self-signed certificates accepted).

    With ``auto_window=False`` received DATA is not acknowledged: the
    server's sending window closes after *window* bytes, as for a client
    that does not read.
    """

    def __init__(
        self, port: int, *, window: int = 65535, auto_window: bool = True, timeout: float = 20.0, validate: bool = True,
        server_hostname: str = "127.0.0.1",
    ) -> None:
        context = ssl.create_default_context()
        context.check_hostname = False
        context.verify_mode = ssl.CERT_NONE
        context.set_alpn_protocols(["h2", "http/1.1"])
        raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        # An IP address as the name sends no SNI (RFC 6066 3); a host name does.
        self.sock = context.wrap_socket(raw, server_hostname=server_hostname)
        self.alpn = self.sock.selected_alpn_protocol()
        self.port = port
        self.timeout = timeout
        self.auto_window = auto_window
        config = h2.config.H2Configuration(
            client_side=True, header_encoding="utf-8", validate_outbound_headers=validate, normalize_outbound_headers=validate
        )
        self.conn = h2.connection.H2Connection(config)
        self.conn.local_settings = h2.settings.Settings(
            client=True, initial_values={h2.settings.SettingCodes.INITIAL_WINDOW_SIZE: window}
        )
        self.conn.initiate_connection()
        self.responses: dict[int, H2Response] = {}
        self._sent_at: dict[int, float] = {}
        self.closed = False
        self.goaway: Optional[int] = None
        self._flush()

    def _flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.sock.sendall(data)

    def request(
        self,
        method: str,
        path: str,
        headers: tuple[tuple[str, str], ...] = (),
        body: Optional[bytes] = None,
        *,
        authority: Optional[str] = None,
        end: bool = True,
    ) -> int:
        """Send a request (and its whole *body*, window permitting); returns the stream id."""
        stream_id = self.conn.get_next_available_stream_id()
        pseudo = [
            (":method", method),
            (":path", path),
            (":scheme", "https"),
            (":authority", authority or f"127.0.0.1:{self.port}"),
        ]
        no_body = body is None and end
        self.conn.send_headers(stream_id, pseudo + list(headers), end_stream=no_body)
        self.responses[stream_id] = H2Response(stream_id)
        self._sent_at[stream_id] = time.monotonic()
        self._flush()
        if body is not None:
            self.send_body(stream_id, body, end=end)
        return stream_id

    def send_body(self, stream_id: int, body: bytes, *, end: bool = True) -> None:
        """Send *body* on *stream_id*, waiting for window as needed."""
        view = memoryview(body)
        while view:
            window = min(self.conn.local_flow_control_window(stream_id), self.conn.max_outbound_frame_size)
            if window <= 0:
                self.read_once()
                if self.responses[stream_id].ended or self.responses[stream_id].reset is not None:
                    return
                continue
            piece, view = view[:window], view[window:]
            self.conn.send_data(stream_id, bytes(piece))
            self._flush()
        if end:
            self.conn.end_stream(stream_id)
            self._flush()

    def read_once(self) -> None:
        """Read what the server sent once (blocking up to the timeout) and apply its events."""
        data = self.sock.recv(65536)
        if not data:
            self.closed = True
            raise ConnectionError("the server closed the connection")
        for event in self.conn.receive_data(data):
            self._apply(event)
        self._flush()

    def _apply(self, event: object) -> None:
        if isinstance(event, h2.events.ResponseReceived):
            response = self.responses[event.stream_id]
            response.head_time = time.monotonic() - self._sent_at[event.stream_id]
            for name, value in event.headers:
                if name == ":status":
                    response.status = int(value)
                else:
                    response.headers.append((name, value))
        elif isinstance(event, h2.events.InformationalResponseReceived):
            headers = [(str(k), str(v)) for k, v in event.headers]
            status = int(dict(headers)[":status"])
            elapsed = time.monotonic() - self._sent_at[event.stream_id]
            self.responses[event.stream_id].informational.append(
                (status, [(k, v) for k, v in headers if k != ":status"], elapsed)
            )
        elif isinstance(event, h2.events.DataReceived):
            response = self.responses[event.stream_id]
            response.body += event.data
            response.data_times.append(time.monotonic() - self._sent_at[event.stream_id])
            if self.auto_window:
                self.conn.acknowledge_received_data(event.flow_controlled_length, event.stream_id)
        elif isinstance(event, h2.events.StreamEnded):
            self.responses[event.stream_id].ended = True
        elif isinstance(event, h2.events.StreamReset):
            self.responses[event.stream_id].reset = int(event.error_code)
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.goaway = int(event.error_code)

    def open_window(self, stream_id: int, amount: int) -> None:
        """Let the server send *amount* more bytes on *stream_id* (and on the connection)."""
        self.conn.increment_flow_control_window(amount)
        self.conn.increment_flow_control_window(amount, stream_id=stream_id)
        self._flush()

    def wait(self, stream_id: int) -> H2Response:
        """Read until *stream_id* has ended or was reset, or the server said GOAWAY; bounded by the timeout."""
        deadline = time.monotonic() + self.timeout
        response = self.responses[stream_id]
        while not response.ended and response.reset is None and self.goaway is None:
            if time.monotonic() > deadline:
                raise TimeoutError(f"stream {stream_id} did not end in {self.timeout} s")
            self.read_once()
        return response

    def get(self, path: str, headers: tuple[tuple[str, str], ...] = ()) -> H2Response:
        return self.wait(self.request("GET", path, headers))

    def close(self) -> None:
        try:
            self.conn.close_connection()
            self._flush()
        except OSError:
            pass
        self.sock.close()
