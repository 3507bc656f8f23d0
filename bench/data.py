"""Deterministic product-like test data: the same arguments always give the same bytes."""

from __future__ import annotations

import json
import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

_WORDS = [
    "alpha",
    "bravo",
    "charlie",
    "delta",
    "echo",
    "foxtrot",
    "golf",
    "hotel",
    "india",
    "juliet",
    "kilo",
    "lima",
    "mike",
    "november",
    "oscar",
    "papa",
    "quebec",
    "romeo",
    "sierra",
    "tango",
    "uniform",
    "victor",
    "whiskey",
    "xray",
    "yankee",
    "zulu",
    "steel",
    "oak",
    "linen",
    "cotton",
    "matte",
]


def record(i: int, rng: random.Random) -> dict[str, Any]:
    """About 480 bytes as JSON: ids, text, exact prices, stock, tags, nested attributes."""
    words = " ".join(rng.choice(_WORDS) for _ in range(8))
    return {
        "sku": f"SKU-{i:09d}",
        "ean": f"{4000000000000 + i}",
        "name": f"Product {i} {words[:40]}",
        "description": f"{words} {words}"[:150],
        "price": f"{rng.randint(100, 999999) / 100:.2f}",
        "stock": rng.randint(0, 5000),
        "active": rng.random() > 0.1,
        "weight_kg": f"{rng.randint(1, 50000) / 1000:.3f}",
        "tags": [rng.choice(_WORDS) for _ in range(3)],
        "attributes": {
            "color": rng.choice(_WORDS),
            "size": rng.choice(["S", "M", "L", "XL"]),
            "material": rng.choice(_WORDS),
        },
        "updated": f"2026-{rng.randint(1, 12):02d}-{rng.randint(1, 28):02d}T10:00:00Z",
    }


def _text(i: int, rng: random.Random, integers: bool = False) -> str:
    # Prices and weights are written as JSON numbers with their exact decimal digits
    # (or, with ``integers``, in cents and grams).
    rec = record(i, rng)
    if integers:
        rec["price"] = str(int(rec["price"].replace(".", "")))
        rec["weight_kg"] = str(int(rec["weight_kg"].replace(".", "")))
    text = json.dumps(rec, ensure_ascii=False, separators=(",", ":"))
    return text.replace(f'"price":"{rec["price"]}"', f'"price":{rec["price"]}').replace(
        f'"weight_kg":"{rec["weight_kg"]}"', f'"weight_kg":{rec["weight_kg"]}'
    )


def lines(target_bytes: int, seed: int = 1, integers: bool = False) -> Iterator[str]:
    rng = random.Random(seed)
    size = i = 0
    while size < target_bytes:
        text = _text(i, rng, integers)
        size += len(text) + 2
        i += 1
        yield text


def write_json(path: Path, target_bytes: int, seed: int = 1) -> int:
    """A JSON array of about ``target_bytes``; returns the record count."""
    n = 0
    with open(path, "w", encoding="utf-8", buffering=1 << 20) as f:
        f.write("[\n")
        for n, text in enumerate(lines(target_bytes, seed), 1):
            f.write(text if n == 1 else ",\n" + text)
        f.write("\n]\n")
    return n


def write_jsonl(path: Path, target_bytes: int, seed: int = 1, integers: bool = False) -> int:
    n = 0
    with open(path, "w", encoding="utf-8", buffering=1 << 20) as f:
        for n, text in enumerate(lines(target_bytes, seed, integers), 1):  # noqa: B007 - n is the count returned
            f.write(text + "\n")
    return n


def write_xlsx(path: Path, rows: int, seed: int = 1) -> int:
    from openpyxl import Workbook

    rng = random.Random(seed)
    wb = Workbook(write_only=True)
    ws = wb.create_sheet("Products")
    head = ["sku", "ean", "name", "description", "price", "stock", "active", "weight_kg", "color", "size", "updated"]
    ws.append(head)
    for i in range(rows):
        r = record(i, rng)
        ws.append(
            [
                r["sku"],
                r["ean"],
                r["name"],
                r["description"],
                float(r["price"]),
                r["stock"],
                r["active"],
                float(r["weight_kg"]),
                r["attributes"]["color"],
                r["attributes"]["size"],
                r["updated"],
            ]
        )
    wb.save(path)
    return rows


def write_catalogue(day1: Path, day2: Path, n: int, seed: int = 3) -> dict[str, int]:
    """Two days of one catalogue as JSON Lines (about 130 bytes a record): day 2 has 1% of day 1's records
    changed, 0.5% removed and 0.5% new. Returns the counts the delta benchmark checks."""
    rng = random.Random(seed)
    changed = set(rng.sample(range(n), n // 100))
    removed = set(rng.sample(sorted(set(range(n)) - changed), n // 200))

    def line(i: int, stock: int) -> str:
        return (
            f'{{"sku":"SKU-{i:09d}","name":"Product {i}","price":"{(i * 7919) % 100000 / 100:.2f}",'
            f'"stock":{stock},"active":{"true" if i % 10 else "false"},"tags":["t{i % 7}","c{i % 13}"]}}\n'
        )

    with (
        open(day1, "w", encoding="utf-8", buffering=1 << 20) as a,
        open(day2, "w", encoding="utf-8", buffering=1 << 20) as b,
    ):
        for i in range(n):
            a.write(line(i, i % 5000))
            if i not in removed:
                b.write(line(i, i % 5000 + (1 if i in changed else 0)))
        for i in range(n, n + n // 200):
            b.write(line(i, 7))
    return {"changed": len(changed), "removed": len(removed), "new": n // 200}


def write_keyed(path: Path, n: int, repeat: float = 0.0, seed: int = 5) -> int:
    """JSON Lines of ``n`` records; with ``repeat``, that share of them takes the sku of a random earlier record
    (an update later in the same file: under by_key it must be applied after that one)."""
    rng = random.Random(seed)
    with open(path, "w", encoding="utf-8", buffering=1 << 20) as f:
        for i in range(n):
            text = _text(i, rng)
            if repeat and i and rng.random() < repeat:
                text = text.replace(f"SKU-{i:09d}", f"SKU-{rng.randrange(i):09d}", 1)
            f.write(text + "\n")
    return n


# Hard records: values the JSON fast path cannot carry exactly through orjson (bench rows "mixed", issue 30).
_HARD_VALUES: list[tuple[str, str]] = [
    ("ean_big", "123456789012345678901234567890"),  # a 30-digit integer
    ("ratio", "0.1234567890123456789012345"),  # a 25-digit decimal
    ("lat", "52.520008333333331"),  # a 17-digit float
    ("factor", "1.5e-3"),  # an exponent
]
_ESCAPED = ['"Zoll \\"19\\"\\tTab\\u00e9"', '"\\ud83d\\ude00 emoji by escape"']
_ASTRAL = ["𝄞 Notenschlüssel", "😀 smile", "𠜎 CJK ext. B"]
_RTL = ["مرحبا بالعالم", "שלום עולם", "کتاب فارسی"]


def mixed_text(i: int, rng: random.Random, hard: bool) -> str:
    """One product record as ``_text`` writes it, with text in several scripts; ``hard``: plus the numbers the
    fast path declines (30-digit integer, 25-digit decimal, exponent), a 17-digit float and escapes."""
    text = _text(i, rng)
    extra = f',"title_rtl":{json.dumps(rng.choice(_RTL), ensure_ascii=False)}'
    extra += f',"symbol":{json.dumps(rng.choice(_ASTRAL), ensure_ascii=False)}'
    if hard:
        extra += "".join(f',"{k}":{v}' for k, v in _HARD_VALUES)
        extra += f',"note":{rng.choice(_ESCAPED)}'
    return text[:-1] + extra + "}"


def write_mixed_json(path: Path, n: int, hard_share: float, seed: int = 7) -> int:
    """A JSON array of ``n`` product records, ``hard_share`` of them hard (``mixed_text``), spread evenly with a
    random phase: what a real catalogue holds now and then."""
    rng = random.Random(seed)
    every = round(1 / hard_share) if hard_share else 0
    phase = rng.randrange(every) if every else 0
    with open(path, "w", encoding="utf-8", buffering=1 << 20) as f:
        f.write("[\n")
        for i in range(n):
            text = mixed_text(i, rng, bool(every) and i % every == phase)
            f.write(text if i == 0 else ",\n" + text)
        f.write("\n]\n")
    return n


_LANGS = {
    "en": ("Linen shirt", "<p>A <strong>breathable</strong> shirt in washed linen.</p><ul><li>Regular fit</li></ul>"),
    "de": ("Leinenhemd", "<p>Ein <em>atmungsaktives</em> Hemd aus gewaschenem Leinen &amp; Baumwolle.</p>"),
    "fr": ("Chemise en lin", "<p>Une chemise <strong>légère</strong> en lin lavé, coupe droite.</p>"),
    "ja": ("リネンシャツ", "<p>洗いをかけたリネンの<strong>通気性</strong>の良いシャツ。</p>"),
    "ar": ("قميص كتان", '<p dir="rtl">قميص <strong>خفيف</strong> من الكتان المغسول.</p>'),
    "he": ("חולצת פשתן", '<p dir="rtl">חולצה <em>נושמת</em> מפשתן מכובס.</p>'),
}


def _gtin(rng: random.Random) -> str:
    """A GTIN-13 with its check digit."""
    body = [rng.randrange(10) for _ in range(12)]
    check = (10 - sum(d * (3 if k % 2 else 1) for k, d in enumerate(body)) % 10) % 10
    return "".join(map(str, body)) + str(check)


def magento_product(i: int, rng: random.Random) -> dict[str, Any]:
    """Shaped like Magento 2's REST product (GET /V1/products): numbers for price and weight, nested
    extension_attributes (categories, stock item), media gallery, and custom_attributes as code/value pairs
    holding strings (the HTML description, special_price written "49.990000")."""
    lang = rng.choice(list(_LANGS))
    name, html = _LANGS[lang]
    price = rng.randint(100, 99999) / 100
    return {
        "sku": f"MAG-{i:08d}-{rng.choice(['BLU', 'GRN', 'RED'])}-{rng.choice(['XS', 'M', 'XXL'])}-LINEN-2026",
        "id": 100000 + i,
        "name": f"{name} {i}",
        "attribute_set_id": 4,
        "price": float(f"{price:.2f}"),
        "status": 1,
        "visibility": 4,
        "type_id": rng.choice(["simple", "configurable"]),
        "created_at": "2026-03-01 09:12:44",
        "updated_at": f"2026-11-{rng.randint(1, 28):02d} 17:05:{rng.randint(0, 59):02d}",
        "weight": rng.randint(100, 5000) / 1000,
        "extension_attributes": {
            "website_ids": [1],
            "category_links": [{"position": k, "category_id": str(rng.randint(3, 400))} for k in range(3)],
            "stock_item": {"item_id": i, "qty": float(rng.randint(0, 500)), "is_in_stock": True, "min_qty": 0},
        },
        "media_gallery_entries": [
            {
                "id": i * 2 + k,
                "media_type": "image",
                "label": None,
                "position": k,
                "disabled": False,
                "types": ["image", "small_image", "thumbnail"] if k == 0 else [],
                "file": f"/l/i/linen-{i}-{k}.jpg",
            }
            for k in range(2)
        ],
        "tier_prices": [{"customer_group_id": 1, "qty": 10, "value": float(f"{price * 0.9:.2f}")}],
        "custom_attributes": [
            {"attribute_code": "description", "value": html},
            {"attribute_code": "url_key", "value": f"linen-shirt-{i}"},
            {"attribute_code": "special_price", "value": f"{price * 0.8:.6f}"},
            {"attribute_code": "ean", "value": _gtin(rng)},
            {"attribute_code": "color", "value": str(rng.randint(49, 60))},
            {"attribute_code": "meta_title", "value": f"{name} | Shop"},
        ],
    }


def shopify_product(i: int, rng: random.Random) -> dict[str, Any]:
    """Shaped like Shopify's Product resource: 64-bit ids, body_html, tags as one string, variants whose price
    is a string ("199.00") and whose barcode is a GTIN, options, images."""
    lang = rng.choice(list(_LANGS))
    name, html = _LANGS[lang]
    pid = 7_000_000_000_000 + i * 17
    variants = []
    for k, size in enumerate(rng.sample(["S", "M", "L", "XL"], 3)):
        price = rng.randint(500, 30000) / 100
        variants.append(
            {
                "id": 40_000_000_000_000 + i * 8 + k,
                "product_id": pid,
                "title": f"{size} / Natural",
                "price": f"{price:.2f}",
                "sku": f"SHP-{i:07d}-{size}",
                "position": k + 1,
                "inventory_policy": "deny",
                "compare_at_price": f"{price * 1.2:.2f}" if k == 0 else None,
                "option1": size,
                "option2": "Natural",
                "option3": None,
                "taxable": True,
                "barcode": _gtin(rng),
                "grams": rng.randint(100, 900),
                "weight": rng.randint(1, 900) / 1000,
                "weight_unit": "kg",
                "inventory_item_id": 42_000_000_000_000 + i * 8 + k,
                "inventory_quantity": rng.randint(0, 80),
                "requires_shipping": True,
            }
        )
    return {
        "sku": f"SHP-{i:07d}",
        "id": pid,
        "title": f"{name} {i}",
        "body_html": html,
        "vendor": rng.choice(["Nordlicht", "Maison Lin", "青山"]),
        "product_type": "Shirts",
        "created_at": "2026-02-11T10:21:33-05:00",
        "handle": f"linen-shirt-{i}",
        "updated_at": f"2026-11-{rng.randint(1, 28):02d}T08:00:00-05:00",
        "status": "active",
        "tags": "linen, summer, sale",
        "variants": variants,
        "options": [
            {
                "id": pid + 1,
                "product_id": pid,
                "name": "Size",
                "position": 1,
                "values": [v["option1"] for v in variants],
            }
        ],
        "images": [
            {
                "id": pid + 2,
                "position": 1,
                "width": 2048,
                "height": 2048,
                "src": f"https://cdn.example.invalid/files/linen-{i}.jpg",
                "variant_ids": [],
            }
        ],
    }


def merchant_product(i: int, rng: random.Random) -> dict[str, Any]:
    """Shaped like a Google Merchant Center product (Content API): offerId, GTIN and MPN, price as
    {"value": "15.00", "currency"}, shipping rules, product types, and custom attributes."""
    lang = rng.choice(list(_LANGS))
    name, html = _LANGS[lang]
    value = rng.randint(500, 50000) / 100
    return {
        "sku": f"GMC-{i:08d}",
        "offerId": f"gmc-{i:08d}",
        "title": f"{name} {i}",
        "description": html.replace("<p>", "").replace("</p>", ""),
        "link": f"https://shop.example.invalid/p/{i}",
        "imageLink": f"https://shop.example.invalid/img/{i}.jpg",
        "contentLanguage": lang,
        "targetCountry": rng.choice(["DE", "FR", "JP", "IL"]),
        "channel": "online",
        "availability": rng.choice(["in stock", "out of stock", "preorder"]),
        "condition": "new",
        "brand": "Nordlicht",
        "gtin": _gtin(rng),
        "mpn": f"NL-{rng.randint(10000, 99999)}",
        "googleProductCategory": "Apparel & Accessories > Clothing > Shirts & Tops",
        "productTypes": ["Men > Shirts > Linen"],
        "price": {"value": f"{value:.2f}", "currency": "EUR"},
        "salePrice": {"value": f"{value * 0.85:.2f}", "currency": "EUR"},
        "shipping": [{"country": "DE", "service": "Standard", "price": {"value": "4.95", "currency": "EUR"}}],
        "customAttributes": [{"name": "fabric_weight_gsm", "value": str(rng.randint(120, 200))}],
        "sizes": ["M"],
        "color": "natural",
    }


_SHAPES = (magento_product, shopify_product, merchant_product)


def write_export_json(path: Path, n: int, hard_share: float = 0.01, seed: int = 11) -> int:
    """A catalogue shaped like what shops export: one JSON array whose records are Magento 2, Shopify and Google
    Merchant products in turn (each written compactly, one a line), ``hard_share`` of them with a hard value (a
    30-digit integer, a 25-digit decimal or an exponent in their attributes)."""
    rng = random.Random(seed)
    every = round(1 / hard_share) if hard_share else 0
    with open(path, "w", encoding="utf-8", buffering=1 << 20) as f:
        f.write("[\n")
        for i in range(n):
            rec = _SHAPES[i % 3](i, rng)
            text = json.dumps(rec, ensure_ascii=False, separators=(",", ":"))
            if every and i % every == every // 2:
                name, value = _HARD_VALUES[(i // every) % len(_HARD_VALUES)]
                text = text[:-1] + f',"{name}":{value}}}'
            f.write(text if i == 0 else ",\n" + text)
        f.write("\n]\n")
    return n
