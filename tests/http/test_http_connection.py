"""RequestReader: HTTP/1.1 framing rules with bytes alone (whole, byte by byte, with trailing data)."""

from __future__ import annotations

from collections.abc import Callable

import pytest

from gatehouse.errors import BadRequest, ClientError, HeaderTooLarge, MethodNotAllowed, URITooLong
from gatehouse.http.connection import Limits, RequestReader, UpgradeRequested
from gatehouse.http.messages import RequestHead


class Sink:
    def __init__(self) -> None:
        self.events: list[tuple[str, object]] = []

    def on_request(self, head: RequestHead) -> None:
        self.events.append(("head", head))

    def on_body(self, chunk: bytes) -> None:
        self.events.append(("body", chunk))

    def on_request_end(self) -> None:
        self.events.append(("end", None))

    def heads(self) -> list[RequestHead]:
        return [e[1] for e in self.events if e[0] == "head"]  # type: ignore[misc]

    def body(self) -> bytes:
        return b"".join(e[1] for e in self.events if e[0] == "body")  # type: ignore[misc]

    def ends(self) -> int:
        return sum(1 for e in self.events if e[0] == "end")


def whole(reader: RequestReader, data: bytes) -> None:
    reader.feed(data)


def bytewise(reader: RequestReader, data: bytes) -> None:
    for i in range(len(data)):
        reader.feed(data[i : i + 1])


FEEDS: list[Callable[[RequestReader, bytes], None]] = [whole, bytewise]


def make(limits: Limits | None = None) -> tuple[RequestReader, Sink]:
    sink = Sink()
    return RequestReader(sink, limits or Limits()), sink


@pytest.mark.parametrize("feed", FEEDS)
def test_simple_get(feed: Callable[[RequestReader, bytes], None]) -> None:
    reader, sink = make()
    feed(reader, b"GET /a?b=c HTTP/1.1\r\nHost: x.test\r\nX-Y: z\r\n\r\n")
    (head,) = sink.heads()
    assert head.method == b"GET"
    assert head.target == b"/a?b=c"
    assert head.get(b"host") == b"x.test"
    assert head.get(b"x-y") == b"z"
    assert head.keep_alive
    assert not head.has_body
    assert sink.ends() == 1


@pytest.mark.parametrize("feed", FEEDS)
def test_content_length_body_and_trailing_request(
    feed: Callable[[RequestReader, bytes], None],
) -> None:
    reader, sink = make()
    feed(
        reader,
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 5\r\n\r\nhelloGET /2 HTTP/1.1\r\nHost: x\r\n\r\n",
    )
    heads = sink.heads()
    assert [h.target for h in heads] == [b"/", b"/2"]
    assert heads[0].has_body
    assert sink.body() == b"hello"
    assert sink.ends() == 2


@pytest.mark.parametrize("feed", FEEDS)
def test_chunked_body(feed: Callable[[RequestReader, bytes], None]) -> None:
    reader, sink = make()
    feed(
        reader,
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n2;x=y\r\nde\r\n0\r\n\r\n",
    )
    assert sink.heads()[0].has_body
    assert sink.body() == b"abcde"
    assert sink.ends() == 1


@pytest.mark.parametrize("feed", FEEDS)
def test_http10_not_keep_alive_and_host_optional(
    feed: Callable[[RequestReader, bytes], None],
) -> None:
    reader, sink = make()
    feed(reader, b"GET / HTTP/1.0\r\n\r\n")
    (head,) = sink.heads()
    assert head.http_version == "1.0"
    assert not head.keep_alive


@pytest.mark.parametrize("feed", FEEDS)
def test_expect_continue_flag(feed: Callable[[RequestReader, bytes], None]) -> None:
    reader, sink = make()
    feed(reader, b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nExpect: 100-continue\r\n\r\n")
    assert sink.heads()[0].expect_continue


@pytest.mark.parametrize("feed", FEEDS)
def test_upgrade_hands_over_the_rest(feed: Callable[[RequestReader, bytes], None]) -> None:
    reader, sink = make()
    data = b"GET /ws HTTP/1.1\r\nHost: x\r\nConnection: Upgrade\r\nUpgrade: websocket\r\n\r\n\x81\x05hello"
    if feed is whole:
        with pytest.raises(UpgradeRequested) as info:
            reader.feed(data)
        assert info.value.rest == b"\x81\x05hello"
    else:
        rest = b""
        head_len = data.index(b"\r\n\r\n") + 4
        with pytest.raises(UpgradeRequested) as info:
            for i in range(len(data)):
                reader.feed(data[i : i + 1])
        assert i == head_len - 1
        rest = info.value.rest
        assert rest == b""
    assert sink.heads()[0].upgrade == b"websocket"


BAD: dict[str, tuple[bytes, type[ClientError]]] = {
    "conflicting-cl": (
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 2\r\n\r\n",
        BadRequest,
    ),
    "duplicate-cl": (
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nContent-Length: 1\r\n\r\n",
        BadRequest,
    ),
    "cl-te": (
        b"POST / HTTP/1.1\r\nHost: x\r\nContent-Length: 1\r\nTransfer-Encoding: chunked\r\n\r\n",
        BadRequest,
    ),
    "bad-chunk": (
        b"POST / HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\r\nxyz\r\n",
        BadRequest,
    ),
    "obs-fold": (b"GET / HTTP/1.1\r\nHost: x\r\nA: b\r\n c\r\n\r\n", BadRequest),
    "bare-cr": (b"GET / HTTP/1.1\r\nHost: x\r\nA: b\rc\r\n\r\n", BadRequest),
    "bare-lf": (b"GET / HTTP/1.1\nHost: x\n\n", BadRequest),
    "nul": (b"GET / HTTP/1.1\r\nHost: x\r\nA: b\x00c\r\n\r\n", BadRequest),
    "invalid-method": (b"G(T / HTTP/1.1\r\nHost: x\r\n\r\n", BadRequest),
    "http09": (b"GET /\r\n\r\n", BadRequest),
    "missing-host": (b"GET / HTTP/1.1\r\n\r\n", BadRequest),
    "two-hosts": (b"GET / HTTP/1.1\r\nHost: a\r\nHost: b\r\n\r\n", BadRequest),
    "connect": (b"CONNECT x:443 HTTP/1.1\r\nHost: x\r\n\r\n", MethodNotAllowed),
    "bad-expect": (b"GET / HTTP/1.1\r\nHost: x\r\nExpect: magic\r\n\r\n", BadRequest),
    "long-url": (b"GET /" + b"a" * 2000 + b" HTTP/1.1\r\nHost: x\r\n\r\n", URITooLong),
    "big-head": (b"GET / HTTP/1.1\r\nHost: x\r\nA: " + b"b" * 5000 + b"\r\n\r\n", HeaderTooLarge),
}


@pytest.mark.parametrize("feed", FEEDS)
@pytest.mark.parametrize("name", list(BAD))
def test_malformed(name: str, feed: Callable[[RequestReader, bytes], None]) -> None:
    data, error = BAD[name]
    reader, sink = make(Limits(max_header_bytes=4096, max_url_bytes=1024))
    with pytest.raises(error):
        feed(reader, data)
    assert sink.ends() == 0


@pytest.mark.parametrize("name", list(BAD))
def test_malformed_after_a_good_request(name: str) -> None:
    data, error = BAD[name]
    reader, sink = make(Limits(max_header_bytes=4096, max_url_bytes=1024))
    with pytest.raises(error):
        reader.feed(b"GET /ok HTTP/1.1\r\nHost: x\r\n\r\n" + data)
    assert sink.heads()[0].target == b"/ok"


def test_head_limit_without_end_of_head() -> None:
    """A head that never ends is cut at the limit, not buffered forever."""
    reader, _ = make(Limits(max_header_bytes=2048, max_url_bytes=1024))
    reader.feed(b"GET / HTTP/1.1\r\nHost: x\r\n")
    with pytest.raises(HeaderTooLarge):
        for _ in range(1000):
            reader.feed(b"X-A: " + b"b" * 10 + b"\r\n")


def test_in_head_flag() -> None:
    reader, _ = make()
    assert not reader.in_head
    reader.feed(b"GET / HTTP/1.1\r\nHo")
    assert reader.in_head
    reader.feed(b"st: x\r\n\r\n")
    assert not reader.in_head
