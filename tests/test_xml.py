"""XML: what xmltodict.parse gives for each record element, exactly; encodings; safe by construction; errors
that name line and column; memory that does not grow with the document."""

from __future__ import annotations

import tracemalloc
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any
from xml.sax.saxutils import escape, quoteattr

import pytest
import xmltodict
from aiohttp import web
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from pimingestd.errors import ConfigError, ParseError
from pimingestd.sources import SourceSpec, format_options, read_records

from .servers import served

TEXT = st.text(
    st.characters(blacklist_categories=("Cs", "Cc"), blacklist_characters="\ufffe\uffff"), max_size=10
) | st.sampled_from(["", " ", "\n  ", " padded ", "a & b", "<x>", '"q"', "é😀", "]]>"])
NAME = st.sampled_from(["sku", "name", "g:price", "price", "a-b", "x.y", "_u", "Ä"])
ATTR = st.sampled_from(["id", "lang", "g:unit", "xmlns:g", "xmlns", "currency"])


def _text(t: str) -> str:
    return escape(t).replace("\r", "&#13;")


@st.composite
def element(draw: Any, tag: str, depth: int = 0) -> str:
    attrs = draw(st.dictionaries(ATTR, TEXT, max_size=3))
    head = tag + "".join(f" {k}={quoteattr(v).replace(chr(13), '&#13;')}" for k, v in attrs.items())
    parts: list[str] = []
    for _ in range(draw(st.integers(0, 4 if depth < 3 else 0))):
        kind = draw(st.sampled_from(["text", "child", "child", "comment", "cdata", "ref", "pi"]))
        if kind == "text":
            parts.append(_text(draw(TEXT)))
        elif kind == "child":
            parts.append(draw(element(draw(NAME), depth + 1)))
        elif kind == "comment":
            parts.append("<!-- note -->")
        elif kind == "cdata":
            parts.append("<![CDATA[" + draw(TEXT).replace("]]>", "") + "]]>")
        elif kind == "ref":
            parts.append(draw(st.sampled_from(["&#233;", "&#x1F600;", "&lt;", "&apos;", "&#10;"])))
        else:
            parts.append("<?pi data?>")
    if not parts and draw(st.booleans()):
        return f"<{head}/>"
    return f"<{head}>{''.join(parts)}</{tag}>"


def expected(record_xml: str) -> dict[str, Any]:
    value = xmltodict.parse(record_xml)
    (only,) = value.values()
    if only is None:
        return {}
    return {"#text": only} if isinstance(only, str) else dict(only)


def _read(path: Path, record_path: str = "feed/items/item", **kw: Any) -> list[dict[str, Any]]:
    return list(read_records(path, SourceSpec("xml", {"record_path": record_path}), **kw))  # type: ignore[misc]


def _plain(value: Any) -> Any:
    if isinstance(value, dict):
        return {k: _plain(v) for k, v in value.items()}
    if isinstance(value, list):
        return [_plain(v) for v in value]
    return value


@settings(max_examples=200, deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large])
@given(st.lists(element("item"), max_size=6), st.data())
def test_records_are_what_xmltodict_parses(tmp_path_factory: Any, items: list[str], data: Any) -> None:
    """Generated record elements (attributes, xmlns declarations, prefixes, mixed content, CDATA, comments,
    character references, repeated children) inside a document with other elements around them: each record
    is what xmltodict.parse gives for that element's own text."""
    noise = data.draw(st.lists(element("other"), max_size=2))
    doc = (
        '<?xml version="1.0" encoding="UTF-8"?>\n<feed xmlns:g="urn:g"><head><item>not a record</item></head>'
        f"<items>{''.join(items)}{''.join(noise)}</items><!-- end --></feed>\n"
    )
    path = tmp_path_factory.mktemp("x") / "f.xml"
    path.write_text(doc, encoding="utf-8")
    assert [_plain(r) for r in _read(path)] == [expected(i) for i in items]


def test_the_documented_shapes(tmp_path: Path) -> None:
    path = tmp_path / "rss.xml"
    path.write_bytes(
        b'<?xml version="1.0"?>\n<rss xmlns:g="http://base.google.com/ns/1.0" version="2.0"><channel>'
        b"<title>Shop</title>"
        b'<item><g:id>A1</g:id><g:price currency="EUR"> 9.99 </g:price><tag>a</tag><tag>b</tag><gone/></item>'
        b'<item xmlns:x="urn:x">only <b>mixed</b> text</item><item>  just text  </item><item/>'
        b"</channel></rss>"
    )
    assert _read(path, "rss/channel/item") == [
        {"g:id": "A1", "g:price": {"@currency": "EUR", "#text": "9.99"}, "tag": ["a", "b"], "gone": None},
        {"@xmlns:x": "urn:x", "b": "mixed", "#text": "only  text"},
        {"#text": "just text"},
        {},
    ]
    # A leading slash is the same path; the root itself can be the one record.
    assert _read(path, "/rss/channel/item") == _read(path, "rss/channel/item")
    assert _read(path, "rss")[0]["@version"] == "2.0"


@pytest.mark.parametrize(
    "encoding, declared",
    [("utf-16", "UTF-16"), ("utf-16-be", None), ("iso-8859-1", "ISO-8859-1"), ("cp1252", "windows-1252")],
)
def test_encodings_come_from_the_declaration(tmp_path: Path, encoding: str, declared: str | None) -> None:
    text = "Köln €" if encoding == "cp1252" else "Köln ÿ"
    decl = f'<?xml version="1.0" encoding="{declared}"?>' if declared else ""
    body = f'{decl}<feed><items><item city="{text}">{text}</item></items></feed>'
    data = body.encode(encoding)
    if encoding == "utf-16-be":
        data = b"\xfe\xff" + data  # the byte order mark alone names it
    path = tmp_path / "e.xml"
    path.write_bytes(data)
    assert _read(path) == [{"@city": text, "#text": text}]


@pytest.mark.parametrize(
    ("bom", "codec", "declared"),
    [
        (b"\xef\xbb\xbf", "utf-8", "iso-8859-1"),  # W3C xmlconf hst-lhs-007: expat read it as Latin-1
        (b"\xef\xbb\xbf", "utf-8", "windows-1252"),
        (b"\xef\xbb\xbf", "utf-8", "US-ASCII"),
        (b"\xef\xbb\xbf", "utf-8", "UTF-16"),
        (b"\xff\xfe", "utf-16-le", "UTF-8"),
        (b"\xfe\xff", "utf-16-be", "UTF-8"),
        (b"\xff\xfe", "utf-16-le", "ISO-8859-1"),
        (b"\xfe\xff", "utf-16-be", "UTF-16LE"),
        (b"", "utf-16-le", "UTF-8"),  # no BOM, but 3C 00 3F 00 says UTF-16LE
        (b"", "utf-8", "UTF-16"),
    ],
)
def test_a_declaration_that_contradicts_the_byte_order_mark_is_refused(
    tmp_path: Path, bom: bytes, codec: str, declared: str
) -> None:
    """A fatal error in XML 1.0 (4.3.3: an entity presented in an encoding other than its declaration names):
    the text would be decoded one way or the other, and one of them is wrong."""
    path = tmp_path / "c.xml"
    path.write_bytes(
        bom + f'<?xml version="1.0" encoding="{declared}"?><feed><items><item>Köln</item></items></feed>'.encode(codec)
    )
    with pytest.raises(ParseError, match=r"c\.xml: line 1 column \d+: .*encoding") as info:
        _read(path)
    if bom == b"\xef\xbb\xbf":
        assert f"the byte order mark says UTF-8, but the XML declaration names the encoding {declared}" in str(
            info.value
        )


@pytest.mark.parametrize("declared", ["UTF-8", "utf-8", None])
def test_a_utf8_bom_with_a_utf8_declaration_or_none_is_read(tmp_path: Path, declared: str | None) -> None:
    path = tmp_path / "u.xml"
    decl = f'<?xml version="1.0" encoding="{declared}"?>' if declared else '<?xml version="1.0"?>'
    path.write_bytes(b"\xef\xbb\xbf" + f"{decl}<feed><items><item>Köln</item></items></feed>".encode())
    assert _read(path) == [{"#text": "Köln"}]


@pytest.mark.parametrize(
    ("declared", "codec"),
    [
        ("Shift_JIS", "shift_jis"),
        ("EUC-JP", "euc_jp"),
        ("UTF-32", "utf-8"),
        ("GB2312", "gb2312"),
        ("x-unknown", "utf-8"),
    ],
)
def test_an_encoding_expat_cannot_read_is_refused_by_name(tmp_path: Path, declared: str, codec: str) -> None:
    """A declaration naming a multi-byte encoding other than UTF-8/16 (pyexpat takes only single-byte ones from
    Python's codecs) or an encoding nobody knows: a ParseError naming the encoding, never an internal error (the
    ValueError and LookupError pyexpat raised became "internal error: ValueError: multi-byte encodings are not
    supported")."""
    path = tmp_path / "j.xml"
    path.write_bytes(
        f'<?xml version="1.0" encoding="{declared}"?><feed><items><item>ab</item></items></feed>'.encode(codec)
    )
    with pytest.raises(
        ParseError, match=rf"j\.xml: line 1 column \d+: the XML declaration names the encoding {declared},"
    ):
        _read(path)


def test_a_byte_invalid_in_the_declared_encoding_names_line_and_column(tmp_path: Path) -> None:
    path = tmp_path / "bad.xml"
    path.write_bytes(b'<?xml version="1.0" encoding="UTF-8"?>\n<feed><items>\n<item>K\xf6ln</item></items></feed>')
    with pytest.raises(ParseError, match=r"bad.xml: line 3 column 8: not well-formed XML \(not well-formed"):
        _read(path)


@pytest.mark.parametrize(
    "doc, where, what",
    [
        (b"<feed><items><item>1</itm></items></feed>", "line 1 column 23", "mismatched tag"),
        (b"<feed><items>\n<item a='1' a='2'/></items></feed>", "line 2 column 13", "duplicate attribute"),
        (b"<feed><items><item>x</item></items>", "line 1 column 36", "no element found"),
        (b"<feed/><feed/>", "line 1 column 8", "junk after document element"),
        (b"", "line 1 column 1", "no element found"),
        (b"<feed><items><item>&nbsp;</item></items></feed>", "line 1 column 20", "undefined entity"),
    ],
)
def test_not_well_formed_documents_name_line_and_column(tmp_path: Path, doc: bytes, where: str, what: str) -> None:
    path = tmp_path / "nwf.xml"
    path.write_bytes(doc)
    with pytest.raises(ParseError) as err:
        _read(path)
    assert f"nwf.xml: {where}: not well-formed XML ({what}" in str(err.value)


BILLION_LAUGHS = b"""<?xml version="1.0"?>
<!DOCTYPE feed [
 <!ENTITY lol "lol">
 <!ENTITY lol2 "&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;&lol;">
 <!ENTITY lol3 "&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;&lol2;">
]>
<feed><items><item>&lol3;</item></items></feed>"""


def test_entity_declarations_are_refused(tmp_path: Path) -> None:
    secret = tmp_path / "secret.txt"
    secret.write_text("TOPSECRET")
    cases = {
        "billion laughs": BILLION_LAUGHS,
        "quadratic blowup": b'<!DOCTYPE feed [<!ENTITY a "'
        + b"x" * 10000
        + b'">]><feed><items><item>'
        + b"&a;" * 1000
        + b"</item></items></feed>",
        "external entity": f'<!DOCTYPE feed [<!ENTITY x SYSTEM "file://{secret}">]>'.encode()
        + b"<feed><items><item>&x;</item></items></feed>",
        "parameter entity": f'<!DOCTYPE feed [<!ENTITY % p SYSTEM "file://{secret}"> %p;]>'.encode()
        + b"<feed><items><item/></items></feed>",
    }
    for label, doc in cases.items():
        path = tmp_path / "e.xml"
        path.write_bytes(doc)
        with pytest.raises(ParseError) as err:
            _read(path)
        assert "entity declarations are refused" in str(err.value), label
        assert "e.xml: line " in str(err.value), label
        assert "TOPSECRET" not in str(err.value), label


@pytest.fixture
async def dtd_server() -> AsyncIterator[tuple[str, list[str]]]:
    """A real HTTP server offering a DTD that declares an entity and a default attribute; it records requests."""
    hits: list[str] = []

    async def dtd(request: web.Request) -> web.Response:
        hits.append(request.path)
        return web.Response(text='<!ENTITY brand "ACME"><!ATTLIST item added CDATA "from-dtd">')

    app = web.Application()
    app.router.add_get("/feed.dtd", dtd)
    async with served(app) as url:
        yield url + "feed.dtd", hits


async def test_an_external_dtd_is_named_but_never_fetched(tmp_path: Path, dtd_server: tuple[str, list[str]]) -> None:
    url, hits = dtd_server
    path = tmp_path / "bmecat.xml"
    path.write_bytes(
        f'<?xml version="1.0"?>\n<!DOCTYPE BMECAT SYSTEM "{url}">\n'.encode()
        + b"<BMECAT><T_NEW_CATALOG><ARTICLE><SUPPLIER_AID>1</SUPPLIER_AID></ARTICLE>"
        b"<ARTICLE><SUPPLIER_AID>2</SUPPLIER_AID></ARTICLE></T_NEW_CATALOG></BMECAT>"
    )
    assert _read(path, "BMECAT/T_NEW_CATALOG/ARTICLE") == [{"SUPPLIER_AID": "1"}, {"SUPPLIER_AID": "2"}]
    # A reference that only the unread DTD could resolve is refused, not dropped.
    path.write_bytes(f'<!DOCTYPE feed SYSTEM "{url}"><feed><items><item>&brand;</item></items></feed>'.encode())
    with pytest.raises(ParseError, match=r"line 1 column \d+: the entity &brand; is not declared"):
        _read(path)
    assert hits == []


def test_the_root_must_be_the_first_name_of_the_path(tmp_path: Path) -> None:
    path = tmp_path / "r.xml"
    path.write_bytes(b"<products><product/></products>")
    with pytest.raises(ParseError, match=r"r.xml: line 1 column 1: the root element is <products>, but record_path"):
        _read(path, "catalog/product")
    assert _read(path, "products/product") == [{}]
    assert _read(path, "products/other") == []  # a feed with no such element yet is empty, not wrong


def test_record_path_is_required_and_checked() -> None:
    with pytest.raises(ConfigError, match="record_path is required by the xml format"):
        format_options("xml", {})
    with pytest.raises(ConfigError, match="'a b' is not an element name"):
        format_options("xml", {"record_path": "x/a b"})
    with pytest.raises(ConfigError, match="not an option of format xml"):
        format_options("xml", {"record_path": "a", "sheet": "x"})
    assert format_options("xml", {"record_path": "rss/channel/item"}) == {"record_path": "rss/channel/item"}


def test_records_and_runs_over_the_limit_are_refused(tmp_path: Path) -> None:
    path = tmp_path / "big.xml"
    path.write_bytes(b"<feed><items><item>" + b"<v>x</v>" * 20000 + b"</item></items></feed>")
    spec = SourceSpec("xml", {"record_path": "feed/items/item"}, max_record_bytes=100_000)
    with pytest.raises(ParseError, match="record 0 is longer than 100000 bytes"):
        list(read_records(path, spec))
    # One attribute value that never ends: refused before expat buffers it all.
    with open(path, "wb") as f:
        f.write(b'<feed><items><item a="')
        for _ in range(40):
            f.write(b"y" * (1 << 16))
    with pytest.raises(ParseError, match="a single run of markup or text is longer than 100000 bytes"):
        list(read_records(path, spec))
    # Outside records, long text is passed over in pieces.
    path.write_bytes(b"<feed><desc>" + b"z" * 1_000_000 + b"</desc><items><item>1</item></items></feed>")
    assert list(read_records(path, spec)) == [{"#text": "1"}]


def _big_document(count: int) -> Iterator[bytes]:
    yield b'<?xml version="1.0"?><feed xmlns:g="urn:g"><items>'
    for i in range(count):
        yield (
            f'<item id="{i}"><sku>SKU-{i:08d}</sku><g:price currency="EUR">{i % 997}.99</g:price>'
            f"<name>Product number {i} with a name of some length</name><tag>a</tag><tag>b</tag></item>\n"
        ).encode()
    yield b"</items></feed>"


def test_memory_stays_flat_whatever_the_size(tmp_path: Path) -> None:
    """Peak traced memory while reading 20,000 and 200,000 records (about 3 MB and 30 MB): the same few KiB-MiB,
    not ten times more."""
    peaks = []
    for count in (20_000, 200_000):
        path = tmp_path / f"{count}.xml"
        with open(path, "wb") as f:
            f.writelines(_big_document(count))
        tracemalloc.start()
        n = 0
        for record in read_records(path, SourceSpec("xml", {"record_path": "feed/items/item"})):
            n += 1
            assert record["@id"] == str(n - 1)
        peaks.append(tracemalloc.get_traced_memory()[1])
        tracemalloc.stop()
        assert n == count
    small, large = peaks
    assert large < 2 * small + (1 << 20), f"peak {small >> 10} KiB for 20k records, {large >> 10} KiB for 200k"
    assert large < 8 << 20


def test_a_compressed_feed_is_read_as_a_stream(tmp_path: Path) -> None:
    import gzip

    path = tmp_path / "feed.xml.gz"
    path.write_bytes(gzip.compress(b"".join(_big_document(3))))
    assert [r["sku"] for r in _read(path)] == ["SKU-00000000", "SKU-00000001", "SKU-00000002"]
