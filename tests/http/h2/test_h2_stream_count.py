"""SETTINGS_MAX_CONCURRENT_STREAMS with gatehouse's cheaper open-stream count
(``gatehouse.http.h2.streamcount``): the limit must hold exactly as ``h2`` itself holds it,
and closed streams must not pile up in the connection.

Client and server ``h2`` connections talk in memory; the server is the class gatehouse runs.
"""

from __future__ import annotations

import h2.config
import h2.connection
import h2.exceptions
import pytest
from h2.errors import ErrorCodes
from h2.settings import SettingCodes

from gatehouse.http.h2 import streamcount
from gatehouse.http.h2.streamcount import CountingH2Connection

REQUEST = [(b":method", b"GET"), (b":scheme", b"http"), (b":path", b"/"), (b":authority", b"a")]
RESPONSE = [(b":status", b"200")]


class Pair:
    """A client and a gatehouse server connection with ``limit`` concurrent streams."""

    def __init__(self, limit: int = 10) -> None:
        self.client = h2.connection.H2Connection(
            h2.config.H2Configuration(client_side=True, header_encoding=None)
        )
        self.server = CountingH2Connection(
            h2.config.H2Configuration(client_side=False, header_encoding=None)
        )
        self.server.local_settings = h2.settings.Settings(
            client=False, initial_values={SettingCodes.MAX_CONCURRENT_STREAMS: limit}
        )
        self.client.initiate_connection()
        self.server.initiate_connection()
        self.exchange()
        self.next_id = 1

    def exchange(self) -> None:
        for _ in range(3):
            self.server.receive_data(self.client.data_to_send())
            self.client.receive_data(self.server.data_to_send())

    def open(self, end_stream: bool = True) -> int:
        """Open one stream from the client; raises what the server raises."""
        sid = self.next_id
        self.next_id += 2
        self.client.send_headers(sid, REQUEST, end_stream=end_stream)
        self.server.receive_data(self.client.data_to_send())
        return sid

    def answer(self, sid: int) -> None:
        """The server completes the stream, as gatehouse does, and reports it."""
        self.server.send_headers(sid, RESPONSE, end_stream=True)
        self.server.stream_finished(sid)
        self.client.receive_data(self.server.data_to_send())


def test_limit_refuses_exactly_the_stream_past_it() -> None:
    pair = Pair(limit=10)
    for _ in range(10):
        pair.open()
    with pytest.raises(h2.exceptions.TooManyStreamsError):
        pair.open()


def test_answered_streams_free_exactly_their_slots() -> None:
    pair = Pair(limit=10)
    ids = [pair.open() for _ in range(10)]
    for sid in ids[:3]:
        pair.answer(sid)
    for _ in range(3):
        pair.open()
    with pytest.raises(h2.exceptions.TooManyStreamsError):
        pair.open()


def test_streams_closed_without_a_report_still_free_their_slots() -> None:
    # Closed by the server without stream_finished (or reset by the client): the count
    # at the limit finds them closed.
    pair = Pair(limit=10)
    ids = [pair.open() for _ in range(10)]
    pair.server.send_headers(ids[0], RESPONSE, end_stream=True)
    pair.server.reset_stream(ids[1], ErrorCodes.CANCEL)
    pair.client.reset_stream(ids[2], ErrorCodes.CANCEL)
    pair.server.receive_data(pair.client.data_to_send())
    pair.client.receive_data(pair.server.data_to_send())
    for _ in range(3):
        pair.open()
    with pytest.raises(h2.exceptions.TooManyStreamsError):
        pair.open()


def test_half_closed_streams_count_as_open() -> None:
    # A request whose body is still coming is open (RFC 9113 §5.1.2) even once the
    # server has stopped tracking it.
    pair = Pair(limit=4)
    ids = [pair.open(end_stream=False) for _ in range(4)]
    pair.server.send_headers(ids[0], RESPONSE, end_stream=True)  # half-closed (local)
    pair.server.stream_finished(ids[0])
    with pytest.raises(h2.exceptions.TooManyStreamsError):
        pair.open()


def test_count_at_the_limit_matches_h2s_own() -> None:
    pair = Pair(limit=8)
    ids = [pair.open(end_stream=False) for _ in range(8)]
    pair.server.send_headers(ids[0], RESPONSE, end_stream=True)
    pair.server.reset_stream(ids[1], ErrorCodes.CANCEL)
    ours = pair.server.open_inbound_streams
    theirs = h2.connection.H2Connection.open_inbound_streams.fget(pair.server)  # type: ignore[attr-defined]
    assert ours == theirs == 7


def test_closed_streams_do_not_pile_up() -> None:
    pair = Pair(limit=100)
    for _ in range(3 * streamcount.PURGE_AT):
        pair.answer(pair.open())
    assert len(pair.server.streams) <= streamcount.PURGE_AT
    # and the table is still h2's: a new stream is served
    pair.answer(pair.open())
