"""Fault injection for the reference receiver (tests and demos only).

A rule: ``{"action": ..., "chunk": n (optional: any chunk), "times": k (default 1),
"seconds": s (for delay_ack)}``. The first rule that matches a chunk and has
times left is used up. Actions:

- ``http_500``: answer the chunk POST with 500, apply nothing.
- ``http_425``: answer 425 (too early), apply nothing.
- ``http_429``: answer 429 with ``Retry-After: seconds`` (whole seconds), apply nothing (v2 back-pressure).
- ``reject_retryable`` / ``reject_final``: take the POST, apply nothing, call back ``reject``.
- ``drop_ack``: apply, but send no callback.
- ``duplicate_ack``: apply, call back twice.
- ``delay_ack``: apply, call back after ``seconds``.
- ``ack_before_response``: apply, call back and wait for the daemon's answer before answering the POST.
- ``slow_response``: wait ``seconds`` before handling the POST at all (a slow PIM-Core).
- ``slow_completion``: wait ``seconds`` before handling a completion (never used up by chunks).
- ``reject_records``: apply the chunk but refuse (v1.1 ``rejected``) every record whose ``field`` holds one of
  ``values``, with ``reason`` (default "refused by rule"); ``times`` is not used up: the rule holds until the
  rules are replaced. Tombstones are refused too when their key matches. Store mode only.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Any

ACTIONS = (
    "http_500",
    "http_425",
    "http_429",
    "reject_retryable",
    "reject_final",
    "drop_ack",
    "duplicate_ack",
    "delay_ack",
    "ack_before_response",
    "slow_response",
    "slow_completion",
    "reject_records",
)
_STANDING = ("slow_completion", "reject_records")  # never used up by taking a chunk


@dataclass(slots=True)
class Rule:
    action: str
    chunk: int | None = None
    times: int = 1
    seconds: float = 0.0
    field: str = ""  # reject_records: the field whose value is looked at (a dotted path allowed)
    values: tuple[Any, ...] = ()
    reason: str = "refused by rule"


@dataclass(slots=True)
class Faults:
    rules: list[Rule] = field(default_factory=list)

    def set(self, raw: Any) -> None:
        """Replace the rules from JSON (a list of rule objects); ValueError when malformed."""
        if not isinstance(raw, list):
            raise ValueError("faults: expected a JSON array of rules")
        rules = []
        for i, item in enumerate(raw):
            if not isinstance(item, dict) or item.get("action") not in ACTIONS:
                raise ValueError(f"faults[{i}]: action must be one of {', '.join(ACTIONS)}")
            unknown = set(item) - {"action", "chunk", "times", "seconds", "field", "values", "reason"}
            if unknown:
                raise ValueError(f"faults[{i}]: unknown key(s) {sorted(unknown)}")
            if item["action"] == "reject_records" and (
                not isinstance(item.get("field"), str) or not isinstance(item.get("values"), list)
            ):
                raise ValueError(f"faults[{i}]: reject_records needs `field` (a string) and `values` (an array)")
            rules.append(
                Rule(
                    action=item["action"],
                    chunk=item.get("chunk"),
                    times=int(item.get("times", 1)),
                    seconds=float(item.get("seconds", 0.0)),
                    field=str(item.get("field", "")),
                    values=tuple(item.get("values", ())),
                    reason=str(item.get("reason", "refused by rule")),
                )
            )
        self.rules = rules

    def take(self, chunk: int) -> Rule | None:
        for rule in self.rules:
            if rule.action in _STANDING:
                continue
            if rule.times > 0 and (rule.chunk is None or rule.chunk == chunk):
                rule.times -= 1
                return rule
        return None

    def refusals(self) -> list[Rule]:
        return [r for r in self.rules if r.action == "reject_records"]

    def take_completion(self) -> Rule | None:
        for rule in self.rules:
            if rule.action == "slow_completion" and rule.times > 0:
                rule.times -= 1
                return rule
        return None
