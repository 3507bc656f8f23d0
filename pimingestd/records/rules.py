"""An ingestion's record rules, as a profile, a request or an upload gives them, and its two delivery
rules (protocol v2's ``window`` and ``order``), which travel the same way.

Every rule is optional; an ingestion without any behaves exactly as before this module existed. The
rules travel as one JSON object (the ingestion's ``rules`` column), checked here wherever they enter, so
a bad one is refused (ConfigError naming the key) before any work is done.
"""

from __future__ import annotations

import dataclasses
import re
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import orjson

from .. import config
from ..errors import ConfigError

ON_INVALID = ("fail", "skip")
ORDERS = ("strict", "by_key")  # protocol v2's Pimingest-Order
MAX_WINDOW = 256  # protocol/v1.py's MAX_WINDOW
DELETIONS = ("off", "report", "send")
# The keys a profile or a request may carry besides the format's options.
NAMES = (
    "schema",
    "required",
    "key",
    "on_invalid",
    "unique_key",
    "delta",
    "delta_scope",
    "deletions",
    "max_deletions",
    "window",
    "order",
)
REJECTS_INFIX = ".rejects"  # products.rejects.csv: a reject file, whose delta scope is its source's


@dataclass(frozen=True, slots=True)
class RecordRules:
    schema: Mapping[str, Any] | None = None  # JSON Schema, Draft 2020-12
    required: tuple[str, ...] = ()  # fields (top-level or dotted) every record must have
    key: str | None = None  # the record's key: a top-level field or a dotted path
    on_invalid: str = "fail"  # "fail": the file fails before anything is sent; "skip": to the reject file
    unique_key: bool = False  # a key seen twice in one file makes the later records invalid
    delta: bool = False  # send only records new or changed in the scope
    delta_scope: str = ""  # the scope's name ("" until the submit fills in its default)
    deletions: str = "off"  # keys of the scope absent from a full file: "off", "report", "send"
    max_deletions: float = 20.0  # percent of the scope's keys a full file may delete; more fails it
    window: int = 1  # chunks in flight at once (more than one: protocol v2, and the file is spooled)
    order: str = "strict"  # "strict": PIM-Core applies in chunk order; "by_key": in file order per key

    @property
    def active(self) -> bool:
        """Whether the ingestion needs the record pipeline (and so is always spooled)."""
        return bool(self.schema is not None or self.required or self.key)

    @property
    def versions(self) -> bool:
        """Whether ACKed versions are recorded in the scope: whenever records have a key."""
        return self.key is not None

    def as_json(self) -> dict[str, Any]:
        out: dict[str, Any] = {}
        for f in dataclasses.fields(self):
            value = getattr(self, f.name)
            if value != f.default and not (f.name == "required" and not value):
                out[f.name] = list(value) if isinstance(value, tuple) else value
        return out

    def with_delivery(self, window: int, order: str, given: Mapping[str, Any]) -> RecordRules:
        """The ``[pimcore]`` defaults for what ``given`` (the request's rules) does not set. A default
        ``by_key`` applies to ingestions whose records have a key; the others keep strict order."""
        out = self
        if "window" not in given:
            out = dataclasses.replace(out, window=window)
        if "order" not in given and (order != "by_key" or out.key is not None):
            out = dataclasses.replace(out, order=order)
        return out

    def with_scope(self, default: str) -> RecordRules:
        """The scope filled in: the one given, else ``default`` (a profile's match, a remote inbox's URL, or
        ``default_scope`` of the file's name)."""
        if not self.versions or self.delta_scope:
            return self
        return dataclasses.replace(self, delta_scope=default)


# ``.rejects.``, or ``.rejects-<n>.`` (the name a reject file takes beside a source already called
# ``<name>.rejects.<ext>``: intake/lifecycle.py never lets a derived name be its source's).
_REJECTS = re.compile(re.escape(REJECTS_INFIX) + r"(?:-[0-9]+)?\.")


def default_scope(name: str) -> str:
    """An API call's scope: the file's name, with a reject file's ``.rejects`` (or ``.rejects-<n>``) infix
    taken out (so a fixed reject file lands in its source's scope)."""
    base = name.rsplit("/", 1)[-1]
    stem, dot, ext = base.partition(".")
    rest = "." + ext if dot else ""
    infix = _REJECTS.match(rest)
    if infix is not None:
        rest = "." + rest[infix.end() :]
    return stem + rest


def is_reject_file(name: str) -> bool:
    """A reject file (``<name>.rejects.<ext>``, ``<name>.rejects-<n>.<ext>``) holds only some of the records:
    it is never a full file."""
    return _REJECTS.search(name.rsplit("/", 1)[-1]) is not None


def parse(raw: Mapping[str, Any], where: str = "", base: Path | None = None) -> RecordRules:
    """The rules among ``raw`` (other keys are ignored: they are format options); ConfigError naming the key.
    A profile's ``schema`` may be a path to a JSON file (relative to ``base``, the config's folder)."""
    given = {k: raw[k] for k in NAMES if k in raw and raw[k] is not None}
    schema = given.get("schema")
    if isinstance(schema, str):
        schema = _load_schema(schema, where, base)
    if schema is not None:
        schema = _check_schema(schema, where)
    required = given.get("required", [])
    if not isinstance(required, list | tuple) or not all(isinstance(r, str) and r for r in required):
        raise ConfigError(f"{where}required must be a list of field names")
    key = given.get("key")
    if key is not None and (not isinstance(key, str) or not key or key.startswith(".") or key.endswith(".")):
        raise ConfigError(f"{where}key must be a field name or a dotted path such as product.sku; got {key!r}")
    on_invalid = _choice(given, "on_invalid", ON_INVALID, where)
    deletions = _choice(given, "deletions", DELETIONS, where)
    flags = {name: _flag(given, name, where) for name in ("unique_key", "delta")}
    scope = given.get("delta_scope", "")
    if not isinstance(scope, str):
        raise ConfigError(f"{where}delta_scope must be a string")
    limit = given.get("max_deletions", 20.0)
    if isinstance(limit, bool) or not isinstance(limit, int | float) or not 0 <= limit <= 100:
        raise ConfigError(f"{where}max_deletions must be a percentage between 0 and 100")
    if key is None:
        for name in ("unique_key", "delta"):
            if flags[name]:
                raise ConfigError(f"{where}{name} needs `key` (the field that names a record)")
        if scope:
            raise ConfigError(f"{where}delta_scope needs `key`")
    window = given.get("window", 1)
    if isinstance(window, bool) or not isinstance(window, int) or not 1 <= window <= MAX_WINDOW:
        raise ConfigError(f"{where}window must be a whole number of chunks between 1 and {MAX_WINDOW}")
    order = _choice(given, "order", ORDERS, where)
    if order == "by_key" and key is None:
        raise ConfigError(f'{where}order = "by_key" needs `key` (the field whose values must keep file order)')
    if deletions != "off" and not flags["delta"]:
        raise ConfigError(f'{where}deletions = "{deletions}" needs delta = true')
    return RecordRules(
        schema=schema,
        required=tuple(required),
        key=key,
        on_invalid=on_invalid,
        unique_key=flags["unique_key"],
        delta=flags["delta"],
        delta_scope=scope,
        deletions=deletions,
        max_deletions=float(limit),
        window=window,
        order=order,
    )


def stored(raw: Mapping[str, Any]) -> RecordRules:
    """Rules read back from the state database (checked when they entered)."""
    return parse(raw) if raw else RecordRules()


def _choice(given: Mapping[str, Any], name: str, options: tuple[str, ...], where: str) -> str:
    value = given.get(name, options[0])
    if value not in options:
        raise ConfigError(f"{where}{name} must be one of {', '.join(options)}; got {value!r}")
    return str(value)


def _flag(given: Mapping[str, Any], name: str, where: str) -> bool:
    value = given.get(name, False)
    if not isinstance(value, bool):
        raise ConfigError(f"{where}{name} must be true or false")
    return value


def _load_schema(path: str, where: str, base: Path | None) -> Any:
    if base is None:
        raise ConfigError(f"{where}schema must be a JSON Schema object (a path is read only from the config)")
    file = (base / path).expanduser()
    try:
        return orjson.loads(file.read_bytes())
    except OSError as exc:
        raise ConfigError(f"{where}schema: cannot read {file}: {exc.strerror or exc}") from None
    except orjson.JSONDecodeError as exc:
        raise ConfigError(f"{where}schema: {file} is not valid JSON: {exc}") from None


def _check_schema(schema: Any, where: str) -> Mapping[str, Any]:
    from jsonschema import Draft202012Validator, SchemaError

    if not isinstance(schema, dict):
        raise ConfigError(f"{where}schema must be a JSON Schema object")
    try:
        Draft202012Validator.check_schema(schema)
    except SchemaError as exc:
        path = "/".join(str(p) for p in exc.path) or "(root)"
        raise ConfigError(f"{where}schema is not a valid Draft 2020-12 schema at {path}: {exc.message}") from None
    return schema


def _parsed(raw: Mapping[str, Any], where: str, base: Path) -> Mapping[str, Any]:
    return parse(raw, where, base).as_json()


config.register(config.RuleChecks(names=NAMES, parse=_parsed))
