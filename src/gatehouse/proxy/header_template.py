"""``set_request_headers`` values with Pomerium's substitutions: ``${pomerium.jwt}`` and
the rest, parsed once at config load and rendered per request.

The syntax (Pomerium's ``internal/headertemplate`` grammar, written here from its grammar
and documented cases):

- ``$$`` is a literal ``$``;
- ``${ ref }``: a reference, ``ident`` followed by ``.ident`` or ``["string"]`` parts
  (spaces and tabs allowed between them; ``\\`` escapes a character in a string);
- ``$ident.ident...``: the same without braces (no strings, no spaces);
- a ``$`` that starts neither is literal text.

Known references (Pomerium's list): ``pomerium.access_token``, ``pomerium.id_token``,
``pomerium.jwt``, ``pomerium.client_cert_fingerprint`` (hex SHA-256 of the presented
leaf's DER), ``pomerium.client_cert_san_dns``, ``pomerium.client_cert_san_email``
(comma-separated, entries holding a comma left out), and
``pomerium.request.headers["Name"]`` (the client's header, before gatehouse's changes).
Any other reference renders as nothing, as in Pomerium. A header whose value renders
empty is not sent (Envoy's default for added headers).

A substituted value that could not travel in a header (a control character, say, from a
client certificate's SAN) renders as nothing and is logged: never a second header line.
"""

from __future__ import annotations

import hashlib
import logging
import re
from collections.abc import Callable, Sequence
from dataclasses import dataclass

from cryptography import x509

log = logging.getLogger("gatehouse.proxy")

Ref = tuple[str, ...]
Part = str | Ref

_IDENT = re.compile(r"[A-Za-z0-9_][A-Za-z0-9_-]*")
#: What a substituted value may hold: visible ASCII, Latin-1 letters, space and tab
#: (RFC 9110 §5.5 field-vchar and obs-text).
_SAFE_VALUE = re.compile(r"^[\t\x20-\x7e\x80-\xff]*$")
_WS = " \t"


@dataclass(frozen=True, slots=True)
class HeaderTemplate:
    """One header value, as literal text and references in order."""

    parts: tuple[Part, ...]

    @property
    def refs(self) -> tuple[Ref, ...]:
        return tuple(p for p in self.parts if isinstance(p, tuple))


def is_template(value: str) -> bool:
    """Whether ``value`` needs rendering (any ``$``; a plain value is sent as it is)."""
    return "$" in value


def parse(value: str) -> HeaderTemplate:
    """Split ``value`` into literal text and references (never fails: see the grammar)."""
    parts: list[Part] = []
    text: list[str] = []
    i, n = 0, len(value)
    while i < n:
        c = value[i]
        if c == "$":
            if value.startswith("$$", i):
                text.append("$")
                i += 2
                continue
            found = _braced(value, i + 1) if value.startswith("${", i) else _simple(value, i + 1)
            if found is not None:
                ref, i = found
                if text:
                    parts.append("".join(text))
                    text = []
                parts.append(ref)
                continue
        text.append(c)
        i += 1
    if text:
        parts.append("".join(text))
    return HeaderTemplate(tuple(parts))


def _skip_ws(s: str, i: int) -> int:
    while i < len(s) and s[i] in _WS:
        i += 1
    return i


def _ident(s: str, i: int) -> tuple[str, int] | None:
    m = _IDENT.match(s, i)
    return (m.group(), m.end()) if m else None


def _string(s: str, i: int) -> tuple[str, int] | None:
    if i >= len(s) or s[i] != '"':
        return None
    out: list[str] = []
    i += 1
    while i < len(s):
        c = s[i]
        if c == '"':
            return "".join(out), i + 1
        if c == "\\":
            if i + 1 >= len(s):
                return None
            out.append(s[i + 1])
            i += 2
            continue
        out.append(c)
        i += 1
    return None


def _braced(s: str, i: int) -> tuple[Ref, int] | None:
    """``{ ref }`` from ``s[i]`` (the brace); the reference and where it ends."""
    i = _skip_ws(s, i + 1)
    first = _ident(s, i)
    if first is None:
        return None
    ref, i = [first[0]], first[1]
    while True:
        i = _skip_ws(s, i)
        if s.startswith(".", i):
            nxt = _ident(s, _skip_ws(s, i + 1))
            if nxt is None:
                return None
            ref.append(nxt[0])
            i = nxt[1]
        elif s.startswith("[", i):
            got = _string(s, _skip_ws(s, i + 1))
            if got is None:
                return None
            ref.append(got[0])
            i = _skip_ws(s, got[1])
            if not s.startswith("]", i):
                return None
            i += 1
        else:
            break
    if not s.startswith("}", i):
        return None
    return tuple(ref), i + 1


def _simple(s: str, i: int) -> tuple[Ref, int] | None:
    """``ident.ident...`` from ``s[i]``; the reference and where it ends."""
    ref: list[str] = []
    while True:
        got = _ident(s, i)
        if got is None:
            return None
        ref.append(got[0])
        i = got[1]
        if not s.startswith(".", i):
            return tuple(ref), i
        i += 1


@dataclass(slots=True)
class RequestFacts:
    """What references read, for one request (the JWT is minted only when asked for)."""

    access_token: str
    id_token: str
    jwt: Callable[[], str]
    #: The presented client certificate chain, leaf first (DER).
    peer_chain: Sequence[bytes]
    #: The client's request headers (lower-case names).
    headers: Sequence[tuple[bytes, bytes]]
    _leaf: x509.Certificate | None = None

    def leaf(self) -> x509.Certificate | None:
        if self._leaf is None and self.peer_chain:
            try:
                self._leaf = x509.load_der_x509_certificate(self.peer_chain[0])
            except ValueError:
                return None
        return self._leaf

    def lookup(self, ref: Ref) -> str:
        """The value of ``ref``; ``""`` for references Pomerium does not know."""
        if len(ref) > 3 and ref[:3] == ("pomerium", "request", "headers"):
            name = ref[3].lower().encode("latin-1", "replace")
            values = [v.decode("latin-1") for k, v in self.headers if k == name]
            return ",".join(values)
        if len(ref) != 2 or ref[0] != "pomerium":
            return ""
        key = ref[1]
        if key == "access_token":
            return self.access_token
        if key == "id_token":
            return self.id_token
        if key == "jwt":
            return self.jwt()
        if key == "client_cert_fingerprint":
            return hashlib.sha256(self.peer_chain[0]).hexdigest() if self.peer_chain else ""
        if key in ("client_cert_san_dns", "client_cert_san_email"):
            leaf = self.leaf()
            if leaf is None:
                return ""
            kind = x509.DNSName if key == "client_cert_san_dns" else x509.RFC822Name
            try:
                san = leaf.extensions.get_extension_for_class(x509.SubjectAlternativeName)
            except (x509.ExtensionNotFound, ValueError):
                return ""
            return ",".join(n for n in san.value.get_values_for_type(kind) if "," not in n)
        return ""


def render(
    templates: Sequence[tuple[bytes, HeaderTemplate]], facts: RequestFacts
) -> list[tuple[bytes, bytes]]:
    """The headers to send for ``templates`` (those rendering empty are left out)."""
    out: list[tuple[bytes, bytes]] = []
    for name, template in templates:
        pieces: list[str] = []
        for part in template.parts:
            if isinstance(part, str):
                pieces.append(part)
                continue
            value = facts.lookup(part)
            if value and not _SAFE_VALUE.match(value):
                log.warning(
                    "set_request_headers: a substituted value cannot be sent in a header",
                    extra={"header": name.decode("latin-1"), "ref": ".".join(part)[:100]},
                )
                value = ""
            pieces.append(value)
        text = "".join(pieces)
        if text:
            out.append((name, text.encode("latin-1")))
    return out
