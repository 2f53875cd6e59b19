"""An h2c (HTTP/2, prior knowledge) upstream on loopback, built on the ``h2`` library, that
records what each stream received: headers, body, request trailers, and whether the
stream was reset by the peer (the proxy) and with which code.

Each request is answered when its stream ends: ``status`` (200 unless set) with
``body: <n>`` and the response trailer ``x-upstream-end: done``; not at all for paths
starting ``/hang`` (to let a test reset the stream); at once, before the request body, for
paths starting ``/early``; with ``health_status`` (and no body) for ``/healthz``; and the
first stream of each ``/refuse…`` path is refused (RST_STREAM REFUSED_STREAM), and the
first of each ``/drop…`` path makes the upstream close the connection without a word.
``max_streams`` is the SETTINGS_MAX_CONCURRENT_STREAMS it announces. Every connection runs
in its own thread; ``open_connections`` counts those not yet closed.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from dataclasses import dataclass, field

import h2.config
import h2.connection
import h2.errors
import h2.events
import h2.exceptions
import h2.settings


class _Drop(Exception):
    """Close the connection at once (no GOAWAY)."""


@dataclass
class H2Recorded:
    """One stream as the upstream saw it."""

    headers: list[tuple[bytes, bytes]] = field(default_factory=list)
    body: bytearray = field(default_factory=bytearray)
    trailers: list[tuple[bytes, bytes]] = field(default_factory=list)
    ended: bool = False
    reset: int | None = None

    def header(self, name: bytes) -> bytes | None:
        for k, v in self.headers:
            if k == name:
                return v
        return None


class H2Upstream:
    """The server; ``streams`` holds every stream of every connection, in arrival order."""

    def __init__(self, max_streams: int = 100, health_status: int = 200, status: int = 200) -> None:
        self.max_streams = max_streams
        self.health_status = health_status
        #: The status of ordinary answers (a failing upstream: 500).
        self.status = status
        self._refused: set[bytes] = set()
        self.open_connections = 0
        self.sock = socket.create_server(("127.0.0.1", 0))
        self.port = self.sock.getsockname()[1]
        self.streams: list[H2Recorded] = []
        self.connections = 0
        self.lock = threading.Lock()
        self.changed = threading.Condition(self.lock)
        self._closed = False
        self._threads: list[threading.Thread] = []
        self._conns: list[socket.socket] = []
        threading.Thread(target=self._accept, daemon=True).start()

    @property
    def url(self) -> str:
        return f"h2c://127.0.0.1:{self.port}"

    def wait(self, predicate: object, timeout: float = 10.0) -> bool:
        """Wait until ``predicate()`` holds (checked whenever a stream changes)."""
        with self.changed:
            return self.changed.wait_for(predicate, timeout)  # type: ignore[arg-type]

    def _accept(self) -> None:
        while not self._closed:
            try:
                conn, _ = self.sock.accept()
            except OSError:
                return
            with self.lock:
                self.connections += 1
                self.open_connections += 1
                self._conns.append(conn)
            t = threading.Thread(target=self._serve, args=(conn,), daemon=True)
            t.start()

    def _serve(self, sock: socket.socket) -> None:
        h2conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding=None)
        )
        h2conn.local_settings = h2.settings.Settings(
            client=False,
            initial_values={h2.settings.SettingCodes.MAX_CONCURRENT_STREAMS: self.max_streams},
        )
        h2conn.initiate_connection()
        live: dict[int, H2Recorded] = {}
        with contextlib.suppress(OSError):
            sock.sendall(h2conn.data_to_send())
            while True:
                data = sock.recv(65536)
                if not data:
                    break
                try:
                    events = h2conn.receive_data(data)
                except h2.exceptions.ProtocolError:
                    break
                try:
                    for event in events:
                        self._handle(h2conn, live, event)
                except _Drop:
                    break
                sock.sendall(h2conn.data_to_send())
        sock.close()
        with self.changed:
            self.open_connections -= 1
            self.changed.notify_all()

    def _handle(
        self, h2conn: h2.connection.H2Connection, live: dict[int, H2Recorded], event: object
    ) -> None:
        sid = getattr(event, "stream_id", 0) or 0
        with self.changed:
            if isinstance(event, h2.events.RequestReceived):
                rec = H2Recorded(headers=list(event.headers or []))  # type: ignore[arg-type]
                live[sid] = rec
                self.streams.append(rec)
                if (rec.header(b":path") or b"").startswith(b"/early"):
                    h2conn.send_headers(sid, [(b":status", b"200"), (b"content-length", b"0")])
                    h2conn.end_stream(sid)
            rec_or_none = live.get(sid)
            if isinstance(event, h2.events.DataReceived) and rec_or_none is not None:
                rec_or_none.body += event.data or b""
                h2conn.acknowledge_received_data(event.flow_controlled_length or 0, sid)
            elif isinstance(event, h2.events.TrailersReceived) and rec_or_none is not None:
                rec_or_none.trailers = list(event.headers or [])  # type: ignore[arg-type]
            elif isinstance(event, h2.events.StreamReset) and rec_or_none is not None:
                rec_or_none.reset = int(event.error_code or 0)
            elif isinstance(event, h2.events.StreamEnded) and rec_or_none is not None:
                rec_or_none.ended = True
                path = rec_or_none.header(b":path") or b"/"
                if path.startswith(b"/drop") and path not in self._refused:
                    self._refused.add(path)
                    raise _Drop
                if path.startswith(b"/refuse") and path not in self._refused:
                    self._refused.add(path)
                    h2conn.reset_stream(sid, h2.errors.ErrorCodes.REFUSED_STREAM)
                elif path.startswith(b"/healthz"):
                    status = b"%d" % self.health_status
                    h2conn.send_headers(
                        sid, [(b":status", status), (b"content-length", b"0")], end_stream=True
                    )
                elif not path.startswith((b"/hang", b"/early")):
                    body = b"body: %d" % len(rec_or_none.body)
                    h2conn.send_headers(
                        sid, [(b":status", b"%d" % self.status), (b"content-type", b"text/plain")]
                    )
                    h2conn.send_data(sid, body)
                    h2conn.send_headers(sid, [(b"x-upstream-end", b"done")], end_stream=True)
            self.changed.notify_all()

    def close(self) -> None:
        self._closed = True
        self.sock.close()
        with self.lock:
            for conn in self._conns:
                with contextlib.suppress(OSError):
                    conn.shutdown(socket.SHUT_RDWR)
                conn.close()
