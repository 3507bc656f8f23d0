"""The configuration reference, generated from the configuration code itself so that it cannot drift.

Each key's type and default come from the dataclass that holds it (pimingestd/config.py for the sections,
each reader's ``Options`` for the format options, ``records.rules.RecordRules`` for the record rules), and
its description from the comment written beside the field in that code. mkdocs calls ``on_page_markdown``
for every page; the page that holds the marker gets the tables. tests/test_docs.py checks that every key
has a description, so a new option cannot land undocumented.
"""

from __future__ import annotations

import ast
import dataclasses
import html
import inspect
import textwrap
from collections.abc import Iterator
from typing import Any

MARKER = "<!-- configuration-reference -->"


@dataclasses.dataclass(frozen=True)
class Key:
    name: str
    type: str
    default: str  # "required" when the key has none
    doc: str


def field_docs(cls: type) -> dict[str, str]:
    """The comment beside (or on the lines just above) each field of a dataclass, read from its source."""
    lines, _ = inspect.getsourcelines(cls)
    source = textwrap.dedent("".join(lines))
    tree = ast.parse(source)
    body = tree.body[0]
    assert isinstance(body, ast.ClassDef)
    text = source.splitlines()
    docs: dict[str, str] = {}
    for node in body.body:
        if not (isinstance(node, ast.AnnAssign) and isinstance(node.target, ast.Name)):
            continue
        parts: list[str] = []
        above = node.lineno - 2
        while above >= 0 and text[above].strip().startswith("#"):
            parts.insert(0, text[above].strip().lstrip("#").strip())
            above -= 1
        line = text[node.end_lineno - 1 if node.end_lineno else node.lineno - 1]
        if "  # " in line:
            parts.append(line.split("  # ", 1)[1].strip())
        nxt = node.end_lineno or node.lineno
        while nxt < len(text) and text[nxt].strip().startswith("#") and text[nxt].startswith(" " * 8):
            parts.append(text[nxt].strip().lstrip("#").strip())  # a comment continued on the next lines
            nxt += 1
        docs[node.target.id] = " ".join(p for p in parts if p)
    return docs


def _type(annotation: Any) -> str:
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))
    for old, new in (
        ("tuple[Path, ...]", "list of paths"),
        ("tuple[str, ...]", "list of strings"),
        ("Mapping[str, str]", "table of strings"),
        ("Mapping[str, Any]", "table"),
        ("Path | None", "path"),
        ("str | None", "string"),
        ("int | None", "integer"),
        ("float | None", "number"),
        ("Path", "path"),
        ("str", "string"),
        ("bool", "boolean"),
        ("float", "number"),
        ("int", "integer"),
    ):
        if text == old:
            return new
    return text


def _default(f: dataclasses.Field[Any]) -> str:
    if f.default is not dataclasses.MISSING:
        value = f.default
    elif f.default_factory is not dataclasses.MISSING:
        value = f.default_factory()
    else:
        return "required"
    if value is None:
        return "unset"
    if isinstance(value, bool):
        return "`true`" if value else "`false`"
    if isinstance(value, str):
        return f'`"{value}"`'
    if isinstance(value, tuple | list):
        return "`[" + ", ".join(f'"{v}"' for v in value) + "]`"
    if isinstance(value, dict):
        return "`{}`" if not value else f"`{value}`"
    return f"`{value}`"


def keys(cls: type, skip: tuple[str, ...] = ()) -> Iterator[Key]:
    docs = field_docs(cls)
    for f in dataclasses.fields(cls):
        if f.name in skip or dataclasses.is_dataclass(f.type if not isinstance(f.type, str) else None):
            continue
        yield Key(f.name, _type(f.type), _default(f), docs.get(f.name, ""))


def sections() -> Iterator[tuple[str, str, list[Key]]]:
    """(TOML table, its intro, its keys) for every table the configuration file may hold."""
    from pimingestd import checks, config  # noqa: F401  (checks: the layers' registrations)
    from pimingestd.records import rules
    from pimingestd.sources import FORMATS

    def doc(cls: type) -> str:
        own = cls.__doc__ or ""
        return "" if own.startswith(cls.__name__ + "(") else " ".join(own.split())

    nested = {"s3", "sftp", "http", "watch", "profiles"}
    table = {
        "daemon": config.DaemonConfig,
        "http": config.HttpConfig,
        "pimcore": config.PimcoreConfig,
        "chunking": config.ChunkPolicy,
        "delivery": config.DeliveryConfig,
        "inbox": config.InboxConfig,
        "logging": config.LoggingConfig,
        "receiver": config.ReceiverConfig,
        "remote": config.RemoteConfig,
        "retention": config.RetentionConfig,
    }
    assert set(table) == set(config.SECTIONS), "a section of config.SECTIONS is missing from the reference"
    for name in config.SECTIONS:
        cls = table[name]
        found = list(keys(cls, skip=tuple(nested)))
        if name == "chunking":
            extra = field_docs(config.Config).get("max_record_bytes", "")
            max_record = next(f for f in dataclasses.fields(config.Config) if f.name == "max_record_bytes")
            found.append(Key("max_record_bytes", "integer", _default(max_record), extra))
        yield f"[{name}]", doc(cls), found
        if name == "inbox":
            yield "[[inbox.profiles]]", doc(config.Profile), list(keys(config.Profile, skip=("options", "rules")))
        if name == "remote":
            yield "[remote.s3]", doc(config.S3Config), list(keys(config.S3Config))
            yield "[remote.sftp]", doc(config.SftpConfig), list(keys(config.SftpConfig))
            yield "[remote.http]", doc(config.HttpSourceConfig), list(keys(config.HttpSourceConfig))
            yield (
                "[[remote.watch]]",
                doc(config.RemoteWatch),
                list(keys(config.RemoteWatch, skip=("options", "rules"))),
            )
    yield (
        "record rules",
        "In a profile, a remote inbox, an API call or an upload's query: what happens to each record.",
        list(keys(rules.RecordRules, skip=("delta_scope",)))
        + [k for k in keys(rules.RecordRules) if k.name == "delta_scope"],
    )
    for fmt, spec in FORMATS.items():
        options = spec.load().Options
        yield (
            f"format options: {fmt}",
            f"In a profile, a remote inbox, an API call or an upload's query, for {fmt} files.",
            list(keys(options)),
        )


def render() -> str:
    out: list[str] = []
    for title, intro, found in sections():
        out.append(f"### `{title}`\n" if title.startswith("[") else f"### {title.capitalize()}\n")
        if intro:
            out.append(intro + "\n")
        if not found:
            out.append("No options.\n")
            continue
        out.append("| key | type | default | what it does |\n|---|---|---|---|")
        for k in found:
            text = html.escape(k.doc, quote=False).replace("|", "\\|")
            out.append(f"| `{k.name}` | {k.type} | {k.default} | {text} |")
        out.append("")
    return "\n".join(out)


def on_page_markdown(markdown: str, **_: Any) -> str:
    return markdown.replace(MARKER, render()) if MARKER in markdown else markdown
