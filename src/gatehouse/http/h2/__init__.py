"""HTTP/2 (RFC 9113) beside HTTP/1.1: downstream protocol, its defences, and the upstream
client used for gRPC routes.

Built on the sans-I/O ``h2`` library: gatehouse's asyncio protocol feeds it bytes and acts
on its events. Each stream becomes one :class:`~gatehouse.http.exchange.Exchange` (an
:class:`~gatehouse.http.h2.stream.H2Exchange`) served by the same pipeline as HTTP/1.1.

Modules: ``limits`` (wire limits and the flood guard), ``stream`` (one stream as an
exchange), ``protocol`` (one client connection), ``select`` (ALPN / prior-knowledge
choice between HTTP/1.1 and HTTP/2), ``grpc`` (gRPC status for responses gatehouse
makes), ``upstream`` (HTTP/2 connections to gRPC upstreams).
"""
