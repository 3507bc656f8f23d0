"""The parts of an .xlsx/.xlsm package that the Excel reader needs, found by their relationships.

A workbook is a zip of XML parts tied together by relationship files
(``_rels/*.rels``). Every part is found by following them from the package
root, never by a fixed path, so a styles or shared-strings part stored
anywhere is the one used (a reader that assumes ``xl/styles.xml`` delivers
dates as serial numbers when the styles live elsewhere).

What is refused here, each with a message that says why and what to do:
Strict Open XML workbooks, a part the relationships name that is missing,
a member that inflates like a decompression bomb, and XML that is not
well-formed. Zip member names written with backslashes are read as if
written with slashes.

Text in SpreadsheetML escapes characters XML cannot hold as ``_xHHHH_``
(ECMA-376 Part 1, 22.9.2.19); ``decode`` undoes it, ``_x005F_`` standing
for a literal underscore.
"""

from __future__ import annotations

import posixpath
import re
import zipfile
from collections.abc import Iterator
from dataclasses import dataclass
from typing import IO, BinaryIO
from xml.etree.ElementTree import Element, XMLPullParser
from xml.etree.ElementTree import ParseError as XmlParseError

from ..errors import ParseError

MAIN = "{http://schemas.openxmlformats.org/spreadsheetml/2006/main}"
_REL_NS = "http://schemas.openxmlformats.org/officeDocument/2006/relationships"
_RID = "{" + _REL_NS + "}id"
_PKG_RELS = "{http://schemas.openxmlformats.org/package/2006/relationships}Relationship"
_STRICT = "http://purl.oclc.org/ooxml/"
REL_OFFICE_DOCUMENT = _REL_NS + "/officeDocument"
REL_WORKSHEET = _REL_NS + "/worksheet"
REL_CHARTSHEET = _REL_NS + "/chartsheet"
REL_STYLES = _REL_NS + "/styles"
REL_SHARED_STRINGS = _REL_NS + "/sharedStrings"

# Parts read whole (shared strings, styles) and decompression bombs.
MAX_WHOLE_PART = 256 << 20
MAX_RATIO = 100
RATIO_FROM = 64 << 20

_ESCAPE = re.compile(r"_x([0-9A-Fa-f]{4})_")


def decode(text: str) -> str:
    """Undo SpreadsheetML's ``_xHHHH_`` escapes (UTF-16 code units; a pair makes one character)."""
    if "_x" not in text:
        return text
    out = _ESCAPE.sub(lambda m: chr(int(m.group(1), 16)), text)
    try:
        out.encode("utf-8")
    except UnicodeEncodeError:
        try:  # escaped surrogate pairs: join them
            out = out.encode("utf-16-le", "surrogatepass").decode("utf-16-le")
        except UnicodeDecodeError:
            raise ValueError(f"the escape sequence in {text[:60]!r} encodes a lone surrogate") from None
    return out


def text_of(element: Element) -> str:
    """The text of a string item (``<si>`` or ``<is>``): its ``<t>``, or its runs' ``<t>``s, without
    phonetic runs (``<rPh>``), decoded."""
    parts: list[str] = []
    for child in element:
        if child.tag == MAIN + "t":
            parts.append(child.text or "")
        elif child.tag == MAIN + "r":
            for t in child.iterfind(MAIN + "t"):
                parts.append(t.text or "")
    return decode("".join(parts))


@dataclass(frozen=True, slots=True)
class Sheet:
    name: str
    kind: str  # "worksheet", "chartsheet" or another relationship type's last word
    part: str | None  # None: the relationship is missing


@dataclass(frozen=True, slots=True)
class Styles:
    dates: frozenset[int]  # cell style indices (the ``s`` attribute) formatted as dates
    durations: frozenset[int]  # those formatted as durations ([h]:mm:ss)


class Package:
    """An opened workbook package. ``name`` is the file's name, for messages."""

    def __init__(self, fh: BinaryIO, name: str) -> None:
        self.name = name
        try:
            self._zip = zipfile.ZipFile(fh)
            infos = self._zip.infolist()
        except (zipfile.BadZipFile, OSError, ValueError, EOFError) as exc:
            raise ParseError(f"{name}: not a readable Excel workbook (not a zip file: {exc})") from None
        self._members = {i.filename.replace("\\", "/").lstrip("/"): i for i in infos}
        for info in infos:
            ratio = info.file_size // max(info.compress_size, 1)
            if info.file_size > RATIO_FROM and ratio > MAX_RATIO:
                raise ParseError(
                    f"{name}: {info.filename} inflates {ratio}x to {info.file_size} bytes; refused as a decompression bomb"
                )
        self.workbook = self._workbook_part()
        self._workbook_rels = self.relationships(self.workbook)

    def close(self) -> None:
        self._zip.close()

    # ---- parts and relationships ---------------------------------------------

    def has(self, part: str) -> bool:
        return part in self._members

    def open(self, part: str, *, whole: bool = False) -> IO[bytes]:
        info = self._members.get(part)
        if info is None:
            raise ParseError(f"{self.name}: the part {part} is missing from the file; the workbook is damaged")
        if whole and info.file_size > MAX_WHOLE_PART:
            raise ParseError(
                f"{self.name}: {part} inflates to {info.file_size} bytes (over {MAX_WHOLE_PART}); refused as it"
                " would be held in memory whole"
            )
        try:
            return self._zip.open(info)
        except (zipfile.BadZipFile, NotImplementedError, OSError) as exc:
            raise ParseError(f"{self.name}: cannot read {part}: {exc}") from None

    def elements(self, part: str, *, whole: bool = False) -> Iterator[tuple[str, Element]]:
        """(event, element) of a part, start and end events, streamed; errors name the part and place."""
        with self.open(part, whole=whole) as src:
            try:
                # An XMLPullParser fed in blocks, not iterparse: iterparse makes a class per call, and the
                # cycle that class closes keeps its parser (and expat's native buffers) until a full
                # collection; the soak saw each workbook leave about 13 KiB behind.
                parser: XMLPullParser[Element] = XMLPullParser(events=("start", "end"))
                while block := src.read(1 << 16):
                    parser.feed(block)
                    yield from _events(parser)
                parser.close()
                yield from _events(parser)
            except XmlParseError as exc:
                line, col = exc.position
                raise ParseError(f"{self.name}: {part} is not well-formed XML at line {line} column {col}") from None
            except (zipfile.BadZipFile, EOFError, OSError) as exc:
                raise ParseError(f"{self.name}: {part} is damaged: {exc}") from None

    def relationships(self, part: str) -> dict[str, tuple[str, str]]:
        """Relationship id -> (type, target part) of ``part`` ("" for the package itself)."""
        folder, base = posixpath.split(part)
        rels = posixpath.join(folder, "_rels", base + ".rels")
        out: dict[str, tuple[str, str]] = {}
        if not self.has(rels):
            return out
        for event, el in self.elements(rels):
            if event != "end" or el.tag != _PKG_RELS or el.get("TargetMode") == "External":
                continue
            target = el.get("Target", "")
            if target.startswith("/"):
                resolved = posixpath.normpath(target.lstrip("/"))
            else:
                resolved = posixpath.normpath(posixpath.join(folder, target.replace("\\", "/")))
            out[el.get("Id", "")] = (el.get("Type", ""), resolved)
        return out

    def _workbook_part(self) -> str:
        for rel_type, target in self.relationships("").values():
            if rel_type == REL_OFFICE_DOCUMENT:
                return target
            if rel_type.startswith(_STRICT) and rel_type.endswith("/officeDocument"):
                raise ParseError(
                    f"{self.name}: a Strict Open XML Spreadsheet, which is not supported; open it in Excel and"
                    " save it as 'Excel Workbook (*.xlsx)'"
                )
        raise ParseError(f"{self.name}: not a readable Excel workbook (the package names no workbook part)")

    def _related(self, rel_type: str) -> str | None:
        return next((t for ty, t in self._workbook_rels.values() if ty == rel_type), None)

    # ---- the workbook ------------------------------------------------------------

    def sheets(self) -> tuple[list[Sheet], bool]:
        """The sheets in workbook order, and whether dates count from 1904."""
        sheets: list[Sheet] = []
        date1904 = False
        for event, el in self.elements(self.workbook, whole=True):
            if event == "start" and el.tag.startswith("{" + _STRICT):
                raise ParseError(
                    f"{self.name}: a Strict Open XML Spreadsheet, which is not supported; open it in Excel and"
                    " save it as 'Excel Workbook (*.xlsx)'"
                )
            if event != "end":
                continue
            if el.tag == MAIN + "workbookPr":
                date1904 = el.get("date1904", "0").lower() in ("1", "true")
            elif el.tag == MAIN + "sheet":
                rel = self._workbook_rels.get(el.get(_RID, ""))
                kind = rel[0].rsplit("/", 1)[-1] if rel else "missing"
                sheets.append(Sheet(el.get("name", ""), kind, rel[1] if rel else None))
        return sheets, date1904

    def styles(self) -> Styles:
        part = self._related(REL_STYLES)
        if part is None:
            return Styles(frozenset(), frozenset())
        if not self.has(part):
            raise ParseError(
                f"{self.name}: the workbook's styles part {part} is missing; without it dates cannot be told"
                " from numbers. Re-save the workbook in Excel."
            )
        custom: dict[int, str] = {}
        formats: list[int] = []
        in_xfs = False
        for event, el in self.elements(part, whole=True):
            if el.tag == MAIN + "cellXfs":
                in_xfs = event == "start"
            elif event == "end" and el.tag == MAIN + "numFmt":
                custom[int(el.get("numFmtId", "0"))] = el.get("formatCode", "")
            elif event == "end" and in_xfs and el.tag == MAIN + "xf":
                formats.append(int(el.get("numFmtId", "0")))
        from openpyxl.styles.numbers import BUILTIN_FORMATS, is_date_format, is_timedelta_format  # see excel._Cells

        dates, durations = set(), set()
        for index, fmt_id in enumerate(formats):
            code = custom.get(fmt_id, BUILTIN_FORMATS.get(fmt_id))
            if code is None:
                continue
            if is_date_format(code):
                dates.add(index)
            if is_timedelta_format(code):
                durations.add(index)
        return Styles(frozenset(dates), frozenset(durations))

    def shared_strings(self) -> list[str] | None:
        """The shared strings table, or None when the workbook has none."""
        part = self._related(REL_SHARED_STRINGS)
        if part is None:
            return None
        if not self.has(part):
            raise ParseError(
                f"{self.name}: the workbook's shared strings part {part} is missing from the file; the workbook"
                " is damaged (re-save it in Excel)"
            )
        strings: list[str] = []
        root: Element | None = None
        for event, el in self.elements(part, whole=True):
            if root is None:
                root = el
            if event == "end" and el.tag == MAIN + "si":
                try:
                    strings.append(text_of(el))
                except ValueError as exc:
                    raise ParseError(f"{self.name}: shared string {len(strings)}: {exc}") from None
                root.clear()  # drop the items read so far: only the strings are kept
        return strings


def _events(parser: XMLPullParser[Element]) -> Iterator[tuple[str, Element]]:
    """The start and end events read so far (the only kinds asked for)."""
    for item in parser.read_events():
        yield item[0], item[1]  # type: ignore[misc]  # start/end events are (event, Element)
