"""Path normalisation: the one spelling of a path that both the policy and the upstream see.

:func:`normalize_path` turns the raw path of a request target (origin-form, without the
query) into a canonical form, or raises :class:`~gatehouse.errors.InvalidPath` (400) for
what cannot be made unambiguous. The proxy authorizes *and* forwards the returned path,
so no spelling of ``/admin`` reaches the upstream past a rule about ``/admin``.

What it does (RFC 3986 §6.2.2 normalisation, plus refusals):

- percent-encoded unreserved characters (``A-Z a-z 0-9 - . _ ~``) are decoded
  (``/%61dmin`` -> ``/admin``); other percent-encodings are kept, with upper-case hex
  (``%3a`` -> ``%3A``): decoding them could change the path's meaning;
- dot segments are removed (§5.2.4), including encoded ones (``%2e%2e``); ``..`` above
  the root stays at the root (``/../admin`` -> ``/admin``);
- repeated slashes are merged (``//admin`` -> ``/admin``); a trailing slash is kept;
- refused (400): an encoded slash or backslash (``%2F``, ``%5C``) and a raw backslash —
  some upstreams treat them as separators, so no safe single reading exists (Envoy's
  ``REJECT_REQUEST`` choice); a NUL or any control character, raw or encoded; a space or
  any raw non-ASCII character (clients must percent-encode); ``%`` not followed by two
  hex digits; encoded bytes that are not valid UTF-8 (overlong forms such as ``%c0%af``,
  surrogates, truncated sequences); ``#`` and ``?`` (the caller strips the query);
  a path not starting with ``/``;
- path parameters (``;``) are kept literally: ``/admin;x=1`` is not ``/admin``
  (write ``starts_with`` rules to cover them). A segment that some servers (Tomcat)
  would read as a dot or empty segment once parameters are stripped — ``..;x``, ``.;x`` or ``;x`` —
  is refused.
- Case is kept: matching is case-sensitive (``/ADMIN`` is not ``/admin``).

The common case — plain ASCII, no ``%``, no ``//``, no ``/.`` — is one regex match.
"""

from __future__ import annotations

import re

from ..errors import InvalidPath

# Raw characters allowed in a path: visible ASCII except '#', '%', '?' and '\\'
# ('%' is allowed only as the start of a valid escape, checked separately).
_PLAIN = re.compile(r"/[\x21\x22\x24\x26-\x3e\x40-\x5b\x5d-\x7e]*")
_RAW_PART = re.compile(r"[\x21\x22\x24\x26-\x3e\x40-\x5b\x5d-\x7e]*")
_HEX = frozenset("0123456789abcdefABCDEF")
_UNRESERVED = frozenset(b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-._~")
_SEPARATORS = frozenset(b"/\\")


def normalize_path(raw_target_path: str) -> str:
    """Return the canonical form of a request path (see the module docstring).

    Raises:
        InvalidPath: the path cannot be normalised safely.
    """
    path = raw_target_path
    if _PLAIN.fullmatch(path) and "//" not in path and "/." not in path and "/;" not in path:
        return path
    return _remove_dot_segments(_decode(path))


def normalize_request_path(raw_target_path: str, *, allow_parameters: bool = False) -> str:
    """:func:`normalize_path`, refusing ``;`` path parameters unless ``allow_parameters``.

    Servers such as Tomcat, Jetty and Spring strip ``;params`` from segments, so
    ``/admin;x=1`` is ``/admin`` to them while an exact-path rule sees another path. Unless
    the operator says their upstreams need parameters (``allow_path_parameters``), a path
    holding ``;`` is refused (400), so no spelling of a path escapes a rule about it.

    Raises:
        InvalidPath: the path cannot be normalised safely, or holds ``;`` (see above).
    """
    path = normalize_path(raw_target_path)
    if not allow_parameters and ";" in path:
        raise InvalidPath(
            "it holds a ';' path parameter (as in /page;jsessionid=...), which this "
            "gatehouse does not accept (the allow_path_parameters setting is off); "
            "remove the ';' part"
        )
    return path


def _decode(path: str) -> str:
    if not path.startswith("/"):
        raise InvalidPath("path must start with /")
    pieces = path.split("%")
    if not _RAW_PART.fullmatch(pieces[0]):
        raise InvalidPath("path contains a character that must be percent-encoded or is refused")
    out = [pieces[0]]
    decoded = bytearray(pieces[0].encode("ascii"))
    for piece in pieces[1:]:
        hexpair, rest = piece[:2], piece[2:]
        if len(hexpair) != 2 or hexpair[0] not in _HEX or hexpair[1] not in _HEX:
            raise InvalidPath("invalid percent-encoding")
        if not _RAW_PART.fullmatch(rest):
            raise InvalidPath(
                "path contains a character that must be percent-encoded or is refused"
            )
        byte = int(hexpair, 16)
        if byte in _UNRESERVED:
            out.append(chr(byte))
        elif byte in _SEPARATORS:
            raise InvalidPath("encoded slash or backslash in path")
        elif byte < 0x20 or byte == 0x7F:
            raise InvalidPath("encoded control character in path")
        else:
            out.append(f"%{byte:02X}")
        out.append(rest)
        decoded.append(byte)
        decoded.extend(rest.encode("ascii"))
    try:
        decoded.decode("utf-8", errors="strict")
    except UnicodeDecodeError:
        raise InvalidPath("percent-encoded bytes are not valid UTF-8") from None
    return "".join(out)


def _remove_dot_segments(path: str) -> str:
    stack: list[str] = []
    segments = path.split("/")
    trailing = False
    for seg in segments[1:]:
        trailing = False
        if seg == "" or seg == ".":
            trailing = True
            continue
        if seg == "..":
            if stack:
                stack.pop()
            trailing = True
            continue
        if ";" in seg and seg.partition(";")[0] in ("", ".", ".."):
            # Servers that strip parameters (Tomcat, Spring) would read an empty or dot
            # segment here: ``/;/admin`` is ``/admin`` to them.
            raise InvalidPath("empty or dot segment with path parameters")
        stack.append(seg)
    if not stack:
        return "/"
    return "/" + "/".join(stack) + ("/" if trailing else "")
