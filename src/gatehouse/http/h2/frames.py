"""Response HEADERS and DATA frames written without ``h2``'s frame objects (RFC 9113 §4.1).

``H2Connection.send_headers`` and ``send_data`` build a ``hyperframe`` object per frame
(with a ``Flags`` set, a priority record and a ``serialize()``), re-encode the header
list, scan it for an informational status and log through a no-op logger several times:
about a sixth of the CPU of a request at one stream (bench/h2_bench.py, py-spy), more
than the frames' state changes themselves. :func:`send_headers` and :func:`send_data`
make the same state changes through ``h2``'s own state machines, in ``h2``'s order
(connection, then stream; transitions before the header block is encoded), so ``h2``
stays the protocol's state machine of record and raises the same errors for a stream or
connection that cannot send; only the bytes of the frame are written here, appended to
``h2``'s outbound buffer.

Whatever is not the common case goes to ``h2``'s methods unchanged: an unknown or
removed stream, an informational (1xx) head, DATA past the flow-control window or the
peer's frame size (``h2`` raises).

Relies on ``h2`` 4.x internals (pyproject pins <5): ``H2Connection.streams``,
``state_machine``, ``outbound_flow_control_window``, ``_data_to_send``, and
``H2Stream.state_machine``, ``outbound_flow_control_window``, ``max_outbound_frame_size``,
``request_method``. tests/http/h2/test_h2_frames.py compares the bytes and states with
``h2``'s own methods.
"""

from __future__ import annotations

from h2.connection import ConnectionInputs, H2Connection
from h2.exceptions import ProtocolError
from h2.stream import StreamInputs

Header = tuple[bytes, bytes]

# Frame types and flags (RFC 9113 §6.1, §6.2, §6.10).
_DATA = 0x0
_HEADERS = 0x1
_CONTINUATION = 0x9
_END_STREAM = 0x1
_END_HEADERS = 0x4


def _frame_head(length: int, kind: int, flags: int, stream_id: int) -> bytes:
    """The 9-byte frame header: 24-bit length, type, flags, 31-bit stream id."""
    return (
        length.to_bytes(3, "big")
        + bytes((kind, flags))
        + (stream_id & 0x7FFFFFFF).to_bytes(4, "big")
    )


def send_headers(
    conn: H2Connection, stream_id: int, headers: list[Header], end_stream: bool
) -> None:
    """As ``conn.send_headers(stream_id, headers, end_stream=end_stream)`` for a response
    head or trailers on a stream the client opened (``headers`` already lower-case bytes).

    Raises:
        h2.exceptions.H2Error: as ``h2`` would (closed stream or connection, trailers
            without END_STREAM).
    """
    stream = conn.streams.get(stream_id)
    if stream is None or (headers and headers[0][0] == b":status" and headers[0][1][:1] == b"1"):
        conn.send_headers(stream_id, headers, end_stream=end_stream)
        return
    conn.state_machine.process_input(ConnectionInputs.SEND_HEADERS)
    machine = stream.state_machine
    machine.process_input(StreamInputs.SEND_HEADERS)
    block = conn.encoder.encode(headers)
    if end_stream:
        machine.process_input(StreamInputs.SEND_END_STREAM)
    if machine.trailers_sent and not end_stream:
        raise ProtocolError("Trailers must have END_STREAM set.")
    # h2 records the :method of what it sends (none, for a response).
    stream.request_method = None
    limit = stream.max_outbound_frame_size or len(block) or 1
    flags = _END_STREAM if end_stream else 0
    out = conn._data_to_send
    if len(block) <= limit:
        out.extend(_frame_head(len(block), _HEADERS, flags | _END_HEADERS, stream_id))
        out.extend(block)
        return
    # A block past the peer's frame size continues in CONTINUATION frames (§6.10);
    # END_STREAM stays on the HEADERS frame.
    out.extend(_frame_head(limit, _HEADERS, flags, stream_id))
    out.extend(block[:limit])
    start = limit
    while start < len(block):
        piece = block[start : start + limit]
        start += limit
        last = start >= len(block)
        out.extend(_frame_head(len(piece), _CONTINUATION, _END_HEADERS if last else 0, stream_id))
        out.extend(piece)


def send_data(conn: H2Connection, stream_id: int, data: bytes, end_stream: bool) -> None:
    """As ``conn.send_data(stream_id, data, end_stream=end_stream)`` (no padding).

    Raises:
        h2.exceptions.H2Error: as ``h2`` would (closed stream, past the flow-control
            window or the peer's frame size).
    """
    stream = conn.streams.get(stream_id)
    n = len(data)
    if (
        stream is None
        or n > conn.outbound_flow_control_window
        or n > stream.outbound_flow_control_window
        or n > conn.max_outbound_frame_size
    ):
        conn.send_data(stream_id, data, end_stream=end_stream)
        return
    conn.state_machine.process_input(ConnectionInputs.SEND_DATA)
    machine = stream.state_machine
    machine.process_input(StreamInputs.SEND_DATA)
    if end_stream:
        machine.process_input(StreamInputs.SEND_END_STREAM)
    stream.outbound_flow_control_window -= n
    conn.outbound_flow_control_window -= n
    out = conn._data_to_send
    out.extend(_frame_head(n, _DATA, _END_STREAM if end_stream else 0, stream_id))
    out.extend(data)
