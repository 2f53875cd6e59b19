"""A blocking HTTP/2 test client over a real socket, built on the ``h2`` library.

:class:`H2Client` connects (h2c with prior knowledge, or TLS with ALPN ``h2``), and lets a
test send well-formed requests *and* raw frames (floods, bombs, resets) on the same
connection, then read events until a condition holds or the deadline passes. It keeps
what a test asserts on: each stream's response headers, body, trailers and reset code,
and the GOAWAY the server sent.
"""

from __future__ import annotations

import socket
import ssl
import time
from collections.abc import Callable
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import h2.settings
from hyperframe.frame import DataFrame, Frame, RstStreamFrame

PREFACE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"


@dataclass
class StreamResult:
    """What one stream received."""

    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)
    trailers: list[tuple[bytes, bytes]] = field(default_factory=list)
    ended: bool = False
    reset: int | None = None

    @property
    def status(self) -> int:
        for k, v in self.headers:
            if k == b":status":
                return int(v)
        return 0

    def header(self, name: bytes) -> bytes | None:
        for k, v in self.headers:
            if k == name:
                return v
        return None


class H2Client:
    """One HTTP/2 connection to gatehouse."""

    def __init__(
        self,
        port: int,
        *,
        tls: bool = False,
        authority: str = "app.localhost",
        settings: dict[int, int] | None = None,
        auto_window: bool = True,
        timeout: float = 10.0,
        validate: bool = True,
        outbound_checks: bool = True,
    ) -> None:
        raw = socket.create_connection(("127.0.0.1", port), timeout=timeout)
        if tls:
            ctx = ssl.create_default_context()
            ctx.check_hostname = False
            ctx.verify_mode = ssl.CERT_NONE
            ctx.set_alpn_protocols(["h2"])
            self.sock: socket.socket = ctx.wrap_socket(raw, server_hostname=authority)
            self.alpn = self.sock.selected_alpn_protocol()  # type: ignore[attr-defined]
        else:
            self.sock = raw
            self.alpn = None
        self.authority = authority
        self.scheme = "https" if tls else "http"
        config = h2.config.H2Configuration(
            client_side=True,
            header_encoding=None,
            validate_inbound_headers=validate,
            # Off: send exactly what a test wrote, malformed or not.
            validate_outbound_headers=outbound_checks,
            normalize_outbound_headers=outbound_checks,
        )
        self.conn = h2.connection.H2Connection(config)
        if settings:
            self.conn.local_settings = h2.settings.Settings(client=True, initial_values=settings)
        self.auto_window = auto_window
        self.streams: dict[int, StreamResult] = {}
        self.goaway: h2.events.ConnectionTerminated | None = None
        self.remote_settings: dict[int, int] = {}
        self.closed = False
        self.events: list[h2.events.Event] = []
        #: After a GOAWAY, ``h2`` (client side) refuses every further frame although
        #: the server may still finish streams below its last stream id (RFC 9113 §6.8):
        #: from then on frames are parsed here.
        self._raw_tail = b""
        self.conn.initiate_connection()
        self.flush()

    # -- sending ----------------------------------------------------------------------

    def flush(self) -> None:
        data = self.conn.data_to_send()
        if data:
            self.send_raw(data)

    def send_raw(self, data: bytes) -> None:
        try:
            self.sock.sendall(data)
        except OSError:
            self.closed = True

    def request(
        self,
        path: str = "/",
        *,
        method: str = "GET",
        headers: list[tuple[str, str]] | None = None,
        body: bytes | None = None,
        end: bool = True,
        authority: str | None = None,
    ) -> int:
        """Open a stream with a request; returns its id."""
        sid = self.conn.get_next_available_stream_id()
        hdrs = [
            (b":method", method.encode()),
            (b":scheme", self.scheme.encode()),
            (b":authority", (authority or self.authority).encode()),
            (b":path", path.encode()),
        ]
        hdrs += [(k.lower().encode(), v.encode()) for k, v in headers or []]
        self.streams[sid] = StreamResult()
        self.conn.send_headers(sid, hdrs, end_stream=end and body is None)
        if body is not None:
            self.send_body(sid, body, end=end)
        self.flush()
        return sid

    def send_body(self, sid: int, body: bytes, end: bool = True) -> None:
        """Send ``body`` as the windows allow (reads events while waiting for window)."""
        view = memoryview(body)
        while view:
            window = self.conn.local_flow_control_window(sid)
            if window <= 0:
                self.read_until(
                    lambda: self.conn.local_flow_control_window(sid) > 0 or self.closed, 10
                )
                if self.closed:
                    return
                continue
            n = min(window, len(view), self.conn.max_outbound_frame_size)
            self.conn.send_data(sid, bytes(view[:n]))
            view = view[n:]
            self.flush()
        if end:
            self.conn.end_stream(sid)
            self.flush()

    # -- receiving --------------------------------------------------------------------

    def read_until(self, done: Callable[[], bool], timeout: float = 10.0) -> bool:
        """Read and handle events until ``done()`` or the connection closes; True if done."""
        deadline = time.monotonic() + timeout
        while not done():
            if self.closed:
                return done()
            left = deadline - time.monotonic()
            if left <= 0:
                return False
            self.sock.settimeout(left)
            try:
                data = self.sock.recv(65536)
            except TimeoutError:
                return done()
            except OSError:
                self.closed = True
                continue
            if not data:
                self.closed = True
                continue
            if self.goaway is not None:
                self._after_goaway(data)
                continue
            try:
                events = self.conn.receive_data(data)
            except h2.exceptions.ProtocolError:
                self.closed = True
                raise
            for event in events:
                self._handle(event)
            self.flush()
        return True

    def response(self, sid: int, timeout: float = 10.0) -> StreamResult:
        """Wait for stream ``sid`` to end or be reset."""
        result = self.streams[sid]
        self.read_until(lambda: result.ended or result.reset is not None, timeout)
        return result

    def get(self, path: str = "/", **kw: object) -> StreamResult:
        return self.response(self.request(path, **kw))  # type: ignore[arg-type]

    def _after_goaway(self, data: bytes) -> None:
        buf = self._raw_tail + data
        while len(buf) >= 9:
            frame, length = Frame.parse_frame_header(memoryview(buf[:9]))
            if len(buf) < 9 + length:
                break
            frame.parse_body(memoryview(buf[9 : 9 + length]))
            buf = buf[9 + length :]
            result = self.streams.get(frame.stream_id)
            if result is None:
                continue
            if isinstance(frame, DataFrame):
                result.body += frame.data
                if "END_STREAM" in frame.flags:
                    result.ended = True
            elif isinstance(frame, RstStreamFrame):
                result.reset = frame.error_code
            elif "END_STREAM" in frame.flags:
                result.ended = True
        self._raw_tail = buf

    def _handle(self, event: h2.events.Event) -> None:
        self.events.append(event)
        sid = getattr(event, "stream_id", None)
        result = self.streams.get(sid) if sid else None
        if isinstance(event, h2.events.ResponseReceived) and result is not None:
            result.headers = list(event.headers or [])  # type: ignore[arg-type]
        elif isinstance(event, h2.events.DataReceived):
            if result is not None:
                result.body += event.data or b""
            if self.auto_window and event.flow_controlled_length:
                try:
                    self.conn.acknowledge_received_data(
                        event.flow_controlled_length, event.stream_id or 0
                    )
                except h2.exceptions.StreamClosedError:
                    pass
        elif isinstance(event, h2.events.TrailersReceived) and result is not None:
            result.trailers = list(event.headers or [])  # type: ignore[arg-type]
        elif isinstance(event, h2.events.StreamEnded) and result is not None:
            result.ended = True
        elif isinstance(event, h2.events.StreamReset) and result is not None:
            result.reset = int(event.error_code or 0)
        elif isinstance(event, h2.events.ConnectionTerminated):
            self.goaway = event
        elif isinstance(event, h2.events.RemoteSettingsChanged):
            for code, change in event.changed_settings.items():
                self.remote_settings[int(code)] = int(change.new_value or 0)

    def close(self) -> None:
        try:
            self.sock.close()
        except OSError:
            pass

    def __enter__(self) -> H2Client:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()
