"""Response frames written by ``gatehouse.http.h2.frames`` against ``h2``'s own methods.

Two server connections (the class gatehouse runs) receive the same requests from an ``h2``
client; one answers with ``h2.H2Connection.send_headers``/``send_data``, the other with
``frames.send_headers``/``send_data``. The bytes on the wire, the stream and connection
states and the flow-control windows must be the same, the errors too, and an independent
peer (the ``h2`` client) must read the answer as the response that was sent.
"""

from __future__ import annotations

from collections.abc import Callable

import h2.config
import h2.connection
import h2.events
import h2.exceptions
import pytest
from h2.settings import SettingCodes

from gatehouse.http.h2 import frames
from gatehouse.http.h2.hpack_encoder import StaticEncoder
from gatehouse.http.h2.streamcount import CountingH2Connection

Header = tuple[bytes, bytes]
REQUEST = [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/"), (b":authority", b"a")]
HEAD = [(b":status", b"200"), (b"content-type", b"text/plain"), (b"content-length", b"5")]


def server() -> CountingH2Connection:
    conn = CountingH2Connection(
        h2.config.H2Configuration(
            client_side=False,
            header_encoding=None,
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
        )
    )
    conn.encoder = StaticEncoder()  # type: ignore[assignment]
    return conn


class Peers:
    """An ``h2`` client talking to a server connection in memory."""

    def __init__(self, window: int = 65_535) -> None:
        self.client = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        self.client.local_settings = h2.settings.Settings(
            client=True, initial_values={SettingCodes.INITIAL_WINDOW_SIZE: window}
        )
        self.server = server()
        self.client.initiate_connection()
        self.server.initiate_connection()
        for _ in range(3):
            self.server.receive_data(self.client.data_to_send())
            self.client.receive_data(self.server.data_to_send())

    def request(self, sid: int, end_stream: bool = True) -> None:
        self.client.send_headers(sid, REQUEST, end_stream=end_stream)
        self.server.receive_data(self.client.data_to_send())

    def wire(self) -> bytes:
        return self.server.data_to_send()


def state(conn: h2.connection.H2Connection, sid: int) -> tuple[object, ...]:
    stream = conn.streams[sid]
    return (
        stream.state_machine.state,
        stream.state_machine.trailers_sent,
        stream.outbound_flow_control_window,
        conn.outbound_flow_control_window,
        conn.state_machine.state,
    )


def head(ours: bool) -> Callable[[h2.connection.H2Connection, int, list[Header], bool], None]:
    if ours:
        return frames.send_headers

    def h2_head(conn: h2.connection.H2Connection, sid: int, hs: list[Header], end: bool) -> None:
        conn.send_headers(sid, hs, end_stream=end)

    return h2_head


def data(ours: bool) -> Callable[[h2.connection.H2Connection, int, bytes, bool], None]:
    if ours:
        return frames.send_data

    def h2_data(conn: h2.connection.H2Connection, sid: int, body: bytes, end: bool) -> None:
        conn.send_data(sid, body, end_stream=end)

    return h2_data


def events(peers: Peers, wire: bytes) -> list[h2.events.Event]:
    return peers.client.receive_data(wire)


@pytest.mark.parametrize(
    "steps",
    [
        pytest.param([("head", HEAD, True)], id="head-only"),
        pytest.param([("head", HEAD, False), ("data", b"hello", True)], id="head-data-end"),
        pytest.param(
            [("head", HEAD, False), ("data", b"hel", False), ("data", b"lo", True)],
            id="two-data",
        ),
        pytest.param(
            [
                ("head", [(b":status", b"200"), (b"content-type", b"application/grpc")], False),
                ("data", b"\x00\x00\x00\x00\x00", False),
                ("head", [(b"grpc-status", b"0"), (b"grpc-message", b"")], True),
            ],
            id="grpc-trailers",
        ),
        pytest.param(
            [
                ("head", [(b":status", b"200"), (b"x-big", b"v" * 40_000)], False),
                ("data", b"x", True),
            ],
            id="continuation",
        ),
        pytest.param(
            [("head", [(b":status", b"103"), (b"link", b"</a>")], False), ("head", HEAD, True)],
            id="informational",
        ),
    ],
)
def test_same_bytes_states_and_peer_view(steps: list[tuple[str, object, bool]]) -> None:
    results = []
    for ours in (False, True):
        peers = Peers()
        peers.request(1)
        for kind, arg, end in steps:
            if kind == "head":
                head(ours)(peers.server, 1, arg, end)  # type: ignore[arg-type]
            else:
                data(ours)(peers.server, 1, arg, end)  # type: ignore[arg-type]
        st = state(peers.server, 1)
        wire = peers.wire()
        results.append((wire, st, [type(e) for e in events(peers, wire)]))
    assert results[0] == results[1]
    kinds = results[1][2]
    if steps[-1][2]:
        assert h2.events.StreamEnded in kinds
    assert h2.events.ResponseReceived in kinds


def test_peer_reads_the_response_fields_and_body() -> None:
    peers = Peers()
    peers.request(1)
    frames.send_headers(peers.server, 1, HEAD, False)
    frames.send_data(peers.server, 1, b"hello", True)
    got = events(peers, peers.wire())
    response = next(e for e in got if isinstance(e, h2.events.ResponseReceived))
    assert response.headers == HEAD
    assert b"".join(e.data or b"" for e in got if isinstance(e, h2.events.DataReceived)) == b"hello"
    assert any(isinstance(e, h2.events.StreamEnded) for e in got)


def test_data_past_the_window_raises_as_h2() -> None:
    errors = []
    for ours in (False, True):
        peers = Peers(window=4)
        peers.request(1)
        head(ours)(peers.server, 1, HEAD, False)
        with pytest.raises(h2.exceptions.FlowControlError):
            data(ours)(peers.server, 1, b"hello", True)
        errors.append(state(peers.server, 1))
    assert errors[0] == errors[1]


@pytest.mark.parametrize("kind", ["head", "data"])
def test_sending_on_a_finished_stream_raises_as_h2(kind: str) -> None:
    raised = []
    for ours in (False, True):
        peers = Peers()
        peers.request(1)
        head(ours)(peers.server, 1, HEAD, True)
        with pytest.raises(h2.exceptions.StreamClosedError):
            if kind == "head":
                head(ours)(peers.server, 1, HEAD, True)
            else:
                data(ours)(peers.server, 1, b"x", True)
        raised.append(peers.wire())
    assert raised[0] == raised[1]


def test_trailers_without_end_stream_are_refused_as_h2() -> None:
    for ours in (False, True):
        peers = Peers()
        peers.request(1)
        head(ours)(peers.server, 1, HEAD, False)
        data(ours)(peers.server, 1, b"hello", False)
        with pytest.raises(h2.exceptions.ProtocolError, match="END_STREAM"):
            head(ours)(peers.server, 1, [(b"grpc-status", b"0")], False)


def test_unknown_stream_raises_as_h2() -> None:
    for ours in (False, True):
        peers = Peers()
        with pytest.raises(h2.exceptions.ProtocolError):
            head(ours)(peers.server, 1, HEAD, True)
