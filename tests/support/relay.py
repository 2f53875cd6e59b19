"""A TCP relay on a fixed loopback port, to take a real service away and bring it back.

Tests point gatehouse at the relay's port instead of the service's. :meth:`TcpRelay.stop`
closes the listener and every relayed connection (to the client, the service is gone:
connections drop, new ones are refused); :meth:`TcpRelay.start` listens on the same port
again (the service is back). The shared service itself is never touched.
"""

from __future__ import annotations

import asyncio
import contextlib

from .loop import LoopThread
from .upstream import closed_port


class TcpRelay:
    """Relays ``127.0.0.1:port`` to ``target_host:target_port`` while started."""

    def __init__(self, loop: LoopThread, target_port: int, target_host: str = "127.0.0.1") -> None:
        self._loop = loop
        self._target = (target_host, target_port)
        self.port = closed_port()
        self._server: asyncio.Server | None = None
        self._writers: set[asyncio.StreamWriter] = set()

    def start(self) -> TcpRelay:
        self._loop.run(self._start())
        return self

    def stop(self) -> None:
        self._loop.run(self._stop())

    async def _start(self) -> None:
        if self._server is None:
            self._server = await asyncio.start_server(
                self._handle, "127.0.0.1", self.port, reuse_address=True
            )

    async def _stop(self) -> None:
        if self._server is not None:
            self._server.close()
            self._server = None
        for writer in list(self._writers):
            writer.transport.abort()  # an RST, as when the service's host goes away
        self._writers.clear()

    async def _handle(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            up_reader, up_writer = await asyncio.open_connection(*self._target)
        except OSError:
            writer.transport.abort()
            return
        self._writers.update((writer, up_writer))

        async def pipe(src: asyncio.StreamReader, dst: asyncio.StreamWriter) -> None:
            with contextlib.suppress(OSError, asyncio.CancelledError):
                while data := await src.read(65536):
                    dst.write(data)
                    await dst.drain()
            dst.transport.abort()

        try:
            await asyncio.gather(pipe(reader, up_writer), pipe(up_reader, writer))
        finally:
            self._writers.discard(writer)
            self._writers.discard(up_writer)
