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
