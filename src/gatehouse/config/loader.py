"""Read a YAML config file, apply environment overrides, validate, and report every problem.

Theory of operation: the YAML is composed into nodes first so that each key's line is
known; the plain data is validated by the pydantic :class:`~gatehouse.config.options.Options`
model; each validation error's location (``routes.0.to``) is mapped back to the node's
line, and a misspelt key gets a "did you mean" from the names valid at that place.

Environment variables named like the upper-case key (``ADDRESS``, ``INSECURE_SERVER``)
win over the file. Their values are read as YAML scalars (``true``, ``30s``, ``8080``);
structured keys (``ROUTES``, ``SET_RESPONSE_HEADERS``) take YAML/JSON text or base64 of it.
"""

from __future__ import annotations

import base64
import binascii
import codecs
import contextlib
import copy
import dataclasses
import difflib
import hashlib
import io
import os
import re
from collections.abc import Generator, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import yaml
from pydantic import BaseModel, ValidationError

from ..errors import ConfigError
from ..gcpause import gc_paused
from ..timeslice import Steps, drive, release
from .auth import IdpUser
from .options import IGNORED_POMERIUM_KEYS, Options, cross_checks
from .pomerium_keys import not_supported, screen_steps
from .routes import DirectResponse, RedirectAction, RouteOptions
from .server import CertificatePair
from .upstream_health import breakers_into_routes

Location = tuple[str | int, ...]

#: libyaml's parser when PyYAML has it (10x the pure-Python one: 10,000 routes compose in
#: ~0.3 s instead of ~3 s); the nodes, tags and marks are the same.
_COMPOSER: Any = getattr(yaml, "CSafeLoader", yaml.SafeLoader)


class _Lines:
    """Line numbers (1-based) for each location in the YAML document, found the first
    time one is asked for (a config that loads cleanly never needs them: composing the
    nodes with their marks took about as long as the rest of the load)."""

    __slots__ = ("_by_loc", "_text")

    def __init__(self, text: str = "") -> None:
        self._text = text
        self._by_loc: dict[Location, int] | None = None

    @property
    def by_loc(self) -> dict[Location, int]:
        if self._by_loc is None:
            self._by_loc = _locate_lines(self._text)
        return self._by_loc

    def find(self, loc: Location) -> int | None:
        by_loc = self.by_loc
        while loc:
            if loc in by_loc:
                return by_loc[loc]
            loc = loc[:-1]
        return None


#: A problem that starts with the key it is about: ``routes[0].policy: …``.
_KEYED = re.compile(r"(?P<key>[A-Za-z_]\w*(?:\[\d+\]|\.[A-Za-z_]\w*)*): ")
#: A problem already located: ``<source>:<line>: …``.
_LINE = re.compile(r":(?P<line>\d+): ")


@dataclass(frozen=True, slots=True)
class LoadedConfig:
    """A validated config and where it came from."""

    options: Options
    source: str
    #: SHA-256 of the file bytes and the overriding environment, for reload and metrics.
    digest: str
    warnings: tuple[str, ...] = ()
    lines: _Lines = field(default_factory=_Lines, compare=False, repr=False)
    #: The file's (mtime, size) taken just before it was read; the reload poll compares
    #: against it, so an edit made after this load is seen however late the poll starts.
    stamp: tuple[float, int] | None = field(default=None, compare=False)

    def at(self, loc: Location, message: str) -> str:
        """``message`` about the key at ``loc``, as ``<source>:<line>: <key>: <message>``."""
        line = self.lines.find(loc)
        where = f"{self.source}:{line}" if line else self.source
        return f"{where}: {format_loc(loc) or '(top level)'}: {message}"

    def locate(self, problem: str) -> str:
        """A problem found after loading (``cookie_secret_file: cannot read``), prefixed
        with the file and the line of the key it starts with; located ones are kept."""
        if problem.startswith(f"{self.source}:"):
            return problem
        match = _KEYED.match(problem)
        line = self.lines.find(parse_loc(match["key"])) if match else None
        return f"{self.source}:{line}: {problem}" if line else f"{self.source}: {problem}"

    def sorted_problems(self, problems: list[str]) -> list[str]:
        """Every problem located, without repeats, in the order of the file's lines."""
        located = list(dict.fromkeys(self.locate(p) for p in problems))
        return sorted(located, key=self._line_of)

    def _line_of(self, problem: str) -> int:
        match = _LINE.match(problem, len(self.source))
        return int(match["line"]) if match else 0


def parse_loc(key: str) -> Location:
    """``routes[0].policy`` → ``("routes", 0, "policy")``."""
    loc: list[str | int] = []
    for part in key.split("."):
        name, *indexes = part.split("[")
        loc.append(name)
        loc.extend(int(i.rstrip("]")) for i in indexes)
    return tuple(loc)


def _node_lines(node: yaml.Node, loc: Location, lines: dict[Location, int], scalars: Any) -> None:
    lines.setdefault(loc, node.start_mark.line + 1)
    if isinstance(node, yaml.MappingNode):
        for key_node, value_node in node.value:
            key = "?"  # a mapping or sequence as a key: no config key is one
            if isinstance(key_node, yaml.ScalarNode):
                with contextlib.suppress(yaml.YAMLError):  # the load reported it
                    key = str(scalars.construct_object(key_node))
            lines[(*loc, key)] = key_node.start_mark.line + 1
            _node_lines(value_node, (*loc, key), lines, scalars)
    elif isinstance(node, yaml.SequenceNode):
        for i, item in enumerate(node.value):
            _node_lines(item, (*loc, i), lines, scalars)


def _locate_lines(text: str) -> dict[Location, int]:
    """Each location's line, from the nodes (only asked for once a problem needs one)."""
    lines: dict[Location, int] = {}
    try:
        node = yaml.compose(text, Loader=_COMPOSER)
    except yaml.YAMLError:
        return lines  # the load reported the YAML error itself
    if node is not None:
        _node_lines(node, (), lines, yaml.constructor.SafeConstructor())
    return lines


_STR_TAG = "tag:yaml.org,2002:str"
#: Scalars whose constructed values are immutable, so one may stand for every repeat.
_CONSTANT_TAGS = frozenset(f"tag:yaml.org,2002:{t}" for t in ("bool", "int", "float", "null"))
_MERGE_TAG = "tag:yaml.org,2002:merge"
#: Marks a mapping waiting for its next key.
_NO_KEY: Any = object()


class _Frame:
    """A mapping or sequence being built, with its anchor and, for a mapping, the key
    whose value comes next (and that key's line)."""

    __slots__ = ("anchor", "key", "key_line", "merges", "size", "value")

    def __init__(self, value: dict[str, Any] | list[Any], anchor: str | None) -> None:
        self.value, self.anchor = value, anchor
        self.key: Any = _NO_KEY
        self.key_line = 0
        #: Values in this container so far, aliases counted as what they expand to.
        self.size = 1
        #: The mappings of this mapping's merge keys (``<<``), in the order given.
        self.merges: list[dict[str, Any]] | None = None


#: The value of a ``<<`` scalar: a merge key, when it stands as a mapping's key.
_MERGE = object()
#: Values that aliases may add to a document in all. Each alias is a copy of what its anchor
#: holds, so anchors that nest aliases grow exponentially ("billion laughs"): a few hundred
#: bytes would expand to gigabytes. 10,000 routes each naming a 50-value policy by alias
#: stay well under it.
MAX_ALIAS_VALUES = 2_000_000


def _merge_sources(value: Any, line: int, source: str) -> list[dict[str, Any]]:
    """What a ``<<`` key merges in: a mapping, or a list of mappings (YAML 1.1 merge)."""
    if type(value) is dict:
        return [value]
    if type(value) is list and value and all(type(v) is dict for v in value):
        return value
    raise ConfigError(
        [f"{source}:{line}: invalid YAML: a merge key (<<) takes a mapping or a list of mappings"]
    )


def _apply_merges(target: dict[str, Any], merges: list[dict[str, Any]]) -> dict[str, Any]:
    """The mapping with its merged keys, as YAML 1.1 (and PyYAML, and Go's yaml) define
    them: keys written in the mapping win, then earlier merged mappings over later ones."""
    out: dict[str, Any] = {}
    for merged in merges:
        for key, value in merged.items():
            out.setdefault(key, value)
    out.update(target)
    return out


#: Parser events handled between two points where a sliced load may pause (~0.1 ms).
EVENTS_PER_STEP = 128


def _build_data(loader: Any, source: str) -> Generator[None, None, Any]:
    """The document's plain data, built straight from the parser's events (a generator
    that pauses every :data:`EVENTS_PER_STEP` events, see :mod:`gatehouse.timeslice`).

    The same data the nodes would give (scalars resolved and constructed by the safe
    loader, aliases copied, mapping keys as strings, a key given twice refused), without
    composing a node per value first: 10,000 routes took ~0.45 s composed, ~0.2 s here.
    """
    anchors: dict[str, tuple[Any, int]] = {}  # anchor -> (value, size in values)
    # Plain scalars resolved once per distinct (text, implicit): 10,000 routes repeat the
    # same keys and values ("to", "true") tens of thousands of times.
    tags: dict[tuple[str, Any], str] = {}
    # Immutable non-string scalars (true, 30, null) constructed once per (tag, text).
    constants: dict[tuple[str, str], Any] = {}
    stack: list[_Frame] = []
    root: Any = None
    copied = 0  # values added by aliases
    countdown = EVENTS_PER_STEP
    while loader.check_event():
        countdown -= 1
        if not countdown:
            countdown = EVENTS_PER_STEP
            yield
        event = loader.get_event()
        kind = type(event)
        size = 1
        if kind is yaml.ScalarEvent:
            tag = event.tag
            if tag is None or tag == "!":
                resolving = (event.value, event.implicit)
                tag = tags.get(resolving)
                if tag is None:
                    tag = tags[resolving] = loader.resolve(
                        yaml.ScalarNode, event.value, event.implicit
                    )
            if tag == _STR_TAG:
                value: Any = event.value
            elif tag == _MERGE_TAG:
                value = _MERGE
            elif tag in _CONSTANT_TAGS and (tag, event.value) in constants:
                value = constants[(tag, event.value)]
            else:
                node = yaml.ScalarNode(tag, event.value, event.start_mark, event.end_mark)
                value = loader.construct_object(node, deep=True)
                # The constructor remembers every node it made (for aliases, which are
                # ours): freeing 10,000 of them with the parser took ~1.5 ms in one go.
                loader.constructed_objects.clear()
                if tag in _CONSTANT_TAGS:
                    constants[(tag, event.value)] = value
            if event.anchor is not None:
                anchors[event.anchor] = (value, 1)
        elif kind is yaml.MappingStartEvent or kind is yaml.SequenceStartEvent:
            container: Any = {} if kind is yaml.MappingStartEvent else []
            stack.append(_Frame(container, event.anchor))
            continue
        elif kind is yaml.MappingEndEvent or kind is yaml.SequenceEndEvent:
            frame = stack.pop()
            value, size = frame.value, frame.size
            if frame.merges is not None:
                value = _apply_merges(value, frame.merges)
            if frame.anchor is not None:
                anchors[frame.anchor] = (value, size)
        elif kind is yaml.AliasEvent:
            line = event.start_mark.line + 1
            if event.anchor not in anchors:
                raise ConfigError(
                    [f"{source}:{line}: invalid YAML: undefined alias {event.anchor!r}"]
                )
            anchored, size = anchors[event.anchor]
            copied += size
            if copied > MAX_ALIAS_VALUES:  # checked before copying: the copy is the bomb
                raise ConfigError(
                    [
                        f"{source}:{line}: invalid YAML: aliases expand to more than "
                        f"{MAX_ALIAS_VALUES:,} values (anchors that nest aliases grow "
                        "exponentially); write the repeated parts out or nest fewer aliases"
                    ]
                )
            value = copy.deepcopy(anchored)
        elif kind is yaml.DocumentStartEvent and root is not None:
            line = event.start_mark.line + 1
            raise ConfigError([f"{source}:{line}: invalid YAML: expected a single document"])
        else:  # stream and document start and end
            continue
        if not stack:
            root = value
            continue
        top = stack[-1]
        top.size += size
        target = top.value
        if value is _MERGE and (type(target) is list or top.key is not _NO_KEY):
            line = event.start_mark.line + 1
            raise ConfigError([f"{source}:{line}: invalid YAML: << is only a mapping's key"])
        if type(target) is list:
            target.append(value)
        elif top.key is _NO_KEY:
            top.key = value if type(value) is str or value is _MERGE else str(value)
            top.key_line = event.start_mark.line + 1
        elif top.key is _MERGE:
            top.key = _NO_KEY
            sources = _merge_sources(value, top.key_line, source)
            top.merges = sources if top.merges is None else top.merges + sources
        else:
            key, top.key = top.key, _NO_KEY
            if key in target:
                raise ConfigError([f"line {top.key_line}: key {key!r} appears twice"])
            target[key] = value
    return root


def _yaml_data(text: str, source: str) -> Any:
    """One YAML document's plain data (see :func:`_build_data`); errors as ConfigError."""
    return drive(_yaml_data_steps(text, source))


def _yaml_data_steps(text: str, source: str) -> Generator[None, None, Any]:
    loader = _COMPOSER(text)
    try:
        yield  # making the parser copies the text (~0.2-1 ms for 1 MB): a step of its own
        return (yield from _build_data(loader, source))
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f"{source}:{mark.line + 1}" if mark is not None else source
        problem = getattr(exc, "problem", None) or str(exc)
        raise ConfigError([f"{where}: invalid YAML: {problem}"]) from None
    finally:
        loader.dispose()


def _parse_yaml(text: str, source: str) -> tuple[dict[str, Any], _Lines]:
    return drive(_parse_yaml_steps(text, source))


def _parse_yaml_steps(text: str, source: str) -> Steps[tuple[dict[str, Any], _Lines]]:
    data = yield from _yaml_data_steps(text, source)
    lines = _Lines(text)
    if data is None:
        return {}, lines
    if not isinstance(data, dict):
        raise ConfigError([f"{source}:1: the config must be a mapping of keys to values"])
    return data, lines


def _env_value(raw: str, structured: bool, source: str = "environment") -> Any:
    """Read an environment override: a YAML scalar, or YAML/JSON (optionally base64) text."""
    if structured:
        text = raw
        stripped = raw.strip()
        if stripped and stripped[0] not in "[{-" and "\n" not in stripped and ":" not in stripped:
            try:
                text = base64.b64decode(stripped, validate=True).decode()
            except (binascii.Error, UnicodeDecodeError):
                text = raw
        return _yaml_data(text, source)
    value = yaml.safe_load(raw) if raw.strip() else raw
    # Keep strings that YAML would turn into other things when the field wants a string.
    return value if not isinstance(value, dict | list) else raw


def _structured(name: str) -> bool:
    field_info = Options.model_fields[name]
    text = str(field_info.annotation)
    return any(t in text for t in ("list", "dict", "List", "Dict"))


def _apply_env(data: dict[str, Any], env: Mapping[str, str]) -> list[str]:
    applied = []
    for name, field_info in Options.model_fields.items():
        key = field_info.alias or name
        env_name = key.upper()
        if env_name in env:
            data[key] = _env_value(env[env_name], _structured(name), env_name)
            applied.append(f"{env_name}={env[env_name]}")
    return applied


def _valid_keys_at(loc: Location) -> list[str]:
    """The keys valid at a location, for "did you mean" suggestions."""
    model: type[BaseModel] | None = Options
    nested: dict[str, type[BaseModel]] = {
        "routes": RouteOptions,
        "policy": RouteOptions,
        "certificates": CertificatePair,
        "idp_users": IdpUser,
        "redirect": RedirectAction,
        "response": DirectResponse,
    }
    for part in loc:
        if isinstance(part, int):
            continue
        model = nested.get(part)
        if model is None:
            return []
    if model is None:
        return []
    return [f.alias or n for n, f in model.model_fields.items()]


def format_loc(loc: Location) -> str:
    """``("routes", 0, "to")`` → ``routes[0].to``."""
    out = ""
    for part in loc:
        out += f"[{part}]" if isinstance(part, int) else (f".{part}" if out else part)
    return out


def _problems(exc: ValidationError, source: str, lines: _Lines) -> list[str]:
    problems = []
    for err in exc.errors(include_url=False):
        loc: Location = tuple(
            p
            for p in err["loc"]
            if not (isinstance(p, str) and (p.startswith("function-") or p in ("list[str]", "str")))
        )
        line = lines.find(loc)
        where = f"{source}:{line}" if line else source
        key = format_loc(loc) or "(top level)"
        if err["type"] == "extra_forbidden":
            refusal = not_supported(loc)
            if refusal is not None:
                problems.append(f"{where}: {key}: {refusal}")
                continue
            name = str(loc[-1])
            valid = _valid_keys_at(loc[:-1])
            close = difflib.get_close_matches(name, valid, n=1, cutoff=0.6)
            hint = f"; did you mean {close[0]!r}?" if close else ""
            problems.append(f"{where}: {key}: unknown key{hint}")
            continue
        msg = err["msg"]
        for prefix in ("Value error, ", "Assertion failed, "):
            msg = msg.removeprefix(prefix)
        problems.append(f"{where}: {key}: {msg}")
    return problems


class _RouteCache:
    """Validated routes of the last load, by their data, so a reload validates (and
    allocates) only the routes whose keys changed.

    Validating a route costs ~100 us (URL checks in Python validators), so 10,000 routes
    take ~1 s; ``repr`` of a route's plain data (str, int, bool, None, lists, dicts, in
    file order) costs ~5 us and tells the same data apart. Routes validate alone exactly
    as inside ``Options`` (no validator reads its context; the one ``Options`` validator
    that rewrites route data, :func:`~.upstream_health.breakers_into_routes`, runs before
    this), and a frozen model instance passes ``Options`` validation as it is. Reused
    instances also let the route compiler recognise an unchanged route by identity.
    Within one load, a route that differs from an earlier one only in ``from`` is a copy
    of it with its own ``from`` checked (:func:`_like`).
    """

    def __init__(self) -> None:
        #: The routes of the last load and of the one before: a config that failed to
        #: build (or a console preview) between two reloads does not cost the running
        #: config its reuse.
        self._kept: dict[str, RouteOptions] = {}
        self._older: dict[str, RouteOptions] = {}

    def validate(self, data: dict[str, Any]) -> Steps[bool]:
        """Replace ``data``'s route lists by validated routes; ``False`` (``data`` as it
        was) when one does not validate, so the caller validates the whole config and
        reports every problem with its line. A generator pausing after each route
        validated and every :data:`ROUTES_PER_STEP` reused."""
        previous, older = self._kept, self._older
        kept: dict[str, RouteOptions] = {}
        validated: dict[str, list[RouteOptions]] = {}
        shapes: dict[str, RouteOptions] = {}
        for section in ("routes", "policy"):
            items = data.get(section)
            if not isinstance(items, list):
                continue
            out: list[RouteOptions] = []
            for n, item in enumerate(items):
                key = repr(item)
                route = kept.get(key) or previous.get(key) or older.get(key)
                if route is None:
                    shape = _shape(item)
                    route = _like(shapes.get(shape) if shape is not None else None, item)
                if route is None:
                    try:
                        route = RouteOptions.model_validate(item)
                    except ValidationError:
                        return False
                    if shape is not None:
                        shapes.setdefault(shape, route)
                    yield
                elif n % ROUTES_PER_STEP == ROUTES_PER_STEP - 1:
                    yield
                kept[key] = route
                out.append(route)
            validated[section] = out
        raw = [data[section] for section in validated]
        data.update(validated)
        self._kept, self._older = kept, previous
        # Freed a part at a time: the file's route data (10,000 dicts) and the routes of
        # two loads ago took ~3 ms to free in one stretch.
        for items in raw:
            yield from release(items, every=256)
        del previous
        while older:
            for _ in range(min(len(older), 256)):
                older.popitem()
            yield
        return True


def _shape(item: Any) -> str | None:
    """A route's data with its ``from`` blanked, as text: routes of one shape differ only in
    ``from`` (``None``: not a mapping with a string ``from``)."""
    if type(item) is not dict or type(item.get("from")) is not str or "from_" in item:
        return None
    return repr({**item, "from": None})


def _like(template: RouteOptions | None, item: dict[str, Any]) -> RouteOptions | None:
    """``item`` validated as a copy of ``template``, a route of the same shape: only its
    ``from`` is new, and it is checked by the same validator as in a full validation. No
    other validator reads ``from`` (the whole-route checks compare the other keys), so
    the copy is what validating ``item`` gives, at a third of the cost. ``None``: no
    template, or a ``from`` that fails (the caller validates in full, for the problem)."""
    if template is None:
        return None
    value: str = item["from"]
    try:
        RouteOptions._check_from(value)
    except ValueError:
        return None
    return template.model_copy(update={"from_": value})


_ROUTES = _RouteCache()
#: Reused routes (a ``repr`` each, ~5 us) between two points where a sliced load may pause.
ROUTES_PER_STEP = 16
#: Bytes of config text hashed, and read from the file, between two such points.
DIGEST_BYTES_PER_STEP = 1 << 16
READ_BYTES_PER_STEP = 1 << 17


def load_text(
    text: str, source: str = "<config>", env: Mapping[str, str] | None = None
) -> LoadedConfig:
    """Validate config text; raise :class:`ConfigError` listing every problem."""
    with gc_paused():
        return drive(load_text_steps(text, source, env))


def load_text_steps(
    text: str, source: str = "<config>", env: Mapping[str, str] | None = None
) -> Steps[LoadedConfig]:
    """:func:`load_text` as a generator that pauses every ~0.1 ms of work, for a reload
    sliced on the event loop (:mod:`gatehouse.timeslice`); the collector is the caller's."""
    data, lines = yield from _parse_yaml_steps(text, source)
    warnings = []
    for key in list(data):
        if key in IGNORED_POMERIUM_KEYS:
            data.pop(key)
            warnings.append(
                f"{source}:{lines.find((key,))}: {key} ignored: {IGNORED_POMERIUM_KEYS[key]}"
            )
    for loc, warning in (yield from screen_steps(data)):
        warnings.append(f"{source}:{lines.find(loc)}: {warning}")
    applied = _apply_env(data, os.environ if env is None else env)
    # What Options' own "before" validation does to routes, done first: the routes are
    # then validated alone (and reused) with their effective values.
    data = breakers_into_routes(data)
    routes: dict[str, list[RouteOptions]] = {}
    if (yield from _ROUTES.validate(data)):
        # Validated already: handing 10,000 instances to pydantic-core again takes ~5 ms
        # in one stretch (a sliced reload would keep the event loop that long); no
        # Options validator reads the routes.
        routes = {key: data.pop(key) for key in ("routes", "policy") if key in data}
    try:
        options = Options.model_validate(data)
    except ValidationError as exc:
        raise ConfigError(_problems(exc, source, lines)) from None
    for key, value in routes.items():
        object.__setattr__(options, key, value)  # frozen model: set once, while built
        options.__pydantic_fields_set__.add(key)
    digest = yield from _digest(text, "\0".join(applied))
    loaded = LoadedConfig(
        options=options, source=source, digest=digest, warnings=tuple(warnings), lines=lines
    )
    problems = [loaded.at(loc, message) for loc, message in cross_checks(options)]
    if problems:
        raise ConfigError(loaded.sorted_problems(problems))
    return loaded


def _digest(text: str, applied: str) -> Steps[str]:
    """SHA-256 in hex of the config text then the overrides applied, UTF-8, a part at a
    time (encoding and hashing 1 MB of config took ~2 ms in one go)."""
    hasher = hashlib.sha256()
    for start in range(0, len(text), DIGEST_BYTES_PER_STEP):
        hasher.update(text[start : start + DIGEST_BYTES_PER_STEP].encode())
        yield
    hasher.update(applied.encode())
    return hasher.hexdigest()


def load_file(path: str | os.PathLike[str], env: Mapping[str, str] | None = None) -> LoadedConfig:
    """Read and validate a config file; raise :class:`ConfigError` listing every problem."""
    with gc_paused():
        return drive(load_file_steps(path, env))


def load_file_steps(
    path: str | os.PathLike[str], env: Mapping[str, str] | None = None
) -> Steps[LoadedConfig]:
    """:func:`load_file` as a generator (see :func:`load_text_steps`)."""
    p = Path(path)
    stamp = file_stamp(p)
    try:
        text = yield from _read_text_steps(p)
    except (OSError, UnicodeDecodeError) as exc:
        raise ConfigError([f"{p}: cannot read the config file: {exc}"]) from None
    loaded = yield from load_text_steps(text, str(p), env)
    return dataclasses.replace(loaded, stamp=stamp)


def _read_text_steps(path: Path) -> Steps[str]:
    """``path.read_text(encoding="utf-8")``, a part at a time (reading and decoding 1 MB
    took ~1.5 ms in one go); newlines translated as text mode does."""
    decoder = io.IncrementalNewlineDecoder(codecs.getincrementaldecoder("utf-8")(), True)
    parts: list[str] = []
    with path.open("rb") as stream:
        while chunk := stream.read(READ_BYTES_PER_STEP):
            parts.append(decoder.decode(chunk))
            yield
    parts.append(decoder.decode(b"", final=True))
    return "".join(parts)


def file_stamp(path: Path) -> tuple[float, int] | None:
    """``(mtime, size)`` of ``path``, or None when it cannot be read."""
    try:
        st = path.stat()
    except OSError:
        return None
    return (st.st_mtime, st.st_size)
