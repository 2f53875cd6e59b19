"""HPACK decoding of request header blocks (RFC 7541) with a fast path for blocks made of
indexed fields only.

A client that repeats its requests on a connection (a browser's second request, a gRPC
stub, h2load) sends header blocks that are, after the first, only references to table
entries: one byte per field (§6.1). ``hpack.Decoder`` (pure Python) spends about a third
of ``h2``'s parsing of a request on them (bench/h2_bench.py, cProfile). Such a block does
not change the dynamic table, so :class:`RequestDecoder` resolves it from the same tables
``hpack.Decoder`` keeps and leaves every other block, and every error, to that decoder:
a literal (it may add to the table), a table size update, a multi-byte index, an index
past the table (``InvalidTableIndex``), a header list past ``max_header_list_size`` (an
HPACK bomb of repeated references to one large entry: ``OversizedHeaderListError``), a
table left larger than allowed (``InvalidTableSizeError``). Nothing was changed before
such a hand-over, so ``hpack`` decodes the block from the start.

Fields come back as plain ``(name, value)`` tuples of bytes, where ``hpack`` returns its
``HeaderTuple`` subclass: with ``h2``'s inbound validation off (see ``protocol``) nothing
reads the difference.
"""

from __future__ import annotations

from hpack import Decoder
from hpack.table import HeaderTable

Header = tuple[bytes, bytes]

_STATIC: tuple[Header, ...] = tuple(HeaderTable.STATIC_TABLE)
#: Per-entry overhead counted into a header list's size (RFC 7541 §4.1), as hpack does.
ENTRY_OVERHEAD = 32


class RequestDecoder:
    """The connection's ``hpack.Decoder`` behind a fast path for indexed-only blocks.

    It stands in for ``h2.H2Connection.decoder``: ``h2`` reads and sets the two limits
    below and calls :meth:`decode` with ``raw=True``.
    """

    __slots__ = ("inner",)

    def __init__(self, inner: Decoder) -> None:
        self.inner = inner

    @property
    def max_header_list_size(self) -> int:
        return self.inner.max_header_list_size

    @max_header_list_size.setter
    def max_header_list_size(self, value: int) -> None:
        self.inner.max_header_list_size = value

    @property
    def max_allowed_table_size(self) -> int:
        return self.inner.max_allowed_table_size

    @max_allowed_table_size.setter
    def max_allowed_table_size(self, value: int) -> None:
        self.inner.max_allowed_table_size = value

    @property
    def header_table_size(self) -> int:
        return self.inner.header_table_size

    def decode(self, data: bytes, raw: bool = False) -> list[Header]:
        """The header list of one block (see the module docstring for what ``hpack``
        decodes instead).

        Raises:
            hpack.HPACKError: as ``hpack.Decoder.decode`` does.
        """
        inner = self.inner
        if not raw or not data or inner.header_table_size > inner.max_allowed_table_size:
            return list(inner.decode(data, raw))
        dynamic = inner.header_table.dynamic_entries
        limit = inner.max_header_list_size
        static_len = len(_STATIC)
        headers: list[Header] = []
        size = 0
        for byte in data:
            index = byte & 0x7F
            if byte < 0x80 or index == 0 or index == 0x7F:
                return list(inner.decode(data, raw))
            if index <= static_len:
                entry = _STATIC[index - 1]
            else:
                at = index - static_len - 1
                if at >= len(dynamic):
                    return list(inner.decode(data, raw))
                entry = dynamic[at]
            size += len(entry[0]) + len(entry[1]) + ENTRY_OVERHEAD
            if size > limit:
                return list(inner.decode(data, raw))
            headers.append(entry)
        return headers
