"""Request HEADERS frames read without ``hyperframe``'s frame objects (RFC 9113 §4.1, §6.2).

``H2Connection.receive_data`` turns every frame into a ``hyperframe`` object (a
``Flags`` set, a priority record, a body parse), logs an eager ``repr()`` of it through a
no-op logger and copies the buffer around it: at one and ten streams per connection,
about half of ``h2``'s receive side for a plain request, which is one HEADERS frame
(bench/h2_bench.py, py-spy). :func:`receive_data` reads such frames itself and makes the
same changes through ``h2``'s own pieces, in ``h2``'s order: the concurrent-stream check,
HPACK decoding (``h2``'s error mapping), the connection state machine, stream creation
(stream-id rules) and the stream's ``receive_headers`` (state machine, events, header
processing). ``h2`` stays the protocol's state machine of record.

Only the common frame is read here: a complete HEADERS frame with END_HEADERS (END_STREAM
or not), neither PADDED nor PRIORITY, opening a new client stream (odd id above the
highest seen), within the frame-size and concurrent-stream limits, on a connection whose
own buffer is empty (preamble consumed, no partial frame, no header block awaiting
CONTINUATION). At the first frame that is anything else, that frame and every byte after
it go to ``h2.receive_data`` unchanged, so ordering and every error path stay ``h2``'s.

Relies on ``h2`` 4.x internals (pyproject pins <5): ``incoming_buffer`` (``_data``,
``_preamble_len``, ``_headers_buffer``), ``_begin_new_stream``, ``_terminate_connection``,
``_prepare_for_sending`` and ``h2.connection._decode_headers``.
tests/http/h2/test_h2_inbound.py feeds the same bytes to this and to ``h2`` alone and
compares events, states, bytes to send and errors.
"""

from __future__ import annotations

from h2.connection import (
    AllowedStreamIDs,
    ConnectionInputs,
    H2Connection,
    _decode_headers,
)
from h2.events import Event
from h2.exceptions import ProtocolError

_HEADERS = 0x1
_END_STREAM = 0x1
_END_HEADERS = 0x4
_PADDED = 0x8
_PRIORITY = 0x20
_FRAME_HEAD = 9


def receive_data(conn: H2Connection, data: bytes) -> list[Event]:
    """As ``conn.receive_data(data)`` on a server connection (see the module docstring).

    Raises:
        h2.exceptions.ProtocolError: as ``h2`` would, after queueing the same GOAWAY.
    """
    buffer = conn.incoming_buffer
    if buffer._preamble_len or buffer._data or buffer._headers_buffer:
        return conn.receive_data(data)
    events: list[Event] = []
    at = 0
    end = len(data)
    try:
        while end - at >= _FRAME_HEAD:
            length = int.from_bytes(data[at : at + 3], "big")
            flags = data[at + 4]
            stream_id = int.from_bytes(data[at + 5 : at + 9], "big") & 0x7FFFFFFF
            if (
                data[at + 3] != _HEADERS
                or not flags & _END_HEADERS
                or flags & (_PADDED | _PRIORITY)
                or end - at - _FRAME_HEAD < length
                or length > conn.max_inbound_frame_size
                or stream_id % 2 != 1
                or stream_id <= conn.highest_inbound_stream_id
                or stream_id in conn.streams
                or conn.open_inbound_streams + 1 > conn.local_settings.max_concurrent_streams
            ):
                break
            start = at + _FRAME_HEAD
            at = start + length
            headers = _decode_headers(conn.decoder, data[start:at])
            events.extend(conn.state_machine.process_input(ConnectionInputs.RECV_HEADERS))
            stream = conn._begin_new_stream(stream_id, AllowedStreamIDs.ODD)
            frames, stream_events = stream.receive_headers(
                headers, bool(flags & _END_STREAM), conn.config.header_encoding
            )
            conn._prepare_for_sending(frames)
            events.extend(stream_events)
    except ProtocolError as exc:
        # As receive_data: queue the GOAWAY, then raise.
        conn._terminate_connection(exc.error_code)
        raise
    if at < end:
        events.extend(conn.receive_data(data[at:] if at else data))
    return events
