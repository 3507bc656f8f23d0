"""Checking one record against an ingestion's rules: JSON Schema (Draft 2020-12, formats checked),
required fields, and the key. The first failure is the reason, named so an operator can fix the row."""

from __future__ import annotations

import functools
import json
import re
from decimal import Decimal
from typing import Any

from ..protocol import keys
from .rules import RecordRules

# A record as checked: its canonical bytes parsed with every non-integer number as the Decimal written in the
# source (a float's shortest text, for Excel). jsonschema's arithmetic on binary floats refuses 19.90 under
# multipleOf 0.01, and mixing a reader's Decimal with a schema's float raised a TypeError.
as_written = functools.partial(json.loads, parse_float=Decimal)
_DECIMAL_REPR = re.compile(r"Decimal\('([-+0-9.Ee]+)'\)")


@functools.cache
def _exact_validator() -> Any:
    """Draft 2020-12 with Decimal integers, built once per process: jsonschema builds a validator class (attrs
    compiles its methods) for each extend, and one class per ingestion with a schema grew the daemon's RSS by
    about 1.5 KB an ingestion that was never given back (3 MiB over 2,000 ingestions; issue 29)."""
    from jsonschema import Draft202012Validator, validators

    def integer(checker: Any, instance: Any) -> bool:  # 1.0 is an integer (JSON Schema 2020-12, 6.1.1)
        if isinstance(instance, Decimal):
            return instance == instance.to_integral_value()
        return bool(Draft202012Validator.TYPE_CHECKER.is_type(instance, "integer"))

    checker = Draft202012Validator.TYPE_CHECKER.redefine("integer", integer)
    return validators.extend(Draft202012Validator, type_checker=checker)  # type: ignore[no-untyped-call]


class Validator:
    def __init__(self, rules: RecordRules) -> None:
        self._rules = rules
        self._schema: Any = None
        if rules.schema is not None:
            from jsonschema import Draft202012Validator

            self._schema = _exact_validator()(
                _decimals(rules.schema), format_checker=Draft202012Validator.FORMAT_CHECKER
            )

    def check(self, record: Any) -> tuple[str, str | None] | None:
        """None when ``record`` passes; else (reason, field): the field is the failing place when one is known."""
        missing = [name for name in self._rules.required if not keys.present(record, name)]
        if missing:
            return f"required field(s) missing: {', '.join(missing)}", missing[0]
        if self._schema is not None:
            error = _first(self._schema.iter_errors(record))
            if error is not None:
                where = "/".join(str(p) for p in error.absolute_path)
                schema_path = "/".join(str(p) for p in error.absolute_schema_path)
                at = f" at /{where}" if where else ""
                message = _DECIMAL_REPR.sub(r"\1", error.message)  # 19.905, as written, not Decimal('19.905')
                return f"schema: {message}{at} (schema path /{schema_path})"[:2000], where or None
        return None


def _first(errors: Any) -> Any:
    from jsonschema.exceptions import best_match

    return best_match(errors)


def _decimals(schema: Any) -> Any:
    """The schema with its non-integer numbers as Decimals (a float's shortest text: ``0.01`` from TOML's
    float), so that they meet the records' Decimals in exact arithmetic."""
    if isinstance(schema, dict):
        return {k: _decimals(v) for k, v in schema.items()}
    if isinstance(schema, list):
        return [_decimals(v) for v in schema]
    if isinstance(schema, float):
        return Decimal(repr(schema))
    return schema
