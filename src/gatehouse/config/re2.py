"""Regular expressions written for RE2 (Envoy's engine), checked for Python's ``re``.

Pomerium hands ``regex``, ``regex_rewrite_pattern`` and ``host_path_regex_rewrite_pattern``
to Envoy, which compiles them with RE2 (``envoy.type.matcher.v3.RegexMatcher``). gatehouse
runs them with Python's ``re``. Where the two read a pattern the same way it is accepted;
a construct only one of them has, or that they read differently, is refused naming it,
so that a route never matches (or rewrites) other paths than it does under Pomerium:

- RE2 refuses lookaround, backreferences, atomic groups and conditionals; Python would
  run them. Refused, as Envoy would refuse the config.
- RE2 has POSIX classes (``[[:alpha:]]``), ``\\pL``/``\\p{Greek}``, ``\\z``, ``\\C``,
  ``\\Q...\\E``, ``\\x{...}``, ``(?<name>...)`` and the ``U`` flag; Python either rejects
  them or, for POSIX classes, silently reads a different set. Refused with the spelling
  both accept where there is one.
"""

from __future__ import annotations

import re

# Each: (pattern finding the construct, what to say). Scanned on the pattern with escaped
# backslashes removed first, so ``\\(?=`` (a literal backslash, then a group) is not
# taken for an escape.
_RE2_REFUSES: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\(\?<?[=!]"), "lookaround ((?=, (?!, (?<=, (?<!) is not RE2 syntax"),
    (re.compile(r"\(\?>"), "atomic groups ((?>...)) are not RE2 syntax"),
    (re.compile(r"\(\?\("), "conditionals ((?(...)) are not RE2 syntax"),
    (re.compile(r"\\[1-9]|\(\?P="), "backreferences are not RE2 syntax"),
    (re.compile(r"[*+?}]\+"), "possessive quantifiers are not RE2 syntax"),
)
_PYTHON_DIFFERS: tuple[tuple[re.Pattern[str], str], ...] = (
    (re.compile(r"\[:\^?[a-z]+:\]"), "POSIX classes such as [[:alpha:]]: write [a-zA-Z] etc."),
    (re.compile(r"\\[pP]"), "Unicode classes (\\p, \\P)"),
    (re.compile(r"\\z"), "\\z: write \\Z (both mean the end of the text)"),
    (re.compile(r"\\C"), "\\C (any byte)"),
    (re.compile(r"\\Q"), "\\Q...\\E quoting: escape the characters instead"),
    (re.compile(r"\\x\{"), "\\x{...}: write \\xHH or \\uHHHH"),
    (re.compile(r"\(\?<[A-Za-z_]"), "(?<name>...): write (?P<name>...)"),
    (re.compile(r"\(\?[a-zA-Z]*U"), "the U (ungreedy) flag: write lazy quantifiers (*?)"),
)


def check_re2(pattern: str) -> None:
    """Raise ``ValueError`` unless ``pattern`` means the same to RE2 and to Python's ``re``."""
    scan = pattern.replace("\\\\", "")
    for finder, why in _RE2_REFUSES:
        if finder.search(scan):
            raise ValueError(f"invalid regular expression: {why} (Envoy uses RE2)")
    for finder, why in _PYTHON_DIFFERS:
        if finder.search(scan):
            raise ValueError(
                f"regular expression not supported by gatehouse (Python's re reads RE2's {why})"
            )
    try:
        re.compile(pattern)
    except re.error as exc:
        raise ValueError(f"invalid regular expression: {exc}") from None


def python_substitution(substitution: str) -> str:
    r"""An RE2/Envoy substitution (``\1`` for group 1, ``\\`` for a backslash) in the form
    ``re.sub`` reads the same way: ``\g<1>``, so a digit after it stays a digit."""
    return re.sub(r"\\(\\|\d)", lambda m: "\\\\" if m[1] == "\\" else f"\\g<{m[1]}>", substitution)


def check_substitution(pattern: str, substitution: str) -> None:
    r"""Raise ``ValueError`` unless ``substitution`` is a valid RE2 rewrite for ``pattern``:
    only ``\0``-``\9`` (groups the pattern has) and ``\\`` may follow a backslash, as
    RE2's ``CheckRewriteString`` requires (Python would read ``\n`` as a newline)."""
    groups = re.compile(pattern).groups
    i = 0
    while i < len(substitution):
        if substitution[i] == "\\":
            nxt = substitution[i + 1 : i + 2]
            if nxt.isdigit() and nxt.isascii():
                if int(nxt) > groups:
                    raise ValueError(
                        f"substitution refers to group \\{nxt}; the pattern has {groups}"
                    )
            elif nxt != "\\":
                raise ValueError(
                    "substitution: a backslash must be followed by a digit or a backslash (RE2)"
                )
            i += 2
            continue
        i += 1
