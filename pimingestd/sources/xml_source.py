"""XML (.xml): each element at ``record_path`` is one record, read as a stream.

The contract is what ``xmltodict.parse(element_xml)`` gives, with its defaults,
for the record element's own text, without the outer tag: attributes as
``@name``, an element's text as ``#text`` when it also has attributes or
children (else the element is its text), repeated children as a list, text
stripped of surrounding whitespace, an empty element as ``null``, names
(namespace prefixes included) exactly as written, ``xmlns`` declarations on an
element as its attributes. Comments and processing instructions are not data.
A record element that is only text is ``{"#text": ...}``, an empty one ``{}``.
``tests/test_xml.py`` compares the two on generated documents.

The reader is expat without namespace processing, as xmltodict is. It keeps
only the record being built; everything outside records is passed over.

Safe by construction: a DTD is never loaded, whether named or inline, so
nothing is fetched; any entity declaration (the billion laughs, quadratic
blowup and external entity attacks all need one) refuses the document, as does
a reference to an entity that only an unread external DTD could declare.
Encodings come from the XML declaration or the byte order mark (UTF-8,
UTF-16, ISO-8859-1, and the single-byte code pages Python knows); the two
must agree (expat checks UTF-16's, this module a UTF-8 BOM's). Any other
declared encoding (Shift_JIS, UTF-32, an unknown name) is refused by name.

Refused, naming line and column: a document that is not well-formed, a root
element other than the path's first name, entity declarations and references,
a record (or a single run of markup or text) over the record size limit.

Options: ``record_path`` (required), element names from the root down,
separated by ``/``, such as ``rss/channel/item`` or
``BMECAT/T_NEW_CATALOG/ARTICLE``.
"""

from __future__ import annotations

import codecs
import re
from collections.abc import Iterator
from dataclasses import dataclass
from typing import Any, BinaryIO
from xml.parsers import expat

from ..errors import ParseError

_BLOCK = 1 << 16
_UTF8_BOM = b"\xef\xbb\xbf"
_ENCODING_NAME = re.compile(rb"<\?xml[^>]*?encoding\s*=\s*[\"']([A-Za-z][A-Za-z0-9._-]*)[\"']")


def _codec_name(encoding: str) -> str:
    """Python's name for an encoding named in a declaration ("UTF8", "utf-8" and "UTF-8" are one)."""
    try:
        return codecs.lookup(encoding).name
    except LookupError:
        return encoding.lower()


@dataclass(frozen=True, slots=True)
class Options:
    record_path: str = ""  # required: the record elements' names from the root, such as products/product

    def __post_init__(self) -> None:
        if not isinstance(self.record_path, str) or not self.record_path.strip("/"):
            raise ValueError(
                "record_path is required by the xml format: the element names from the root to a record,"
                " such as products/product"
            )
        names = self.record_path.strip("/").split("/")
        bad = next((n for n in names if not n or any(c.isspace() or c in "<>&\"'=" for c in n)), None)
        if bad is not None:
            raise ValueError(f"record_path {self.record_path!r}: {bad!r} is not an element name")

    @property
    def names(self) -> list[str]:
        return self.record_path.strip("/").split("/")


class _Refused(Exception):
    """Raised inside an expat handler, with the position of the event that raised it."""


class _Frame:
    __slots__ = ("item", "text")

    def __init__(self, item: dict[str, Any] | None) -> None:
        self.item = item
        self.text: list[str] = []


def _push(item: dict[str, Any] | None, key: str, value: Any) -> dict[str, Any]:
    """Add ``key: value`` to an element's value; a key seen before becomes a list."""
    if item is None:
        return {key: value}
    if key not in item:
        item[key] = value
    elif isinstance(item[key], list):
        item[key].append(value)
    else:
        item[key] = [item[key], value]
    return item


def _value(frame: _Frame) -> Any:
    """An element's value: its text, or its attributes and children with ``#text``, or null."""
    text = "".join(frame.text).strip() or None
    if frame.item is None:
        return text
    if text is not None:
        frame.item["#text"] = text
    return frame.item


class _Reader:
    def __init__(self, name: str, options: Options, max_record_bytes: int) -> None:
        self.name = name
        self.want = options.names
        self.limit = max_record_bytes
        self.path: list[str] = []
        self.frames: list[_Frame] = []  # the record being built, its element first
        self.record_start = 0
        self.done: list[dict[str, Any]] = []
        self.count = 0
        p = self.parser = expat.ParserCreate()  # no namespace processing: names as written
        p.ordered_attributes = True
        p.buffer_text = True
        p.buffer_size = _BLOCK
        p.SetParamEntityParsing(expat.XML_PARAM_ENTITY_PARSING_NEVER)
        p.StartElementHandler = self.start
        p.EndElementHandler = self.end
        p.CharacterDataHandler = self.characters
        p.EntityDeclHandler = self.entity_declared
        p.XmlDeclHandler = self.declared
        self.utf8_bom = False  # set by read() from the first bytes
        self.head = b""  # the document's first bytes (set by read()), where its XML declaration is
        p.SkippedEntityHandler = self.entity_skipped
        # Events for what is not data, so the distance since the last event bounds expat's buffer.
        p.CommentHandler = self.ignore
        p.ProcessingInstructionHandler = self.ignore2

    def ignore(self, _data: str) -> None:
        pass

    def ignore2(self, _target: str, _data: str) -> None:
        pass

    def start(self, tag: str, attrs: list[str]) -> None:
        self.path.append(tag)
        if not self.frames:
            if len(self.path) == 1 and tag != self.want[0]:
                raise self.refused(
                    f"the root element is <{tag}>, but record_path {'/'.join(self.want)!r} starts at <{self.want[0]}>"
                )
            if self.path != self.want:
                return
            self.record_start = self.parser.CurrentByteIndex
        else:
            self.check_size()
        item = {"@" + attrs[i]: attrs[i + 1] for i in range(0, len(attrs), 2)} if attrs else None
        self.frames.append(_Frame(item))

    def end(self, tag: str) -> None:
        self.path.pop()
        if not self.frames:
            return
        value = _value(self.frames.pop())
        if self.frames:
            self.frames[-1].item = _push(self.frames[-1].item, tag, value)
            return
        self.check_size()
        if value is None:
            value = {}
        elif isinstance(value, str):
            value = {"#text": value}
        self.done.append(value)
        self.count += 1

    def characters(self, data: str) -> None:
        if self.frames:
            self.frames[-1].text.append(data)
            self.check_size()

    def check_size(self) -> None:
        if self.parser.CurrentByteIndex - self.record_start > self.limit:
            raise self.refused(
                f"record {self.count} is longer than {self.limit} bytes"
                " (the record size limit, [chunking] max_record_bytes)"
            )

    def declared(self, _version: str, encoding: str | None, _standalone: int) -> None:
        """A UTF-8 byte order mark then a declaration naming another encoding is a fatal error in XML 1.0 (4.3.3;
        W3C xmlconf hst-lhs-007), but expat decodes the text as the declaration says: Latin-1 would turn every
        "ö" into "Ã¶". A UTF-16 byte order mark (or UTF-16 without one) with a declaration naming an 8-bit
        encoding, and 8-bit text declaring UTF-16, expat refuses itself ("encoding specified in XML declaration
        is incorrect")."""
        if self.utf8_bom and encoding is not None and _codec_name(encoding) != "utf-8":
            raise self.refused(
                f"the byte order mark says UTF-8, but the XML declaration names the encoding {encoding}; a fatal error in"
                " XML 1.0: remove the byte order mark or correct the declaration, whichever is wrong"
            )

    def entity_declared(self, entity: str, is_parameter: int, *_rest: Any) -> None:
        kind = "a parameter entity" if is_parameter else "an entity"
        raise self.refused(
            f"the document declares {kind} ({entity!r}); entity declarations are refused"
            " (they are how entity expansion and external entity attacks work); expand them before sending"
        )

    def entity_skipped(self, entity: str, _is_parameter: int) -> None:
        raise self.refused(
            f"the entity &{entity}; is not declared in the document; its DTD is never read,"
            " so replace it with the character or a character reference (&#NNN;)"
        )

    def where(self) -> str:
        """The current event's position; after Parse() has returned it would be where parsing stopped."""
        p = self.parser
        return f"{self.name}: line {p.CurrentLineNumber} column {p.CurrentColumnNumber + 1}"

    def close(self) -> None:
        """Break the parser <-> reader cycle (its handlers are this reader's methods) so the parser and its
        native buffers are freed now, not whenever the cycle collector gets to them: the soak found each XML
        file leaving about 50 KiB behind until then."""
        p = self.parser
        for handler in (
            "StartElementHandler", "EndElementHandler", "CharacterDataHandler", "EntityDeclHandler",
            "SkippedEntityHandler", "CommentHandler", "ProcessingInstructionHandler", "XmlDeclHandler",
        ):  # fmt: skip
            setattr(p, handler, None)
        self.frames = []
        self.done = []

    def declared_name(self) -> str:
        """The encoding named in the XML declaration at the start (UTF-16's zero bytes dropped), as written."""
        found = _ENCODING_NAME.search(self.head.replace(b"\0", b""))
        return found.group(1).decode("ascii") if found else "(unreadable)"

    def refused(self, message: str) -> _Refused:
        return _Refused(f"{self.where()}: {message}")

    def feed(self, block: bytes, fed: int) -> None:
        p = self.parser
        try:
            p.Parse(block, not block)
        except _Refused as exc:
            raise ParseError(str(exc)) from None
        except (ValueError, LookupError) as exc:  # pyexpat's handler for an encoding expat lacks (not a parse error)
            raise ParseError(
                f"{self.where()}: the XML declaration names the encoding {self.declared_name()}, which cannot be read"
                f" here ({exc}); UTF-8, UTF-16, US-ASCII, ISO-8859-1 and single-byte code pages can: convert the file"
                " to UTF-8"
            ) from None
        except expat.ExpatError as exc:
            message = expat.errors.messages[exc.code]
            raise ParseError(
                f"{self.name}: line {exc.lineno} column {exc.offset + 1}: not well-formed XML ({message})"
            ) from None
        if fed - p.CurrentByteIndex > self.limit + _BLOCK:
            raise ParseError(
                f"{self.where()}: a single run of markup or text is longer than {self.limit} bytes"
                " (the record size limit, [chunking] max_record_bytes)"
            )


def read(fh: BinaryIO, name: str, options: Options, max_record_bytes: int) -> Iterator[dict[str, Any]]:
    reader = _Reader(name, options, max_record_bytes)
    fed = 0
    try:
        block = fh.read(_BLOCK)
        while 0 < len(block) < len(_UTF8_BOM) and (more := fh.read(_BLOCK)):
            block += more
        reader.utf8_bom = block.startswith(_UTF8_BOM)
        reader.head = block[:512]
        while True:
            fed += len(block)
            reader.feed(block, fed)
            if reader.done:
                yield from reader.done
                reader.done = []
            if not block:
                return
            block = fh.read(_BLOCK)
    finally:
        reader.close()
