"""Request frames read by ``gatehouse.http.h2.inbound`` against ``h2``'s own ``receive_data``.

Two server connections, set up as gatehouse's protocol sets them up, receive the same
bytes in the same chunks: one through ``h2.H2Connection.receive_data`` alone, the other
through ``inbound.receive_data``. After every chunk the events, the error (type and
message), the bytes queued to send (GOAWAY, RST_STREAM, SETTINGS ACK), the stream states
and the highest stream id must be the same: well-formed traffic in many chunkings, every
frame the fast path must hand over (CONTINUATION, PADDED, PRIORITY, trailers, DATA), and
the errors a hostile client provokes (stream id reuse, even ids, oversize frames, broken
or oversized HPACK, too many streams, after GOAWAY), then seeded random mutations.
"""

from __future__ import annotations

import random
from collections.abc import Callable

import h2.config
import h2.connection
import h2.events
import h2.settings
import pytest
from h2.settings import SettingCodes

from gatehouse.http.h2 import inbound
from gatehouse.http.h2.hpack_decoder import RequestDecoder
from gatehouse.http.h2.streamcount import CountingH2Connection

PREAMBLE = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"
REQUEST = [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/"), (b":authority", b"a")]
MAX_STREAMS = 4
MAX_HEADER_LIST = 4096
Receive = Callable[[h2.connection.H2Connection, bytes], list[h2.events.Event]]


def server() -> CountingH2Connection:
    """A server connection configured as gatehouse's ``H2Protocol`` configures it."""
    conn = CountingH2Connection(
        h2.config.H2Configuration(
            client_side=False,
            header_encoding=None,
            validate_inbound_headers=False,
            normalize_inbound_headers=False,
            validate_outbound_headers=False,
            normalize_outbound_headers=False,
        )
    )
    conn.local_settings = h2.settings.Settings(
        client=False,
        initial_values={
            SettingCodes.MAX_CONCURRENT_STREAMS: MAX_STREAMS,
            SettingCodes.MAX_HEADER_LIST_SIZE: MAX_HEADER_LIST,
            SettingCodes.MAX_FRAME_SIZE: 16_384,
            SettingCodes.ENABLE_PUSH: 0,
        },
    )
    conn.decoder.max_header_list_size = MAX_HEADER_LIST
    conn.decoder = RequestDecoder(conn.decoder)  # type: ignore[assignment]
    conn.initiate_connection()
    conn.data_to_send()
    return conn


def frame(kind: int, flags: int, sid: int, payload: bytes) -> bytes:
    return len(payload).to_bytes(3, "big") + bytes((kind, flags)) + sid.to_bytes(4, "big") + payload


def headers(sid: int, block: bytes, flags: int = 0x5) -> bytes:
    return frame(0x1, flags, sid, block)


class Client:
    """An ``h2`` client whose frames are taken as bytes, to be fed to both servers."""

    def __init__(self) -> None:
        self.conn = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        self.conn.initiate_connection()

    def request(self, sid: int, end_stream: bool = True, extra: int = 0) -> bytes:
        fields = REQUEST + [(b"x-n", str(i).encode()) for i in range(extra)]
        self.conn.send_headers(sid, fields, end_stream=end_stream)
        return self.conn.data_to_send()

    def opening(self) -> bytes:
        return self.conn.data_to_send()


def describe(event: h2.events.Event) -> tuple[object, ...]:
    fields = sorted((k, repr(v)) for k, v in vars(event).items())
    return (type(event).__name__, *fields)


def streams(conn: h2.connection.H2Connection) -> list[tuple[object, ...]]:
    return sorted(
        (sid, s.state_machine.state, s.inbound_flow_control_window)
        for sid, s in conn.streams.items()
    )


def run(chunks: list[bytes], receive: Receive) -> list[tuple[object, ...]]:
    conn = server()
    seen: list[tuple[object, ...]] = []
    for chunk in chunks:
        try:
            got: tuple[object, ...] = ("events", *map(describe, receive(conn, chunk)))
        except h2.exceptions.H2Error as exc:
            got = ("error", type(exc).__name__, str(exc))
        seen.append(got)
        seen.append(
            (
                conn.data_to_send(),
                conn.highest_inbound_stream_id,
                conn.state_machine.state,
                conn.open_inbound_streams,
                streams(conn),
            )
        )
        if got[0] == "error":
            break
    return seen


def plain(conn: h2.connection.H2Connection, data: bytes) -> list[h2.events.Event]:
    return conn.receive_data(data)


def same(chunks: list[bytes]) -> list[tuple[object, ...]]:
    expected = run(chunks, plain)
    assert run(chunks, inbound.receive_data) == expected
    return expected


def test_many_requests_in_one_chunk_give_h2s_events() -> None:
    client = Client()
    opening = client.opening()
    batch = b"".join(client.request(sid) for sid in (1, 3, 5))
    seen = same([opening, batch])
    names = [e[0] for e in seen[2][1:]]  # type: ignore[index]
    assert names == ["RequestReceived", "StreamEnded"] * 3


def test_every_chunking_of_a_conversation() -> None:
    client = Client()
    wire = client.opening() + b"".join(client.request(sid) for sid in (1, 3))
    for cut in range(1, len(wire)):
        same([wire[:cut], wire[cut:]])


def test_a_request_with_a_body_hands_data_to_h2() -> None:
    client = Client()
    opening = client.opening()
    wire = client.request(1, end_stream=False)
    client.conn.send_data(1, b"hello", end_stream=True)
    body = client.conn.data_to_send()
    seen = same([opening, wire, body])
    assert "StreamEnded" not in repr(seen[2])
    assert "DataReceived" in repr(seen[4])
    seen = same([opening, wire + body])
    assert "DataReceived" in repr(seen[2])


def test_plain_requests_skip_h2s_frame_parser(monkeypatch: pytest.MonkeyPatch) -> None:
    """The point of the module: a chunk of plain request HEADERS never reaches h2's parser."""
    client = Client()
    conn = server()
    conn.receive_data(client.opening())
    handed: list[bytes] = []
    original = CountingH2Connection.receive_data

    def spy(self: CountingH2Connection, data: bytes) -> list[h2.events.Event]:
        handed.append(bytes(data))
        return original(self, data)

    monkeypatch.setattr(CountingH2Connection, "receive_data", spy)
    events = inbound.receive_data(conn, client.request(1) + client.request(3))
    assert [type(e).__name__ for e in events] == ["RequestReceived", "StreamEnded"] * 2
    assert handed == []
    ping = b"\0\0\x08\x06\0\0\0\0\0" + bytes(8)
    inbound.receive_data(conn, client.request(5) + ping)
    assert handed == [ping]


def test_continuation_padding_priority_and_trailers_go_to_h2() -> None:
    client = Client()
    opening = client.opening()
    block = client.request(1)[9:]  # the header block of a plain request
    same([opening + headers(1, block[:3], flags=0x1) + frame(0x9, 0x4, 1, block[3:])])
    padded = bytes((2,)) + block + b"\0\0"
    same([opening + headers(1, padded, flags=0x1 | 0x4 | 0x8)])
    priority = (0).to_bytes(4, "big") + bytes((15,)) + block
    same([opening + headers(1, priority, flags=0x1 | 0x4 | 0x20)])
    open_stream = Client()
    wire = open_stream.opening() + open_stream.request(1, end_stream=False)
    open_stream.conn.send_headers(1, [(b"x-trailer", b"1")], end_stream=True)
    same([wire, open_stream.conn.data_to_send()])


@pytest.mark.parametrize(
    "case",
    [
        "reused id",
        "lower id",
        "even id",
        "stream zero",
        "oversize frame",
        "bad index",
        "header list too large",
        "too many streams",
        "after goaway",
        "no end_headers, then data",
    ],
)
def test_hostile_frames_meet_the_same_errors(case: str) -> None:
    client = Client()
    opening = client.opening()
    block = client.request(1)[9:]
    first = headers(1, block)
    wire = {
        "reused id": first + first,
        "lower id": headers(5, block) + headers(3, block),
        "even id": headers(2, block),
        "stream zero": headers(0, block),
        "oversize frame": headers(1, block + b"\x00" * 16_400),
        "bad index": headers(1, b"\xff\x7f"),
        "header list too large": headers(1, b"\x00\x01a\x7f\x81" + b"b" * 5000 + b"\x82"),
        "too many streams": b"".join(
            headers(sid, block) for sid in range(1, 2 * MAX_STREAMS + 4, 2)
        ),
        "after goaway": frame(0x7, 0, 0, bytes(8)) + headers(1, block),
        "no end_headers, then data": headers(1, block, flags=0x1) + frame(0, 1, 1, b"x"),
    }[case]
    outcome = same([opening, wire])[2]
    # Whatever h2 does, it does not take the hostile frame as one more plain request.
    if case == "reused id":
        assert "StreamReset" in repr(outcome), outcome
    else:
        assert outcome[0] == "error", outcome


def test_seeded_mutations_of_request_traffic() -> None:
    rng = random.Random(18)
    client = Client()
    opening = client.opening()
    base = b"".join(client.request(sid, extra=sid % 3) for sid in range(1, 12, 2))
    for _ in range(300):
        wire = bytearray(base)
        for _ in range(rng.randint(1, 4)):
            wire[rng.randrange(len(wire))] = rng.randrange(256)
        cuts = sorted(rng.sample(range(1, len(wire)), 2))
        body = bytes(wire)
        same([opening, body[: cuts[0]], body[cuts[0] : cuts[1]], body[cuts[1] :]])
