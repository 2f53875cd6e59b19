"""Benchmark: gatehouse against nginx over TLS, in one run, one worker each.

Both terminate TLS (the same ECDSA P-256 certificate, TLS 1.3) in front of the same upstream
(an nginx ``return 200``). Measured per proxy, run one after the other:

* keep-alive: ``wrk`` over HTTPS, requests/s and CPU µs per request (utime+stime of the
  proxy's processes from /proc, over the run, divided by the requests wrk completed);
* new connection per request: ``wrk`` with ``Connection: close`` (a full handshake per
  request), the same two figures; and ``openssl s_time -new`` (handshakes/s, no request
  proxied beyond ``GET /``).

With ``--autocert`` a second gatehouse is measured in the same run, serving the same
certificate with ``autocert`` on (its CA unreachable, so it keeps the configured one):
every handshake then also passes the ClientHello callback of TLS-ALPN-01. Its figures
against the first gatehouse's are the cost of that callback on ordinary handshakes.

Usage: ``PYTHONPATH=src .venv/bin/python bench/tls_bench.py [--seconds 10] [--autocert]``.
"""

from __future__ import annotations

import argparse
import datetime
import os
import re
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

HOST = "bench.example.test"
CLK_TCK = os.sysconf("SC_CLK_TCK")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return int(s.getsockname()[1])


def write_cert(tmp: Path) -> tuple[Path, Path]:
    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, HOST)])
    now = datetime.datetime.now(datetime.UTC)
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now)
        .not_valid_after(now + datetime.timedelta(days=1))
        .add_extension(x509.SubjectAlternativeName([x509.DNSName(HOST)]), critical=False)
        .sign(key, hashes.SHA256())
    )
    c, k = tmp / "cert.pem", tmp / "key.pem"
    c.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    k.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    return c, k


NGINX = """daemon off; master_process on; worker_processes 1; user root;
pid {tmp}/{name}.pid; error_log {tmp}/{name}.err warn;
events {{ worker_connections 8192; }}
http {{ access_log off; keepalive_requests 100000000;
  client_body_temp_path {tmp}/{name}-t; proxy_temp_path {tmp}/{name}-t;
  fastcgi_temp_path {tmp}/{name}-t; uwsgi_temp_path {tmp}/{name}-t; scgi_temp_path {tmp}/{name}-t;
{body}
}}
"""
UPSTREAM = """  server {{ listen 127.0.0.1:{port}; location / {{ return 200 "ok"; }} }}"""
PROXY = """  upstream u {{ server 127.0.0.1:{up}; keepalive 64; }}
  server {{ listen 127.0.0.1:{port} ssl; ssl_certificate {cert}; ssl_certificate_key {key};
    ssl_protocols TLSv1.2 TLSv1.3; ssl_session_cache off; ssl_session_tickets off;
    location / {{ proxy_pass http://u; proxy_http_version 1.1; proxy_set_header Connection "";
      proxy_set_header Host $host;
      proxy_set_header X-Forwarded-For $proxy_add_x_forwarded_for; }} }}"""
GATEHOUSE = """address: 127.0.0.1:{port}
insecure_server: false
workers: 1
data_dir: {tmp}/gh-data
certificate_file: {cert}
certificate_key_file: {key}
routes:
  - from: https://{host}
    to: http://127.0.0.1:{up}
    allow_public_unauthenticated_access: true
"""
#: Added for ``--autocert``: nothing answers on port 1, so orders fail (and back off).
AUTOCERT = """autocert: true
autocert_ca: https://127.0.0.1:1/directory
autocert_dir: {tmp}/gh-autocert
"""


def start_nginx(tmp: Path, name: str, body: str) -> subprocess.Popen[bytes]:
    (tmp / f"{name}-t").mkdir(exist_ok=True)
    conf = tmp / f"{name}.conf"
    conf.write_text(NGINX.format(tmp=tmp, name=name, body=body))
    return subprocess.Popen(["nginx", "-p", str(tmp), "-c", str(conf)])


def start_gatehouse(
    tmp: Path, name: str, port: int, cert: Path, key: Path, up: int, extra: str
) -> subprocess.Popen[bytes]:
    cfg = tmp / f"{name}.yaml"
    body = GATEHOUSE.format(port=port, tmp=tmp, cert=cert, key=key, host=HOST, up=up)
    cfg.write_text(body.replace("gh-data", f"{name}-data") + extra)
    return subprocess.Popen(
        [sys.executable, "-m", "gatehouse", "run", "-c", str(cfg)],
        stdout=subprocess.DEVNULL,
        stderr=open(tmp / f"{name}.err", "wb"),  # the child keeps its copy
    )


def wait_https(port: int) -> None:
    deadline = time.monotonic() + 30
    while time.monotonic() < deadline:
        out = subprocess.run(
            ["curl", "-sk", "--resolve", f"{HOST}:{port}:127.0.0.1", f"https://{HOST}:{port}/"],
            capture_output=True,
            check=False,
        )
        if out.stdout == b"ok":
            return
        time.sleep(0.2)
    raise SystemExit(f"port {port} never answered")


def tree_cpu(root: int) -> float:
    """utime+stime of ``root`` and its direct children, seconds."""
    total = 0.0
    for stat in Path("/proc").glob("[0-9]*/stat"):
        try:
            text = stat.read_text()
        except OSError:
            continue
        fields = text[text.rindex(")") + 2 :].split()
        if int(stat.parent.name) == root or int(fields[1]) == root:
            total += (int(fields[11]) + int(fields[12])) / CLK_TCK
    return total


def wrk(port: int, seconds: int, close: bool) -> float:
    args = ["wrk", "-t1", "-c32", f"-d{seconds}s", "-H", f"Host: {HOST}"]
    if close:
        args += ["-H", "Connection: close"]
    out = subprocess.run([*args, f"https://127.0.0.1:{port}/"], capture_output=True, text=True)
    match = re.search(r"(\d+) requests in", out.stdout)
    if not match:
        raise SystemExit(out.stdout + out.stderr)
    return float(match.group(1))


def s_time(port: int, seconds: int) -> float:
    out = subprocess.run(
        ["openssl", "s_time", "-connect", f"127.0.0.1:{port}", "-new", "-time", str(seconds)],
        capture_output=True,
        text=True,
        check=False,
    )
    match = re.search(r"(\d+) connections in ([\d.]+)s", out.stdout)
    return int(match.group(1)) / seconds if match else 0.0


def measure(name: str, pid: int, port: int, seconds: int) -> None:
    for close in (False, True):
        cpu0, t0 = tree_cpu(pid), time.monotonic()
        n = wrk(port, seconds, close)
        cpu, elapsed = tree_cpu(pid) - cpu0, time.monotonic() - t0
        kind = "new-conn" if close else "keep-alive"
        print(f"{name:9} {kind:10} {n / elapsed:9.0f} req/s  {cpu / n * 1e6:7.0f} CPU µs/req")
    print(f"{name:9} s_time -new {s_time(port, seconds):8.0f} handshakes/s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--seconds", type=int, default=10)
    parser.add_argument("--autocert", action="store_true", help="also measure with autocert on")
    opts = parser.parse_args()
    procs: list[subprocess.Popen[bytes]] = []
    with tempfile.TemporaryDirectory() as d:
        tmp = Path(d)
        cert, key = write_cert(tmp)
        up, nport, gport = free_port(), free_port(), free_port()
        try:
            procs.append(start_nginx(tmp, "upstream", UPSTREAM.format(port=up)))
            ng = start_nginx(tmp, "proxy", PROXY.format(up=up, port=nport, cert=cert, key=key))
            procs.append(ng)
            gh = start_gatehouse(tmp, "gatehouse", gport, cert, key, up, "")
            procs.append(gh)
            wait_https(nport)
            wait_https(gport)
            wrk(nport, 2, False)  # warm-up
            wrk(gport, 2, False)
            measure("nginx", ng.pid, nport, opts.seconds)
            measure("gatehouse", gh.pid, gport, opts.seconds)
            if opts.autocert:
                aport = free_port()
                extra = AUTOCERT.format(tmp=tmp)
                acme = start_gatehouse(tmp, "gh-acme", aport, cert, key, up, extra)
                procs.append(acme)
                wait_https(aport)
                wrk(aport, 2, False)
                measure("gh+acme", acme.pid, aport, opts.seconds)
        finally:
            for p in reversed(procs):
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(10)
                except subprocess.TimeoutExpired:
                    p.kill()


if __name__ == "__main__":
    main()
