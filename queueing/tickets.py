"""The row a queue write returns: what a station needs to cook and acknowledge an order."""

from __future__ import annotations

import json
from dataclasses import dataclass
from datetime import datetime
from typing import Any


@dataclass(frozen=True, slots=True)
class Ticket:
    id: int
    token: str
    kind: str
    zone: str
    rush: bool
    quick: bool
    lines: list[dict[str, Any]]
    prep_seconds: int
    state: str
    cancel_reason: str
    outlet_id: int | None
    sort_key: datetime
    fence: int
    claimed_by: str
    lease_expires_at: datetime | None
    attempts: int
    created_at: datetime
    event_id: int | None = None

    @property
    def number(self) -> int:
        return self.id

    @classmethod
    def from_row(cls, row: dict[str, Any]) -> Ticket:
        fields = {k: v for k, v in row.items() if k in cls.__dataclass_fields__}
        if isinstance(fields.get("lines"), str):  # Django's cursor hands jsonb over as text
            fields["lines"] = json.loads(fields["lines"])
        return cls(**fields)
