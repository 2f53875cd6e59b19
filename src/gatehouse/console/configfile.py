"""The config file as the console edits it: round-trip YAML, digests, atomic writes.

Theory of operation: the file is read as bytes and its SHA-256 (the *file digest*) is
carried in every editor form. An apply re-reads the file and refuses when the digest
differs (someone else changed it: a conflict), so nothing is overwritten unseen. The
text is parsed with ruamel.yaml's round-trip loader, which keeps comments, key order
and quoting; only the keys an operator changed are touched. The new text is written to
a temporary file in the same directory, flushed to disk, given the old file's mode and
renamed over the old one (``os.replace``: readers see the old or the new file, never
half of one).
"""

from __future__ import annotations

import contextlib
import fcntl
import hashlib
import io
import os
import stat
import tempfile
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from ruamel.yaml import YAML
from ruamel.yaml.comments import CommentedMap, CommentedSeq
from ruamel.yaml.error import YAMLError
from ruamel.yaml.util import load_yaml_guess_indent

#: The lists that hold routes, in the order gatehouse matches them (``Options.all_routes``).
ROUTE_LISTS = ("routes", "policy")


class ConfigFileError(Exception):
    """The config file cannot be read, parsed or written; the message is for operators."""


class ConfigConflict(ConfigFileError):
    """The file changed on disk since it was read: nothing was written."""


def file_digest(data: bytes) -> str:
    return hashlib.sha256(data).hexdigest()


def _yaml(indent: int = 2, offset: int = 0) -> YAML:
    yaml = YAML(typ="rt")
    yaml.preserve_quotes = True
    yaml.width = 4096  # never fold a long line the operator wrote on one
    # The guessed indent is the sequences' (``  - key``: 4 with offset 2); mappings of
    # such files are indented by the difference, the common hand-written style.
    yaml.indent(mapping=max(2, indent - offset), sequence=indent, offset=offset)
    return yaml


def read_only_reason(path: Path) -> str | None:
    """Why the console must not write ``path`` (``None``: it may)."""
    try:
        st = path.stat()
    except OSError as exc:
        return f"cannot read {path}: {exc.strerror or exc}"
    # Root may write any file, so the mode bits are what says the operator means it
    # to stay as it is.
    if not st.st_mode & (stat.S_IWUSR | stat.S_IWGRP | stat.S_IWOTH):
        return f"{path} is read-only (mode {stat.S_IMODE(st.st_mode):04o})"
    if not os.access(path, os.W_OK):
        return f"{path} is not writable by this process"
    if not os.access(path.parent, os.W_OK | os.X_OK):
        return f"the directory {path.parent} is not writable (the file is replaced atomically)"
    return None


@dataclass
class ConfigDocument:
    """One reading of the config file: its bytes, digest and round-trip tree."""

    path: Path
    text: str
    digest: str
    data: CommentedMap
    indent: int = 2
    offset: int = 0

    @classmethod
    def read(cls, path: Path) -> ConfigDocument:
        """Read and parse the file.

        Raises:
            ConfigFileError: unreadable, not YAML, or not a mapping.
        """
        try:
            raw = path.read_bytes()
            text = raw.decode("utf-8")
        except (OSError, UnicodeDecodeError) as exc:
            raise ConfigFileError(f"cannot read {path}: {exc}") from None
        try:
            # Guessing parses once without quote preservation: only its indents are kept.
            _, indent, offset = load_yaml_guess_indent(text)
            data = _yaml().load(text)
        except YAMLError as exc:
            raise ConfigFileError(f"{path}: invalid YAML: {exc}") from None
        if data is None:
            data = CommentedMap()
        if not isinstance(data, CommentedMap):
            raise ConfigFileError(f"{path}: the config must be a mapping of keys to values")
        return cls(path, text, file_digest(raw), data, indent or 2, offset or 0)

    # -- routes ---------------------------------------------------------------------------

    def route_slots(self) -> list[tuple[str, int]]:
        """``(list key, index in it)`` for each route, in ``Options.all_routes`` order."""
        slots: list[tuple[str, int]] = []
        for key in ROUTE_LISTS:
            items = self.data.get(key)
            if isinstance(items, list):
                slots.extend((key, j) for j in range(len(items)))
        return slots

    def route(self, index: int) -> CommentedMap:
        """The route at ``index`` of ``all_routes``.

        Raises:
            IndexError: no such route.
        """
        if index < 0:
            raise IndexError(index)
        key, j = self.route_slots()[index]
        node = self.data[key][j]
        if not isinstance(node, CommentedMap):
            raise IndexError(index)
        return node

    def append_route(self, node: CommentedMap) -> tuple[str, int]:
        """Add a route at the end of ``routes`` (created when missing); its slot."""
        routes = self.data.get("routes")
        if not isinstance(routes, list):
            routes = CommentedSeq()
            self.data["routes"] = routes
        routes.append(node)
        return "routes", len(routes) - 1

    def insert_route_after(self, index: int, node: CommentedMap) -> tuple[str, int]:
        key, j = self.route_slots()[index]
        self.data[key].insert(j + 1, node)
        return key, j + 1

    def delete_route(self, index: int) -> None:
        key, j = self.route_slots()[index]
        del self.data[key][j]

    def all_index(self, slot: tuple[str, int]) -> int:
        """The ``all_routes`` index of a slot."""
        return self.route_slots().index(slot)

    # -- text -----------------------------------------------------------------------------

    def dump(self) -> str:
        out = io.StringIO()
        _yaml(self.indent, self.offset).dump(self.data, out)
        return out.getvalue()

    def write_if_unchanged(self, text: str) -> str:
        """:meth:`write`, only if the file still has the digest it had when read.

        The check and the rename happen under an exclusive ``flock`` of the file's
        directory, so two consoles (two workers, two machines sharing the directory over
        a local file system) cannot both pass the check and overwrite each other.

        Raises:
            ConfigConflict: the file changed since it was read.
            ConfigFileError: the file or its directory cannot be written.
        """
        try:
            dir_fd = os.open(self.path.parent, os.O_RDONLY)
        except OSError as exc:
            raise ConfigFileError(f"cannot open {self.path.parent}: {exc.strerror}") from None
        try:
            fcntl.flock(dir_fd, fcntl.LOCK_EX)
            try:
                now = file_digest(self.path.read_bytes())
            except OSError as exc:
                raise ConfigFileError(f"cannot read {self.path}: {exc.strerror}") from None
            if now != self.digest:
                raise ConfigConflict(f"{self.path} changed on disk since it was read")
            return self.write(text)
        finally:
            os.close(dir_fd)  # releases the lock

    def write(self, text: str) -> str:
        """Replace the file with ``text`` atomically; returns the new file digest.

        Raises:
            ConfigFileError: the file or its directory cannot be written.
        """
        reason = read_only_reason(self.path)
        if reason is not None:
            raise ConfigFileError(reason)
        raw = text.encode("utf-8")
        mode = stat.S_IMODE(self.path.stat().st_mode)
        fd, tmp = tempfile.mkstemp(prefix=f".{self.path.name}.", dir=self.path.parent)
        try:
            with os.fdopen(fd, "wb") as f:
                f.write(raw)
                f.flush()
                os.fsync(f.fileno())
            os.chmod(tmp, mode)
            os.replace(tmp, self.path)
        except OSError as exc:
            with contextlib.suppress(OSError):
                os.unlink(tmp)
            raise ConfigFileError(f"cannot write {self.path}: {exc.strerror or exc}") from None
        with contextlib.suppress(OSError):
            dir_fd = os.open(self.path.parent, os.O_RDONLY)
            try:
                os.fsync(dir_fd)
            finally:
                os.close(dir_fd)
        return file_digest(raw)


def dump_node(value: Any, indent: int = 2, offset: int = 0) -> str:
    """One value (a policy, say) as block YAML text, comments kept."""
    if value is None:
        return ""
    out = io.StringIO()
    _yaml(indent, offset).dump(value, out)
    text = out.getvalue()
    # A scalar is dumped with a document end marker.
    return text.removesuffix("...\n").rstrip("\n")


def parse_node(text: str) -> Any:
    """YAML text typed into a form, as a round-trip value (``None`` for blank).

    Raises:
        ConfigFileError: not YAML.
    """
    if not text.strip():
        return None
    try:
        return _yaml().load(text)
    except YAMLError as exc:
        raise ConfigFileError(f"invalid YAML: {exc}") from None
