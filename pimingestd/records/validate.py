"""Checking one record against an ingestion's rules: JSON Schema (Draft 2020-12, formats checked),
required fields, and the key. The first failure is the reason, named so an operator can fix the row."""

from __future__ import annotations

from typing import Any

from ..protocol import keys
from .rules import RecordRules


class Validator:
    def __init__(self, rules: RecordRules) -> None:
        self._rules = rules
        self._schema: Any = None
        if rules.schema is not None:
            from jsonschema import Draft202012Validator

            self._schema = Draft202012Validator(rules.schema, format_checker=Draft202012Validator.FORMAT_CHECKER)

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
                return f"schema: {error.message}{at} (schema path /{schema_path})"[:2000], where or None
        return None


def _first(errors: Any) -> Any:
    from jsonschema.exceptions import best_match

    return best_match(errors)
