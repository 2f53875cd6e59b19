"""A ``grpcio`` server (PyPI, not ours) with raw-bytes methods for the gRPC tests.

Methods of ``test.Echo``: ``Unary`` (echo, with a trailing metadata entry), ``Chat``
(bidirectional, one reply per message), ``Fail`` (NOT_FOUND), ``Slow`` (answers after
``slow_s``), ``Hold`` (answers only when cancelled; counts cancellations) and ``Who``
(the common name of the client certificate, or ``none``). Every call's metadata is
recorded. ``grpc.health.v1.Health/Check`` answers from ``health`` (service name →
ServingStatus; an unknown service is NOT_FOUND, as the standard servicer does), its two
one-field protobuf messages written by hand.
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator
from concurrent import futures

import grpc


def identity(x: bytes) -> bytes:
    return x


class EchoServer:
    """One server on 127.0.0.1 (port 0), plain or with ``credentials``."""

    def __init__(
        self,
        credentials: grpc.ServerCredentials | None = None,
        *,
        name: str = "echo",
        slow_s: float = 3.0,
    ) -> None:
        self.name = name
        self.slow_s = slow_s
        self.metadata: list[dict[str, str]] = []
        self.cancelled = 0
        self.held = 0
        self.lock = threading.Condition()
        self.server = grpc.server(futures.ThreadPoolExecutor(max_workers=32))
        raw = {"request_deserializer": identity, "response_serializer": identity}
        handlers = {
            "Unary": grpc.unary_unary_rpc_method_handler(self._unary, **raw),  # type: ignore[arg-type]
            "Chat": grpc.stream_stream_rpc_method_handler(self._chat, **raw),  # type: ignore[arg-type]
            "Fail": grpc.unary_unary_rpc_method_handler(self._fail, **raw),  # type: ignore[arg-type]
            "Slow": grpc.unary_unary_rpc_method_handler(self._slow, **raw),  # type: ignore[arg-type]
            "Hold": grpc.unary_unary_rpc_method_handler(self._hold, **raw),  # type: ignore[arg-type]
            "Who": grpc.unary_unary_rpc_method_handler(self._who, **raw),  # type: ignore[arg-type]
        }
        #: Health service: service name → ServingStatus (1 SERVING, 2 NOT_SERVING).
        self.health: dict[str, int] = {"": 1}
        check = grpc.unary_unary_rpc_method_handler(self._health, **raw)  # type: ignore[arg-type]
        self.server.add_generic_rpc_handlers(
            (
                grpc.method_handlers_generic_handler("test.Echo", handlers),
                grpc.method_handlers_generic_handler("grpc.health.v1.Health", {"Check": check}),
            )
        )
        if credentials is None:
            self.port = self.server.add_insecure_port("127.0.0.1:0")
        else:
            self.port = self.server.add_secure_port("127.0.0.1:0", credentials)
        self.server.start()

    def _record(self, context: grpc.ServicerContext) -> None:
        with self.lock:
            self.metadata.append({k: v for k, v in context.invocation_metadata()})  # type: ignore[misc]

    def _unary(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        self._record(context)
        context.set_trailing_metadata((("x-trailer", "from-upstream"),))
        return self.name.encode() + b":" + request if request == b"who" else b"echo:" + request

    def _chat(self, requests: Iterator[bytes], context: grpc.ServicerContext) -> Iterator[bytes]:
        self._record(context)
        for message in requests:
            yield b"re:" + message

    def _fail(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        self._record(context)
        context.abort(grpc.StatusCode.NOT_FOUND, "no such thing")
        return b""  # pragma: no cover - abort raises

    def _slow(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        self._record(context)
        time.sleep(self.slow_s)
        return b"late"

    def _hold(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        self._record(context)
        done = threading.Event()

        def on_end() -> None:
            with self.lock:
                if not context.is_active():
                    self.cancelled += 1
                self.lock.notify_all()
            done.set()

        context.add_callback(on_end)
        with self.lock:
            self.held += 1
            self.lock.notify_all()
        done.wait(30)
        return b"released"

    def _who(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        self._record(context)
        names = context.auth_context().get("x509_common_name") or [b"none"]
        return names[0]

    def _health(self, request: bytes, context: grpc.ServicerContext) -> bytes:
        # HealthCheckRequest: field 1 (string), tag 0x0a, one-byte length here.
        service = request[2 : 2 + request[1]].decode() if request[:1] == b"\x0a" else ""
        status = self.health.get(service)
        if status is None:
            context.abort(grpc.StatusCode.NOT_FOUND, "unknown service")
        return b"\x08" + bytes([status or 0])  # HealthCheckResponse: field 1 (enum)

    def wait(self, predicate: object, timeout: float = 10.0) -> bool:
        with self.lock:
            return self.lock.wait_for(predicate, timeout)  # type: ignore[arg-type]

    def stop(self) -> None:
        self.server.stop(0).wait(5)
